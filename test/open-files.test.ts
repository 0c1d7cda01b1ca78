// OpenFiles: the gateway cache's descriptors, kept open between I/Os, never
// closed under a user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './fixtures/files.js';
import { OpenFiles } from '../src/cache/open-files.js';

const isOpen = (fd: number): boolean => {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};

test('a file is opened once for many uses; past the limit the least recently used closes; a deleted file closes once its users are done', async () => {
  const tmp = tempDir();
  try {
    const files = new OpenFiles(2);
    const f = (n: string): string => path.join(tmp.dir, n);
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT;
    const a1 = await files.use(f('a'), flags, async (fd) => fd);
    const a2 = await files.use(f('a'), flags, async (fd) => fd);
    assert.equal(a1, a2, 'the same descriptor again');
    await files.use(f('b'), flags, async (fd) => {
      fs.writeSync(fd, Buffer.from('bee'), 0, 3, 0);
    });
    assert.ok(isOpen(a1), 'two files fit');
    await files.use(f('c'), flags, async () => undefined);
    assert.ok(!isOpen(a1), "past the limit, 'a' (used least recently) is closed");

    // in use while forgotten (its file deleted): it stays open until the user is done
    let during = false;
    const bFd = await files.use(f('b'), flags, async (fd) => {
      files.forget(f('b'));
      during = isOpen(fd);
      const out = Buffer.alloc(3);
      fs.readSync(fd, out, 0, 3, 0);
      assert.equal(out.toString(), 'bee');
      return fd;
    });
    assert.ok(during, 'not closed under its user');
    assert.ok(!isOpen(bFd), 'closed once the user was done');
    // concurrent first uses of one file share a descriptor
    const [x, y] = await Promise.all([files.use(f('d'), flags, async (fd) => fd), files.use(f('d'), flags, async (fd) => fd)]);
    assert.equal(x, y);
    files.closeAll();
    assert.ok(!isOpen(x));
  } finally {
    tmp.remove();
  }
});
