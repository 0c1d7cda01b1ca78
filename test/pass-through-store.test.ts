// The store stack: PassThroughStore forwards everything (a wrapper that
// overrides one method still passes the shared contract), passes the inner
// store's consistency through, routes every operation through its one hook;
// the callers that lock with a conditional put read back exactly where the
// store says they must; openStore applies its layers in order.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openStore, type StoreContext, type StoreLayer } from '../src/config/store-config.js';
import { Lease } from '../src/engine/lease.js';
import { VolumeCatalog } from '../src/engine/volume-catalog.js';
import { containerName } from '../src/format/volume-format.js';
import { putIfAbsent } from '../src/store/conditional-put.js';
import { FaultStore } from '../src/store/fault-store.js';
import { FileStore } from '../src/store/file-store.js';
import type { ObjectInfo, ObjectStore, PutOptions, StoreConsistency } from '../src/store/object-store.js';
import { PassThroughStore, type StoreOp } from '../src/store/pass-through-store.js';
import { collect, rejectsKind, storeContract } from './fixtures/store-contract.js';
import { tempDir } from './fixtures/files.js';

const tmp = tempDir('swiftvol-pass-');
after(() => tmp.remove());
let n = 0;
/** A fresh directory for one store. */
const fresh = (): string => join(tmp.dir, `s${n++}`);

/** A wrapper that changes one method, as most layers will: it counts puts. */
class CountingPuts extends PassThroughStore {
  puts = 0;
  override put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    this.puts++;
    return super.put(container, name, data, options);
  }
}

/** A FileStore that declares what Swift declares. */
class NonAtomicFileStore extends FileStore {
  override readonly consistency: StoreConsistency = { atomicConditionalPut: false };
}

/** Each conditional put is overwritten right after it lands, as a racing Swift PUT with a later timestamp would. */
class LosingRaces extends PassThroughStore {
  override async put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    const put = await super.put(container, name, data, options);
    if (options?.ifNoneMatch) await this.inner.put(container, name, Buffer.concat([Buffer.from(data), Buffer.from(' (theirs)')]));
    return put;
  }
}

let contractStore: CountingPuts | undefined;
storeContract('PassThroughStore over FileStore, overriding put', {
  atomicIfNoneMatch: true, // passed through from the FileStore
  async open() {
    contractStore = new CountingPuts(new FileStore(fresh()));
    return contractStore;
  },
  async cleanup() {
    // The override was on the path the contract exercised.
    assert.ok(contractStore && contractStore.puts > 10, `puts through the override: ${contractStore?.puts}`);
  },
});

describe('PassThroughStore', () => {
  it('passes description and consistency through, at every depth', () => {
    const atomic = new FileStore(fresh());
    const nonAtomic = new NonAtomicFileStore(fresh());
    for (const leaf of [atomic, nonAtomic]) {
      const stack = new PassThroughStore(new FaultStore(new PassThroughStore(leaf)));
      assert.equal(stack.consistency, leaf.consistency);
      assert.equal(new FaultStore(leaf).consistency, leaf.consistency);
      assert.equal(stack.description, `faulty ${leaf.description}`);
      assert.equal(new PassThroughStore(leaf).description, leaf.description);
    }
    assert.equal(new PassThroughStore(atomic).consistency.atomicConditionalPut, true);
    assert.equal(new PassThroughStore(nonAtomic).consistency.atomicConditionalPut, false);
  });

  it('routes every operation but close through its one hook, a listing once', async () => {
    const seen: StoreOp[] = [];
    class Recording extends PassThroughStore {
      protected override call<T>(op: StoreOp, next: () => Promise<T>): Promise<T> {
        seen.push(op);
        return next();
      }
    }
    const store = new Recording(new FileStore(fresh()));
    await store.createContainer('c');
    await store.listContainers('');
    for (const n of ['x', 'y', 'z']) await store.put('c', n, Buffer.from(n));
    seen.length = 0;
    assert.equal((await store.get('c', 'x')).toString(), 'x');
    assert.equal((await store.head('c', 'y'))?.size, 1);
    assert.deepEqual((await collect(store.list('c'))).map((o) => o.name), ['x', 'y', 'z']);
    for (const n of ['x', 'y', 'z']) await store.delete('c', n);
    await store.deleteContainer('c');
    await store.close();
    assert.deepEqual(seen, ['get', 'head', 'list', 'delete', 'delete', 'delete', 'deleteContainer']);
  });

  it('lets the inner listing go when the consumer stops early or the hook throws', async () => {
    let closed = 0;
    class Listing extends FileStore {
      override async *list(container: string, prefix?: string): AsyncIterable<ObjectInfo> {
        try {
          yield* super.list(container, prefix);
        } finally {
          closed++;
        }
      }
    }
    const inner = new Listing(fresh());
    const store = new FaultStore(inner);
    await store.createContainer('c');
    for (const n of ['a', 'b', 'c']) await store.put('c', n, Buffer.from(n));
    for await (const o of store.list('c')) {
      assert.equal(o.name, 'a');
      break;
    }
    assert.equal(closed, 1);
    store.failNext(1, 'unreachable', { ops: ['list'], after: true });
    await rejectsKind(collect(store.list('c')), 'unreachable');
    assert.equal(closed, 2);
    assert.equal((await collect(store.list('c'))).length, 3);
  });
});

