// MD5 on libuv's pool (native/md5_digest.cc): the same digests as hashing in
// place, for every kind of buffer the store and the engine hand it, hashed a
// megabyte per job, many at once; the bytes are left as they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { md5OnPool } from '../src/store/md5.js';

const MiB = 1024 * 1024;
const md5 = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

test('md5OnPool gives the digest of buffers of every size and kind, and leaves their bytes alone', async () => {
  const cases: Array<{ label: string; data: Uint8Array }> = [
    { label: 'an 8 MiB object', data: randomBytes(8 * MiB) },
    { label: 'not a whole number of pieces', data: randomBytes(3 * MiB + 12345) },
    { label: 'exactly one piece', data: randomBytes(MiB) },
    { label: 'a view at an odd offset', data: randomBytes(2 * MiB + 7).subarray(7) },
    { label: 'a plain Uint8Array', data: new Uint8Array(randomBytes(MiB + 1)) },
    { label: 'shared memory', data: Buffer.from(new SharedArrayBuffer(2 * MiB)).fill(0x5a) },
    { label: 'small (hashed in place)', data: randomBytes(1000) },
    { label: 'empty', data: Buffer.alloc(0) },
    { label: 'zeros', data: Buffer.alloc(4 * MiB) },
  ];
  const expected = cases.map((c) => ({ md5: md5(c.data), copy: Buffer.from(c.data) }));
  // All at once: more jobs than pool threads, pieces of different digests interleaved.
  const results = await Promise.all(cases.map((c) => md5OnPool(c.data)));
  results.forEach((digest, i) => {
    assert.equal(digest, expected[i]!.md5, cases[i]!.label);
    assert.ok(Buffer.from(cases[i]!.data).equals(expected[i]!.copy), `${cases[i]!.label}: bytes unchanged`);
  });
});

test('md5OnPool tells different contents apart (a one-bit change changes the digest)', async () => {
  const data = randomBytes(4 * MiB);
  const before = await md5OnPool(data);
  data[3 * MiB + 17]! ^= 1;
  const after = await md5OnPool(data);
  assert.notEqual(after, before);
  assert.equal(after, md5(data));
});
