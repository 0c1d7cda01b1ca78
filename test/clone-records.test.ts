// Format 4: a volume records its clones in its container (children/NAME/UUID),
// so `volume info` and garbage collection read only the volumes that can
// name its objects, not every volume; a volume of format 3, whose clones may
// not be recorded, is still read the old way. The engine over the FileStore
// and over a real Swift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { Engine } from '../src/engine/engine.js';
import { PassThroughStore } from '../src/store/pass-through-store.js';
import type { ReadRange, ObjectStore } from '../src/store/object-store.js';
import { CHILDREN_PREFIX, METADATA_OBJECT, containerName, volumeNameOfContainer } from '../src/format/volume-format.js';

const MiB = 1024 * 1024;

/** Notes the container of every object read. */
class ReadLog extends PassThroughStore {
  readonly gets: Array<{ container: string; name: string }> = [];
  constructor(inner: ObjectStore) {
    super(inner);
  }
  override get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    this.gets.push({ container, name });
    return super.get(container, name, range);
  }
  override close(): Promise<void> {
    return Promise.resolve();
  }
  /** Volumes whose objects named like `prefix` were read. */
  volumesRead(prefix: string): string[] {
    return [...new Set(this.gets.filter((g) => g.name.startsWith(prefix)).map((g) => volumeNameOfContainer(g.container)!))].sort();
  }
}

async function markers(store: ObjectStore, volume: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(containerName(volume), CHILDREN_PREFIX)) out.push(o.name);
  return out;
}

onEachStore((run) => {
  test('info and garbage collection of a volume read its clones, not every volume', async () => {
    const engine = new Engine(run.store, path.join(run.dir, 'state-rec'));
    const image = path.join(run.dir, 'p.raw');
    writeImage(image, 4 * MiB, MiB, () => false);
    await engine.importImage(image, 'p', { objectSize: MiB });
    await engine.snapshot('p', 's');
    await engine.clone('p', 's', 'pc1');
    await engine.clone('p', 's', 'pc2');
    await engine.snapshot('pc1', 't');
    await engine.clone('pc1', 't', 'pcc');
    for (let i = 0; i < 6; i++) await engine.createVolume(`other${i}`, 4 * MiB, MiB);
    assert.equal((await markers(run.store, 'p')).length, 2);

    const log = new ReadLog(run.store);
    const reader = new Engine(log, path.join(run.dir, 'state-rec2'));
    assert.deepEqual((await reader.info('p')).children, ['pc1', 'pc2']);
    assert.deepEqual(log.volumesRead(METADATA_OBJECT), ['p', 'pc1', 'pc2'], 'info read the metadata of p and its clones only');
    assert.deepEqual((await reader.info('pc1')).children, ['pcc']);

    log.gets.length = 0;
    await reader.collect('p');
    assert.deepEqual(log.volumesRead('versions/'), ['p', 'pc1', 'pc2', 'pcc'], 'collection read the tables of p and its descendants only');
    // and kept what they read: every clone reads back whole
    for (const v of ['pc1', 'pc2', 'pcc']) {
      const vol = await engine.open(v, 'check');
      try {
        assert.equal((await vol.read(0, 4 * MiB)).length, 4 * MiB);
      } finally {
        await vol.close();
      }
    }
    await assert.rejects(engine.deleteVolume('p'), /clones 'pc1', 'pc2', 'pcc' still use its data|clones .* still use its data/);

    // a record left by a clone that failed is passed over; deleting a clone deletes its record
    await run.store.put(containerName('p'), `${CHILDREN_PREFIX}ghost/00000000-0000-4000-8000-000000000000`, Buffer.alloc(0));
    assert.deepEqual((await engine.info('p')).children, ['pc1', 'pc2']);
    await engine.deleteVolume('pc2');
    assert.deepEqual((await markers(run.store, 'p')).filter((m) => m.includes('pc2')), []);
    assert.deepEqual((await engine.info('p')).children, ['pc1']);
  });

  test('a volume of format 3, whose clones may not be recorded, is read the old way: its clones are found and their objects kept', async () => {
    const engine = new Engine(run.store, path.join(run.dir, 'state-v3'));
    const image = path.join(run.dir, 'old.raw');
    writeImage(image, 4 * MiB, MiB, () => false);
    await engine.importImage(image, 'old3', { objectSize: MiB });
    await engine.snapshot('old3', 's');
    // as format 3 wrote it: its volume.json says 3, and its clone left no record
    const metaName = containerName('old3');
    const meta = JSON.parse((await run.store.get(metaName, METADATA_OBJECT)).toString()) as Record<string, unknown>;
    await run.store.put(metaName, METADATA_OBJECT, Buffer.from(JSON.stringify({ ...meta, formatVersion: 3 })));
    await engine.clone('old3', 's', 'oc');
    for (const m of await markers(run.store, 'old3')) await run.store.delete(metaName, m);
    const before = await (async () => {
      const v = await engine.open('oc', 'check');
      try {
        return await v.read(0, 4 * MiB);
      } finally {
        await v.close();
      }
    })();

    assert.deepEqual((await engine.info('old3')).children, ['oc']);
    await engine.snapshot('old3', 's2'); // collection runs: the objects oc reads must stay
    await engine.deleteSnapshot('old3', 's');
    await assert.rejects(engine.deleteVolume('old3'), /clones 'oc' still use its data/);
    const fresh = new Engine(run.store, path.join(run.dir, 'state-v3b'));
    const v = await fresh.open('oc', 'check');
    try {
      assert.ok((await v.read(0, 4 * MiB)).equals(before), 'the clone reads what it read before');
    } finally {
      await v.close();
    }
  });
});
