// Import of a raw image into a volume in the store, and export back: on the
// FileStore and on a real Swift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { onEachStore } from './fixtures/stores.js';
import { writeImage, sha256File } from './fixtures/files.js';
import { FaultStore } from '../src/store/fault-store.js';
import { Engine } from '../src/engine/engine.js';
import { containerName, DATA_PREFIX } from '../src/format/volume-format.js';

const MiB = 1024 * 1024;

onEachStore((run) => {
  async function dataObjects(volume: string): Promise<string[]> {
    const names: string[] = [];
    for await (const obj of run.store.list(containerName(volume), DATA_PREFIX)) names.push(obj.name);
    return names;
  }

  test('a 100 MiB image with zero stretches round-trips byte-identical, zero chunks not stored', async () => {
    const image = path.join(run.dir, 'image.raw');
    // 8 MiB objects: 13 chunks (the last one 4 MiB). Chunks 2, 5, 6 and 12 are all
    // zeros; chunk 9 is half zeros (stored, since it is not all zero).
    const zeroChunks = new Set([2, 5, 6, 12]);
    writeImage(image, 100 * MiB, 4 * MiB, (piece) => zeroChunks.has(Math.floor(piece / 2)) || piece === 18);
    const engine = new Engine(run.store, path.join(run.dir, 'state1'));
    const progress: number[] = [];
    const info = await engine.importImage(image, 'roundtrip', { onProgress: (done) => progress.push(done) });
    assert.equal(info.size, 100 * MiB);
    assert.equal(info.state, 'ready');
    assert.equal(progress.at(-1), 100 * MiB);

    const stored = (await dataObjects('roundtrip')).map((n) => parseInt(n.split('/').at(-1)!, 16)).sort((a, b) => a - b);
    assert.deepEqual(stored, [0, 1, 3, 4, 7, 8, 9, 10, 11]);

    // Export from the attached volume, and from a second state dir that only has the store.
    const out1 = path.join(run.dir, 'out1.raw');
    await engine.exportVolume('roundtrip', out1);
    assert.equal(sha256File(out1), sha256File(image));
    const out2 = path.join(run.dir, 'out2.raw');
    await new Engine(run.store, path.join(run.dir, 'state2')).exportVolume('roundtrip', out2);
    assert.equal(sha256File(out2), sha256File(image));
    // The export is sparse: the zero chunks left holes.
    assert.ok(fs.statSync(out2).blocks * 512 < 100 * MiB - 30 * MiB, 'export should be sparse');

    await assert.rejects(engine.exportVolume('roundtrip', out1), /exists; use --force/);
    await engine.deleteVolume('roundtrip');
    assert.deepEqual(await run.store.listContainers(containerName('roundtrip')), []);
  });

  test('a failed import leaves no volume behind', async () => {
    const image = path.join(run.dir, 'fail.raw');
    writeImage(image, 40 * MiB, MiB, () => false);
    const faulty = new FaultStore(run.store);
    const engine = new Engine(faulty, path.join(run.dir, 'state3'));
    let armed = false;
    const onProgress = (done: number): void => {
      // Once a few chunks are up, the store starts failing uploads.
      if (!armed && done >= 5 * MiB) {
        armed = true;
        faulty.failNext(1, 'unreachable', { ops: ['put'] });
      }
    };
    await assert.rejects(engine.importImage(image, 'broken', { objectSize: MiB, onProgress }), (err: Error) => {
      assert.equal(err.name, 'StoreError');
      return true;
    });
    assert.ok(armed);
    assert.equal(await engine.catalog.readMetadata('broken'), null);
    assert.deepEqual(await run.store.listContainers(containerName('broken')), []);
    assert.equal(engine.state.hasVolume('broken'), false);
    // And the name is free for a successful import.
    await engine.importImage(image, 'broken', { objectSize: MiB });
    const out = path.join(run.dir, 'fail-out.raw');
    await engine.exportVolume('broken', out);
    assert.equal(sha256File(out), sha256File(image));
    await engine.deleteVolume('broken');
  });

  test('an aborted import cleans up what it uploaded', async () => {
    const image = path.join(run.dir, 'abort.raw');
    writeImage(image, 64 * MiB, MiB, () => false);
    const engine = new Engine(run.store, path.join(run.dir, 'state4'));
    const controller = new AbortController();
    const importing = engine.importImage(image, 'aborted', {
      objectSize: MiB,
      signal: controller.signal,
      onProgress: (done) => {
        if (done >= 8 * MiB) controller.abort(new Error('stop here'));
      },
    });
    await assert.rejects(importing, /stop here/);
    assert.deepEqual(await run.store.listContainers(containerName('aborted')), []);
  });
});