describe('the locks built on conditional put', () => {
  it('putIfAbsent reads back only where the conditional put is not atomic', async () => {
    const atomic = new FaultStore(new FileStore(fresh()));
    const nonAtomic = new FaultStore(new NonAtomicFileStore(fresh()));
    for (const s of [atomic, nonAtomic]) {
      await s.createContainer('c');
      await putIfAbsent(s, 'c', 'o', Buffer.from('mine'));
      await rejectsKind(putIfAbsent(s, 'c', 'o', Buffer.from('again')), 'conflict');
      assert.equal((await s.get('c', 'o')).toString(), 'mine');
    }
    assert.equal(atomic.calls('head'), 0);
    assert.equal(nonAtomic.calls('head'), 1); // the second put failed before any read-back
  });

  it('putIfAbsent notices a racing put that replaced its object', async () => {
    const racing = new LosingRaces(new NonAtomicFileStore(fresh()));
    await racing.createContainer('c');
    await rejectsKind(putIfAbsent(racing, 'c', 'o', Buffer.from('mine')), 'conflict', /replaced by a concurrent put/);
    // The same race on a store that says its conditional put is atomic is taken at its word.
    const trusted = new LosingRaces(new FileStore(fresh()));
    await trusted.createContainer('c');
    await putIfAbsent(trusted, 'c', 'o', Buffer.from('mine'));
  });

  it('volume creation fails for the loser of such a race', async () => {
    await assert.rejects(
      new VolumeCatalog(new LosingRaces(new NonAtomicFileStore(fresh()))).begin('vol', 1 << 20, 1 << 20),
      /volume 'vol' already exists/,
    );
    const meta = await new VolumeCatalog(new FileStore(fresh())).begin('vol', 1 << 20, 1 << 20);
    assert.equal(meta.name, 'vol');
  });

  it('a lease is read back after it is taken only where the conditional put is not atomic', async () => {
    for (const [leaf, reads] of [
      [new FileStore(fresh()), 0],
      [new NonAtomicFileStore(fresh()), 1],
    ] as const) {
      const store = new FaultStore(leaf);
      await store.createContainer(containerName('vol'));
      const lease = await Lease.acquire(store, 'vol', tmp.dir, 'test', { ttlMs: 60_000 });
      assert.equal(store.calls('get'), reads, leaf.constructor.name);
      await lease.release();
    }
  });
});

describe('openStore', () => {
  it('builds the leaf, then its layers in order, and returns the top', async () => {
    const root = fresh();
    const contexts: StoreContext[] = [];
    const faulty: StoreLayer = (inner, context) => {
      contexts.push(context);
      return new FaultStore(inner);
    };
    const counting: StoreLayer = async (inner) => new CountingPuts(inner);
    const skipped: StoreLayer = (inner) => inner; // a layer the settings do not ask for
    const env = { SWIFTVOL_TEST: '1' };
    const { store, source } = await openStore(env, root, undefined, [faulty, skipped, counting]);
    assert.equal(source, 'embedded file store');
    assert.ok(store instanceof CountingPuts);
    assert.ok(store.inner instanceof FaultStore);
    const leaf = store.inner.inner;
    assert.ok(leaf instanceof FileStore);
    assert.equal(leaf.root, join(root, 'store'));
    assert.deepEqual(contexts, [{ settings: env, stateDir: root, source: 'embedded file store' }]);
    assert.equal(store.consistency.atomicConditionalPut, true);
    await store.close();

    const plain = await openStore({}, root);
    assert.ok(plain.store instanceof FileStore, 'no layers in production yet');
  });

  it('closes what it built when a layer fails', async () => {
    const root = fresh();
    const built: ObjectStore[] = [];
    const closed: ObjectStore[] = [];
    const recordClose: StoreLayer = (inner) => {
      const wrapped = new PassThroughStore(inner);
      wrapped.close = async () => {
        closed.push(wrapped);
      };
      built.push(wrapped);
      return wrapped;
    };
    const failing: StoreLayer = () => {
      throw new Error('layer refused');
    };
    await assert.rejects(openStore({}, root, undefined, [recordClose, failing]), /layer refused/);
    assert.equal(built.length, 1);
    assert.deepEqual(closed, built);
  });
});
