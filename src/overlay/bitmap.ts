// Bit operations on the per-chunk block bitmaps (bit i of byte i>>3, LSB first).

export function testBit(bits: Uint8Array, i: number): boolean {
  return (bits[i >> 3]! & (1 << (i & 7))) !== 0;
}

export function popcount8(byte: number): number {
  let n = byte - ((byte >> 1) & 0x55);
  n = (n & 0x33) + ((n >> 2) & 0x33);
  return (n + (n >> 4)) & 0x0f;
}

/** Set bits in a bitmap. */
export function countBits(bits: Uint8Array): number {
  let count = 0;
  for (const byte of bits) count += popcount8(byte);
  return count;
}

/** Bits set in `a` and clear in `b` (blocks valid but not dirty: clean cache). */
export function countAndNot(a: Uint8Array, b: Uint8Array): number {
  let count = 0;
  for (let i = 0; i < a.length; i++) count += popcount8(a[i]! & ~(b[i] ?? 0) & 0xff);
  return count;
}
