// Page-aligned buffers and writes through O_DIRECT (native/overlay_io.cc,
// src/native/addons.ts): an aligned buffer is written as it is, any other
// through a bounce buffer; both land byte for byte, at any length that is
// whole blocks (past the bounce buffer's 1 MiB too), and bad arguments are
// refused before anything is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PAGE_ALIGN, alignedBuffer, overlayIo } from '../src/native/addons.js';
import { tempDir } from './fixtures/files.js';

const KiB = 1024;

function writeAligned(fd: number, data: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => overlayIo().writeAligned(fd, data, position, (err) => (err ? reject(err) : resolve())));
}

test('alignedBuffer: the length asked for, starting on a page', () => {
  for (const length of [1, 4 * KiB, 64 * KiB + 1, 3 * 1024 * KiB]) {
    const b = alignedBuffer(length);
    assert.equal(b.length, length);
    assert.equal(overlayIo().pageOffset(b), 0, `${length} bytes`);
  }
  const unaligned = alignedBuffer(2 * PAGE_ALIGN).subarray(100);
  assert.equal(overlayIo().pageOffset(unaligned), 100);
  assert.throws(() => overlayIo().pageOffset('x' as unknown as Buffer), /pageOffset\(buffer\)/);
});

test('writeAligned: aligned and unaligned data land as given, through O_DIRECT', async () => {
  const tmp = tempDir('swiftvol-aligned-');
  const file = path.join(tmp.dir, 'f');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT);
  try {
    const cases: Array<{ what: string; data: Buffer; position: number }> = [];
    for (const length of [4 * KiB, 64 * KiB, 1024 * KiB + 8 * KiB, 3 * 1024 * KiB]) {
      const aligned = alignedBuffer(length);
      randomBytes(length).copy(aligned);
      const unaligned = alignedBuffer(length + 16).subarray(16); // not on a page: the bounce path
      randomBytes(length).copy(unaligned);
      cases.push({ what: `aligned ${length}`, data: aligned, position: cases.length * 4 * 1024 * KiB });
      cases.push({ what: `unaligned ${length}`, data: unaligned, position: cases.length * 4 * 1024 * KiB });
    }
    for (const c of cases) await writeAligned(fd, c.data, c.position);
    const back = fs.readFileSync(file);
    for (const c of cases) assert.ok(back.subarray(c.position, c.position + c.data.length).equals(c.data), c.what);
    await assert.rejects(writeAligned(-1, alignedBuffer(4 * KiB), 0), /pwrite\(O_DIRECT\): Bad file descriptor/);
    assert.throws(() => overlayIo().writeAligned(fd, alignedBuffer(4 * KiB), 512, () => undefined), /multiples of 4096/);
    assert.throws(() => overlayIo().writeAligned(fd, alignedBuffer(100), 0, () => undefined), /multiples of 4096/);
    assert.equal(fs.statSync(file).size, back.length, 'a refused write wrote nothing');
  } finally {
    fs.closeSync(fd);
    tmp.remove();
  }
});
