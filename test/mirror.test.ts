// Mirroring through the CLI and the engine, on three real one-node Swifts
// (plus a fourth, empty, for `mirror add`): placement, bad input, a copy
// corrupted on one cluster's disk (read from the other and repaired), split
// brain (two gateways that each see one cluster, simulated by a wrapper that
// drops the other side), and a cluster killed for good (attach from the two
// left, then a fresh cluster added and filled).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { tempDir, writeImage, sha256, sha256File } from './fixtures/files.js';
import { swiftvolSync } from './fixtures/serve.js';
import { Borrowed, contentOf, listing, startClusters, stopClusters, writeMirrorConfig, type Cluster } from './fixtures/mirror.js';
import { corrupt, objectFileHolding } from './fixtures/corrupt.js';
import { MirrorStore } from '../src/store/mirror-store.js';
import { FaultStore } from '../src/store/fault-store.js';
import { Engine } from '../src/engine/engine.js';
import type { ObjectStore } from '../src/store/object-store.js';

const MiB = 1024 * 1024;
let clusters: Cluster[];
let spare: Cluster;
let tmp: { dir: string; remove: () => void };
let config: string;

function env(stateDir: string, file = config, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, SWIFTVOL_CONFIG: file, SWIFTVOL_STATE_DIR: path.join(tmp.dir, stateDir), ...extra };
}

function sv(args: string[], e: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  return swiftvolSync(args, e);
}

function ok(args: string[], e: NodeJS.ProcessEnv): string {
  const r = sv(args, e);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface StoreJson {
  name: string;
  state: string;
  lacking?: number;
  latestVersion?: number | null;
}

function storesOf(volume: string, e: NodeJS.ProcessEnv): StoreJson[] {
  return (JSON.parse(ok(['volume', 'info', volume, '--json'], e)) as { stores: StoreJson[] }).stores;
}

before(async () => {
  const [three, one] = await Promise.all([startClusters(['east', 'west', 'north']), startClusters(['south'])]);
  clusters = three;
  spare = one[0]!;
  tmp = tempDir('swiftvol-mirror-');
  config = writeMirrorConfig(path.join(tmp.dir, 'stores.conf'), clusters, ['# three clusters', 'SWIFTVOL_MIRROR_READ_DEADLINE=1']);
});

after(async () => {
  await stopClusters([...clusters, spare]);
  tmp.remove();
});

test('an import lands on every store of the file, or on those --stores names; bad names change nothing', async () => {
  const image = path.join(tmp.dir, 'a.raw');
  writeImage(image, 20 * MiB, MiB, (i) => i % 5 === 4);
  ok(['import', image, 'all3'], env('s1'));
  assert.deepEqual(storesOf('all3', env('s1')).map((s) => [s.name, s.state, s.latestVersion]), [['east', 'in-sync', 1], ['west', 'in-sync', 1], ['north', 'in-sync', 1]]);
  ok(['import', image, 'two', '--stores', 'west,north'], env('s1'));
  assert.deepEqual(storesOf('two', env('s1')).map((s) => s.name), ['west', 'north']);

  const bad = sv(['import', image, 'bad1', '--stores', 'west,nowhere'], env('s1'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^swiftvol: --stores: no store 'nowhere' in the configuration \(stores: east, west, north\)\n$/);
  const twice = sv(['volume', 'create', 'bad2', '--size', '1G', '--stores', 'west,west'], env('s1'));
  assert.equal(twice.status, 2);
  assert.match(twice.stderr, /names a store twice/);
  assert.doesNotMatch(ok(['volume', 'list'], env('s1')), /bad1|bad2/);
  for (const c of clusters) assert.deepEqual(await c.store.listContainers('swiftvol-bad'), [], c.name);
});

test('config files: a bad section is a one-line error', () => {
  const file = path.join(tmp.dir, 'bad.conf');
  fs.writeFileSync(file, '[east]\nST_AUTH=http://127.0.0.1:1/auth/v1.0\nST_USER=a\nST_KEY=b\n[East Coast]\n');
  const r = sv(['volume', 'list'], env('s1', file));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^swiftvol: .*bad\.conf:5: store name 'East Coast' is not /);
  fs.writeFileSync(file, '[east]\nST_AUTH=http://127.0.0.1:1/auth/v1.0\nST_USER=a\nST_KEY=b\n[east]\n');
  assert.match(sv(['volume', 'list'], env('s1', file)).stderr, /bad\.conf:5: store \[east\] is named twice/);
  fs.writeFileSync(file, '[east]\nST_USER=a\n');
  assert.match(sv(['volume', 'list'], env('s1', file)).stderr, /^swiftvol: .*bad\.conf \[east\]: Swift credentials in ST_AUTH\/ST_USER\/ST_KEY are incomplete: ST_AUTH is not set\n$/);
  fs.writeFileSync(file, 'SWIFTVOL_MIRROR_DEADLINE=soon\n[east]\nST_AUTH=http://127.0.0.1:1/auth/v1.0\nST_USER=a\nST_KEY=b\n');
  assert.match(sv(['volume', 'list'], env('s1', file)).stderr, /SWIFTVOL_MIRROR_DEADLINE=soon: expected seconds/);
  const single = sv(['volume', 'resync', 'all3'], { PATH: process.env.PATH, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'lone') });
  assert.equal(single.status, 1);
  assert.match(single.stderr, /volume resync needs several stores: a config file with \[STORE\] sections/);
});

