// AES-256-GCM of 4 KiB blocks on libuv's pool (native/aes_gcm.cc): byte for
// byte what Node's crypto gives, a cipher per block, in the format of
// src/engine/volume-key.ts (nonce: 8 zero bytes, then the block's index
// big-endian; 16-byte tags; the last block may be short), from block 0 or
// another; sealed in place or apart; opened back, and a flipped byte of a
// block or of its tag, a wrong key or a wrong first block found in the block
// where it is, nothing written after it; argument errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { aesGcm } from '../src/native/addons.js';

const addon = aesGcm();
const BLOCK = 4096;
const TAG = 16;
const MiB = 1024 * 1024;
const LENGTHS = [1, 4095, 4096, 4097, 3 * 4096 + 5, 8 * MiB];

const blockCount = (length: number): number => Math.ceil(length / BLOCK);

function nonce(block: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(block, 8);
  return n;
}

// Node's crypto, a cipher per block, as src/engine/volume-key.ts seals.
function reference(key: Buffer, data: Uint8Array, firstBlock: number): { sealed: Buffer; tags: Buffer } {
  const blocks = blockCount(data.length);
  const sealed = Buffer.alloc(data.length);
  const tags = Buffer.alloc(blocks * TAG);
  for (let b = 0; b < blocks; b++) {
    const cipher = createCipheriv('aes-256-gcm', key, nonce(firstBlock + b), { authTagLength: TAG });
    const start = b * BLOCK;
    cipher.update(data.subarray(start, start + BLOCK)).copy(sealed, start);
    cipher.final();
    cipher.getAuthTag().copy(tags, b * TAG);
  }
  return { sealed, tags };
}

function seal(key: Uint8Array, data: Uint8Array, out: Uint8Array, tags: Uint8Array, firstBlock: number): Promise<void> {
  return new Promise((resolve, reject) => addon.sealBlocks(key, data, out, tags, firstBlock, (err) => (err ? reject(err) : resolve())));
}

function open(key: Uint8Array, sealed: Uint8Array, tags: Uint8Array, out: Uint8Array, firstBlock: number): Promise<number> {
  return new Promise((resolve, reject) => addon.openBlocks(key, sealed, tags, out, firstBlock, (err, bad) => (err ? reject(err) : resolve(bad))));
}

for (const length of LENGTHS) {
  for (const firstBlock of [0, 7]) {
    test(`${length} bytes from block ${firstBlock}: sealed as Node's crypto seals them, apart and in place, and opened back`, async () => {
      const key = randomBytes(32);
      const data = randomBytes(length);
      const copy = Buffer.from(data);
      const expected = reference(key, data, firstBlock);
      const blocks = blockCount(length);

      const out = Buffer.alloc(length);
      const tags = Buffer.alloc(blocks * TAG);
      await seal(key, data, out, tags, firstBlock);
      assert.ok(out.equals(expected.sealed), 'ciphertext');
      assert.ok(tags.equals(expected.tags), 'tags');
      assert.ok(data.equals(copy), 'data left alone');

      const inPlace = Buffer.from(data);
      const inPlaceTags = Buffer.alloc(blocks * TAG);
      await seal(key, inPlace, inPlace, inPlaceTags, firstBlock);
      assert.ok(inPlace.equals(expected.sealed), 'ciphertext sealed in place');
      assert.ok(inPlaceTags.equals(expected.tags), 'tags sealed in place');

      const opened = Buffer.alloc(length);
      assert.equal(await open(key, out, tags, opened, firstBlock), -1);
      assert.ok(opened.equals(data), 'opened apart');
      assert.equal(await open(key, inPlace, inPlaceTags, inPlace, firstBlock), -1);
      assert.ok(inPlace.equals(data), 'opened in place');
    });
  }
}

test('views at an odd offset, plain Uint8Arrays, a larger out, and the last 32-bit block index', async () => {
  const key = randomBytes(32);
  const backing = randomBytes(3 * BLOCK + 100);
  const data = backing.subarray(3, 3 + 2 * BLOCK + 17);
  const expected = reference(key, data, 5);
  const out = new Uint8Array(3 * BLOCK); // longer than data: only data.length bytes are written
  const tags = new Uint8Array(new ArrayBuffer(3 * TAG + 1), 1);
  await seal(new Uint8Array(key), data, out, tags, 5);
  assert.ok(Buffer.from(out.subarray(0, data.length)).equals(expected.sealed));
  assert.ok(out.subarray(data.length).every((byte) => byte === 0), 'nothing written past data.length');
  assert.ok(Buffer.from(tags).equals(expected.tags));

  const last = 2 ** 32 - 1;
  const one = randomBytes(100);
  const lastTags = Buffer.alloc(TAG);
  const lastOut = Buffer.alloc(one.length);
  await seal(key, one, lastOut, lastTags, last);
  const want = reference(key, one, last);
  assert.ok(lastOut.equals(want.sealed) && lastTags.equals(want.tags), 'block 2^32 - 1');
});

test('nothing to seal or open: the callback is called', async () => {
  const key = randomBytes(32);
  await seal(key, Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(0), 0);
  assert.equal(await open(key, Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(0), 0), -1);
});

test('many jobs at once (more than pool threads) each give their own blocks', async () => {
  const jobs = Array.from({ length: 24 }, (_, i) => ({ key: randomBytes(32), data: randomBytes(64 * 1024 + i * 1000), first: i }));
  const results = await Promise.all(
    jobs.map(async (job) => {
      const out = Buffer.alloc(job.data.length);
      const tags = Buffer.alloc(blockCount(job.data.length) * TAG);
      await seal(job.key, job.data, out, tags, job.first);
      return { out, tags };
    }),
  );
  results.forEach((result, i) => {
    const want = reference(jobs[i]!.key, jobs[i]!.data, jobs[i]!.first);
    assert.ok(result.out.equals(want.sealed) && result.tags.equals(want.tags), `job ${i}`);
  });
});

