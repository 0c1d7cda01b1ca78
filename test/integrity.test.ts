// Every byte read from the store is checked before it is served or cached
// (format 3: a CRC32C per 4 KiB block of each data object), and volumes
// written in format 2 stay readable and snapshottable. On the FileStore and
// on a real Swift, with bytes corrupted in transit by a FaultStore; the
// corruption of an object on Swift's disk, read through iSCSI, is in
// test/integrity-swift.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { onEachStore } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { ProtocolClient } from './fixtures/protocol-client.js';
import { FaultStore } from '../src/store/fault-store.js';
import type { ObjectStore } from '../src/store/object-store.js';
import { Engine } from '../src/engine/engine.js';
import { VolumeKey } from '../src/engine/volume-key.js';
import { BlockServer } from '../src/daemon/block-server.js';
import { Status } from '../src/daemon/protocol.js';
import { containerName, dataObjectName, versionObjectName, METADATA_OBJECT, BLOCK_SIZE, blockSumsLength, FORMAT_VERSION } from '../src/format/volume-format.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;

/** A volume exactly as format 2 wrote it: plain objects, a table of four-element entries, formatVersion 2. */
async function writeFormat2Volume(store: ObjectStore, name: string, content: Buffer): Promise<void> {
  const container = containerName(name);
  await store.createContainer(container);
  const uuid = '7d6b4a8e-0000-4000-8000-00000000000' + (name.length % 10);
  const meta = { format: 'swiftvol-volume', formatVersion: 2, name, uuid, size: content.length, objectSize: OBJECT, createdAt: '2026-11-30T10:00:00.000Z' };
  await store.put(container, METADATA_OBJECT, Buffer.from(JSON.stringify(meta, null, 2) + '\n'), { ifNoneMatch: true });
  const generation = '0123456789abcdef';
  const chunks: Array<[number, number, string, string]> = [];
  for (let chunk = 0; chunk * OBJECT < content.length; chunk++) {
    const data = content.subarray(chunk * OBJECT, Math.min((chunk + 1) * OBJECT, content.length));
    if (data.every((b) => b === 0)) continue;
    const md5 = createHash('md5').update(data).digest('hex');
    await store.put(container, dataObjectName(generation, chunk), data, { md5 });
    chunks.push([chunk, 0, generation, md5]);
  }
  const table = {
    format: 'swiftvol-version', formatVersion: 2, volume: name, volumeUuid: uuid, seq: 1, generation, kind: 'import', snapshot: null, changedBytes: 0,
    createdAt: '2026-11-30T10:00:01.000Z', size: content.length, objectSize: OBJECT, sources: [container], chunks,
  };
  await store.put(container, versionObjectName(1), Buffer.from(JSON.stringify(table)), { ifNoneMatch: true });
}

