// makeDirs (src/os/make-dirs.ts): mkdir -p that names what is at fault, and
// does not spin where Node's recursive mkdir would (procfs); and the CLI's
// one-line error for a state dir that cannot be made.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { LocalPathError, makeDirs } from '../src/os/make-dirs.js';
import { tempDir } from './fixtures/files.js';
import { swiftvolSync } from './fixtures/serve.js';

const tmp = tempDir();
after(() => tmp.remove());

function refusal(dir: string): LocalPathError {
  try {
    makeDirs(dir);
  } catch (err) {
    assert.ok(err instanceof LocalPathError, String(err));
    return err;
  }
  assert.fail(`makeDirs(${dir}) made it`);
}

test('makes every missing parent with the mode asked for, and accepts a directory that exists', () => {
  const deep = path.join(tmp.dir, 'a', 'b', 'c');
  makeDirs(deep, 0o700);
  for (const d of ['a', 'a/b', 'a/b/c']) {
    const st = fs.statSync(path.join(tmp.dir, d));
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o777, 0o700 & ~process.umask());
  }
  makeDirs(deep);
  makeDirs(path.join(tmp.dir, 'a', 'b', 'c', '.', '..', 'c'));
});

test('names the part of the path at fault', { timeout: 10_000 }, () => {
  const file = path.join(tmp.dir, 'file');
  fs.writeFileSync(file, 'x');
  assert.equal(refusal(path.join(file, 'x', 'y')).message, `cannot make directory ${path.join(file, 'x', 'y')}: ${file} is not a directory`);
  assert.equal(refusal(file).message, `cannot make directory ${file}: ${file} is not a directory`);
  // procfs answers mkdir with ENOENT in a directory that exists: Node's recursive mkdir loops on it forever
  assert.equal(refusal('/proc/swiftvol-test/x').message, 'cannot make directory /proc/swiftvol-test/x: /proc takes no new directories');
  const ro = path.join(tmp.dir, 'ro');
  fs.mkdirSync(ro);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', ro]);
  try {
    const e = refusal(path.join(ro, 'x'));
    assert.equal(e.message, `cannot make directory ${path.join(ro, 'x')}: ${ro} is on a read-only file system`);
    assert.equal(e.code, 'EROFS');
  } finally {
    execFileSync('umount', [ro]);
  }
});

test('a state dir that cannot be made: one line, exit 1, for a command and for serve', { timeout: 60_000 }, () => {
  const env = { PATH: process.env.PATH ?? '' }; // the embedded store: it lives in the state dir too
  for (const args of [['volume', 'create', 'v', '--size', '1M'], ['serve', '--portal', '127.0.0.1:1']]) {
    const r = swiftvolSync(['--state-dir', '/proc/swiftvol-test', ...args], env, 30_000);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^swiftvol: cannot make directory \/proc\/swiftvol-test(\/\w+)*: \/proc takes no new directories\n$/);
  }
});
