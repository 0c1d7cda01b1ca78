// Clones of clones, flatten, a lease that expires, and a chunk unmapped
// whole that a snapshot stores as nothing: the engine over the FileStore and
// over a real Swift.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { Engine } from '../src/engine/engine.js';
import { containerName } from '../src/format/volume-format.js';

const MiB = 1024 * 1024;

onEachStore((run) => {
  let engine: Engine;

  before(() => {
    engine = new Engine(run.store, path.join(run.dir, 'state'), { leaseMs: 3000 });
  });

  async function dataObjects(volume: string): Promise<string[]> {
    const names: string[] = [];
    for await (const o of run.store.list(containerName(volume), 'data/')) names.push(o.name);
    return names;
  }

  async function content(volume: string): Promise<Buffer> {
    const v = await engine.open(volume, 'lineage test');
    try {
      return await v.read(0, v.size);
    } finally {
      await v.close();
    }
  }

  test('clones of clones read right; flatten makes a clone stand alone so its parents can go', async () => {
    const image = path.join(run.dir, 'a.raw');
    const a = writeImage(image, 8 * MiB, MiB, (i) => i === 5);
    await engine.importImage(image, 'a', { objectSize: MiB });
    await engine.snapshot('a', 's');
    await engine.clone('a', 's', 'b');
    // b changes one chunk, then is cloned in turn.
    const vb = await engine.open('b', 'lineage test');
    await vb.write(2 * MiB, Buffer.alloc(MiB, 0xbb));
    await vb.close();
    await engine.snapshot('b', 't');
    await engine.clone('b', 't', 'c');
    const expected = Buffer.from(a);
    expected.fill(0xbb, 2 * MiB, 3 * MiB);
    assert.ok((await content('c')).equals(expected), 'a clone of a clone reads through two levels');
    assert.deepEqual(await dataObjects('c'), [], 'and copies nothing');
    assert.deepEqual((await engine.info('b')).children, ['c']);
    assert.equal((await engine.info('c')).parent?.volume, 'b');

    await assert.rejects(engine.deleteVolume('a'), /clones 'b', 'c' still use its data/);
    // c's latest version borrows from a and b; flatten copies those objects into c.
    const { copied } = await engine.flatten('c');
    assert.equal(copied, 7, 'every non-zero chunk was borrowed');
    assert.equal((await dataObjects('c')).length, 7);
    assert.ok((await content('c')).equals(expected));
    // b still borrows from a through its snapshot t and its latest version.
    await assert.rejects(engine.flatten('b'), /snapshots 't' of volume 'b' borrow/);
    await engine.deleteSnapshot('b', 't');
    await engine.flatten('b');
    await engine.deleteSnapshot('a', 's');
    await engine.deleteVolume('a');
    await engine.deleteVolume('b');
    assert.ok((await content('c')).equals(expected), 'the flattened clone outlives its ancestors');
    await engine.deleteVolume('c');
    assert.deepEqual(await run.store.listContainers('swiftvol-'), []);
  });

  test('a chunk unmapped whole is stored as nothing in the next snapshot', async () => {
    const image = path.join(run.dir, 'u.raw');
    writeImage(image, 4 * MiB, MiB, () => false);
    await engine.importImage(image, 'u', { objectSize: MiB });
    const v = await engine.open('u', 'lineage test');
    await v.unmap(MiB, MiB); // chunk 1, whole
    await v.unmap(2 * MiB + 4096, 8192); // part of chunk 2
    await v.close();
    await engine.snapshot('u', 'trimmed');
    const table = await engine.catalog.findSnapshot('u', 'trimmed');
    assert.deepEqual([...table.chunks.keys()].sort(), [0, 2, 3]);
    const data = await content('u');
    assert.ok(data.subarray(MiB, 2 * MiB).every((x) => x === 0));
    assert.ok(data.subarray(2 * MiB + 4096, 2 * MiB + 12288).every((x) => x === 0));
    await engine.deleteSnapshot('u', 'trimmed');
    await engine.deleteVolume('u');
  });

  test(`a snapshot composes changed chunks from local blocks, the base object and zeros, as read back from ${run.label}`, async () => {
    const image = path.join(run.dir, 'm.raw');
    const size = 2 * MiB + 40960; // a short last chunk
    const expected = writeImage(image, size, 4096, () => false);
    await engine.importImage(image, 'm', { objectSize: MiB });
    const v = await engine.open('m', 'lineage test', { cacheReads: false });
    const put = async (offset: number, length: number, byte: number): Promise<void> => {
      await v.write(offset, Buffer.alloc(length, byte));
      expected.fill(byte, offset, offset + length);
    };
    // chunk 0: runs of local blocks between runs of base blocks, at both ends too
    await put(0, 4096, 0x11);
    await put(64 * 1024, 3 * 4096, 0x22);
    await put(MiB - 4096, 4096, 0x33);
    // chunk 1: local blocks on either side of unmapped ones, base blocks around
    await put(MiB + 8192, 4096, 0x44);
    await v.unmap(MiB + 12288, 5 * 4096);
    expected.fill(0, MiB + 12288, MiB + 12288 + 5 * 4096);
    await put(MiB + 12288 + 5 * 4096, 4096, 0x55);
    // the short last chunk: its last block changed
    await put(size - 4096, 4096, 0x66);
    await v.close();
    await engine.snapshot('m', 'mixed');
    const out = path.join(run.dir, 'm.out');
    await engine.exportVolume('m', out, { snapshot: 'mixed' });
    const back = fs.readFileSync(out);
    assert.equal(back.length, size);
    for (let at = 0; at < size; at += 4096) {
      assert.ok(back.subarray(at, at + 4096).equals(expected.subarray(at, at + 4096)), `block at ${at} differs`);
    }
    await engine.deleteSnapshot('m', 'mixed');
    await engine.deleteVolume('m');
  });

  test("a lease held elsewhere refuses writers until it expires; then it is taken over", async () => {
    await engine.createVolume('leased', 4 * MiB, MiB);
    // Another machine's holder, as it would have written it (its renewals then stop: a crash).
    const record = { holder: 'elsewhere:4242:/var/lib/swiftvol', purpose: 'swiftvol serve (pid 4242)', host: 'elsewhere', pid: 4242, stateDir: '/var/lib/swiftvol', expiresAt: Date.now() + 2500 };
    await run.store.put(containerName('leased'), 'lease/0000000001', Buffer.from(JSON.stringify(record)));
    await assert.rejects(engine.open('leased', 'lease test'), /volume 'leased' is held by elsewhere:4242:\/var\/lib\/swiftvol \(swiftvol serve \(pid 4242\)\) until/);
    await new Promise((r) => setTimeout(r, 2700));
    const v = await engine.open('leased', 'lease test');
    // While held here, another holder is refused.
    const other = new Engine(run.store, path.join(run.dir, 'state-other'), { leaseMs: 3000 });
    await assert.rejects(other.open('leased', 'other'), /volume 'leased' is held by .*lease test/);
    // Renewals keep it past its first expiry.
    await new Promise((r) => setTimeout(r, 3500));
    await assert.rejects(other.open('leased', 'other'), /is held by/);
    await v.close();
    // Released: taken at once.
    const w = await other.open('leased', 'other');
    await w.close();
    await engine.deleteVolume('leased');
  });
});
