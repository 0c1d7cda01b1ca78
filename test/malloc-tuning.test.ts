// serve's malloc thresholds (src/os/malloc-tuning.ts): with them, body-sized
// buffers freed in bursts are reused from malloc's heap, so a new round of
// them costs no page faults; trim gives what they keep back; bad values
// are refused.
// Each case runs in a child Node (with --expose-gc), so that the test
// runner's own allocations do not count and its malloc is left as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mallocTuning } from '../src/native/addons.js';

const addons = fileURLToPath(new URL('../src/native/addons.js', import.meta.url));
const tuning = fileURLToPath(new URL('../src/os/malloc-tuning.js', import.meta.url));

/** Rounds measured, after 2 that let malloc settle. */
const ROUNDS = 10;
const BUFFERS = 6;

/**
 * Minor page faults, and pages written, of rounds 3 to 12 of: 6 buffers of 1 to
 * 8 MiB at once (serve's bodies in flight: whole objects and ranges of a
 * read-ahead; the sizes are the same each run), each written whole, then all
 * dropped, collected, and let be freed. tuned: reuseFreedBuffers() first.
 */
function faultsOfRounds(tuned: boolean): { faults: number; pages: number } {
  const script = `
    const { alignedBuffer } = await import(${JSON.stringify(addons)});
    const { reuseFreedBuffers } = await import(${JSON.stringify(tuning)});
    if (${tuned} && !(await reuseFreedBuffers())) throw new Error('glibc refused the thresholds');
    let faults = 0, pages = 0, seed = 1;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let round = 0; round < ${ROUNDS + 2}; round++) {
      const before = process.resourceUsage().minorPageFault;
      let live = [];
      for (let i = 0; i < ${BUFFERS}; i++) live.push(alignedBuffer(Math.floor((1 + 7 * next()) * 256) * 4096).fill(round + i));
      if (round >= 2) pages += live.reduce((n, b) => n + b.length / 4096, 0);
      live = null;
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 50)); // V8 frees array buffers off the main thread
      if (round >= 2) faults += process.resourceUsage().minorPageFault - before;
    }
    console.log(JSON.stringify({ faults, pages }));`;
  return JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' })) as { faults: number; pages: number };
}

test('freed body-sized buffers are reused: new rounds of them cost few page faults, and far fewer than without', () => {
  const tuned = faultsOfRounds(true);
  const untuned = faultsOfRounds(false);
  assert.ok(tuned.faults < tuned.pages * 0.15, `tuned: ${tuned.faults} page faults for ${tuned.pages} pages written`);
  assert.ok(tuned.faults * 3 < untuned.faults, `tuned ${tuned.faults} page faults against untuned ${untuned.faults}`);
});

test('what the thresholds keep, trim gives back to the kernel', () => {
  const script = `
    const { alignedBuffer, mallocTuning } = await import(${JSON.stringify(addons)});
    const { reuseFreedBuffers } = await import(${JSON.stringify(tuning)});
    if (!(await reuseFreedBuffers())) throw new Error('glibc refused the thresholds');
    let live = [];
    for (let i = 0; i < 6; i++) live.push(alignedBuffer(8 * 1024 * 1024).fill(i));
    live = null;
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const kept = process.memoryUsage().rss;
    const trimmed = mallocTuning().trim();
    console.log(JSON.stringify({ kept, after: process.memoryUsage().rss, trimmed }));`;
  const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' })) as { kept: number; after: number; trimmed: boolean };
  assert.equal(r.trimmed, true);
  // 48 MiB of buffers were freed into the heap and kept there
  assert.ok(r.kept - r.after > 32 * 1024 * 1024, `RSS ${r.kept} before trim, ${r.after} after`);
});

test('setThresholds refuses, before calling glibc, what is not two byte counts it can take', () => {
  assert.throws(() => mallocTuning().setThresholds(-1, 0), /0 to 2\^31-1 bytes/);
  assert.throws(() => mallocTuning().setThresholds(2 ** 31, 0), /0 to 2\^31-1 bytes/);
  assert.throws(() => (mallocTuning().setThresholds as unknown as (a: number) => boolean)(1), /setThresholds\(mmapThreshold, trimThreshold\)/);
});
