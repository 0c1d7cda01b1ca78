import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FaultStore } from '../src/store/fault-store.js';
import { FileStore } from '../src/store/file-store.js';
import { collect, rejectsKind } from './fixtures/store-contract.js';

describe('FaultStore', () => {
  let root: string;
  let store: FaultStore;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'swiftvol-fault-'));
    store = new FaultStore(new FileStore(root));
    await store.createContainer('c');
  });
  after(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('fails the next N calls of the given ops, then recovers', async () => {
    store.failNext(2, 'unreachable', { ops: ['get'] });
    await store.put('c', 'o', Buffer.from('data')); // not a get: unaffected
    await rejectsKind(store.get('c', 'o'), 'unreachable', /injected/);
    await rejectsKind(store.get('c', 'o'), 'unreachable');
    assert.equal((await store.get('c', 'o')).toString(), 'data');
    assert.equal(store.calls('get'), 3);
  });

  it('can fail after the call took effect (a lost reply)', async () => {
    store.failNext(1, 'unreachable', { ops: ['put'], after: true, message: 'reply lost' });
    await rejectsKind(store.put('c', 'landed', Buffer.from('x')), 'unreachable', /reply lost/);
    assert.ok(await store.head('c', 'landed'));
  });

  it('fails lists and any op when no ops are given', async () => {
    store.failNext(1, 'auth');
    await rejectsKind(collect(store.list('c')), 'auth');
    assert.equal((await collect(store.list('c'))).length, 2);
  });

  it('corrupts get data', async () => {
    store.corruptNextGets(1);
    const bad = await store.get('c', 'o');
    assert.notEqual(bad.toString(), 'data');
    assert.equal(bad.length, 4);
    assert.equal((await store.get('c', 'o')).toString(), 'data');
  });

  it('delays calls', async () => {
    store.setDelay(50, ['head']);
    let t = performance.now();
    await store.head('c', 'o');
    assert.ok(performance.now() - t >= 45);
    t = performance.now();
    await store.get('c', 'o');
    assert.ok(performance.now() - t < 45);
    store.reset();
    t = performance.now();
    await store.head('c', 'o');
    assert.ok(performance.now() - t < 45);
  });
});
