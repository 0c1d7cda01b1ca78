// PRE-FETCH 10/16 reaches the daemon as the protocol's PREFETCH, which warms
// the volume's cache from its base through the fetch path: afterwards the
// range reads with no GET. On the FileStore, in-process (the block server
// over a real Volume; the iSCSI path to it is in test/conformance).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { tempDir, writeImage } from './fixtures/files.js';
import { ProtocolClient } from './fixtures/protocol-client.js';
import { FaultStore } from '../src/store/fault-store.js';
import { FileStore } from '../src/store/file-store.js';
import { Engine } from '../src/engine/engine.js';
import { BlockServer } from '../src/daemon/block-server.js';
import { Op, Status } from '../src/daemon/protocol.js';

const MiB = 1024 * 1024;

test('PRE-FETCH fetches the range from the base into the cache; reads of it then need no GET', async () => {
  const tmp = tempDir('swiftvol-prefetch-');
  try {
    const store = new FaultStore(new FileStore(path.join(tmp.dir, 'store')));
    const image = path.join(tmp.dir, 'image.raw');
    const content = writeImage(image, 48 * MiB, MiB, (piece) => piece === 5);
    const engine = new Engine(store, path.join(tmp.dir, 'state'));
    await engine.importImage(image, 'warm', { objectSize: 4 * MiB });
    const volume = await engine.open('warm', 'prefetch test', { lease: false });
    const server = new BlockServer({ socketPath: path.join(tmp.dir, 'bs.sock'), openDevice: async () => volume, log: () => undefined });
    await server.listen();
    try {
      const { client } = await ProtocolClient.open(path.join(tmp.dir, 'bs.sock'), 'warm');
      // 6 MiB across an object boundary, from an unaligned start
      const offset = 3 * MiB + 8192;
      const length = 6 * MiB;
      const before = volume.overlayBytes();
      const gets = store.calls('get');
      assert.equal((await client.request(Op.PREFETCH, { offset, length })).status, Status.GOOD);
      assert.ok(store.calls('get') > gets, 'PRE-FETCH read from the store');
      assert.ok(volume.overlayBytes() - before >= length, `the range is in the overlay (${volume.overlayBytes() - before} bytes more)`);
      const afterPrefetch = store.calls('get');
      // in reads of 64 KiB (reads of the warmed range find their blocks local: no stream is seen, nothing read ahead)
      for (let at = offset; at < offset + length; at += 64 * 1024) {
        const r = await client.read(at, 64 * 1024);
        assert.equal(r.status, Status.GOOD);
        assert.ok(r.payload.equals(content.subarray(at, at + 64 * 1024)), `the warmed range reads as the image at ${at}`);
      }
      assert.equal(store.calls('get'), afterPrefetch, 'reading the warmed range needed no GET');
      // Again: nothing is left to fetch.
      assert.equal((await client.request(Op.PREFETCH, { offset, length })).status, Status.GOOD);
      assert.equal(store.calls('get'), afterPrefetch, 'a second PRE-FETCH of a warm range fetches nothing');
      // A range past PREFETCH_MAX (32 MiB) is warmed only that far: a hint, not a copy of the volume.
      const wide = await client.request(Op.PREFETCH, { offset: 12 * MiB, length: 36 * MiB });
      assert.equal(wide.status, Status.GOOD);
      const rest = store.calls('get');
      const tail = await client.read(44 * MiB, 4 * MiB);
      assert.ok(tail.payload.equals(content.subarray(44 * MiB)), 'the end past the warmed part reads right');
      assert.ok(store.calls('get') > rest, 'the part past 32 MiB was not fetched by PRE-FETCH');
      // A store failure during PRE-FETCH is a read error, and the volume goes on.
      store.failNext(10, 'unreachable', { ops: ['get'] });
      const failed = await client.request(Op.PREFETCH, { offset: 0, length: 2 * MiB });
      assert.equal(failed.status, Status.CHECK_CONDITION);
      assert.equal(failed.sense?.key, 0x03, 'MEDIUM ERROR');
      store.reset();
      assert.ok((await client.read(0, 2 * MiB)).payload.equals(content.subarray(0, 2 * MiB)));
      client.close();
    } finally {
      await server.close();
      await volume.close();
    }
  } finally {
    tmp.remove();
  }
});
