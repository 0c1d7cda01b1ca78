// How far a swiftvol process's V8 heap may grow between two mark-compacts
// while it is small; the CLI sets it for every command (serve, import,
// export and snapshot move buffers through a small heap alike).
//
// serve's own heap is small (about 12 MiB with a few volumes) while it moves
// about 200 MB/s of buffers through it on cold reads; V8 sizes the next
// mark-compact's limit from that small heap, and so marked it about ten times
// a second: a quarter of serve's CPU per cold MB. While the heap is small, it
// may now grow to SMALL_HEAP_LIMIT before it is marked; once it is larger,
// V8's own sizing applies again (a gateway with many volumes keeps its usual
// footprint).
//
// A runtime flag, set here and kept in step: --heap-growing-percent is read each
// time V8 sets a new limit. (--initial-old-space-size works only at start,
// and in the CLI's shebang it slowed every command's start by 20 to 90 ms;
// this costs none, 143-145 ms for `--version` with and without here.)
import v8 from 'node:v8';

/** The heap below which its growth is widened: the limit it may reach before a mark-compact. */
export const SMALL_HEAP_LIMIT = 64 * 1024 * 1024;
/** How often the heap is looked at. */
const CHECK_MS = 5000;
/** Percent steps of the setting (so that it is not set anew for every small change of the heap). */
const STEP = 50;

/** The --heap-growing-percent for a heap of `used` bytes: 0 (V8's own sizing) for a heap that is not small. */
export function growingPercent(used: number): number {
  if (used <= 0 || used * 2 >= SMALL_HEAP_LIMIT) return 0;
  return Math.floor(((SMALL_HEAP_LIMIT / used - 1) * 100) / STEP) * STEP;
}

/** Keeps the setting in step with the heap for as long as the process runs. */
export function widenSmallHeapGrowth(): void {
  let current = -1;
  const check = (): void => {
    const percent = growingPercent(v8.getHeapStatistics().used_heap_size);
    if (percent === current) return;
    v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
    current = percent;
  };
  check();
  setInterval(check, CHECK_MS).unref();
}
