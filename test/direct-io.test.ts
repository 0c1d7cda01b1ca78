// bs_swift's direct I/O (doc/protocol.md, "Direct I/O"): reads of local
// blocks and overwrites of them go to the overlay file without the daemon.
// Checked with the daemon stopped (SIGSTOP), so that only direct I/O can
// answer; that snapshots hold what was written directly; that direct writes
// a killed daemon had not collected are found again; and that once the
// daemon is gone, even local blocks fail, as every other command does.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, freePort, pauseSwiftProxy, type DevSwift } from './fixtures/swift.js';
import { repoRoot, tempDir } from './fixtures/files.js';
import { qemuIo, qemuIoOk, runOk } from './fixtures/initiators.js';
import { ProtocolClient } from './fixtures/protocol-client.js';
import { Op, Status } from '../src/daemon/protocol.js';
import { blockSocketPath } from '../src/daemon/control.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let stateDir: string;
let serve: Serve | null = null;
let port: number;

function ok(args: string[], withEnv: NodeJS.ProcessEnv = env): string {
  const r = swiftvolSync(args, withEnv);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function tgtdLog(): string {
  return fs.readFileSync(path.join(stateDir, 'run', 'tgtd.log'), 'utf8');
}

/** Bytes [offset, offset+length) of a snapshot, exported to a file. */
function snapshotBytes(spec: string, offset: number, length: number, withEnv: NodeJS.ProcessEnv = env): Buffer {
  const file = path.join(tmp.dir, `${spec.replace('@', '-')}.raw`);
  ok(['export', spec, file], withEnv);
  const fd = fs.openSync(file, 'r');
  try {
    const out = Buffer.alloc(length);
    assert.equal(fs.readSync(fd, out, 0, length, offset), length);
    return out;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file);
  }
}

/** Imports a 16 MiB volume whose MiB m is filled with 0x60 + m, and exports it as a target. */
function importStriped(volume: string, withEnv: NodeJS.ProcessEnv = env): void {
  const image = path.join(tmp.dir, `${volume}.raw`);
  const content = Buffer.alloc(16 * MiB);
  for (let m = 0; m < 16; m++) content.fill(0x60 + m, m * MiB, (m + 1) * MiB);
  fs.writeFileSync(image, content);
  ok(['import', image, volume], withEnv);
  ok(['target', 'add', volume], withEnv);
}

/** Reads of a striped volume's 16 MiB in order, each checking its stripe: a sequential stream, so it is read ahead of. */
const READ_ALL_STRIPES = Array.from({ length: 16 }, (_, m) => `read -P 0x${(0x60 + m).toString(16)} ${m}M 1M`);

/** Waits until the overlay file holds `bytes` (and the valid bits have followed). */
async function waitUntilCached(overlay: string, bytes: number): Promise<void> {
  for (let i = 0; fs.statSync(overlay).blocks * 512 < bytes; i++) {
    assert.ok(i < 100, `the overlay file holds ${fs.statSync(overlay).blocks * 512} bytes, not the ${bytes} expected`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 200)); // the valid bits follow each write's completion
}

/** Runs fn with serve stopped (SIGSTOP): its socket stays open, but it answers nothing. */
async function whileStopped<T>(fn: () => Promise<T>): Promise<T> {
  process.kill(serve!.pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(serve!.pid, 'SIGCONT');
  }
}

before(async () => {
  if (!fs.existsSync('/usr/lib/tgt/backing-store/bs_swift.so')) {
    throw new Error('bs_swift.so is not installed in /usr/lib/tgt/backing-store: run scripts/setup');
  }
  swift = await startSwift();
  tmp = tempDir();
  stateDir = path.join(tmp.dir, 'state');
  env = swiftvolEnv(swift, stateDir);
  port = await freePort();
  ok(['volume', 'create', 'vol', '--size', '32M']);
  ok(['target', 'add', 'vol']);
  serve = await startServe(env, port);
});

after(async () => {
  if (serve) {
    try {
      process.kill(serve.pid, 'SIGCONT');
    } catch {
      /* gone */
    }
    await serve.stop();
  }
  await stopLeftTgtd(stateDir);
  await swift?.stop();
  tmp?.remove();
});

