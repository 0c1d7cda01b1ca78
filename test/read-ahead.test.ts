// Read-ahead follows detected sequential streams, not request sizes
// (src/engine/read-ahead.ts): scattered reads, large or small, fetch only
// their blocks; a stream is read ahead of from its third read, by as much as
// it has read, up to four objects; a stream that stops has fetched at most
// as much again as it read. The detector alone, then a Volume on the
// FileStore counting the bytes its GETs return.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { StreamDetector } from '../src/engine/read-ahead.js';
import { tempDir, writeImage } from './fixtures/files.js';
import { FileStore } from '../src/store/file-store.js';
import { CountingStore } from './fixtures/counting-store.js';
import { Engine } from '../src/engine/engine.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('the detector: scattered reads set off nothing; a stream is read ahead of as far as it has gone, up to the maximum', () => {
  const d = new StreamDetector(32 * MiB, 1024 * MiB);
  for (const at of [100, 7, 512, 33, 250, 900, 3]) assert.equal(d.onRead(at * MiB, 128 * KiB), null, `scattered read at ${at} MiB`);
  // a stream of 128 KiB reads from 600 MiB
  const base = 600 * MiB;
  assert.equal(d.onRead(base, 128 * KiB), null);
  assert.equal(d.onRead(base + 128 * KiB, 128 * KiB), null);
  assert.deepEqual(d.onRead(base + 256 * KiB, 128 * KiB), { start: base + 384 * KiB, end: base + 768 * KiB });
  // asked for again in steps, once half of what was asked for is used; never twice the same bytes
  let reach = base + 768 * KiB;
  let steps = 0;
  for (let i = 3; base + i * 128 * KiB < 1024 * MiB; i++) {
    const r = d.onRead(base + i * 128 * KiB, 128 * KiB);
    if (!r) continue;
    steps++;
    assert.equal(r.start, reach, 'contiguous with what was asked before');
    reach = r.end;
    const readEnd = base + (i + 1) * 128 * KiB;
    assert.ok(reach - readEnd <= 32 * MiB, 'no more than the maximum ahead');
    assert.ok(reach - readEnd <= readEnd - base + 128 * KiB, 'no more ahead than the stream has read');
  }
  assert.ok(steps < 3392 / 4, `in steps, not a request per read (${steps})`);
  assert.equal(reach, 1024 * MiB, 'not past the volume end');
});

test('the detector: reads in flight that arrive out of order still make a stream; two streams are followed at once', () => {
  const d = new StreamDetector(32 * MiB, 1024 * MiB);
  const order = [0, 2, 1, 3, 5, 4, 6, 7];
  const asked: Array<{ start: number; end: number }> = [];
  for (const i of order) {
    const r = d.onRead(i * MiB, MiB);
    if (r) asked.push(r);
  }
  assert.ok(asked.length > 0, 'read ahead of');
  const s = new StreamDetector(32 * MiB, 1024 * MiB);
  let a = 0;
  let b = 0;
  for (let i = 0; i < 6; i++) {
    if (s.onRead(i * 64 * KiB, 64 * KiB)) a++;
    if (s.onRead(500 * MiB + i * 64 * KiB, 64 * KiB)) b++;
  }
  assert.ok(a > 0 && b > 0, `both interleaved streams read ahead of (${a}, ${b})`);
});


test('a volume fetches what scattered reads read, and streams ahead of a sequential reader', async () => {
  const tmp = tempDir('swiftvol-read-ahead-');
  try {
    const store = new CountingStore(new FileStore(path.join(tmp.dir, 'store')));
    const image = path.join(tmp.dir, 'image.raw');
    const content = writeImage(image, 96 * MiB, MiB, () => false);
    const engine = new Engine(store, path.join(tmp.dir, 'state'));
    await engine.importImage(image, 'ra');
    const volume = await engine.open('ra', 'test', { lease: false });
    try {
      // scattered 128 KiB reads (a guest's readahead during a boot): each fetches its own bytes only
      const spots = [3, 17, 42, 9, 66, 81, 30, 55].map((m) => m * MiB + 4096);
      store.bytes = 0;
      for (const at of spots) assert.ok((await volume.read(at, 128 * KiB)).equals(content.subarray(at, at + 128 * KiB)));
      const trailers = spots.length * 2 * 4 * KiB; // at most the CRC32C trailer of each object, fetched beside
      assert.ok(store.bytes <= spots.length * 128 * KiB + trailers, `scattered reads fetched ${store.bytes} bytes for ${spots.length * 128 * KiB}`);

      // a sequential reader from 88 MiB: read ahead of, so most of its reads find their data fetched
      store.bytes = 0;
      store.gets.length = 0;
      for (let at = 0; at < 16 * MiB; at += MiB) assert.ok((await volume.read(at, MiB)).equals(content.subarray(at, at + MiB)));
      await new Promise((r) => setTimeout(r, 200)); // installs of what was read ahead
      const fetched = store.bytes;
      assert.ok(fetched > 16 * MiB, `the stream was read ahead of (${fetched} bytes fetched for 16 MiB read)`);
      assert.ok(fetched <= 2 * 16 * MiB + 8 * 4 * KiB * 4, `a stream that stops fetched at most as much again (${fetched}); its GETs:\n${store.gets.join('\n')}`);
      // volume info: what was fetched and kept is cache, apart from what was written
      await volume.write(0, Buffer.alloc(MiB, 7));
      await volume.flush();
    } finally {
      await volume.close();
    }
    const info = await engine.info('ra');
    assert.equal(info.dirtyBytes, MiB);
    assert.ok(info.cachedBytes! >= 16 * MiB - MiB + 8 * 128 * KiB, `cached ${info.cachedBytes}`);
    assert.ok(info.cachedBytes! <= store.bytes + 8 * 128 * KiB, 'no more cache than was fetched');
  } finally {
    tmp.remove();
  }
});
