// volume list reads the catalog index (src/engine/catalog-index.ts) instead
// of three objects per volume: on the FileStore and on a real Swift, the list
// equals what each volume's own objects say, it reads no volume's objects for
// volumes with a trusted entry, and it falls back to the volume itself where
// the index is missing, ambiguous or says incomplete.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { Engine } from '../src/engine/engine.js';
import { VolumeCatalog, type VolumeSummary } from '../src/engine/volume-catalog.js';
import { CATALOG_CONTAINER, entryName, parseEntry } from '../src/engine/catalog-index.js';
import { FaultStore } from '../src/store/fault-store.js';
import { PassThroughStore } from '../src/store/pass-through-store.js';
import { StoreError, type PutOptions } from '../src/store/object-store.js';

/** Fails the next `failing` writes of index entries, as a store that stops answering would. */
class IndexWritesFail extends PassThroughStore {
  failing = 0;
  override async put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    if (container === CATALOG_CONTAINER && this.failing > 0) {
      this.failing--;
      throw new StoreError('unreachable', `injected: index entry ${name} not written`);
    }
    return super.put(container, name, data, options);
  }
}

const MiB = 1024 * 1024;

test('an entry name carries the summary and nothing else parses as one', () => {
  const s: VolumeSummary = {
    name: 'web1',
    uuid: '0f8fad5b-d9cb-469f-a165-70867728950e',
    size: 10 * 1024 * MiB,
    objectSize: 8 * MiB,
    createdAt: '2026-12-01T18:22:54.123Z',
    state: 'ready',
    latestVersion: 12,
    storedBytes: 3 * MiB,
    encrypted: true,
    parent: { volume: 'base', seq: 3, snapshot: 'golden' },
  };
  assert.equal(entryName(s), 'web1/0f8fad5b-d9cb-469f-a165-70867728950e/0000000012/10737418240/8388608/3145728/1796149374123/e/base/3/golden');
  assert.deepEqual(parseEntry(entryName(s)), s);
  const plain: VolumeSummary = { ...s, encrypted: false, state: 'incomplete', latestVersion: null, storedBytes: 0 };
  delete plain.parent;
  assert.deepEqual(parseEntry(entryName(plain)), plain);
  for (const bad of ['web1', 'web1/x/0000000001/1/1/1/1/-', 'Web1/0f8fad5b-d9cb-469f-a165-70867728950e/0000000001/1/1/1/1/-', `${entryName(s)}/more`, entryName(s).replace('/e/', '/x/'), entryName(s).replace('/10737418240/', '/-1/')]) {
    assert.equal(parseEntry(bad), null, bad);
  }
});

onEachStore((run) => {
  let engine: Engine;
  let faults: FaultStore;
  let indexFaults: IndexWritesFail;
  let catalog: VolumeCatalog;

  before(() => {
    indexFaults = new IndexWritesFail(run.store);
    faults = new FaultStore(indexFaults);
    engine = new Engine(faults, path.join(run.dir, 'state'), { leaseMs: 3000 });
    catalog = new VolumeCatalog(faults);
  });

  /** What each volume's own objects say (the catalog's summary of one volume). */
  async function direct(names: string[]): Promise<VolumeSummary[]> {
    const out: VolumeSummary[] = [];
    for (const n of names.sort()) out.push((await catalog.summary(n))!);
    return out;
  }
  const sorted = (l: VolumeSummary[]): VolumeSummary[] => [...l].sort((a, b) => a.name.localeCompare(b.name));

  test('list is the volumes as their own objects say, read from the index alone', async () => {
    const image = path.join(run.dir, 'a.raw');
    writeImage(image, 4 * MiB, MiB, (i) => i === 2);
    await engine.importImage(image, 'a', { objectSize: MiB });
    await engine.snapshot('a', 's1');
    await engine.clone('a', 's1', 'b');
    await engine.createVolume('c', 2 * MiB, MiB, { encrypt: false });
    const v = await engine.open('c', 'index test');
    await v.write(0, Buffer.alloc(MiB, 0x11));
    await v.close();
    await engine.snapshot('c', 'first');

    const expected = await direct(['a', 'b', 'c']);
    assert.equal(expected.find((s) => s.name === 'b')?.parent?.volume, 'a');
    assert.equal(expected.find((s) => s.name === 'c')?.storedBytes, MiB);
    const gets = faults.calls('get');
    const lists = faults.calls('list');
    assert.deepEqual(sorted(await catalog.list()), expected);
    assert.equal(faults.calls('get'), gets, 'no object of any volume was read');
    assert.ok(faults.calls('list') - lists <= 2, 'one listing of the index (and of the containers)');
    // one entry per volume: the older ones went with each commit
    const entries: string[] = [];
    for await (const o of run.store.list(CATALOG_CONTAINER)) entries.push(o.name);
    assert.deepEqual(entries.map((e) => e.split('/')[0]).sort(), ['a', 'b', 'c']);
    assert.equal(parseEntry(entries.find((e) => e.startsWith('c/'))!)?.latestVersion, expected.find((s) => s.name === 'c')?.latestVersion);
  });

  test('a volume with no entry, two of different uuids, or one that says incomplete is read from the volume itself', async () => {
    const entries: string[] = [];
    for await (const o of run.store.list(CATALOG_CONTAINER)) entries.push(o.name);
    const a = entries.find((e) => e.startsWith('a/'))!;
    const b = entries.find((e) => e.startsWith('b/'))!;
    const c = entries.find((e) => e.startsWith('c/'))!;
    await run.store.delete(CATALOG_CONTAINER, a); // made before the index, or its entry failed
    const other = parseEntry(b)!;
    await run.store.put(CATALOG_CONTAINER, entryName({ ...other, uuid: '00000000-0000-4000-8000-000000000000', latestVersion: 99 }), Buffer.alloc(0));
    const stale = parseEntry(c)!;
    await run.store.delete(CATALOG_CONTAINER, c);
    await run.store.put(CATALOG_CONTAINER, entryName({ ...stale, state: 'incomplete', latestVersion: null }), Buffer.alloc(0));
    const gets = faults.calls('get');
    assert.deepEqual(sorted(await catalog.list()), await direct(['a', 'b', 'c']));
    assert.ok(faults.calls('get') > gets, 'those three were read');
    // the next commit of a volume puts its entry right again
    await engine.snapshot('b', 'again');
    const after: string[] = [];
    for await (const o of run.store.list(CATALOG_CONTAINER, 'b/')) after.push(o.name);
    assert.equal(after.length, 1);
    assert.deepEqual(parseEntry(after[0]!), (await direct(['b']))[0]);
  });

  test('an entry that cannot be written does not fail the commit; delete drops the entries', async () => {
    indexFaults.failing = 1;
    await engine.snapshot('c', 'second');
    assert.equal(indexFaults.failing, 0, 'the entry write was tried');
    assert.deepEqual(sorted(await catalog.list()), await direct(['a', 'b', 'c']), 'the list is still right');
    await engine.deleteVolume('b');
    await engine.deleteSnapshot('a', 's1');
    await engine.deleteVolume('a');
    const left: string[] = [];
    for await (const o of run.store.list(CATALOG_CONTAINER)) left.push(o.name.split('/')[0]!);
    assert.ok(!left.includes('a') && !left.includes('b'), `entries of deleted volumes: ${left.join(' ')}`);
    assert.deepEqual((await catalog.list()).map((s) => s.name), ['c']);
  });
});