test('local blocks are read and overwritten without the daemon, and a snapshot holds the direct writes', async () => {
  const url = serve!.url('vol');
  // Through the daemon: the blocks become local (across the 8 MiB object boundary).
  await qemuIoOk(url, [`write -P 0x11 ${8 * MiB - MiB} ${2 * MiB}`, 'flush']);
  assert.match(tgtdLog(), /bs_swift vol: direct I\/O on/);
  // After a snapshot they are local and clean: only a direct write can make them dirty again.
  ok(['snapshot', 'create', 'vol', 's0']);

  // serve stopped: only direct I/O can complete these (cache=unsafe: no flush is sent).
  await whileStopped(async () => {
    await qemuIoOk(url, [`write -P 0x22 ${8 * MiB - 64 * 1024} ${128 * 1024}`, `write -P 0x23 ${8 * MiB + 512} 1024`], { flags: ['-t', 'unsafe'], timeoutMs: 60_000 });
    await qemuIoOk(url, [`read -P 0x22 ${8 * MiB - 64 * 1024} 64k`, `read -P 0x11 ${7 * MiB} 64k`, `read -P 0x23 ${8 * MiB + 512} 1024`], { flags: ['-r'], timeoutMs: 60_000 });
  });

  ok(['snapshot', 'create', 'vol', 's1']);
  const got = snapshotBytes('vol@s1', 7 * MiB, 2 * MiB);
  const want = Buffer.alloc(2 * MiB, 0x11);
  want.fill(0x22, MiB - 64 * 1024, MiB + 64 * 1024);
  want.fill(0x23, MiB + 512, MiB + 1536);
  assert.ok(got.equals(want), 'the snapshot holds the direct writes');
  assert.ok(snapshotBytes('vol@s0', 7 * MiB, 2 * MiB).equals(Buffer.alloc(2 * MiB, 0x11)), 'the earlier snapshot is unchanged');
});

test('a write to blocks that are not local, and an unmap, still go through the daemon', async () => {
  const url = serve!.url('vol');
  // With serve stopped, a write to a never-written block cannot complete: it must wait for the daemon.
  process.kill(serve!.pid, 'SIGSTOP');
  const pending = qemuIo(url, [`write -P 0x33 ${20 * MiB} 4k`], { flags: ['-t', 'unsafe'], timeoutMs: 90_000 });
  let finished = false;
  void pending.then(() => (finished = true));
  await new Promise((r) => setTimeout(r, 1500));
  const finishedWhileStopped = finished;
  process.kill(serve!.pid, 'SIGCONT');
  const r = await pending;
  assert.equal(finishedWhileStopped, false, 'a write of a non-local block waited for the daemon');
  assert.equal(r.code, 0, r.stderr);

  // Unmapped local blocks read as zeros at once, then writes there are daemon writes again.
  await qemuIoOk(url, [`discard ${7 * MiB} 64k`, `read -P 0 ${7 * MiB} 64k`, `read -P 0x11 ${7 * MiB + 64 * 1024} 4k`]);
  await qemuIoOk(url, [`write -P 0x44 ${7 * MiB} 64k`, `read -P 0x44 ${7 * MiB} 64k`, 'flush']);
});

test('blocks fetched from Swift are kept in the gateway cache, not the overlay: they read without Swift, through the daemon', async () => {
  importStriped('fetched');
  const url = serve!.url('fetched');
  // a sequential reader is read ahead of; both 8 MiB objects are fetched and kept in serve's cache
  await qemuIoOk(url, READ_ALL_STRIPES, { flags: ['-r'] });
  const overlay = path.join(stateDir, 'volumes', 'fetched', 'overlay');
  assert.equal(fs.statSync(overlay).blocks, 0, 'clean data is not kept in the overlay (only what is written is)');
  // Swift frozen: only the cache can answer
  const resume = pauseSwiftProxy(swift);
  try {
    await qemuIoOk(url, ['read -P 0x63 3M 1M', 'read -P 0x67 7M 1M', 'read -P 0x69 9M 64k', 'read -P 0x6f 15M 1M'], { flags: ['-r'], timeoutMs: 60_000 });
  } finally {
    resume();
  }
  // and not without the daemon: clean blocks are not local to bs_swift
  await whileStopped(async () => {
    const r = await qemuIo(url, ['read -P 0x63 3M 4k'], { flags: ['-r'], timeoutMs: 8_000 });
    assert.ok(r.timedOut || r.code !== 0 || /failed|error/i.test(r.stdout + r.stderr), 'a clean block waits for the daemon');
  });
});

