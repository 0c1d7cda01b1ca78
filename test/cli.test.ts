// The swiftvol command line: what works, and what bad input gets (a one-line
// message, exit 2 for usage and 1 for failures, nothing changed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir, writeImage, sha256File, cliPath } from './fixtures/files.js';
import { UNKNOWN_CONTROL_REQUEST, listenControl, type ControlRequest } from '../src/daemon/control.js';
import type { SnapshotStatus } from '../src/engine/snapshot.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };

before(async () => {
  swift = await startSwift();
  tmp = tempDir();
});

after(async () => {
  await swift?.stop();
  tmp?.remove();
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs swiftvol with a clean environment: only what `env` adds. */
function swiftvol(args: string[], env: Record<string, string> = {}, timeout = 120_000): Run {
  const base = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' };
  const r = spawnSync(process.execPath, [cliPath, ...args], { env: { ...base, ...env }, encoding: 'utf8', timeout });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function swiftEnv(stateDir: string): Record<string, string> {
  return { ST_AUTH: swift.authUrl, ST_USER: swift.user, ST_KEY: swift.key, SWIFTVOL_STATE_DIR: stateDir };
}

/** A failure as users must see it: the exit code, one line naming the problem, no stack trace. */
function assertFails(r: Run, status: number, message: RegExp): void {
  assert.equal(r.status, status, `exit ${r.status}, stderr: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(r.stderr, /unexpected error/);
}

test('volumes in the embedded file store: create, list, info, import, export, delete', () => {
  const env = { SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'embedded') };
  let r = swiftvol(['volume', 'create', 'disk1', '--size', '64M', '--object-size', '4M'], env);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /created volume disk1: 64M, objects of 4M/);

  // One object: the command must exit once done (nothing left pending, such as hashing, may keep it alive).
  const tiny = path.join(tmp.dir, 'tiny.raw');
  writeImage(tiny, MiB, MiB, () => false);
  r = swiftvol(['import', tiny, 'tiny'], env, 30_000);
  assert.equal(r.status, 0, `import of one object: exit ${r.status} ${r.stderr}`);
  assert.equal(swiftvol(['volume', 'delete', 'tiny'], env).status, 0);

  const image = path.join(tmp.dir, 'small.raw');
  writeImage(image, 24 * MiB + 512, MiB, (i) => i % 3 === 0);
  r = swiftvol(['import', image, 'img1', '--concurrency', '2'], env);
  assert.equal(r.status, 0, r.stderr);

  r = swiftvol(['volume', 'list', '--json'], env);
  assert.equal(r.status, 0, r.stderr);
  const list = JSON.parse(r.stdout) as Array<{ name: string; size: number; objectSize: number; state: string; attached: boolean }>;
  assert.deepEqual(
    list.map((v) => [v.name, v.size, v.objectSize, v.state, v.attached]),
    [
      ['disk1', 64 * MiB, 4 * MiB, 'ready', true],
      ['img1', 24 * MiB + 512, 8 * MiB, 'ready', true],
    ],
  );
  r = swiftvol(['volume', 'list'], env);
  assert.match(r.stdout, /^NAME\s+SIZE/);
  assert.match(r.stdout, /^img1\s+24\.0M\s+8M\s+ready/m);

  r = swiftvol(['volume', 'info', 'img1', '--json'], env);
  const info = JSON.parse(r.stdout) as { size: number; latestVersion: number; baseVersion: number; dirtyBytes: number };
  assert.equal(info.size, 24 * MiB + 512);
  assert.equal(info.latestVersion, 1);
  assert.equal(info.baseVersion, 1);
  assert.equal(info.dirtyBytes, 0);

  const out = path.join(tmp.dir, 'small.out');
  r = swiftvol(['export', 'img1', out], env);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(sha256File(out), sha256File(image));

  for (const name of ['disk1', 'img1']) {
    r = swiftvol(['volume', 'delete', name], env);
    assert.equal(r.status, 0, r.stderr);
  }
  r = swiftvol(['volume', 'list', '--json'], env);
  assert.deepEqual(JSON.parse(r.stdout), []);
});

test('usage errors exit 2 with one line', () => {
  const env = swiftEnv(path.join(tmp.dir, 'usage'));
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', '10X'], env), 2, /'10X' is not a size/);
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', 'ten'], env), 2, /'ten' is not a size/);
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', '99999999999T'], env), 2, /'99999999999T' is too large \(at most 9007199254740991 bytes\)/);
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', '1G', '--object-size', '3M'], env), 2, /power of two/);
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', '1G', '--object-size', '128M'], env), 2, /power of two from 1M to 64M/);
  assertFails(swiftvol(['volume', 'create', 'v1', '--size', '1000'], env), 2, /multiple of 512/);
  assertFails(swiftvol(['volume', 'create', 'Bad/Name', '--size', '1G'], env), 2, /invalid volume name/);
  assertFails(swiftvol(['volume', 'create', 'v1'], env), 2, /required option '--size/);
  assertFails(swiftvol(['volume', 'frobnicate'], env), 2, /unknown command/);
  assertFails(swiftvol(['import', '/nonexistent'], env), 2, /missing required argument/);
  assertFails(swiftvol(['import', '/x', 'v1', '--concurrency', '0'], env), 2, /not a number from 1 to 64/);
  // None of that created anything.
  const r = swiftvol(['volume', 'list', '--json'], env);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), []);
});

test('failures exit 1 with a clear message and change nothing', () => {
  const env = swiftEnv(path.join(tmp.dir, 'fail'));
  assert.equal(swiftvol(['volume', 'create', 'keep', '--size', '16M'], env).status, 0);
  assertFails(swiftvol(['volume', 'create', 'keep', '--size', '32M'], env), 1, /volume 'keep' already exists/);
  const info = JSON.parse(swiftvol(['volume', 'info', 'keep', '--json'], env).stdout) as { size: number };
  assert.equal(info.size, 16 * MiB, 'the existing volume is unchanged');

  assertFails(swiftvol(['volume', 'info', 'ghost'], env), 1, /volume 'ghost' does not exist/);
  assertFails(swiftvol(['volume', 'delete', 'ghost'], env), 1, /volume 'ghost' does not exist/);
  assertFails(swiftvol(['export', 'ghost', path.join(tmp.dir, 'ghost.raw')], env), 1, /volume 'ghost' does not exist/);
  assert.equal(fs.existsSync(path.join(tmp.dir, 'ghost.raw')), false);
  assertFails(swiftvol(['import', path.join(tmp.dir, 'no-such.raw'), 'fresh'], env), 1, /image file '.*no-such\.raw' does not exist/);
  const odd = path.join(tmp.dir, 'odd.raw');
  fs.writeFileSync(odd, Buffer.alloc(1000, 1));
  assertFails(swiftvol(['import', odd, 'keep'], env), 1, /volume 'keep' already exists/);
  const empty = path.join(tmp.dir, 'empty.raw');
  fs.writeFileSync(empty, '');
  assertFails(swiftvol(['import', empty, 'fresh'], env), 1, /image '.*empty\.raw' is empty/);

  const names = (JSON.parse(swiftvol(['volume', 'list', '--json'], env).stdout) as Array<{ name: string }>).map((v) => v.name);
  assert.deepEqual(names, ['keep']);
  assert.equal(swiftvol(['volume', 'delete', 'keep'], env).status, 0);
});

test('wrong Swift credentials give an authentication error', () => {
  const env = { ...swiftEnv(path.join(tmp.dir, 'auth')), ST_KEY: 'wrong-key' };
  assertFails(swiftvol(['volume', 'list'], env), 1, /authentication failed/i);
  const incomplete = { ST_AUTH: swift.authUrl, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'auth') };
  assertFails(swiftvol(['volume', 'list'], incomplete), 1, /ST_USER is not set/);
});

test('an unreachable Swift gives a clear error after the retry budget, without hanging', async () => {
  const port = await freePort(); // nothing listens there
  const env = { ST_AUTH: `http://127.0.0.1:${port}/auth/v1.0`, ST_USER: 'a:b', ST_KEY: 'c', SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'down') };
  const started = Date.now();
  const r = swiftvol(['volume', 'create', 'v1', '--size', '1G'], env, 120_000);
  assertFails(r, 1, /unreachable/);
  assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
  assert.ok(Date.now() - started < 110_000, 'it gave up on its own');
});

test("a volume larger than a file can be on the state dir's file system is refused before anything is written", () => {
  const stateDir = path.join(tmp.dir, 'huge');
  const env = swiftEnv(stateDir);
  const size = 2 ** 50; // 1 PiB: more than ext4 allows a file (16 TiB), less than xfs or tmpfs do
  fs.mkdirSync(stateDir, { recursive: true });
  const probe = path.join(stateDir, 'probe');
  const fd = fs.openSync(probe, 'w');
  let fits = true;
  try {
    fs.ftruncateSync(fd, size);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EFBIG') throw err;
    fits = false;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(probe);
  }
  const r = swiftvol(['volume', 'create', 'huge', '--size', '1P'], env);
  if (fits) {
    assert.equal(r.status, 0, `this file system holds a 1 PiB sparse file, so the volume is made: ${r.stderr}`);
    assert.equal(swiftvol(['volume', 'delete', 'huge'], env).status, 0);
  } else {
    assertFails(r, 1, /^swiftvol: a volume of 1125899906842624 bytes \(1024\.0 TiB\) is larger than a file can be on the file system of /);
    assertFails(swiftvol(['volume', 'info', 'huge'], env), 1, /volume 'huge' does not exist/);
  }
});

test('a config file with the Swift variables works like the environment', () => {
  const config = path.join(tmp.dir, 'swift.env');
  fs.writeFileSync(config, `# from scripts/swift-dev\nexport ST_AUTH=${swift.authUrl}\nexport ST_USER=${swift.user}\nexport ST_KEY='${swift.key}'\n`);
  const env = { SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'config') };
  assert.equal(swiftvol(['--config', config, 'volume', 'create', 'viaconfig', '--size', '8M'], env).status, 0);
  // The volume is in Swift, not in the embedded store.
  const viaEnv = swiftvol(['volume', 'info', 'viaconfig', '--json'], swiftEnv(path.join(tmp.dir, 'config')));
  assert.equal(viaEnv.status, 0, viaEnv.stderr);
  assert.equal(swiftvol(['--config', config, 'volume', 'delete', 'viaconfig'], env).status, 0);
  assertFails(swiftvol(['--config', path.join(tmp.dir, 'missing.env'), 'volume', 'list'], env), 1, /cannot read config file/);
  // With Swift credentials in the environment too, the environment wins, and a file asked for is said to be left unread
  // (it may name other stores, a mirror's): here one that would not even parse.
  const other = path.join(tmp.dir, 'other.env');
  fs.writeFileSync(other, 'not a setting\n');
  for (const run of [swiftvol(['--config', other, 'volume', 'list'], swiftEnv(path.join(tmp.dir, 'config'))), swiftvol(['volume', 'list'], { ...swiftEnv(path.join(tmp.dir, 'config')), SWIFTVOL_CONFIG: other })]) {
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr, `swiftvol: config file ${other} is not read: the environment sets Swift credentials (ST_AUTH), which win\n`);
  }
  const quiet = swiftvol(['volume', 'list'], swiftEnv(path.join(tmp.dir, 'config')));
  assert.equal(quiet.stderr, '', 'no file named: nothing to say');
});

test('an import killed midway leaves a volume that shows as incomplete, and delete removes it', async () => {
  const stateDir = path.join(tmp.dir, 'killed');
  const image = path.join(tmp.dir, 'big.raw');
  writeImage(image, 96 * MiB, 8 * MiB, () => false);
  const child = spawn(process.execPath, [cliPath, 'import', image, 'halfway', '--object-size', '1M', '--concurrency', '1'], {
    env: { PATH: process.env.PATH ?? '', ...swiftEnv(stateDir) },
    stdio: 'ignore',
  });
  // Kill it once some data objects are in Swift.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const res = await fetch(`${swift.authUrl}`, { headers: { 'X-Auth-User': swift.user, 'X-Auth-Key': swift.key } });
    const url = res.headers.get('x-storage-url')!;
    const token = res.headers.get('x-auth-token')!;
    const listing = await fetch(`${url}/swiftvol-halfway?prefix=data/&format=json`, { headers: { 'X-Auth-Token': token } });
    if (listing.status === 200 && ((await listing.json()) as unknown[]).length >= 3) break;
    if (Date.now() > deadline) throw new Error('import never started uploading');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await once(child, 'exit');

  const list = JSON.parse(swiftvol(['volume', 'list', '--json'], swiftEnv(stateDir)).stdout) as Array<{ name: string; state: string }>;
  assert.deepEqual(list.map((v) => [v.name, v.state]), [['halfway', 'incomplete']]);
  assertFails(swiftvol(['export', 'halfway', path.join(tmp.dir, 'half.raw')], swiftEnv(stateDir)), 1, /incomplete/);
  const del = swiftvol(['volume', 'delete', 'halfway'], swiftEnv(stateDir));
  assert.equal(del.status, 0, del.stderr);
  assert.deepEqual(JSON.parse(swiftvol(['volume', 'list', '--json'], swiftEnv(stateDir)).stdout), []);
});

test('snapshot create through a serve that predates snapshot.wait falls back to polling its job list', async () => {
  // A stand-in for an older serve on the control socket: it answers what that version knew.
  const stateDir = path.join(tmp.dir, 'older-serve');
  const startedAt = new Date().toISOString();
  const job = (done: boolean): SnapshotStatus => ({
    volume: 'v',
    name: 's1',
    state: done ? 'complete' : 'uploading',
    startedAt,
    changedBytes: 4096,
    totalBytes: 8 * MiB,
    doneBytes: done ? 8 * MiB : 0,
    seq: done ? 7 : null,
  });
  const asked: string[] = [];
  let polls = 0;
  const server = await listenControl(stateDir, async (req: ControlRequest) => {
    asked.push(req.op);
    switch (req.op) {
      case 'target.list':
        return [{ volume: 'v', iqn: 'iqn.2026-11.org.swiftvol:v', allow: [], chapUser: null, tid: 1, state: 'served' }];
      case 'snapshot.create':
        return job(false);
      case 'snapshot.jobs':
        return [job(++polls >= 2)];
      default:
        throw new Error(UNKNOWN_CONTROL_REQUEST);
    }
  });
  try {
    const child = spawn(process.execPath, [cliPath, 'snapshot', 'create', 'v', 's1'], {
      env: { PATH: process.env.PATH ?? '', SWIFTVOL_STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, stderr);
    assert.match(stdout, /snapshot v@s1 created: version 7, 4K changed/);
    assert.deepEqual(asked, ['target.list', 'snapshot.create', 'snapshot.wait', 'snapshot.jobs', 'snapshot.wait', 'snapshot.jobs']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
