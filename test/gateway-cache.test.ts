// The gateway's cache through the engine (issue 14): clones of one snapshot
// opened by one engine fetch each block once between them, reading at once;
// the cache stays within its budget however much is read, the reads stay
// right, the bound holds across a restart, and `volume info` counts what a
// volume has in the cache. On the FileStore in-process and on a real Swift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { CountingStore } from './fixtures/counting-store.js';
import { Engine } from '../src/engine/engine.js';
import { GatewayCache } from '../src/engine/gateway-cache.js';

const MiB = 1024 * 1024;


onEachStore((run) => {
  test('four clones of one snapshot reading the same blocks at once fetch them once', async () => {
    const store = new CountingStore(run.store);
    const image = path.join(run.dir, 'golden.raw');
    const content = writeImage(image, 32 * MiB, MiB, () => false);
    const admin = new Engine(store, path.join(run.dir, 'admin'));
    await admin.importImage(image, 'golden');
    await admin.snapshot('golden', 'g1');
    for (const c of ['c1', 'c2', 'c3', 'c4']) await admin.clone('golden', 'g1', c);

    const stateDir = path.join(run.dir, 'gateway');
    const cache = GatewayCache.open(stateDir, 64 * MiB);
    const engine = new Engine(store, stateDir, { cache });
    const volumes = await Promise.all(['c1', 'c2', 'c3', 'c4'].map((c) => engine.open(c, 'test', { lease: false })));
    try {
      // a boot's scattered reads, the same in every clone, all at once
      const spots = [3, 17, 9, 26, 30, 1, 12, 21].map((m) => m * MiB + 8192);
      store.bytes = 0;
      await Promise.all(
        volumes.map(async (v) => {
          for (const at of spots) assert.ok((await v.read(at, 128 * 1024)).equals(content.subarray(at, at + 128 * 1024)));
        }),
      );
      const once = spots.length * 128 * 1024;
      assert.ok(store.bytes <= once * 1.3 + spots.length * 8192, `four clones fetched ${store.bytes} bytes; one fetch of the blocks is ${once}`);
      // later reads of those blocks, from any clone, fetch nothing
      store.bytes = 0;
      for (const v of volumes) for (const at of spots) await v.read(at, 128 * 1024);
      assert.equal(store.bytes, 0, 'served from the gateway cache');
    } finally {
      for (const v of volumes) await v.close();
    }
    await cache.blocks.flush(); // (serve commits every second; info reads what was committed)
    const info = await engine.info('c2');
    assert.ok(info.cachedBytes! >= 8 * 128 * 1024, `volume info counts the cache a clone reads from (${info.cachedBytes})`);
    assert.equal(info.dirtyBytes, 0);
    cache.close();
  });

  test('the cache stays within its budget, across a restart, and reads stay right', async () => {
    const store = new CountingStore(run.store);
    const image = path.join(run.dir, 'big.raw');
    const content = writeImage(image, 48 * MiB, MiB, () => false);
    const admin = new Engine(store, path.join(run.dir, 'admin2'));
    await admin.importImage(image, 'big');
    const stateDir = path.join(run.dir, 'small-gateway');
    const budget = 8 * MiB;
    let cache = GatewayCache.open(stateDir, budget);
    let engine = new Engine(store, stateDir, { cache });
    let volume = await engine.open('big', 'test', { lease: false });
    for (let at = 0; at < 48 * MiB; at += MiB) {
      assert.ok((await volume.read(at, MiB)).equals(content.subarray(at, at + MiB)), `read at ${at}`);
      assert.ok(cache.blocks.stats().bytes <= budget, `cache at ${cache.blocks.stats().bytes} bytes past its budget`);
    }
    assert.ok(cache.blocks.stats().evicted > 0, 'least recently used objects were evicted');
    await volume.close();
    cache.close();
    // again, with a smaller budget: the bound of the new budget holds at once
    cache = GatewayCache.open(stateDir, 4 * MiB);
    assert.ok(cache.blocks.stats().bytes <= 4 * MiB);
    engine = new Engine(store, stateDir, { cache });
    volume = await engine.open('big', 'test', { lease: false });
    const tail = 47 * MiB;
    assert.ok((await volume.read(tail, MiB)).equals(content.subarray(tail)), 'what is held reads right after the restart');
    await volume.close();
    await cache.blocks.flush(); // (its write into the cache lands after the reply)
    cache.close();
    // what it fetched then is read from the cache's files after another restart (nothing is in memory): the block sums it keeps are right
    cache = GatewayCache.open(stateDir, 4 * MiB);
    engine = new Engine(store, stateDir, { cache });
    volume = await engine.open('big', 'test', { lease: false });
    store.bytes = 0;
    assert.ok((await volume.read(tail, MiB)).equals(content.subarray(tail)));
    assert.equal(store.bytes, 0, 'what is held is read from the cache, not fetched again');
    await volume.close();
    cache.close();
  });
});