test('direct writes not yet collected when the daemon is killed are in the next snapshot; without the daemon they fail', async () => {
  const url = serve!.url('vol');
  await whileStopped(() => qemuIoOk(url, [`write -P 0x55 ${8 * MiB + 256 * 1024} 256k`], { flags: ['-t', 'unsafe'], timeoutMs: 60_000 }));
  await serve!.kill();

  // The daemon is gone: local blocks are not served behind its back.
  const down = await qemuIo(url, [`read -P 0x55 ${8 * MiB + 256 * 1024} 4k`], { flags: ['-r'], timeoutMs: 60_000 });
  assert.equal(down.timedOut, false);
  assert.match(down.stdout + down.stderr, /failed|error/i);
  assert.match(tgtdLog(), /direct I\/O off/);

  serve = await startServe(env, port);
  assert.match(serve.output(), /adopted tgtd/);
  await qemuIoOk(serve.url('vol'), [`read -P 0x55 ${8 * MiB + 256 * 1024} 256k`]);
  ok(['snapshot', 'create', 'vol', 's2']);
  const got = snapshotBytes('vol@s2', 8 * MiB + 256 * 1024, 256 * 1024);
  assert.ok(got.equals(Buffer.alloc(256 * 1024, 0x55)), 'the snapshot holds the uncollected direct writes');
  // After the restart, direct I/O is on again.
  await whileStopped(() => qemuIoOk(serve!.url('vol'), [`read -P 0x55 ${8 * MiB + 256 * 1024} 256k`], { flags: ['-r'], timeoutMs: 60_000 }));
});

test('tgtd killed right after a direct write, serve still up: the written blocks are in the next snapshot, as the volume reads them', async () => {
  // A preloaded shim kills tgtd right after its first pwrite to the overlay file returns.
  const shim = path.join(tmp.dir, 'kill-after-pwrite.so');
  await runOk('cc', ['-shared', '-fPIC', '-Wall', '-Werror', '-o', shim, path.join(repoRoot, 'test/fixtures/kill-after-pwrite.c'), '-ldl']);
  const dir = path.join(tmp.dir, 'state-tgtd-killed');
  const cliEnv = swiftvolEnv(swift, dir);
  const overlay = path.join(dir, 'volumes', 'k', 'overlay');
  importStriped('k', cliEnv);
  const killedPort = await freePort();
  const own = await startServe({ ...cliEnv, LD_PRELOAD: shim, SWIFTVOL_TEST_KILL_AFTER_PWRITE_TO: overlay }, killedPort);
  try {
    const url = own.url('k');
    // Blocks written through the daemon become local blocks: the ones bs_swift may overwrite directly.
    await qemuIoOk(url, [`write -P 0x66 ${2 * MiB} 64k`, 'flush']);
    await waitUntilCached(overlay, 64 * 1024);
    const tgtdPid = (JSON.parse(fs.readFileSync(path.join(dir, 'run', 'tgtd.json'), 'utf8')) as { pid: number }).pid;
    await qemuIo(url, [`write -P 0x77 ${2 * MiB} 64k`], { flags: ['-t', 'unsafe'], timeoutMs: 20_000 });
    assert.throws(() => process.kill(tgtdPid, 0), 'tgtd was killed by the shim');
    const fd = fs.openSync(overlay, 'r');
    const inFile = Buffer.alloc(64 * 1024);
    try {
      fs.readSync(fd, inFile, 0, inFile.length, 2 * MiB);
    } finally {
      fs.closeSync(fd);
    }
    assert.ok(inFile.equals(Buffer.alloc(64 * 1024, 0x77)), 'the direct write reached the overlay file before tgtd died');

    ok(['snapshot', 'create', 'k', 's1'], cliEnv);
    // What the volume reads now, asked of the daemon itself (no tgtd left).
    const { client } = await ProtocolClient.open(blockSocketPath(dir), 'k');
    let reads: Buffer;
    try {
      const r = await client.request(Op.READ, { offset: 2 * MiB, length: 64 * 1024 });
      assert.equal(r.status, Status.GOOD);
      reads = r.payload;
    } finally {
      client.close();
    }
    assert.ok(reads.equals(snapshotBytes('k@s1', 2 * MiB, 64 * 1024, cliEnv)), 'the snapshot holds what the volume reads');
  } finally {
    await own.stop();
    await stopLeftTgtd(dir);
  }
});
