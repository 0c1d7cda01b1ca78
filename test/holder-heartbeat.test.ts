// Format 5 leases follow their holder's heartbeat (src/engine/holder-heartbeat.ts):
// on the FileStore and on a real Swift, a holder of many volumes writes one
// heartbeat per renewal and no lease object; the volumes stay refused to
// others while it beats, are taken over once it stops, and a holder whose
// heartbeat was late learns that a volume was taken meanwhile.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { Engine } from '../src/engine/engine.js';
import type { Volume } from '../src/engine/volume.js';
import { HOLDERS_CONTAINER, HolderHeartbeat, readHeartbeat, type HeartbeatFollower } from '../src/engine/holder-heartbeat.js';
import { FaultStore } from '../src/store/fault-store.js';
import { PassThroughStore } from '../src/store/pass-through-store.js';
import type { PutOptions } from '../src/store/object-store.js';

const MiB = 1024 * 1024;
const TTL = 3000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Counts the writes of lease objects and of heartbeats. */
class WriteCounter extends PassThroughStore {
  leaseWrites = 0;
  heartbeats = 0;
  override async put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    if (container === HOLDERS_CONTAINER) this.heartbeats++;
    else if (name.startsWith('lease/')) this.leaseWrites++;
    return super.put(container, name, data, options);
  }
}

onEachStore((run) => {
  let counter: WriteCounter;
  let faults: FaultStore;
  let a: Engine;
  let b: Engine;

  before(() => {
    counter = new WriteCounter(run.store);
    faults = new FaultStore(counter);
    a = new Engine(faults, path.join(run.dir, 'state-a'), { leaseMs: TTL });
    b = new Engine(run.store, path.join(run.dir, 'state-b'), { leaseMs: TTL });
  });

  test('five volumes held: one heartbeat write per renewal, no lease object written, each refused to another holder', async () => {
    const names = ['h1', 'h2', 'h3', 'h4', 'h5'];
    for (const n of names) await a.createVolume(n, 4 * MiB, MiB);
    const held: Volume[] = [];
    for (const n of names) held.push(await a.open(n, 'heartbeat test'));
    const leases = counter.leaseWrites;
    const beats = counter.heartbeats;
    await sleep(2 * TTL); // past two expiries of the first heartbeat
    assert.equal(counter.leaseWrites, leases, 'no lease object was written to renew');
    const renewals = counter.heartbeats - beats;
    assert.ok(renewals >= 3 && renewals <= 8, `heartbeats written in ${2 * TTL} ms: ${renewals} (one per ${TTL / 3} ms)`);
    for (const n of names) await assert.rejects(b.open(n, 'other'), new RegExp(`volume '${n}' is held by .*heartbeat test`));
    for (const v of held) await v.close();
    // released: taken at once
    const w = await b.open('h1', 'other');
    await w.close();
  });

  test('the heartbeat keeps beating for a follower that joins just after the last one let go', async () => {
    const hb = new HolderHeartbeat(run.store, 'race-test:1:/nowhere', TTL);
    const first: HeartbeatFollower = { verify: async () => undefined, tell: () => undefined };
    const second: HeartbeatFollower = { verify: async () => undefined, tell: () => undefined };
    await hb.fresh();
    hb.follow(first);
    hb.unfollow(first); // the last follower gone: the beat stops
    hb.follow(second); // one that took its lease meanwhile (after fresh(), before follow())
    const before = (await readHeartbeat(run.store, hb.objectName))!.expiresAt;
    await sleep(TTL / 3 + 700);
    const after = (await readHeartbeat(run.store, hb.objectName))!.expiresAt;
    assert.ok(after > before, `the heartbeat was written again (${before} -> ${after})`);
    hb.unfollow(second);
  });

  test('a holder that stops beating (a crash) loses its volumes once the heartbeat runs out', async () => {
    const v = await a.open('h2', 'crash test');
    await assert.rejects(b.open('h2', 'other'), /is held by/);
    v.abandon(); // no release; its last follower gone, the heartbeat stops
    await assert.rejects(b.open('h2', 'other'), /is held by/, 'still held until the heartbeat expires');
    await sleep(TTL + 500);
    const w = await b.open('h2', 'other');
    await w.close();
  });

  test('a heartbeat written late tells the holder of a volume taken over meanwhile', async () => {
    const lost: string[] = [];
    const v = await a.open('h3', 'late test', { onLeaseLost: (m) => lost.push(m) });
    faults.failNext(1000, 'unreachable', { ops: ['put'] }); // a's store stops taking writes
    await sleep(TTL + 500);
    const w = await b.open('h3', 'other'); // the heartbeat ran out: b takes over
    faults.reset();
    await sleep(TTL / 3 + 1000); // a's next heartbeat is written, late
    assert.ok(lost.some((m) => /lost the lease of volume 'h3': another holder took it over/.test(m)), lost.join('\n'));
    assert.ok(lost.some((m) => /could not renew the heartbeat/.test(m)), 'the failed beats were told too');
    await w.close();
    v.abandon();
    for (const n of ['h1', 'h2', 'h3', 'h4', 'h5']) await b.deleteVolume(n);
  });
});
