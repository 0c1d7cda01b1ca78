// Snapshots as versions in a real Swift, taken while the volume is written
// over iSCSI; clones, rollback, garbage collection, reopening elsewhere and
// the lease.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, freePort, pauseSwiftProxy, type DevSwift } from './fixtures/swift.js';
import { spawn } from 'node:child_process';
import { cliPath, tempDir, writeImage, sha256File } from './fixtures/files.js';
import { qemuIo, qemuIoOk, qemuImg } from './fixtures/initiators.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { swiftStoreFromEnv } from '../src/store/swift-store.js';
import type { ObjectStore } from '../src/store/object-store.js';
import { containerName } from '../src/format/volume-format.js';

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024; // the pattern writer's unit
const BLOCKS = 64; // pattern region: 4 MiB at offset 0
let swift: DevSwift;
let store: ObjectStore;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | null = null;
let port: number;

function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  return swiftvolSync(args, { ...env, ...extraEnv });
}

function ok(args: string[], extraEnv: NodeJS.ProcessEnv = {}): string {
  const r = cli(args, extraEnv);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function fails(args: string[], status: number, message: RegExp, extraEnv: NodeJS.ProcessEnv = {}): void {
  const r = cli(args, extraEnv);
  assert.equal(r.status, status, `swiftvol ${args.join(' ')}: ${r.stdout} ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
}

async function objectNames(volume: string, prefix: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const o of store.list(containerName(volume), prefix)) names.push(o.name);
  } catch {
    return [];
  }
  return names;
}

/** Objects referenced by the kept version tables of `volume` (from the tables themselves). */
async function referencedObjects(volume: string): Promise<Set<string>> {
  const refs = new Set<string>();
  for (const v of await objectNames(volume, 'versions/')) {
    const doc = JSON.parse((await store.get(containerName(volume), v)).toString()) as { sources: string[]; chunks: Array<[number, number, string, string]> };
    for (const [chunk, src, gen] of doc.chunks) {
      if (doc.sources[src] === containerName(volume)) refs.add(`data/${gen}/${chunk.toString(16).padStart(12, '0')}`);
    }
  }
  return refs;
}

before(async () => {
  swift = await startSwift();
  store = swiftStoreFromEnv({ ST_AUTH: swift.authUrl, ST_USER: swift.user, ST_KEY: swift.key })!;
  tmp = tempDir();
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'), { SWIFTVOL_LEASE_SECONDS: '4' });
  port = await freePort();
  // The volume: a base of 24 MiB in Swift (1 MiB objects), 40 MiB in all.
  const image = path.join(tmp.dir, 'base.raw');
  writeImage(image, 24 * MiB, MiB, (i) => i % 5 === 4);
  ok(['import', image, 'vol', '--object-size', '1M', '--size', '40M']);
  ok(['target', 'add', 'vol']);
  serve = await startServe(env, port);
});

after(async () => {
  if (serve) await serve.stop();
  await stopLeftTgtd(path.join(tmp.dir, 'state'));
  await store?.close();
  await swift?.stop();
  tmp?.remove();
});

/** Round number of each pattern block in a raw image (pattern byte = round). */
function rounds(file: string): number[] {
  const data = fs.readFileSync(file);
  const out: number[] = [];
  for (let b = 0; b < BLOCKS; b++) {
    const block = data.subarray(b * BLOCK, (b + 1) * BLOCK);
    const round = block[0]!;
    assert.ok(block.every((x) => x === round), `block ${b} is torn`);
    out.push(round);
  }
  return out;
}

test('a snapshot taken while iSCSI writes go on holds exactly the content at the freeze', async () => {
  const url = serve!.url('vol');
  // 8 MiB of changes for the snapshot to upload, beyond the pattern region.
  await qemuIoOk(url, ['write -P 0x3c 20M 8M', 'write -P 1 0 4M', 'flush']);
  // Record k writes round floor(k/64)+2 into block k%64, one after the other.
  const writes: string[] = [];
  const total = 64 * 40;
  for (let k = 0; k < total; k++) writes.push(`write -P ${Math.floor(k / BLOCKS) + 2} ${(k % BLOCKS) * BLOCK} ${BLOCK}`);
  const writer = qemuIo(url, writes, { timeoutMs: 180_000 });
  await new Promise((r) => setTimeout(r, 1500));
  const snap = cli(['snapshot', 'create', 'vol', 'during']);
  const w = await writer;
  assert.equal(snap.status, 0, snap.stderr);
  assert.equal(w.code, 0, w.stderr);

  const out = path.join(tmp.dir, 'during.raw');
  ok(['export', 'vol@during', out]);
  const r = rounds(out);
  // Point in time: a prefix of the write sequence. Blocks before the cut hold round n+1, the rest round n.
  const n = Math.min(...r);
  const cut = r.findIndex((x) => x === n);
  assert.ok(r.every((x, b) => x === (b < cut ? n + 1 : n)), `not a point in time: ${r.join(',')}`);
  const frozenAt = (n - 1) * BLOCKS + (cut === 0 ? 0 : cut) - 1;
  assert.ok(frozenAt > 0 && frozenAt < total - 1, `the freeze fell inside the writes (record ${frozenAt} of ${total})`);
  // The rest of the snapshot: the 8 MiB of changes and the base.
  const data = fs.readFileSync(out);
  assert.ok(data.subarray(20 * MiB, 28 * MiB).every((x) => x === 0x3c));
  // The live volume holds every later write.
  const finalRound = Math.floor((total - 1) / BLOCKS) + 2;
  await qemuIoOk(url, [`read -P ${finalRound} 0 4M`, 'read -P 0x3c 20M 8M']);
  const list = JSON.parse(ok(['snapshot', 'list', 'vol', '--json'])) as Array<{ name: string; state: string; changedBytes: number }>;
  assert.deepEqual(list.map((s) => [s.name, s.state]), [['during', 'complete']]);
  assert.ok(list[0]!.changedBytes >= 12 * MiB);
});

test('kill -9 of serve during a snapshot upload: no half snapshot, a new one succeeds, orphans are collected', async (t) => {
  const url = serve!.url('vol');
  await qemuIoOk(url, ['write -P 0x77 4M 16M', 'flush']);
  const r = cli(['snapshot', 'create', 'vol', 'cut', '--no-wait']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /frozen/);
  await serve!.kill();
  serve = await startServe(env, port);
  const names = (JSON.parse(ok(['snapshot', 'list', 'vol', '--json'])) as Array<{ name: string }>).map((s) => s.name);
  const cutExists = names.includes('cut');
  t.diagnostic(cutExists ? 'the snapshot had committed before the kill' : 'the kill cut the upload short: no snapshot');
  if (cutExists) {
    // It got committed before the kill: it must be whole.
    const out = path.join(tmp.dir, 'cut.raw');
    ok(['export', 'vol@cut', out]);
    assert.ok(fs.readFileSync(out).subarray(4 * MiB, 20 * MiB).every((x) => x === 0x77));
  }
  ok(['snapshot', 'create', 'vol', 'again']);
  const out = path.join(tmp.dir, 'again.raw');
  ok(['export', 'vol@again', out]);
  assert.ok(fs.readFileSync(out).subarray(4 * MiB, 20 * MiB).every((x) => x === 0x77), 'the writes before the kill are in the new snapshot');
  // Every data object left is referenced by a table: the interrupted upload's are gone
  // (collection runs right after a snapshot commits, in the background).
  let unreferenced: string[] = [];
  for (let i = 0; i < 100; i++) {
    const refs = await referencedObjects('vol');
    unreferenced = (await objectNames('vol', 'data/')).filter((n) => !refs.has(n));
    if (unreferenced.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(unreferenced, []);
});

test('a clone reads as its snapshot, is independent of it, and survives deleting the parent snapshots', async () => {
  const before = path.join(tmp.dir, 'again-before.raw');
  ok(['export', 'vol@again', before]);
  ok(['clone', 'vol@again', 'kid']);
  const info = JSON.parse(ok(['volume', 'info', 'kid', '--json'])) as { parent: { volume: string; snapshot: string }; size: number };
  assert.deepEqual([info.parent.volume, info.parent.snapshot, info.size], ['vol', 'again', 40 * MiB]);
  assert.deepEqual((JSON.parse(ok(['volume', 'info', 'vol', '--json'])) as { children: string[] }).children, ['kid']);
  assert.deepEqual(await objectNames('kid', 'data/'), [], 'a clone copies no data');

  ok(['target', 'add', 'kid']);
  const kidUrl = serve!.url('kid');
  const read = path.join(tmp.dir, 'kid.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', kidUrl, read]);
  assert.equal(sha256File(read), sha256File(before));

  await qemuIoOk(kidUrl, ['write -P 0xee 1M 3M', 'flush']);
  ok(['snapshot', 'create', 'kid', 'k1']);
  // Neither the parent's snapshot nor the parent changed.
  const again = path.join(tmp.dir, 'again-after.raw');
  ok(['export', 'vol@again', again]);
  assert.equal(sha256File(again), sha256File(before));
  await qemuIoOk(serve!.url('vol'), [`read -P 0x77 4M 16M`]);

  // Deleting the parent's snapshots never breaks the clone.
  for (const s of (JSON.parse(ok(['snapshot', 'list', 'vol', '--json'])) as Array<{ name: string }>).map((x) => x.name)) {
    ok(['snapshot', 'delete', 'vol', s]);
  }
  const expected = fs.readFileSync(before);
  expected.fill(0xee, MiB, 4 * MiB);
  const kidNow = path.join(tmp.dir, 'kid-now.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', kidUrl, kidNow]);
  assert.ok(fs.readFileSync(kidNow).equals(expected));
  const k1 = path.join(tmp.dir, 'k1.raw');
  ok(['export', 'kid@k1', k1]);
  assert.ok(fs.readFileSync(k1).equals(expected));
  // The parent cannot go while the clone borrows from it.
  ok(['target', 'remove', 'vol']);
  fails(['volume', 'delete', 'vol'], 1, /clones 'kid' still use its data/);
  ok(['target', 'add', 'vol']);
});

test('rollback restores a snapshot byte for byte, and is refused while served or with unsnapshotted writes', async () => {
  await qemuIoOk(serve!.url('vol'), ['write -P 0x21 0 2M', 'flush']);
  ok(['snapshot', 'create', 'vol', 'good']);
  const good = path.join(tmp.dir, 'good.raw');
  ok(['export', 'vol@good', good]);
  await qemuIoOk(serve!.url('vol'), ['write -P 0x99 0 6M', 'write -P 0x98 30M 1M', 'flush']);
  fails(['snapshot', 'rollback', 'vol', 'good'], 1, /^swiftvol: cannot roll back volume 'vol': it is being served \(swiftvol serve\); run 'swiftvol target remove vol' first$/m);
  ok(['target', 'remove', 'vol']);
  fails(['snapshot', 'rollback', 'vol', 'good'], 1, /written since its last snapshot; --force/);
  fails(['snapshot', 'rollback', 'vol', 'nosuch', '--force'], 1, /has no snapshot 'nosuch'/);
  ok(['snapshot', 'rollback', 'vol', 'good', '--force']);
  const now = path.join(tmp.dir, 'rolled.raw');
  ok(['export', 'vol', now]);
  assert.equal(sha256File(now), sha256File(good));
  ok(['target', 'add', 'vol']);
  await qemuIoOk(serve!.url('vol'), ['read -P 0x21 0 2M']);
});

test('another state directory reopens a volume at its latest snapshot; a second serve of a held volume is refused', async () => {
  const latest = path.join(tmp.dir, 'latest.raw');
  ok(['snapshot', 'create', 'vol', 'handoff']);
  ok(['export', 'vol@handoff', latest]);
  const other = { SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'elsewhere') };
  // The volume is held by the running serve: another daemon must not serve it.
  const otherPort = await freePort();
  ok(['target', 'add', 'vol'], other);
  const second = await startServe({ ...env, ...other }, otherPort);
  try {
    const list = JSON.parse(swiftvolSync(['target', 'list', '--json'], { ...env, ...other }).stdout) as Array<{ state: string; error?: string }>;
    assert.equal(list[0]!.state, 'failed');
    assert.match(list[0]!.error ?? '', /volume 'vol' is held by .*:\d+:.*state \(swiftvol serve/);
  } finally {
    await second.stop();
  }
  // Once the first serve is stopped, the other machine attaches it at the latest snapshot.
  await serve!.stop();
  serve = null;
  ok(['volume', 'attach', 'vol'], other);
  const there = path.join(tmp.dir, 'there.raw');
  ok(['export', 'vol', there], other);
  assert.equal(sha256File(there), sha256File(latest));
  serve = await startServe(env, port);
});

test('a snapshot asked for while Swift does not answer: frozen at once, says it waits for the store, completes when Swift is back', async () => {
  const url = serve!.url('vol');
  await qemuIoOk(url, ['write -P 0x51 30M 64k', 'flush']);
  const resume = pauseSwiftProxy(swift);
  let resumed = false;
  try {
    const child = spawn(process.execPath, [cliPath, 'snapshot', 'create', 'vol', 'outage'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    for (let i = 0; !/waiting for the store/.test(stderr); i++) {
      assert.ok(i < 300, `no word of the wait after 30 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(stderr, /^swiftvol: waiting for the store \(swift http:\/\/127\.0\.0\.1:\d+\/.*\): the snapshot completes when it answers; see 'swiftvol snapshot list vol'$/m);
    assert.doesNotMatch(stderr, /unexpected error/);
    // Written after the request: not part of the snapshot (the volume was frozen when it was asked for).
    await qemuIoOk(url, ['write -P 0x52 30M 64k', 'flush']);
    resume();
    resumed = true;
    assert.equal(await exited, 0, stderr);
    assert.match(stdout, /snapshot vol@outage created: version \d+/);
  } finally {
    if (!resumed) resume();
  }
  const out = path.join(tmp.dir, 'outage.raw');
  ok(['export', 'vol@outage', out]);
  const data = fs.readFileSync(out);
  assert.ok(data.subarray(30 * MiB, 30 * MiB + 64 * 1024).every((x) => x === 0x51), 'the snapshot holds what was there when it was asked for');
  await qemuIoOk(url, [`read -P 0x52 30M 64k`]);
  ok(['snapshot', 'delete', 'vol', 'outage']);
});

