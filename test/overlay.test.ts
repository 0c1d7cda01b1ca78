// The overlay file's cache writes: through O_DIRECT where the file system
// allows it (ext4; tmpfs too since Linux 6.6), through the page cache for
// pieces that are not 4 KiB-aligned. Whatever the path, the bytes read back,
// also after reopening. And what a reopening trusts after a clean close and
// after a crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Overlay } from '../src/overlay/overlay.js';

const MiB = 1024 * 1024;
const O_DIRECT = fs.constants.O_DIRECT;

/** Whether this process has the file open with O_DIRECT (from /proc/self/fdinfo). */
function openUnbuffered(file: string): boolean {
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target !== file) continue;
    const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (flags && (parseInt(flags[1]!, 8) & O_DIRECT) !== 0) return true;
  }
  return false;
}

const EXT4 = 0xef53;

for (const base of [os.tmpdir(), '/dev/shm']) {
  test(`cache writes in the background read back, aligned or not, and after reopening: overlay in ${base}`, async () => {
    const onExt4 = fs.statfsSync(base).type === EXT4;
    const dir = fs.mkdtempSync(path.join(base, 'swiftvol-overlay-'));
    const geometry = { size: 16 * MiB + 3 * 512, objectSize: 8 * MiB };
    try {
      const overlay = Overlay.open(dir, geometry);
      const file = path.join(dir, 'overlay');
      // ext4 takes O_DIRECT: the cheap path must be the one in use there
      if (onExt4) assert.ok(openUnbuffered(fs.realpathSync(file)), 'the overlay file is open with O_DIRECT on ext4');
      const aligned = randomBytes(MiB + 8192);
      const unaligned = randomBytes(4096 + 1536); // runs into the volume's short last block
      const small = randomBytes(512);
      // from a view into a larger buffer, as fetched data is
      const viewed = randomBytes(3 * 4096 + 100).subarray(100);
      await Promise.all([
        overlay.writeInBackground(aligned, 8 * MiB - 4096),
        overlay.writeInBackground(unaligned, geometry.size - unaligned.length),
        overlay.writeInBackground(small, 4096 + 512),
        overlay.writeInBackground(viewed, 2 * MiB),
      ]);
      const check = (o: Overlay, label: string): void => {
        for (const [data, at] of [
          [aligned, 8 * MiB - 4096],
          [unaligned, geometry.size - unaligned.length],
          [small, 4096 + 512],
          [viewed, 2 * MiB],
        ] as const) {
          const back = Buffer.alloc(data.length);
          o.read(back, 0, back.length, at);
          assert.ok(back.equals(data), `${data.length} bytes at ${at} ${label}`);
        }
      };
      check(overlay, 'right after the writes');
      await overlay.close();
      const again = Overlay.open(dir, geometry);
      try {
        check(again, 'after reopening');
      } finally {
        await again.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('clean cached blocks survive a clean close; after a crash (no close) only dirty blocks stay valid', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swiftvol-overlay-'));
  const geometry = { size: 16 * MiB, objectSize: 8 * MiB };
  const cached = [0, 1, 2047, 2048, 4000]; // clean cache, in both chunks
  const written = [5, 2050]; // dirty
  try {
    const first = Overlay.open(dir, geometry);
    for (const b of cached) first.markValid(b, b + 1, false);
    for (const b of written) {
      first.write(Buffer.alloc(4096, 0x77), b * 4096);
      first.markValid(b, b + 1, true);
    }
    await first.close();

    const second = Overlay.open(dir, geometry);
    for (const b of [...cached, ...written]) assert.ok(second.isValid(b), `block ${b} is valid after a clean close`);
    second.abandon(); // what a crash leaves: the overlay was never closed

    const third = Overlay.open(dir, geometry);
    try {
      for (const b of cached) assert.ok(!third.isValid(b), `clean block ${b} is no longer trusted after a crash`);
      for (const b of written) assert.ok(third.isValid(b) && third.isDirty(b), `dirty block ${b} stays valid and dirty after a crash`);
      const back = Buffer.alloc(4096);
      third.read(back, 0, 4096, written[0]! * 4096);
      assert.ok(back.equals(Buffer.alloc(4096, 0x77)), 'a dirty block keeps its data');
    } finally {
      await third.close();
    }
    // The drop was committed: a clean close and reopen does not bring the blocks back.
    const fourth = Overlay.open(dir, geometry);
    try {
      for (const b of cached) assert.ok(!fourth.isValid(b), `clean block ${b} stays dropped`);
      for (const b of written) assert.ok(fourth.isValid(b), `dirty block ${b} stays valid`);
    } finally {
      await fourth.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
