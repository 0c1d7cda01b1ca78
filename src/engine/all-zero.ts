// All-zero data is never stored (format rule): the test, shared by import,
// snapshot and export.

const ZEROS = Buffer.alloc(1024 * 1024);

/** Whether every byte is zero (compared a megabyte at a time with memcmp). */
export function isAllZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const piece = data.subarray(at, Math.min(at + ZEROS.length, data.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}
