// ThreadedStore: a SwiftStore whose GETs run on worker threads, on a
// real one-node Swift (scripts/swift-dev).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { SwiftStore, TempAuth, type SwiftStoreOptions } from '../src/store/swift-store.js';
import { FetchThreads, ThreadedStore } from '../src/store/threaded-store.js';
import { pauseSwiftProxy, startSwift, type DevSwift } from './fixtures/swift.js';
import { rejectsKind, storeContract } from './fixtures/store-contract.js';

let swiftP: Promise<DevSwift> | undefined;
const swift = (): Promise<DevSwift> => (swiftP ??= startSwift());
after(async () => {
  if (swiftP) await (await swiftP).stop();
});

async function threaded(threads: FetchThreads, listPageSize?: number, more: Omit<SwiftStoreOptions, 'auth' | 'listPageSize'> = {}): Promise<ThreadedStore> {
  const s = await swift();
  const settings = { ST_AUTH: s.authUrl, ST_USER: s.user, ST_KEY: s.key };
  const options = { listPageSize, ...more };
  const inner = new SwiftStore({ auth: new TempAuth({ authUrl: s.authUrl, user: s.user, key: s.key }), ...options });
  return new ThreadedStore(inner, { settings, options }, threads);
}

/** Runs fn on a ThreadedStore with `count` threads and a fresh container, which is emptied and deleted after; the store is closed. */
async function withContainer(count: number, fn: (store: ThreadedStore, c: string, threads: FetchThreads) => Promise<void>, options?: Omit<SwiftStoreOptions, 'auth' | 'listPageSize'>): Promise<FetchThreads> {
  const threads = new FetchThreads(count);
  const store = await threaded(threads, undefined, options);
  try {
    const c = `threaded-${randomBytes(4).toString('hex')}`;
    await store.createContainer(c);
    await fn(store, c, threads);
    for await (const o of store.list(c)) await store.delete(c, o.name);
    await store.deleteContainer(c);
  } finally {
    await store.close();
  }
  return threads;
}

storeContract('ThreadedStore over SwiftStore', {
  pageSize: 3,
  atomicIfNoneMatch: false,
  async open() {
    return threaded(new FetchThreads(2), 3);
  },
});

describe('ThreadedStore', () => {
  it('runs GETs on its threads, in parallel, whole, ranged and multi-range, and returns the bytes stored', async () => {
    const threads = await withContainer(2, async (store, c, threads) => {
      const objects = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const data = randomBytes(3 * 1024 * 1024 + 512 * i);
          await store.put(c, `o${i}`, data);
          return data;
        }),
      );
      const whole = await Promise.all(objects.map((_, i) => store.get(c, `o${i}`)));
      whole.forEach((got, i) => assert.ok(got.equals(objects[i]!), `object o${i} read back whole`));
      const ranged = await store.get(c, 'o3', { start: 1000, end: 1000 + 300 * 1024 });
      assert.ok(ranged.equals(objects[3]!.subarray(1000, 1000 + 300 * 1024)));
      const counts = threads.stats();
      assert.equal(counts.reduce((a, b) => a + b, 0), 9, `GETs answered by the threads: ${counts.join(', ')}`);
      assert.ok(counts.every((n) => n > 0), `both threads took GETs: ${counts.join(', ')}`);
      // small ones too (a boot's reads), and several ranges in one GET (data and its block sums);
      // a small body sits in the worker's shared pool and comes back as a copy of its own
      const small = await Promise.all([store.get(c, 'o5', { start: 4096, end: 8192 }), store.get(c, 'o6', { start: 7, end: 8 })]);
      assert.ok(small[0].equals(objects[5]!.subarray(4096, 8192)));
      assert.ok(small[1].equals(objects[6]!.subarray(7, 8)));
      const parts = await store.get(c, 'o7', [{ start: 0, end: 4096 }, { start: 2 * 1024 * 1024, end: 2 * 1024 * 1024 + 100 }]);
      assert.ok(parts.equals(Buffer.concat([objects[7]!.subarray(0, 4096), objects[7]!.subarray(2 * 1024 * 1024, 2 * 1024 * 1024 + 100)])));
      assert.equal(threads.stats().reduce((a, b) => a + b, 0), 12, `the small and multi-range GETs were answered by the threads: ${threads.stats().join(', ')}`);
    });
    await rejectsKind(threads.get(0, 'x', 'y', undefined), 'other', /closed/);
  });

  it('keeps the kind and message of an error raised on a thread', async () => {
    await withContainer(1, async (store, c, threads) => {
      await rejectsKind(store.get(c, 'absent'), 'not-found', new RegExp(`object ${c}/absent does not exist`));
      await store.put(c, 'short', randomBytes(1024 * 1024));
      await rejectsKind(store.get(c, 'short', { start: 0, end: 2 * 1024 * 1024 }), 'invalid', /past the end/);
      await rejectsKind(store.get(c, '', { start: 0, end: 4096 }), 'invalid');
      assert.equal(threads.stats()[0], 3, 'all three were answered by the thread');
    });
  });

  it('fails the GETs of a thread that dies, and starts a new one for the next', async () => {
    await withContainer(1, async (store, c, threads) => {
      const data = randomBytes(4 * 1024 * 1024);
      await store.put(c, 'o', data);
      assert.ok((await store.get(c, 'o')).equals(data));
      // the thread dies as if it had crashed, with GETs in flight (its Worker is private: reached for here only)
      const worker = (threads as unknown as { threads: Array<{ worker: Worker } | null> }).threads[0]!.worker;
      const inFlight = [store.get(c, 'o'), store.get(c, 'o', { start: 4096, end: 8192 })];
      await worker.terminate();
      for (const p of inFlight) await rejectsKind(p, 'other', /fetch thread exited/);
      const again = await store.get(c, 'o', { start: 1000, end: 3 * 1024 * 1024 });
      assert.ok(again.equals(data.subarray(1000, 3 * 1024 * 1024)), 'a new thread answers the next GET');
    });
  });
  it('bounds every GET when the cluster freezes (SIGSTOP of its proxy): each fails with its own timeouts, and reads again once thawed', async () => {
    await withContainer(
      1,
      async (store, c) => {
        const data = randomBytes(1024 * 1024);
        await store.put(c, 'o', data);
        assert.ok((await store.get(c, 'o')).equals(data)); // the thread is authenticated and connected
        const thaw = pauseSwiftProxy(await swift());
        try {
          for (const range of [undefined, { start: 0, end: 4096 }]) {
            // a hang would fail here, not stall the suite: 2 attempts of 1 s each are far inside the deadline
            const deadline = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the GET was still waiting after 20 s')), 20_000).unref());
            await rejectsKind(Promise.race([store.get(c, 'o', range), deadline]), 'unreachable', /unreachable after 2 attempts: no response within 1000 ms/);
          }
        } finally {
          thaw();
        }
        const again = await store.get(c, 'o', { start: 5, end: 9000 });
        assert.ok(again.equals(data.subarray(5, 9000)), 'read again, exact, once the proxy runs');
      },
      { timeoutMs: 1000, retries: { attempts: 2, baseMs: 50 } },
    );
  });
});
