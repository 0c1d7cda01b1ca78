// Thousands of random reads and writes at 512-byte-aligned offsets and
// lengths on a volume whose base is in the store, checked against an
// in-memory model, with flushes, reopens and a crash-like close in between.
// Every test runs on the FileStore and on a real Swift.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pbkdf2 as pbkdf2Callback, randomFillSync } from 'node:crypto';
import { promisify } from 'node:util';
import { onEachStore, type StoreRun } from './fixtures/stores.js';
import { writeImage } from './fixtures/files.js';
import { Engine } from '../src/engine/engine.js';
import type { Volume } from '../src/engine/volume.js';

const pbkdf2 = promisify(pbkdf2Callback);

const MiB = 1024 * 1024;
// 1 MiB objects so that I/O crosses chunk boundaries often; a size that is a
// multiple of 512 but not of 4096, so the last block is cut short.
const OBJECT_SIZE = MiB;
const SIZE = 12 * MiB + 2560;
const SECTORS = SIZE / 512;

/** A small deterministic PRNG so a failure can be replayed from its seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Op {
  kind: 'read' | 'write' | 'unmap';
  offset: number;
  length: number;
}

function randomOp(rand: () => number): Op {
  const r = rand();
  const kind = r < 0.45 ? 'read' : r < 0.87 ? 'write' : 'unmap';
  // Mostly small I/O, some up to 3 MiB (crossing several chunks).
  const maxSectors = rand() < 0.9 ? 64 : 6144;
  const sectors = 1 + Math.floor(rand() * maxSectors);
  const start = Math.floor(rand() * SECTORS);
  const length = Math.min(sectors, SECTORS - start) * 512;
  return { kind, offset: start * 512, length };
}

function overlaps(a: Op, b: Op): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

async function randomIo({ store, dir }: StoreRun, t: TestContext, cacheReads: boolean): Promise<void> {
  const seed = Number(process.env.SWIFTVOL_TEST_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  const image = path.join(dir, 'base.raw');
  // Chunks 3 and 7 are zero in the base (no object), the rest random.
  const model = writeImage(image, SIZE, OBJECT_SIZE, (chunk) => chunk === 3 || chunk === 7);
  const engine = new Engine(store, path.join(dir, 'state'));
  await engine.importImage(image, 'model', { objectSize: OBJECT_SIZE });
  const open = (): Promise<Volume> => engine.open('model', 'random-io test', { cacheReads });

  let volume: Volume = await open();
  let reads = 0;
  let writes = 0;
  let unmaps = 0;
  let reopens = 0;
  let crashes = 0;
  const TOTAL = 4000;
  try {
    for (let done = 0; done < TOTAL; ) {
      // A batch of ops that run concurrently. Writes never overlap each other,
      // so the model stays defined; a read that overlaps a concurrent write may
      // see either side and is not checked, but it races the write on purpose:
      // its fetch must not overwrite the newer data in the overlay.
      const batch: Op[] = [];
      const size = rand() < 0.7 ? 1 : 2 + Math.floor(rand() * 6);
      while (batch.length < size) {
        const op = randomOp(rand);
        const conflict = batch.some((other) => op.kind !== 'read' && other.kind !== 'read' && overlaps(op, other));
        if (!conflict) batch.push(op);
      }
      const racy = (op: Op): boolean => batch.some((other) => other !== op && other.kind !== 'read' && overlaps(op, other));
      await Promise.all(
        batch.map(async (op) => {
          if (op.kind === 'write') {
            const data = Buffer.allocUnsafe(op.length);
            randomFillSync(data);
            await volume.write(op.offset, data);
            data.copy(model, op.offset);
            writes++;
          } else if (op.kind === 'unmap') {
            await volume.unmap(op.offset, op.length);
            model.fill(0, op.offset, op.offset + op.length);
            unmaps++;
          } else {
            const data = await volume.read(op.offset, op.length);
            if (!racy(op) && !data.equals(model.subarray(op.offset, op.offset + op.length))) {
              assert.fail(`seed ${seed}: read ${op.offset}+${op.length} differs from the model`);
            }
            reads++;
          }
        }),
      );
      done += batch.length;
      const r = rand();
      if (r < 0.05) {
        await volume.flush();
      } else if (r < 0.06) {
        // Clean reopen.
        await volume.close();
        volume = await open();
        reopens++;
      } else if (r < 0.07) {
        // Crash-like: flush, then drop everything without closing.
        await volume.flush();
        volume.abandon();
        volume = await open();
        crashes++;
      }
    }
    // Whole-volume check at the end, and again after a reopen.
    assert.ok((await volume.read(0, SIZE)).equals(model), `seed ${seed}: final full read differs`);
    await volume.close();
    volume = await open();
    assert.ok((await volume.read(0, SIZE)).equals(model), `seed ${seed}: full read after reopen differs`);
  } finally {
    await volume.close();
  }
  assert.ok(reads > 1000 && writes > 1000 && unmaps > 300, `seed ${seed}: ${reads} reads, ${writes} writes, ${unmaps} unmaps`);
  t.diagnostic(`seed ${seed}: ${reads} reads, ${writes} writes, ${unmaps} unmaps, ${reopens} reopens, ${crashes} crashes`);
  await engine.deleteVolume('model');
}

onEachStore((run) => {
  for (const cacheReads of [true, false]) {
    test(`random I/O matches an in-memory model across flushes, reopens and crashes (read cache ${cacheReads ? 'on' : 'off'})`, async (t) => {
      await randomIo(run, t, cacheReads);
    });
  }

  test('I/O outside the volume or misaligned is refused', async () => {
    const engine = new Engine(run.store, path.join(run.dir, 'state-range'));
    await engine.createVolume('ranges', 4 * MiB, MiB);
    const volume = await engine.open('ranges', 'range test');
    try {
      await assert.rejects(volume.read(4 * MiB, 512), /beyond the end/);
      await assert.rejects(volume.write(4 * MiB - 512, Buffer.alloc(1024)), /beyond the end/);
      await assert.rejects(volume.read(100, 512), /not aligned/);
      await assert.rejects(volume.write(0, Buffer.alloc(100)), /not aligned/);
      // An empty volume reads as zeros and holds what is written.
      assert.ok((await volume.read(0, 8192)).equals(Buffer.alloc(8192)));
      await volume.write(MiB - 512, Buffer.alloc(1024, 7));
      assert.ok((await volume.read(MiB - 1024, 2048)).equals(Buffer.concat([Buffer.alloc(512), Buffer.alloc(1024, 7), Buffer.alloc(512)])));
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('ranges');
  });

  test("a write that lands while a read's fetch is in flight is not overwritten by the fetched data", async () => {
    const image = path.join(run.dir, 'race.raw');
    const base = writeImage(image, 4 * MiB, MiB, () => false);
    const engine = new Engine(run.store, path.join(run.dir, 'state-race'));
    await engine.importImage(image, 'race', { objectSize: MiB });
    const volume = await engine.open('race', 'race test');
    try {
      const written = Buffer.alloc(8192, 0x5a);
      // The read starts first and fetches the cold range; the write lands before the GET returns.
      const reading = volume.read(0, 2 * MiB);
      const writing = volume.write(MiB - 4096, written);
      const [seen] = await Promise.all([reading, writing]);
      // The read may see either side of the racing blocks, but nothing else.
      assert.ok(seen.subarray(0, MiB - 4096).equals(base.subarray(0, MiB - 4096)));
      assert.ok(seen.subarray(MiB + 4096, 2 * MiB).equals(base.subarray(MiB + 4096, 2 * MiB)));
      // Afterwards the write is what the volume holds, also once reopened.
      assert.ok((await volume.read(MiB - 4096, 8192)).equals(written));
      const expected = Buffer.from(base.subarray(0, 2 * MiB));
      written.copy(expected, MiB - 4096);
      assert.ok((await volume.read(0, 2 * MiB)).equals(expected));
      await volume.close();
      const again = await engine.open('race', 'race test');
      try {
        assert.ok((await again.read(0, 2 * MiB)).equals(expected));
      } finally {
        await again.close();
      }
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('race');
  });

  test('writes that land while fetched data is written to the overlay in the background are not undone by it', async () => {
    const image = path.join(run.dir, 'install.raw');
    const base = writeImage(image, 4 * MiB, MiB, () => false);
    const engine = new Engine(run.store, path.join(run.dir, 'state-install'));
    await engine.importImage(image, 'install', { objectSize: MiB });
    const volume = await engine.open('install', 'install test');
    const expected = Buffer.from(base);
    try {
      for (let chunk = 0; chunk < 4; chunk++) {
        const at = chunk * MiB;
        // The read returns as soon as the GET has; the cache write of the chunk is still on its way.
        const seen = await volume.read(at, 256 * 1024);
        assert.ok(seen.equals(base.subarray(at, at + 256 * 1024)));
        // Asked before the cache write can have finished (that needs a turn of the event loop): served from the data on its way.
        const during = await volume.read(at + 320 * 1024 + 512, 64 * 1024);
        assert.ok(during.equals(base.subarray(at + 320 * 1024 + 512, at + 384 * 1024 + 512)), `chunk ${chunk} while it is being installed`);
        const whole = Buffer.alloc(8192, 0x10 + chunk);
        const piece = Buffer.alloc(1024, 0x20 + chunk);
        await Promise.all([
          volume.write(at + 64 * 1024, whole), // whole blocks
          volume.write(at + 512 * 1024 + 512, piece), // part of a block
          volume.unmap(at + 768 * 1024, 8192),
        ]);
        whole.copy(expected, at + 64 * 1024);
        piece.copy(expected, at + 512 * 1024 + 512);
        expected.fill(0, at + 768 * 1024, at + 768 * 1024 + 8192);
        // Reads while the install may still run, then after it surely has (a flush after close).
        assert.ok((await volume.read(at, MiB)).equals(expected.subarray(at, at + MiB)), `chunk ${chunk} right after the writes`);
      }
      await volume.close();
      const again = await engine.open('install', 'install test');
      try {
        assert.ok((await again.read(0, 4 * MiB)).equals(expected), 'after reopening');
      } finally {
        await again.close();
      }
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('install');
  });

  test('a chunk composed for a snapshot holds the frozen content when writes land while its blocks are read', async () => {
    const engine = new Engine(run.store, path.join(run.dir, 'state-compose'));
    await engine.createVolume('compose', 4 * MiB, MiB);
    const volume = await engine.open('compose', 'compose test');
    try {
      const frozen = Buffer.alloc(MiB);
      for (let i = 0; i < frozen.length; i += 4096) frozen.fill(i / 4096, i, i + 4096);
      await volume.write(0, frozen);
      await volume.write(MiB, frozen);
      const freeze = volume.freeze();
      assert.deepEqual(freeze.chunks, [0, 1]);
      const into = Buffer.alloc(MiB);
      // The overlay is read on libuv's pool: with every pool thread busy for a while, these writes
      // (and an unmap), made at once on the event loop, surely land before that read.
      const poolBusy = Array.from({ length: Number(process.env.UV_THREADPOOL_SIZE ?? 4) }, () => pbkdf2(Buffer.alloc(8), Buffer.alloc(8), 100_000, 32, 'sha256'));
      const composing = freeze.compose(0, into);
      await Promise.all([volume.write(8192, Buffer.alloc(4096, 0xee)), volume.unmap(64 * 1024, 8192)]);
      const composed = await composing;
      await Promise.all(poolBusy);
      assert.ok(composed?.equals(frozen), 'chunk 0 is what the freeze saw');
      // chunk 1, written after the freeze and before being composed: the copy made before the write is used
      await volume.write(MiB + 4096, Buffer.alloc(4096, 0xdd));
      assert.ok((await freeze.compose(1, into))?.equals(frozen), 'chunk 1 is what the freeze saw');
      volume.settleSnapshot(null);
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('compose');
  });

  test('unmapped blocks read as zeros over base data, and leave the overlay file', async () => {
    const image = path.join(run.dir, 'unmap.raw');
    const base = writeImage(image, 16 * MiB, MiB, () => false);
    const engine = new Engine(run.store, path.join(run.dir, 'state-unmap'));
    await engine.importImage(image, 'unmap', { objectSize: 4 * MiB });
    const volume = await engine.open('unmap', 'unmap test');
    const written = Buffer.alloc(8 * MiB, 0x33);
    try {
      await volume.write(0, written);
      await volume.flush();
      const before = volume.overlayBytes();
      assert.ok(before >= 8 * MiB, `overlay holds the writes (${before})`);
      // Unmap 6 MiB of written data plus 2 MiB never read (base data), with unaligned edges.
      await volume.unmap(512, 8 * MiB - 1024);
      await volume.unmap(10 * MiB, 2 * MiB);
      await volume.flush();
      const after = volume.overlayBytes();
      assert.ok(after <= before - 8 * MiB + 64 * 1024, `unmapped blocks freed: ${before} -> ${after}`);
      const expected = Buffer.from(base);
      expected.fill(0, 0, 8 * MiB);
      expected.fill(0x33, 0, 512);
      expected.fill(0x33, 8 * MiB - 512, 8 * MiB);
      expected.fill(0, 10 * MiB, 12 * MiB);
      assert.ok((await volume.read(0, 16 * MiB)).equals(expected));
      await volume.close();
      const again = await engine.open('unmap', 'unmap test');
      try {
        assert.ok((await again.read(0, 16 * MiB)).equals(expected), 'zero blocks persist over the base');
        // Writing into an unmapped block keeps the zeros around the write.
        await again.write(10 * MiB + 1024, Buffer.alloc(512, 0x44));
        expected.fill(0x44, 10 * MiB + 1024, 10 * MiB + 1536);
        assert.ok((await again.read(10 * MiB, 8192)).equals(expected.subarray(10 * MiB, 10 * MiB + 8192)));
      } finally {
        await again.close();
      }
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('unmap');
  });
});
