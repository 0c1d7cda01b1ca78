// MD5 on worker threads: the same digests as hashing in place, for shared
// buffers (hashed where they are) and for buffers whose memory is moved to a
// worker and back, including memory that may not be moved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { markAsUntransferable } from 'node:worker_threads';
import { Md5Pool } from '../src/store/md5-pool.js';

const MiB = 1024 * 1024;
const md5 = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

test('md5Moved gives the digest and the bytes back, whether the memory moves or not', async () => {
  const pool = new Md5Pool(2);
  const cases: Array<{ label: string; data: Buffer }> = [];
  const moved = Buffer.allocUnsafe(3 * MiB);
  randomBytes(moved.length).copy(moved);
  cases.push({ label: 'own memory (moved)', data: moved });
  const pinned = Buffer.alloc(2 * MiB, 0x5a);
  markAsUntransferable(pinned.buffer);
  cases.push({ label: 'memory that may not move', data: pinned });
  const view = randomBytes(2 * MiB + 10).subarray(10); // shares its memory: hashed in place
  cases.push({ label: 'a view', data: view });
  cases.push({ label: 'small', data: randomBytes(1000) });
  const expected = cases.map((c) => ({ md5: md5(c.data), copy: Buffer.from(c.data) }));
  const results = await Promise.all(cases.map((c) => pool.md5Moved(c.data)));
  results.forEach((r, i) => {
    assert.equal(r.md5, expected[i]!.md5, cases[i]!.label);
    assert.ok(r.data.equals(expected[i]!.copy), `${cases[i]!.label}: the bytes come back unchanged`);
  });
  assert.equal(moved.buffer.byteLength, 0, 'a moved buffer is detached on this side until its memory comes back');
});

test('md5 of a shared buffer on a worker matches hashing in place', async () => {
  const pool = new Md5Pool(2);
  const shared = Buffer.from(new SharedArrayBuffer(4 * MiB));
  randomBytes(shared.length).copy(shared);
  assert.equal(await pool.md5(shared), md5(shared));
  assert.equal(await pool.md5(shared.subarray(MiB)), md5(shared.subarray(MiB)));
});
