// glibc malloc's thresholds for the processes that move block data: serve
// (set here, in the running process) and the tgtd it starts (GLIBC_TUNABLES,
// src/daemon/tgtd.ts).
//
// Both allocate a buffer per piece of data in flight and free it soon after:
// serve one per body fetched from Swift (up to an object, 8 MiB; alignedBuffer),
// tgtd one per command (up to 1 MiB). By default glibc serves blocks over
// 128 KiB with mmap, raising that threshold as it sees them freed, and gives
// the top of its heap back to the kernel once 2x that is free there. Either
// way much of a cold stream's memory came back from the kernel as new pages:
// a page fault, and a page zeroed, for every 4 KiB about to be overwritten.
// With blocks up to 32 MiB served from the heap and up to 64 MiB of free top
// kept, freed buffers are reused as they are. By hand, a cold 1M QD16 stream
// of a 1 GiB volume: serve's page faults per MB 2-33 -> 0-2 and its CPU per MB
// 1.33/1.20/1.17 -> 1.16/1.07/1.10 ms (3 alternating pairs); its peak RSS
// rose from 202-218 to 238-246 MiB.
//
// What is kept is given back every TRIM_EVERY_MS (malloc_trim), so that a
// gateway that has gone idle does not hold it. Measured here: a trim of
// 64 MiB takes ~3 ms and faulting it in again ~20 ms more than reusing it,
// so once in 30 s it costs a busy serve under 0.1% of one core.

/** Blocks up to this size come from malloc's heap: 32 MiB, past a body of the default 8 MiB object and tgtd's largest command buffer. */
export const MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024;
/** Free memory at the top of the heap kept for reuse before it is given back. */
export const MALLOC_TRIM_THRESHOLD = 64 * 1024 * 1024;

/** How often the free memory kept is given back. */
export const TRIM_EVERY_MS = 30_000;

/**
 * Sets the thresholds in this process, and gives what they keep back every
 * TRIM_EVERY_MS for as long as it runs; false if glibc refused them (another
 * libc: nothing changes).
 */
export async function reuseFreedBuffers(): Promise<boolean> {
  const { mallocTuning } = await import('../native/addons.js');
  const tuning = mallocTuning();
  if (!tuning.setThresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)) return false;
  setInterval(() => tuning.trim(), TRIM_EVERY_MS).unref();
  return true;
}
