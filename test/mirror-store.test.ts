// MirrorStore on two real one-node Swifts (scripts/swift-dev): writes land
// on both, listings hide the mirror's records, a frozen cluster is left out
// of writes after the deadline and routed around for reads, and resync
// brings it level (names and ETags alike on both, checked by listing each).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { MirrorStore } from '../src/store/mirror-store.js';
import { resyncContainer } from '../src/store/mirror-resync.js';
import { SwiftStore } from '../src/store/swift-store.js';
import { TempAuth } from '../src/store/swift-auth.js';
import { storeContract } from './fixtures/store-contract.js';
import { Borrowed, startClusters, stopClusters, freeze, thaw, listing, contentOf, type Cluster } from './fixtures/mirror.js';

let clusters: Cluster[];

const logs: string[] = [];

function mirror(options: ConstructorParameters<typeof MirrorStore>[1] = {}): MirrorStore {
  // members through a pass-through wrapper: closing the mirror must not close the fixture's stores
  return new MirrorStore(
    clusters.map((c) => ({ name: c.name, store: new Borrowed(c.store) })),
    { log: (m) => logs.push(m), deadlineMs: 4000, readDeadlineMs: 500, probeMs: 300, ...options },
  );
}

before(async () => {
  clusters = await startClusters(['east', 'west']);
});

after(async () => {
  await stopClusters(clusters);
});

test('a container lives on every store of its set, with a set record the layers above never see', async () => {
  const m = mirror();
  await m.createContainer('swiftvol-m1');
  await m.put('swiftvol-m1', 'a', Buffer.from('alpha'));
  for (const c of clusters) {
    const l = await listing(c.store, 'swiftvol-m1');
    assert.deepEqual([...l.keys()], ['a', 'mirror/set/0000000001.json'], c.name);
  }
  const names: string[] = [];
  for await (const o of m.list('swiftvol-m1')) names.push(o.name);
  assert.deepEqual(names, ['a']);
  assert.equal((await m.get('swiftvol-m1', 'a')).toString(), 'alpha');
  await assert.rejects(m.put('swiftvol-m1', 'mirror/x', Buffer.from('x')), /mirror's own/);
  const status = await m.status('swiftvol-m1');
  assert.deepEqual(status?.stores.map((s) => [s.name, s.state]), [['east', 'in-sync'], ['west', 'in-sync']]);
  await m.close();
});

test('placement: a container placed on one store lives there only; unknown stores are refused', async () => {
  const m = mirror();
  assert.throws(() => m.place('swiftvol-m2', ['north']), /no store 'north'/);
  m.place('swiftvol-m2', ['west']);
  await m.createContainer('swiftvol-m2');
  await m.put('swiftvol-m2', 'b', Buffer.from('beta'));
  assert.equal(await clusters[0]!.store.head('swiftvol-m2', 'b'), null);
  assert.ok(await clusters[1]!.store.head('swiftvol-m2', 'b'));
  const other = mirror(); // a fresh process finds the set from the record
  assert.equal((await other.get('swiftvol-m2', 'b')).toString(), 'beta');
  assert.deepEqual((await other.status('swiftvol-m2'))?.set, ['west']);
  await Promise.all([m.close(), other.close()]);
});

test('a frozen cluster: reads answer from the other, writes go on without it, resync brings it level', async () => {
  const m = mirror();
  const C = 'swiftvol-m3';
  await m.createContainer(C);
  for (let i = 0; i < 4; i++) await m.put(C, `data/${i}`, Buffer.alloc(1024 * 1024, i));
  await m.put(C, 'versions/0000000001.json', Buffer.from('{"seq":1}'), { ifNoneMatch: true });
  freeze(clusters[0]!);
  try {
    const t0 = Date.now();
    assert.deepEqual(await m.get(C, 'data/1'), Buffer.alloc(1024 * 1024, 1));
    assert.ok(Date.now() - t0 < 3000, `first read took ${Date.now() - t0} ms`);
    for (let i = 0; i < 4; i++) await m.get(C, `data/${i}`); // routed around after a few hedges
    const t1 = Date.now();
    await m.get(C, 'data/2');
    assert.ok(Date.now() - t1 < 400, `a read once routed around took ${Date.now() - t1} ms`);
    assert.ok(m.isDown('east'), 'east routed around');
    // writes: east is down, so left out at once and recorded behind
    await m.put(C, 'data/9', Buffer.from('nine'));
    await m.put(C, 'versions/0000000002.json', Buffer.from('{"seq":2}'), { ifNoneMatch: true });
    const st = await mirror().status(C); // a fresh view: east does not answer
    assert.deepEqual(st?.stores.map((s) => s.state), ['unreachable', 'in-sync']);
  } finally {
    thaw(clusters[0]!);
  }
  // probed and taken back
  for (let i = 0; i < 50 && m.isDown('east'); i++) await new Promise((r) => setTimeout(r, 200));
  assert.equal(m.isDown('east'), false, 'east taken back once it answers');
  const fresh = mirror();
  const before = await fresh.status(C);
  assert.deepEqual(before?.stores.map((s) => [s.name, s.state]), [['east', 'behind'], ['west', 'in-sync']]);
  const progress: number[] = [];
  const report = await resyncContainer(fresh, C, { onProgress: (done) => progress.push(done) });
  assert.equal(report.copied, 2, 'the two objects east missed');
  assert.deepEqual(report.after.stores.map((s) => s.state), ['in-sync', 'in-sync']);
  assert.deepEqual(contentOf(await listing(clusters[0]!.store, C)), contentOf(await listing(clusters[1]!.store, C)));
  const again = await resyncContainer(fresh, C);
  assert.equal(again.copied, 0, 'idempotent');
  await Promise.all([m.close(), fresh.close()]);
});

test('a write that does not answer within the deadline leaves its cluster out; the write succeeds on the other', async () => {
  const m = mirror({ deadlineMs: 1500 });
  const C = 'swiftvol-m4';
  await m.createContainer(C);
  freeze(clusters[1]!);
  try {
    const t0 = Date.now();
    await m.put(C, 'data/0', Buffer.from('zero'));
    const took = Date.now() - t0;
    assert.ok(took >= 1400 && took < 4000, `put took ${took} ms`);
    const t1 = Date.now();
    await m.put(C, 'data/1', Buffer.from('one'));
    assert.ok(Date.now() - t1 < 1000, 'the next write does not wait for the frozen cluster');
    assert.ok(await clusters[0]!.store.head(C, `mirror/behind/west`), 'recorded on east that west is behind');
  } finally {
    thaw(clusters[1]!);
  }
  const report = await resyncContainer(mirror(), C);
  assert.deepEqual(report.after.stores.map((s) => s.state), ['in-sync', 'in-sync']);
  assert.equal(await clusters[0]!.store.head(C, 'mirror/behind/west'), null, 'record dropped once level');
  assert.deepEqual(contentOf(await listing(clusters[0]!.store, C)), contentOf(await listing(clusters[1]!.store, C)));
  await m.close();
});

// The ObjectStore contract holds for the mirror as for each of its members.
storeContract('MirrorStore of two Swifts', {
  pageSize: 3,
  atomicIfNoneMatch: false,
  async open() {
    return new MirrorStore(
      clusters.map((c) => ({ name: c.name, store: new SwiftStore({ auth: new TempAuth({ authUrl: c.swift.authUrl, user: c.swift.user, key: c.swift.key }), listPageSize: 3 }) })),
    );
  },
});