test('a flipped byte in a block or its tag, a wrong key or a wrong first block: the first block that fails, and nothing after it', async () => {
  const key = randomBytes(32);
  const data = randomBytes(3 * BLOCK + 5);
  const firstBlock = 7;
  const blocks = blockCount(data.length);
  const { sealed, tags } = reference(key, data, firstBlock);
  // Opens into a buffer of 0xee bytes: bad, and the blocks after it untouched.
  const openTampered = async (s: Buffer, t: Buffer, k: Buffer, first: number, label: string, want: number): Promise<void> => {
    const out = Buffer.alloc(data.length, 0xee);
    assert.equal(await open(k, s, t, out, first), want, label);
    assert.ok(out.subarray(0, want * BLOCK).equals(data.subarray(0, want * BLOCK)), `${label}: the blocks before it opened`);
    assert.ok(out.subarray((want + 1) * BLOCK).every((byte) => byte === 0xee), `${label}: nothing written after it`);
  };
  for (let k = 0; k < blocks; k++) {
    const badBlock = Buffer.from(sealed);
    badBlock[Math.min(k * BLOCK + 100, data.length - 1)]! ^= 0x01;
    await openTampered(badBlock, tags, key, firstBlock, `ciphertext of block ${k}`, k);
    const badTag = Buffer.from(tags);
    badTag[k * TAG + 15]! ^= 0x80;
    await openTampered(sealed, badTag, key, firstBlock, `tag of block ${k}`, k);
  }
  const otherKey = Buffer.from(key);
  otherKey[31]! ^= 1;
  await openTampered(sealed, tags, otherKey, firstBlock, 'a wrong key', 0);
  await openTampered(sealed, tags, key, firstBlock + 1, 'a wrong first block (blocks moved)', 0);
});

test('argument errors throw a TypeError', () => {
  const key = randomBytes(32);
  const data = randomBytes(BLOCK + 1);
  const out = Buffer.alloc(BLOCK + 1);
  const tags = Buffer.alloc(2 * TAG);
  const done = (): void => assert.fail('the callback of a refused call');
  const sealThrows = (args: unknown[], message: RegExp): void =>
    assert.throws(() => (addon.sealBlocks as (...a: unknown[]) => void)(...args), { name: 'TypeError', message }, String(message));
  const openThrows = (args: unknown[], message: RegExp): void =>
    assert.throws(() => (addon.openBlocks as (...a: unknown[]) => void)(...args), { name: 'TypeError', message }, String(message));

  sealThrows([key, data, out, tags, 0], /^sealBlocks\(key, data, out, tags, firstBlock, callback\)$/);
  openThrows([key, data, tags, out, 0], /^openBlocks\(key, sealed, tags, out, firstBlock, callback\)$/);
  sealThrows([randomBytes(31), data, out, tags, 0, done], /key must be a Uint8Array or Buffer of 32 bytes/);
  sealThrows([randomBytes(33), data, out, tags, 0, done], /key must be a Uint8Array or Buffer of 32 bytes/);
  openThrows(['0'.repeat(32), data, tags, out, 0, done], /key must be a Uint8Array or Buffer of 32 bytes/);
  sealThrows([key, new Uint16Array(8), out, tags, 0, done], /data must be a Uint8Array or Buffer/);
  openThrows([key, [1, 2, 3], tags, out, 0, done], /sealed must be a Uint8Array or Buffer/);
  sealThrows([key, data, null, tags, 0, done], /out must be a Uint8Array or Buffer/);
  sealThrows([key, data, out, {}, 0, done], /tags must be a Uint8Array or Buffer/);
  sealThrows([key, data, out.subarray(1), tags, 0, done], /out holds 4096 bytes, fewer than the 4097 of data/);
  openThrows([key, data, tags, out.subarray(1), 0, done], /out holds 4096 bytes, fewer than the 4097 of sealed/);
  sealThrows([key, data, out, Buffer.alloc(TAG), 0, done], /tags must hold 16 bytes per block of 4096, 32 for 4097 bytes, not 16/);
  openThrows([key, data, Buffer.alloc(3 * TAG), out, 0, done], /tags must hold 16 bytes per block of 4096, 32 for 4097 bytes, not 48/);
  for (const first of [-1, 1.5, NaN, Infinity, 2 ** 32 - 1])
    sealThrows([key, data, out, tags, first, done], /firstBlock must be a whole number from 0, and firstBlock \+ blocks at most 2\^32/);
  sealThrows([key, data, out, tags, '0', done], /firstBlock must be a number/);
  sealThrows([key, data, out, tags, 0, 'callback'], /callback must be a function/);
  const backing = Buffer.alloc(4 * BLOCK);
  sealThrows([key, backing.subarray(0, BLOCK + 1), backing.subarray(1, BLOCK + 2), tags, 0, done], /out must be data itself \(in place\) or not overlap it/);
  sealThrows([key, backing.subarray(0, BLOCK + 1), backing, backing.subarray(BLOCK, BLOCK + 2 * TAG), 0, done], /tags must not overlap data or out/);
  openThrows([key, backing.subarray(0, BLOCK + 1), backing.subarray(2 * BLOCK + 10, 2 * BLOCK + 10 + 2 * TAG), backing.subarray(2 * BLOCK), 0, done], /tags must not overlap out/);
});
