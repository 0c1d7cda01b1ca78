// serve --engine-threads: volumes served by worker threads, through the real
// path (qemu-img/qemu-io over iSCSI -> tgtd -> bs_swift.so -> serve -> a
// real Swift). What must hold: every byte read back is the byte written; a
// volume and its clones are served by the thread of their lineage's root
// (and fetch each object once there); the block requests are carried by the
// engine threads, not by the main thread; a snapshot of a volume served by a
// thread and a clean stop keep what was written; each thread has its share
// of the cache budget, and a restart with fewer threads drops the caches it
// no longer has. The whole suite also runs with SWIFTVOL_TEST_ENGINE_THREADS=N
// (test/fixtures/serve.ts) to try every other serve test on engine threads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { sha256, sha256File, tempDir, writeImage } from './fixtures/files.js';
import { qemuImg, qemuIoOk } from './fixtures/initiators.js';
import { scrapeMetrics, sample, type Samples } from './fixtures/metrics.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import type { Worker } from 'node:worker_threads';
import { EngineThreads, threadIndex } from '../src/daemon/engine-threads.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let stateDir: string;
let serve: Serve | null = null;
let metricsUrl: string;
/** Two roots that hash to different threads of 2, and what they hold. */
const A = 'golden';
let B = '';
let contentA: Buffer;
let contentB: Buffer;

function ok(args: string[]): string {
  const r = swiftvolSync(args, env);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function startThreaded(threads: number, cacheSize: string): Promise<void> {
  serve = await startServe(env, await freePort(), { args: ['--engine-threads', String(threads), '--cache-size', cacheSize, '--metrics', '127.0.0.1:0'] });
  const m = /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(serve.output());
  assert.ok(m, `serve says where its metrics are:\n${serve.output()}`);
  metricsUrl = m[1]!;
}

before(async () => {
  if (!fs.existsSync('/usr/lib/tgt/backing-store/bs_swift.so')) throw new Error('bs_swift.so is not installed in /usr/lib/tgt/backing-store: run scripts/setup');
  swift = await startSwift();
  tmp = tempDir();
  stateDir = path.join(tmp.dir, 'state');
  env = swiftvolEnv(swift, stateDir);
  for (let i = 0; B === ''; i++) if (threadIndex(`other-${i}`, 2) !== threadIndex(A, 2)) B = `other-${i}`;
  contentA = writeImage(path.join(tmp.dir, 'a.raw'), SIZE, MiB, (piece) => piece % 5 === 4);
  contentB = writeImage(path.join(tmp.dir, 'b.raw'), SIZE, MiB, () => false);
  ok(['import', path.join(tmp.dir, 'a.raw'), A]);
  ok(['import', path.join(tmp.dir, 'b.raw'), B]);
  ok(['snapshot', 'create', A, 'base']);
  ok(['clone', `${A}@base`, 'vm1']);
  ok(['snapshot', 'create', 'vm1', 'once']);
  ok(['clone', 'vm1@once', 'vm2']);
  ok(['target', 'add', A, B, 'vm1', 'vm2']);
  await startThreaded(2, '128M');
});

after(async () => {
  if (serve) await serve.stop();
  await stopLeftTgtd(stateDir);
  await swift?.stop();
  tmp?.remove();
});

const scrape = (): Promise<Samples> => scrapeMetrics(metricsUrl);

const get = sample;
const received = (s: Samples): number => get(s, 'swiftvol_store_bytes_total{store="swift",direction="received"}');

/** CPU (clock ticks) of serve's main thread, and of the whole process. */
function cpuTicks(pid: number): { main: number; all: number } {
  const ticks = (file: string): number => {
    const fields = fs.readFileSync(file, 'utf8').replace(/^.*\) /s, '').split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime
  };
  return { main: ticks(`/proc/${pid}/task/${pid}/stat`), all: ticks(`/proc/${pid}/stat`) };
}