test('a copy corrupted on one cluster is read from the other and repaired', async () => {
  const image = path.join(tmp.dir, 'c.raw');
  const content = writeImage(image, 24 * MiB, MiB, () => false);
  ok(['import', image, 'corrupt', '--stores', 'east,west'], env('s1'));
  const east = clusters[0]!;
  const { file, at } = objectFileHolding(east.swift.dir, content, 9 * MiB + 8192);
  corrupt(file, [at, at + 300_000]);
  // a cold read from a fresh state dir: east comes first in the set
  const out = path.join(tmp.dir, 'c.out');
  const r = sv(['export', 'corrupt', out], env('fresh-c'));
  assert.equal(r.status, 0, r.stderr);
  assert.equal(sha256File(out), sha256(content), 'the right bytes, from west');
  // the bad copy was caught (east quarantines it when read whole, so the read again finds it gone and takes west's)
  assert.match(r.stderr, /swiftvol-corrupt\/data\/[0-9a-f]{16}\/000000000001: block \d+ failed its CRC32C check/);
  assert.match(r.stderr, /swiftvol-corrupt\/data\/[0-9a-f]{16}\/000000000001: repaired the copy on store 'east' from 'west'/);
  // the bad copy is repaired (in the background of that export): east alone verifies clean
  const eastOnly = { PATH: process.env.PATH, ST_AUTH: east.swift.authUrl, ST_USER: east.swift.user, ST_KEY: east.swift.key, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'east-only') };
  let verify = sv(['volume', 'verify', 'corrupt'], eastOnly);
  for (let i = 0; i < 20 && verify.status !== 0; i++) {
    await new Promise((res) => setTimeout(res, 250));
    verify = sv(['volume', 'verify', 'corrupt'], eastOnly);
  }
  assert.equal(verify.status, 0, `east's copy after the repair: ${verify.stdout}${verify.stderr}`);
  assert.match(verify.stdout, /3 object\(s\), 24M checked, 0 bad/);

  // a small read inside an object (no whole read: Swift keeps the bad copy) fails twice on east, is served from west
  const second = objectFileHolding(east.swift.dir, content, 17 * MiB + 4096);
  corrupt(second.file, [second.at]);
  const logs: string[] = [];
  const mirror = new MirrorStore(
    clusters.map((c) => ({ name: c.name, store: new Borrowed(c.store) })),
    { log: (m) => logs.push(m) },
  );
  const engine = new Engine(mirror, path.join(tmp.dir, 'fresh-c2'));
  const volume = await engine.open('corrupt', 'test');
  assert.deepEqual(await volume.read(17 * MiB + 4096, 4096), content.subarray(17 * MiB + 4096, 17 * MiB + 8192));
  await volume.close();
  await mirror.close(); // waits for the repair
  assert.ok(logs.some((l) => /000000000002: block 257 failed its CRC32C check twice \(mirror of .*\): the copy on 'east' is bad, served from store 'west' instead/.test(l)), logs.join('\n'));
  assert.ok(logs.some((l) => /000000000002: repaired the copy on store 'east' from 'west'/.test(l)), logs.join('\n'));
  assert.match(ok(['volume', 'verify', 'corrupt'], eastOnly), /0 bad/);
});

/** A store that drops every call: the other side of a partition. */
function dropped(store: ObjectStore): FaultStore {
  const f = new FaultStore(new Borrowed(store));
  f.failNext(Number.POSITIVE_INFINITY, 'unreachable', { message: 'partitioned away (test)' });
  return f;
}