onEachStore((run) => {
  test(`format 3 objects carry a CRC32C per block, and the table marks them (${run.label})`, async () => {
    const image = path.join(run.dir, 'sums.raw');
    writeImage(image, 9 * MiB, MiB, () => false); // two whole objects and a 1 MiB last one
    const engine = new Engine(run.store, path.join(run.dir, 'state-sums'));
    await engine.importImage(image, 'sums', { objectSize: OBJECT });
    const sizes: number[] = [];
    for await (const o of run.store.list(containerName('sums'), 'data/')) sizes.push(o.size);
    assert.deepEqual(sizes, [OBJECT + blockSumsLength(OBJECT), OBJECT + blockSumsLength(OBJECT), MiB + blockSumsLength(MiB)]);
    assert.equal(blockSumsLength(OBJECT), (OBJECT / BLOCK_SIZE) * 4);
    const table = JSON.parse((await run.store.get(containerName('sums'), versionObjectName(1))).toString()) as { formatVersion: number; chunks: unknown[][] };
    assert.equal(table.formatVersion, FORMAT_VERSION, 'written in the current format (3 or later: the crc32c layout)');
    assert.ok(table.chunks.every((e) => e.length === 5 && e[4] === 1), JSON.stringify(table.chunks));
    await engine.deleteVolume('sums');
  });

  test(`a byte corrupted in transit is caught at any read size, retried once, never served or cached (${run.label})`, async () => {
    const image = path.join(run.dir, 'transit.raw');
    const content = writeImage(image, 24 * MiB, MiB, (piece) => piece === 9);
    await new Engine(run.store, path.join(run.dir, 'state-import')).importImage(image, 'transit', { objectSize: OBJECT });
    const faulty = new FaultStore(run.store);
    const engine = new Engine(faulty, path.join(run.dir, 'state-read'));
    const volume = await engine.open('transit', 'integrity test', { lease: false });
    try {
      // [offset, length]: 512 B, 4 KiB, 1 MiB to a chunk's end, 1 MiB inside one, each in a chunk of its own
      // that nothing has read yet (scattered: no stream, so nothing is read ahead into another chunk)
      const reads: Array<[number, number]> = [[OBJECT + 4096 * 3, 512], [2 * OBJECT + 8192, 4096], [5 * OBJECT - MiB, MiB], [3 * OBJECT + MiB, MiB]];
      for (const [offset, length] of reads) {
        faulty.corruptNextGets(1000);
        const err = await volume.read(offset, length).then(
          () => null,
          (e: unknown) => e as Error & { volumeOffset?: number },
        );
        faulty.reset();
        assert.ok(err, `a corrupt read of ${length} at ${offset} was served`);
        assert.match(err.message, /^object swiftvol-transit\/data\/[0-9a-f]{16}\/[0-9a-f]{12}: block \d+ failed its CRC32C check twice \(/);
        assert.equal(err.name, 'IntegrityError');
        assert.ok(err.volumeOffset !== undefined && err.volumeOffset >= Math.floor(offset / OBJECT) * OBJECT && err.volumeOffset < (Math.floor(offset / OBJECT) + 1) * OBJECT);
        // it has to be fetched again: nothing of the corrupt read was cached
        const gets = faulty.calls('get');
        const data = await volume.read(offset, length);
        assert.ok(data.equals(content.subarray(offset, offset + length)), `the read of ${length} at ${offset} once the store is right`);
        assert.ok(faulty.calls('get') > gets, `the range of ${length} at ${offset} was fetched again`);
      }
      // and what was cached since is right
      const all = await volume.read(0, 24 * MiB);
      assert.ok(all.equals(content));
    } finally {
      await volume.close();
    }
    // One bad GET is retried. In a volume that has cached nothing, with the sums of chunk 0 known to this
    // store's reader (the read above took them), a 4 KiB read makes one GET, which comes back corrupt;
    // the retry fetches the block and its sums again, in one GET of both ranges, and reads it right.
    const fresh = await new Engine(faulty, path.join(run.dir, 'state-retry')).open('transit', 'retry test', { lease: false });
    try {
      faulty.corruptNextGets(1);
      const before = faulty.calls('get');
      const retried = await fresh.read(64 * 1024, 4096);
      assert.ok(retried.equals(content.subarray(64 * 1024, 68 * 1024)));
      assert.equal(faulty.calls('get') - before, 2, 'the corrupt GET, then the block and its sums again');
    } finally {
      faulty.reset();
      await fresh.close();
    }
    // A whole-volume export fails and leaves no file.
    const out = path.join(run.dir, 'transit-out.raw');
    faulty.corruptNextGets(1_000_000, /^data\//); // the data objects: the metadata and tables are checked by the store as whole objects
    await assert.rejects(engine.exportVolume('transit', out), /failed its CRC32C check twice/);
    faulty.reset();
    assert.equal(fs.existsSync(out), false);
    await engine.exportVolume('transit', out);
    assert.ok(fs.readFileSync(out).equals(content));
  });

  test(`a read error from a bad block: MEDIUM ERROR with the block's offset through the protocol (${run.label})`, async () => {
    const faulty = new FaultStore(run.store);
    const engine = new Engine(faulty, path.join(run.dir, 'state-proto'));
    const volume = await engine.open('transit', 'integrity protocol test', { lease: false });
    const socketPath = path.join(run.dir, 'bs.sock');
    const server = new BlockServer({ socketPath, openDevice: async () => volume });
    await server.listen();
    try {
      const { client } = await ProtocolClient.open(socketPath, 'transit');
      faulty.corruptNextGets(1000);
      const r = await client.read(OBJECT + 8192, 8192);
      faulty.reset();
      assert.equal(r.status, Status.CHECK_CONDITION);
      assert.deepEqual([r.sense?.key, r.sense?.asc, r.sense?.ascq], [0x03, 0x11, 0x00], 'MEDIUM ERROR, UNRECOVERED READ ERROR');
      assert.ok(r.info !== undefined && r.info !== null && r.info >= OBJECT + 8192 && r.info < OBJECT + 16384, `INFORMATION is a block of the read: ${r.info}`);
      const ok = await client.read(OBJECT + 8192, 8192);
      assert.equal(ok.status, Status.GOOD);
      client.close();
    } finally {
      await server.close();
      await volume.close();
    }
  });

  test(`an encrypted volume: a block whose ciphertext or tag changed in transit fails its authentication and is never served (${run.label})`, async () => {
    const keyFile = path.join(run.dir, 'integrity.key');
    fs.writeFileSync(keyFile, randomBytes(32));
    const key = VolumeKey.fromFile(keyFile);
    const image = path.join(run.dir, 'sealed.raw');
    const content = writeImage(image, 8 * MiB, MiB, () => false);
    await new Engine(run.store, path.join(run.dir, 'state-seal'), { key }).importImage(image, 'sealed', { objectSize: OBJECT, encrypt: true });
    const faulty = new FaultStore(run.store);
    const volume = await new Engine(faulty, path.join(run.dir, 'state-seal-read'), { key }).open('sealed', 'integrity test', { lease: false });
    try {
      faulty.corruptNextGets(1000, /^data\//);
      await assert.rejects(volume.read(OBJECT + 8192, 4096), /^IntegrityError: object swiftvol-sealed\/data\/[0-9a-f]{16}\/000000000001: block \d+ failed its AES-GCM authentication twice/);
      faulty.reset();
      assert.ok((await volume.read(OBJECT + 8192, 4096)).equals(content.subarray(OBJECT + 8192, OBJECT + 12288)));
    } finally {
      faulty.reset();
      await volume.close();
    }
  });

  test(`a volume written in format 2 stays readable and snapshottable; its snapshot writes format 3 objects (${run.label})`, async () => {
    const content = Buffer.alloc(14 * MiB);
    for (let i = 0; i < content.length; i += 4096) content.fill((i / 4096) % 251, i, i + 4096);
    content.fill(0, 4 * MiB, 8 * MiB); // chunk 1 all zeros: not stored
    await writeFormat2Volume(run.store, 'old', content);
    const engine = new Engine(run.store, path.join(run.dir, 'state-old'));
    const volume = await engine.open('old', 'format 2 test', { lease: false });
    try {
      assert.ok((await volume.read(0, content.length)).equals(content), 'a format 2 volume reads as written');
      const change = Buffer.alloc(8192, 0xc3);
      await volume.write(9 * MiB, change);
      change.copy(content, 9 * MiB);
      const job = await engine.startSnapshot(volume, 'after-upgrade');
      const table = await job.done;
      assert.equal(table.lookup(2)?.layout, 'crc32c', 'the changed chunk is written in format 3');
      assert.equal(table.lookup(0)?.layout, undefined, 'untouched chunks keep their format 2 objects');
      assert.equal(table.lookup(3)?.layout, undefined);
    } finally {
      await volume.close();
    }
    const out = path.join(run.dir, 'old.raw');
    await new Engine(run.store, path.join(run.dir, 'state-old2')).exportVolume('old', out, { snapshot: 'after-upgrade' });
    assert.ok(fs.readFileSync(out).equals(content), 'the snapshot of mixed formats reads back');
    const meta = JSON.parse((await run.store.get(containerName('old'), METADATA_OBJECT)).toString()) as { formatVersion: number };
    assert.equal(meta.formatVersion, 2, "the volume's metadata is write-once");
  });
});
