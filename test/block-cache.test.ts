// The gateway's clean cache (src/cache/block-cache.ts): blocks read back as
// written, the budget is never passed (least recently used objects go, their
// files deleted), what survives a restart is what was committed, a crash
// leaves no space beyond what the database vouches for, and a block changed
// on disk reads as a miss, never as wrong bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BlockCache, CACHE_BLOCK } from '../src/cache/block-cache.js';
import { tempDir } from './fixtures/files.js';
import { crc32c } from '../src/native/addons.js';

const KiB = 1024;
const OBJECT_BLOCKS = 256; // 1 MiB objects

function allocated(dir: string): number {
  let bytes = 0;
  for (const f of fs.readdirSync(path.join(dir, 'objects'))) bytes += fs.statSync(path.join(dir, 'objects', f)).blocks * 512;
  return bytes;
}

test('blocks read back as written; what is not held is a miss', async () => {
  const tmp = tempDir('swiftvol-cache-');
  try {
    const cache = BlockCache.open(tmp.dir, 8 * 1024 * KiB);
    const data = randomBytes(64 * KiB);
    await cache.write('c/a', OBJECT_BLOCKS, 16, data);
    assert.deepEqual(await cache.read('c/a', 16, 32, 64 * KiB), data);
    assert.deepEqual(await cache.read('c/a', 20, 24, 16 * KiB), data.subarray(16 * KiB, 32 * KiB));
    assert.equal(await cache.read('c/a', 15, 17, 8 * KiB), null, 'block 15 was never written');
    assert.equal(await cache.read('c/b', 0, 1, CACHE_BLOCK), null);
    // an object's short last block
    await cache.write('c/short', 3, 2, Buffer.from('tail'));
    assert.equal((await cache.read('c/short', 2, 3, 4))!.toString(), 'tail');
    assert.equal(cache.stats().bytes, 17 * CACHE_BLOCK);
    assert.equal(cache.bytesOf(['c/a', 'c/none']), 16 * CACHE_BLOCK);
    cache.close();
  } finally {
    tmp.remove();
  }
});

test('block sums given with the data are kept; wrong ones make misses, never wrong bytes', async () => {
  const tmp = tempDir('swiftvol-cache-');
  try {
    const cache = BlockCache.open(tmp.dir, 8 * 1024 * KiB);
    const data = randomBytes(64 * KiB + 100); // an object's short last block too
    const sums = crc32c().blockSums(data, CACHE_BLOCK);
    await cache.write('c/given', 17, 0, data, sums);
    assert.deepEqual(await cache.read('c/given', 0, 17, data.length), data);
    const wrong = Buffer.from(sums);
    wrong[4 * 3]! ^= 1; // block 3's
    await cache.write('c/wrong', 17, 0, data, wrong);
    assert.deepEqual(await cache.read('c/wrong', 0, 3, 3 * CACHE_BLOCK), data.subarray(0, 3 * CACHE_BLOCK), 'blocks 0-2 are right');
    assert.equal(await cache.read('c/wrong', 2, 4, 2 * CACHE_BLOCK), null, 'block 3 fails its check: a miss');
    assert.equal(await cache.read('c/wrong', 0, 1, CACHE_BLOCK), null, 'the object was dropped');
    await assert.rejects(cache.write('c/short', 17, 0, data, sums.subarray(4)), /sums for 17 blocks/);
    assert.equal(await cache.read('c/short', 0, 1, CACHE_BLOCK), null);
    cache.close();
  } finally {
    tmp.remove();
  }
});

test('the budget is never passed: the least recently used objects go, and their space with them', async () => {
  const tmp = tempDir('swiftvol-cache-');
  try {
    const budget = 1024 * KiB; // four 256 KiB pieces
    const cache = BlockCache.open(tmp.dir, budget);
    const piece = (k: string): Buffer => Buffer.alloc(256 * KiB, k.charCodeAt(0));
    for (const k of ['a', 'b', 'c', 'd']) await cache.write(`c/${k}`, OBJECT_BLOCKS, 0, piece(k));
    assert.ok(await cache.read('c/a', 0, 64, 256 * KiB), 'a is used again: b is now the least recently used');
    await cache.write('c/e', OBJECT_BLOCKS, 0, piece('e'));
    assert.equal(await cache.read('c/b', 0, 1, CACHE_BLOCK), null, 'b was evicted');
    for (const k of ['a', 'c', 'd', 'e']) assert.ok((await cache.read(`c/${k}`, 0, 64, 256 * KiB))?.equals(piece(k)), `${k} is held`);
    assert.ok(cache.stats().bytes <= budget);
    assert.ok(allocated(tmp.dir) <= budget, `files hold ${allocated(tmp.dir)} bytes, the budget is ${budget}`);
    assert.equal(cache.stats().evicted, 1);
    // more than the budget at once is not kept at all
    await cache.write('c/huge', 1024, 0, Buffer.alloc(2 * budget));
    assert.equal(await cache.read('c/huge', 0, 1, CACHE_BLOCK), null);
    assert.ok(cache.stats().bytes <= budget);
    cache.close();
  } finally {
    tmp.remove();
  }
});

test('a restart keeps what was committed; a crash leaves nothing the database does not vouch for', async () => {
  const tmp = tempDir('swiftvol-cache-');
  try {
    const kept = randomBytes(128 * KiB);
    const first = BlockCache.open(tmp.dir, 4 * 1024 * KiB);
    await first.write('c/kept', OBJECT_BLOCKS, 0, kept);
    first.close();
    const second = BlockCache.open(tmp.dir, 4 * 1024 * KiB);
    assert.deepEqual(await second.read('c/kept', 0, 32, 128 * KiB), kept, 'held across a restart');
    // written, never committed: as if serve was killed before its next commit
    await second.write('c/lost', OBJECT_BLOCKS, 0, randomBytes(512 * KiB));
    await second.write('c/kept', OBJECT_BLOCKS, 64, randomBytes(256 * KiB));
    const third = BlockCache.open(tmp.dir, 4 * 1024 * KiB); // `second` never closes: it crashed
    assert.equal(await third.read('c/lost', 0, 1, CACHE_BLOCK), null);
    assert.equal(await third.read('c/kept', 64, 65, CACHE_BLOCK), null, 'blocks not vouched for are misses');
    assert.deepEqual(await third.read('c/kept', 0, 32, 128 * KiB), kept);
    assert.equal(third.stats().bytes, 128 * KiB);
    assert.ok(allocated(tmp.dir) <= 128 * KiB + 64 * KiB, `after the crash the files hold ${allocated(tmp.dir)} bytes (${128 * KiB} vouched for)`);
    third.close();
    second.close(); // (its timer would commit into a removed directory)
  } finally {
    tmp.remove();
  }
});

test('a block changed on the disk is a miss, not wrong bytes', async () => {
  const tmp = tempDir('swiftvol-cache-');
  try {
    const cache = BlockCache.open(tmp.dir, 4 * 1024 * KiB);
    await cache.write('c/x', OBJECT_BLOCKS, 0, Buffer.alloc(64 * KiB, 1));
    const file = path.join(tmp.dir, 'objects', fs.readdirSync(path.join(tmp.dir, 'objects'))[0]!);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([2]), 0, 1, 5000);
    fs.closeSync(fd);
    assert.equal(await cache.read('c/x', 0, 16, 64 * KiB), null);
    assert.equal(await cache.read('c/x', 0, 1, CACHE_BLOCK), null, 'the object was dropped');
    assert.equal(cache.stats().bytes, 0);
    cache.close();
  } finally {
    tmp.remove();
  }
});
