// Many volumes on one gateway (issue 16): tgtd's threads do not grow with its
// swift LUNs (bs_swift's one worker pool), and every one of 200 volumes
// served at once reads back what was imported into it, through real tgtd,
// bs_swift, serve and a real Swift.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, type DevSwift } from './fixtures/swift.js';
import { tempDir } from './fixtures/files.js';
import { qemuIoOk } from './fixtures/initiators.js';
import { startServe, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { startTgtd, type Tgtd } from './fixtures/tgtd.js';
import { Engine } from '../src/engine/engine.js';
import { swiftStoreFromEnv } from '../src/store/swift-store.js';
import { runPool } from '../src/store/run-pool.js';

const VOLUMES = 200;
const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let tgtd: Tgtd | null = null;
let serve: Serve | null = null;

const names = Array.from({ length: VOLUMES }, (_, i) => `many-${String(i).padStart(3, '0')}`);
/** Volume i holds 2 MiB of the byte i + 1. */
const pattern = (i: number): number => i + 1;

before(async () => {
  if (!fs.existsSync('/usr/lib/tgt/backing-store/bs_swift.so')) throw new Error('bs_swift.so is not installed in /usr/lib/tgt/backing-store: run scripts/setup');
  swift = await startSwift();
  tmp = tempDir();
  const stateDir = path.join(tmp.dir, 'state');
  env = swiftvolEnv(swift, stateDir);
  // imported in-process: the CLI's start-up, once per volume, is not what is tested here
  const store = swiftStoreFromEnv(env)!;
  try {
    const engine = new Engine(store, stateDir);
    await runPool([...names.entries()], 8, async ([i, name]) => {
      const image = path.join(tmp.dir, `${name}.raw`);
      fs.writeFileSync(image, Buffer.alloc(2 * MiB, pattern(i)));
      await engine.importImage(image, name, { objectSize: MiB, concurrency: 2 });
      fs.rmSync(image);
    });
  } finally {
    await store.close();
  }
  tgtd = await startTgtd();
});

after(async () => {
  if (serve) await serve.stop();
  if (tgtd) await tgtd.stop();
  await swift?.stop();
  tmp?.remove();
});

function threadsOf(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/task`).length;
}

test('target add of several: a name that does not exist, or one named twice, changes nothing', () => {
  const missing = swiftvolSync(['target', 'add', names[0]!, 'no-such-volume', names[1]!], env);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^swiftvol: volume 'no-such-volume' does not exist\n$/);
  const twice = swiftvolSync(['target', 'add', names[0]!, names[0]!], env);
  assert.equal(twice.status, 2);
  assert.match(twice.stderr, /volume 'many-000' is named twice/);
  const list = JSON.parse(swiftvolSync(['target', 'list', '--json'], env).stdout) as unknown[];
  assert.deepEqual(list, [], 'nothing was exported');
  const notExported = swiftvolSync(['target', 'remove', names[0]!], env);
  assert.equal(notExported.status, 1);
  assert.match(notExported.stderr, /volume 'many-000' is not exported/);
});

test(`tgtd's threads stay the same from 1 to ${VOLUMES} swift LUNs, and every volume reads back its data`, async () => {
  const first = swiftvolSync(['target', 'add', names[0]!], env);
  assert.equal(first.status, 0, first.stderr);
  serve = await startServe(env, tgtd!.port, { tgtdControl: tgtd!.control });
  await qemuIoOk(serve.url(names[0]!), [`read -P ${pattern(0)} 0 2M`]);
  const withOne = threadsOf(tgtd!.pid);

  const refused = swiftvolSync(['target', 'add', names[1]!, 'no-such-volume'], env);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /^swiftvol: volume 'no-such-volume' does not exist\n$/);
  assert.deepEqual((JSON.parse(swiftvolSync(['target', 'list', '--json'], env).stdout) as Array<{ volume: string }>).map((t) => t.volume), [names[0]], 'serve added nothing');
  const added = swiftvolSync(['target', 'add', ...names.slice(1)], env, 600_000);
  assert.equal(added.status, 0, added.stderr);
  // each volume read once, a few initiators at a time
  await runPool([...names.entries()], 4, async ([i, name]) => {
    await qemuIoOk(serve!.url(name), [`read -P ${pattern(i)} 0 2M`]);
  });
  const withAll = threadsOf(tgtd!.pid);
  assert.equal(withAll, withOne, `tgtd had ${withOne} threads with one LUN and ${withAll} with ${VOLUMES}`);
  assert.ok(withAll < 16 + 8, `one pool of 16 workers, not 16 per LUN (${withAll} threads)`);

  const removed = swiftvolSync(['target', 'remove', ...names.slice(0, 10)], env, 600_000);
  assert.equal(removed.status, 0, removed.stderr);
  const left = (JSON.parse(swiftvolSync(['target', 'list', '--json'], env).stdout) as Array<{ volume: string }>).map((t) => t.volume);
  assert.deepEqual(left, names.slice(10));
  assert.equal(threadsOf(tgtd!.pid), withOne, 'and the same after removing some');
});

test('in a shared tgtd, a tid another tool took after serve listed them: target add takes another, and both targets stay', async () => {
  assert.ok(serve, 'serve runs (the test before)');
  const tids = async (): Promise<Map<number, string>> => {
    const out = await tgtd!.tgtadm(['--lld', 'iscsi', '--mode', 'target', '--op', 'show']);
    return new Map([...out.matchAll(/^Target (\d+): (\S+)$/gm)].map((m) => [Number(m[1]), m[2]!]));
  };
  const before = await tids();
  let free = 1;
  while (before.has(free)) free++;
  // the tids of the volumes removed above are free again: serve would pick this one
  const other = 'iqn.2026-11.org.swiftvol.test:another-tool';
  await tgtd!.tgtadm(['--lld', 'iscsi', '--mode', 'target', '--op', 'new', '--tid', String(free), '--targetname', other]);
  try {
    const added = swiftvolSync(['target', 'add', names[0]!], env);
    assert.equal(added.status, 0, added.stderr);
    const after = await tids();
    assert.equal(after.get(free), other, "the other tool's target keeps its tid");
    const ours = [...after].filter(([, iqn]) => iqn.endsWith(`:${names[0]!}`));
    assert.equal(ours.length, 1, `one target for ${names[0]!}`);
    assert.notEqual(ours[0]![0], free);
    await qemuIoOk(serve!.url(names[0]!), [`read -P ${pattern(0)} 0 2M`]);
    const removed = swiftvolSync(['target', 'remove', names[0]!], env);
    assert.equal(removed.status, 0, removed.stderr);
    const last = await tids();
    assert.equal(last.get(free), other, "target remove leaves the other tool's target");
    assert.ok(![...last.values()].some((iqn) => iqn.endsWith(`:${names[0]!}`)), `the target of ${names[0]!} is gone`);
  } finally {
    await tgtd!.tgtadm(['--lld', 'iscsi', '--mode', 'target', '--op', 'delete', '--tid', String(free)]);
  }
});