test('bad snapshot input is refused', () => {
  fails(['snapshot', 'create', 'vol', 'handoff'], 1, /already has a snapshot 'handoff'/);
  fails(['snapshot', 'create', 'vol', 'Bad Name'], 2, /invalid snapshot name/);
  fails(['snapshot', 'create', 'ghost', 's'], 1, /volume 'ghost' does not exist/);
  fails(['clone', 'vol', 'x'], 2, /not VOLUME@SNAPSHOT/);
  fails(['clone', 'vol@nosuch', 'x'], 1, /has no snapshot 'nosuch'/);
  fails(['clone', 'vol@handoff', 'kid'], 1, /volume 'kid' already exists/);
  fails(['export', 'vol@nosuch', path.join(tmp.dir, 'n.raw')], 1, /has no snapshot 'nosuch'/);
  fails(['snapshot', 'delete', 'vol', 'nosuch'], 1, /has no snapshot 'nosuch'/);
});

test('after deleting every snapshot and volume, no container is left', async () => {
  if (serve) await serve.stop();
  serve = null;
  for (const t of ['vol', 'kid']) cli(['target', 'remove', t]);
  for (const v of ['kid', 'vol']) {
    for (const s of (JSON.parse(ok(['snapshot', 'list', v, '--json'])) as Array<{ name: string }>).map((x) => x.name)) ok(['snapshot', 'delete', v, s]);
    ok(['volume', 'delete', v]);
  }
  assert.deepEqual(await store.listContainers('swiftvol-'), []);
});