async function readAll(volume: string): Promise<Buffer> {
  const out = path.join(tmp.dir, `${volume}.read`);
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', serve!.url(volume), out], { timeoutMs: 120_000 });
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

test('cold reads of two volumes on two threads come back exact, and the main thread does not carry them', async (t) => {
  const before = cpuTicks(serve!.pid);
  const [a, b] = await Promise.all([readAll(A), readAll(B)]);
  const spent = cpuTicks(serve!.pid);
  assert.equal(sha256(a), sha256(contentA), `${A} reads back as imported`);
  assert.equal(sha256(b), sha256(contentB), `${B} reads back as imported`);
  const main = spent.main - before.main;
  const all = spent.all - before.all;
  assert.ok(all > 0, 'serve spent CPU on the reads');
  t.diagnostic(`serve's CPU on 64 MiB read cold: ${all} ticks, of which its main thread ${main}`);
  // Without engine threads the main thread receives, checks and answers every cold byte: most of serve's CPU.
  assert.ok(main * 4 < all, `serve's main thread spent ${main} of serve's ${all} ticks on 64 MiB read cold: the engine threads carry the reads`);
  const s = await scrape();
  const threadA = s.get(`swiftvol_volume_engine_thread{volume="${A}"}`);
  const threadB = s.get(`swiftvol_volume_engine_thread{volume="${B}"}`);
  assert.equal(threadA, threadIndex(A, 2), `${A} is served by the thread of its name`);
  assert.equal(threadB, threadIndex(B, 2), `${B} is served by the thread of its name`);
  assert.notEqual(threadA, threadB);
});

test("clones are served by their root's thread and read its objects from that thread's cache", async () => {
  // the cache is filled after the reply: wait until it holds what the first test read (all of B, A but its 6 zero MiB)
  for (const deadline = Date.now() + 10_000; get(await scrape(), 'swiftvol_cache_bytes{kind="held"}') < SIZE + SIZE - 6 * MiB && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const s0 = await scrape();
  const [one, two] = await Promise.all([readAll('vm1'), readAll('vm2')]);
  const s1 = await scrape();
  assert.equal(sha256(one), sha256(contentA), 'a clone reads its snapshot');
  assert.equal(sha256(two), sha256(contentA), "a clone of a clone reads its parent's snapshot");
  for (const clone of ['vm1', 'vm2']) assert.equal(s1.get(`swiftvol_volume_engine_thread{volume="${clone}"}`), threadIndex(A, 2), `${clone} is on ${A}'s thread`);
  // 64 MiB read by the clones, all of it objects the golden volume's read fetched: next to nothing from Swift (their tables)
  const fetched = received(s1) - received(s0);
  assert.ok(fetched < MiB, `the clones fetched ${fetched} bytes from Swift for 64 MiB read`);
});

test('writes on threads, a snapshot taken by a thread, and a clean stop keep every byte', async () => {
  await qemuIoOk(serve!.url('vm1'), ['write -P 0x3c 1M 3M', 'flush', 'read -P 0x3c 1M 3M']);
  await qemuIoOk(serve!.url(B), ['write -P 0xa7 30M 2M', 'read -P 0xa7 30M 2M']);
  // served: serve's thread freezes and uploads it
  ok(['snapshot', 'create', 'vm1', 'after']);
  await qemuIoOk(serve!.url('vm1'), ['write -P 0x11 0 4k']);
  assert.equal(await serve!.stop(), 0, 'serve stops cleanly');
  serve = null;
  const expected = Buffer.from(contentA);
  expected.fill(0x3c, MiB, 4 * MiB);
  ok(['export', 'vm1@after', path.join(tmp.dir, 'after.raw')]);
  assert.equal(sha256File(path.join(tmp.dir, 'after.raw')), sha256(expected), 'the snapshot holds the write before it');
  const bExpected = Buffer.from(contentB);
  bExpected.fill(0xa7, 30 * MiB, 32 * MiB);
  // the unflushed write of B was flushed by the stop; vm1's write after the snapshot stays local (its overlay)
  ok(['export', B, path.join(tmp.dir, 'b-now.raw')]);
  const now = fs.readFileSync(path.join(tmp.dir, 'b-now.raw'));
  assert.equal(sha256(now.subarray(30 * MiB)), sha256(bExpected.subarray(30 * MiB)), `${B}'s write is kept`);
});

test('each thread has its share of --cache-size; fewer threads drop the caches they no longer have', async () => {
  assert.ok(fs.existsSync(path.join(stateDir, 'cache-1')), "thread 1's cache is under cache-1");
  // the roots serve looked up are kept with the exports: the next start routes without asking the store
  const recorded = (JSON.parse(fs.readFileSync(path.join(stateDir, 'targets.json'), 'utf8')) as { targets: Array<{ volume: string; root?: string }> }).targets;
  assert.deepEqual(
    Object.fromEntries(recorded.map((t) => [t.volume, t.root])),
    { [A]: A, [B]: B, vm1: A, vm2: A },
    'each export records its lineage root',
  );
  await startThreaded(2, '64M');
  assert.equal(get(await scrape(), 'swiftvol_cache_bytes{kind="budget"}'), 64 * MiB, 'two threads of 32 MiB each: the bound in all');
  assert.match(serve!.output(), /2 engine thread\(s\), each with 32M of the clean cache/);
  await serve!.stop();
  serve = null;
  await startThreaded(1, '64M');
  assert.ok(!fs.existsSync(path.join(stateDir, 'cache-1')), "a serve with one thread removes thread 1's cache");
  const [a, b] = await Promise.all([readAll(A), readAll(B)]);
  assert.equal(sha256(a.subarray(0, 4 * MiB)), sha256(contentA.subarray(0, 4 * MiB)));
  assert.equal(sha256(b.subarray(0, 30 * MiB)), sha256(contentB.subarray(0, 30 * MiB)));
  const s1 = await scrape();
  assert.equal(s1.get(`swiftvol_volume_engine_thread{volume="${B}"}`), 0, 'one thread serves them all');
  assert.equal(get(s1, 'swiftvol_cache_bytes{kind="budget"}'), 64 * MiB);
  await serve!.stop();
  serve = null;
});

test('bad thread counts are refused with one line, before anything starts', () => {
  for (const [args, message] of [
    [['--engine-threads', '65'], /'65' is not a number of threads \(0 to 64\)/],
    [['--engine-threads', 'two'], /'two' is not a number of threads/],
    [['--engine-threads', '2', '--fetch-threads', '1'], /--fetch-threads and --engine-threads cannot both be given/],
  ] as const) {
    const r = swiftvolSync(['serve', '--portal', '127.0.0.1:1', ...args], env, 30_000);
    assert.notEqual(r.status, 0, args.join(' '));
    assert.match(r.stderr.split('\n')[0]!, message, 'said on the first line');
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('an engine thread that dies fails what it is asked from then on, and is reported once (serve then stops)', async () => {
  // in-process, on the embedded file store of a temporary state dir: what is tested is the thread's life, not a store
  const dir = tempDir();
  const deaths: Error[] = [];
  const saved = process.env.ST_AUTH;
  delete process.env.ST_AUTH;
  const threads = new EngineThreads({ count: 1, stateDir: dir.dir, cacheBudget: 16 * MiB, log: () => undefined, onDeath: (err) => deaths.push(err), lineageRoot: (name) => Promise.resolve(name) });
  try {
    await threads.start();
    const thread = threads.threads[0]!;
    assert.deepEqual((await thread.view()).volumes, [], 'the thread answers');
    await assert.rejects(thread.open('absent'), /volume 'absent' does not exist/, "the thread's engine answers for its store");
    const exited = new Promise((resolve) => (thread as unknown as { worker: Worker }).worker.once('exit', resolve));
    await (thread as unknown as { worker: Worker }).worker.terminate();
    await exited;
    assert.equal(deaths.length, 1, 'reported once');
    assert.match(deaths[0]!.message, /engine thread 0 exited/);
    await assert.rejects(thread.open('absent'), /engine thread 0 exited/, 'a later call fails: the thread is not started again');
    await assert.rejects(thread.startSnapshot('absent', 's'), /engine thread 0 exited/);
  } finally {
    await threads.stop();
    if (saved !== undefined) process.env.ST_AUTH = saved;
    dir.remove();
  }
  assert.equal(deaths.length, 1, 'a stop is no death');
});