test('split brain: two gateways that each see one cluster snapshot; detected, reported, resolved with --discard', async () => {
  const image = path.join(tmp.dir, 's.raw');
  writeImage(image, 16 * MiB, MiB, () => false);
  ok(['import', image, 'split', '--stores', 'east,west'], env('s1'));
  const [east, west] = [clusters[0]!, clusters[1]!];
  const sides = [
    { dir: 'gw1', members: [{ name: 'east', store: new Borrowed(east.store) }, { name: 'west', store: dropped(west.store) }], data: randomBytes(MiB) },
    { dir: 'gw2', members: [{ name: 'east', store: dropped(east.store) }, { name: 'west', store: new Borrowed(west.store) }], data: randomBytes(MiB) },
  ];
  for (const side of sides) {
    const mirror = new MirrorStore(side.members, { readDeadlineMs: 500, deadlineMs: 5000 });
    const engine = new Engine(mirror, path.join(tmp.dir, side.dir));
    // one of two stores answers: not a majority
    await assert.rejects(engine.attach('split'), /only 1 of its 2 stores answer .* it would open at version 1, .*volume attach split --force/);
    await engine.attach('split', { force: true });
    const volume = await engine.open('split', 'test');
    await volume.write(0, side.data);
    await volume.flush();
    await volume.close();
    await engine.snapshot('split', side.dir);
    await mirror.close();
  }
  const info = storesOf('split', env('s3'));
  assert.deepEqual(info.map((s) => [s.name, s.state]), [['east', 'split-brain'], ['west', 'split-brain']]);
  const attach = sv(['volume', 'attach', 'split'], env('s3'));
  assert.equal(attach.status, 1);
  assert.match(attach.stderr, /volume 'split' is in split brain: .*nothing is merged: keep one copy with 'swiftvol volume resync split --discard STORE'/);
  const resync = sv(['volume', 'resync', 'split'], env('s3'));
  assert.equal(resync.status, 1);
  assert.match(resync.stderr, /split brain.*--discard STORE/);

  ok(['volume', 'resync', 'split', '--discard', 'west'], env('s3'));
  assert.deepEqual(storesOf('split', env('s3')).map((s) => s.state), ['in-sync', 'in-sync']);
  assert.deepEqual(contentOf(await listing(east.store, 'swiftvol-split')).filter((n) => !n.startsWith('data/')), contentOf(await listing(west.store, 'swiftvol-split')).filter((n) => !n.startsWith('data/')));
  // east's history won: its snapshot, its bytes
  const snaps = JSON.parse(ok(['snapshot', 'list', 'split', '--json'], env('s3'))) as Array<{ name: string }>;
  assert.deepEqual(snaps.map((s) => s.name), ['gw1']);
  const out = path.join(tmp.dir, 's.out');
  ok(['export', 'split@gw1', out], env('s3'));
  assert.equal(sha256(fs.readFileSync(out).subarray(0, MiB)), sha256(sides[0]!.data));
});

test('a cluster killed for good: attach opens at the latest snapshot from the two left; a fresh cluster is added and filled', async () => {
  const image = path.join(tmp.dir, 'k.raw');
  const content = writeImage(image, 24 * MiB, MiB, (i) => i === 20);
  ok(['import', image, 'kill'], env('k1'));
  const north = clusters[2]!;
  await north.swift.stop();
  // a write and a snapshot with north gone
  const extra = randomBytes(2 * MiB);
  {
    const { openStore } = await import('../src/config/store-config.js');
    const { store } = await openStore(env('k1'), path.join(tmp.dir, 'k1'));
    const engine = new Engine(store, path.join(tmp.dir, 'k1'));
    const volume = await engine.open('kill', 'test');
    await volume.write(4 * MiB, extra);
    await volume.flush();
    await volume.close();
    await engine.snapshot('kill', 'after');
    await store.close();
  }
  extra.copy(content, 4 * MiB);
  const states = storesOf('kill', env('k2'));
  assert.deepEqual(states.map((s) => [s.name, s.state]), [['east', 'in-sync'], ['west', 'in-sync'], ['north', 'unreachable']]);
  // a second state dir: two of three answer, a majority
  assert.match(ok(['volume', 'attach', 'kill'], env('k2')), /attached volume kill at version 2/);
  const out = path.join(tmp.dir, 'k.out');
  ok(['export', 'kill', out], env('k2'));
  assert.equal(sha256File(out), sha256(content));

  // a fresh, empty cluster joins, and north leaves the set
  const withSouth = writeMirrorConfig(path.join(tmp.dir, 'four.conf'), [...clusters, spare]);
  const add = ok(['volume', 'mirror', 'add', 'kill', 'south'], env('k2', withSouth));
  assert.match(add, /volume kill now lives on east, west, north, south: \d+ object\(s\) copied to south/);
  const after4 = storesOf('kill', env('k2', withSouth));
  assert.deepEqual(after4.map((s) => [s.name, s.state]), [['east', 'in-sync'], ['west', 'in-sync'], ['north', 'unreachable'], ['south', 'in-sync']]);
  assert.deepEqual(contentOf(await listing(spare.store, 'swiftvol-kill')), contentOf(await listing(clusters[0]!.store, 'swiftvol-kill')));
  const southOnly = { PATH: process.env.PATH, ST_AUTH: spare.swift.authUrl, ST_USER: spare.swift.user, ST_KEY: spare.swift.key, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'south-only') };
  assert.match(ok(['volume', 'verify', 'kill'], southOnly), /0 bad/);
  const out2 = path.join(tmp.dir, 'k2.out');
  ok(['export', 'kill@after', out2], southOnly);
  assert.equal(sha256File(out2), sha256(content), "south's copy alone holds the volume");
  // with two of four gone, attach needs --force
  await clusters[1]!.swift.stop();
  const refused = sv(['volume', 'attach', 'kill'], env('k3', withSouth));
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /only 2 of its 4 stores answer \('west', 'north' do not\): it would open at version 2/);
  // nor is it deleted: the copies that do not answer would bring it back
  const del = sv(['volume', 'delete', 'kill'], env('k2', withSouth));
  assert.equal(del.status, 1);
  assert.match(del.stderr, /^swiftvol: volume 'kill' cannot be deleted while 'west', 'north' of its stores do not answer: their copy would bring it back\n$/);
  assert.ok(await spare.store.head('swiftvol-kill', 'volume.json'), 'nothing deleted');
});
