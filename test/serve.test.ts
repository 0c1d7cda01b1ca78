// Volumes in a real Swift served over iSCSI by `swiftvol serve` (tgtd with the
// real bs_swift.so), used by real initiators: libiscsi tools and QEMU.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir, writeImage, sha256File } from './fixtures/files.js';
import { iscsiInq, iscsiReadCapacity16, qemuIo, qemuIoOk, qemuImg, run } from './fixtures/initiators.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { tgtdEnvironment } from '../src/daemon/tgtd.js';
import { MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD } from '../src/os/malloc-tuning.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | null = null;
let port: number;
let imageFile: string;

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return swiftvolSync(args, env);
}

function ok(args: string[]): string {
  const r = cli(args);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  if (!fs.existsSync('/usr/lib/tgt/backing-store/bs_swift.so')) {
    throw new Error('bs_swift.so is not installed in /usr/lib/tgt/backing-store: run scripts/setup');
  }
  swift = await startSwift();
  tmp = tempDir();
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'));
  port = await freePort();
  // 40 MiB in 8 MiB objects; chunk 2 is all zeros, chunk 3 half.
  imageFile = path.join(tmp.dir, 'image.raw');
  writeImage(imageFile, 40 * MiB, 4 * MiB, (piece) => piece === 4 || piece === 5 || piece === 7);
  ok(['import', imageFile, 'img']);
  ok(['volume', 'create', 'blank', '--size', '64M']);
  ok(['target', 'add', 'img']);
  ok(['target', 'add', 'blank']);
  // with fetch threads (the default on 4 CPUs or more, none on this CI's 2): GETs on workers, end to end
  serve = await startServe(env, port, { args: ['--fetch-threads', '2'] });
  assert.match(serve.output(), /2 fetch thread\(s\)/);
});

after(async () => {
  if (serve) await serve.stop();
  await stopLeftTgtd(path.join(tmp.dir, 'state'));
  await swift?.stop();
  tmp?.remove();
});

test('iscsi-inq and iscsi-readcapacity16 see the volume', async () => {
  const inq = await iscsiInq(serve!.url('img'));
  assert.match(inq, /Peripheral Device Type:DIRECT_ACCESS/);
  const cap = await iscsiReadCapacity16(serve!.url('img'));
  assert.equal(cap.size, 40 * MiB);
  assert.equal(cap.blockLength, 512);
  assert.equal((await iscsiReadCapacity16(serve!.url('blank'))).size, 64 * MiB);
});

test("serve's tgtd runs with glibc's malloc thresholds raised (README.swift.md), an operator's own tunables kept", () => {
  const record = JSON.parse(fs.readFileSync(path.join(tmp.dir, 'state', 'run', 'tgtd.json'), 'utf8')) as { pid: number };
  const environ = fs.readFileSync(`/proc/${record.pid}/environ`, 'latin1').split('\0');
  const ours = `glibc.malloc.mmap_threshold=${MALLOC_MMAP_THRESHOLD}:glibc.malloc.trim_threshold=${MALLOC_TRIM_THRESHOLD}`;
  // glibc (2.36) rewrites the variable in the running process to its first tunable; all of them apply
  const first = ours.split(':')[0];
  assert.ok(environ.some((e) => e === `GLIBC_TUNABLES=${ours}` || e === `GLIBC_TUNABLES=${first}`), `tgtd's GLIBC_TUNABLES: ${environ.filter((e) => e.startsWith('GLIBC_TUNABLES=')).join(' ') || 'none'}`);
  assert.equal(tgtdEnvironment({}).GLIBC_TUNABLES, ours);
  assert.equal(tgtdEnvironment({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, `glibc.malloc.arena_max=2:${ours}`);
  assert.equal(tgtdEnvironment({ GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' }).GLIBC_TUNABLES, `glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=${MALLOC_TRIM_THRESHOLD}`);
  const both = 'glibc.malloc.trim_threshold=1:glibc.malloc.mmap_threshold=2';
  assert.equal(tgtdEnvironment({ GLIBC_TUNABLES: both }).GLIBC_TUNABLES, both);
});

test('qemu-img convert of an imported volume, read from Swift, equals the image', async () => {
  const info = JSON.parse(ok(['volume', 'info', 'img', '--json'])) as { dirtyBytes: number; storedBytes: number };
  assert.equal(info.dirtyBytes, 0, 'the overlay holds nothing of its own: reads come from Swift');
  assert.equal(info.storedBytes, 32 * MiB, 'the zero chunk is not stored');
  const out = path.join(tmp.dir, 'out.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', serve!.url('img'), out], { timeoutMs: 120_000 });
  assert.equal(sha256File(out), sha256File(imageFile));
});

test('pattern writes across chunk boundaries read back, also after a restart of serve', async () => {
  const url = serve!.url('blank');
  const writes = [
    // [pattern, offset, length]: across the 8 MiB boundary, sub-block, unaligned to 4 KiB, last sector
    [0x5a, 8 * MiB - 64 * 1024, 256 * 1024],
    [0xc3, 16 * MiB - 512, 1024],
    [0x11, 24 * MiB + 1536, 3 * 512],
    [0x7e, 64 * MiB - 512, 512],
    [0x42, 30 * MiB, 5 * MiB],
  ] as const;
  await qemuIoOk(url, [...writes.map(([p, o, l]) => `write -P ${p} ${o} ${l}`), 'flush']);
  const checks = writes.map(([p, o, l]) => `read -P ${p} ${o} ${l}`);
  // Neighbours untouched.
  checks.push(`read -P 0 ${8 * MiB - 128 * 1024} ${64 * 1024}`, `read -P 0 ${16 * MiB + 512} 512`);
  await qemuIoOk(url, checks);

  assert.equal(await serve!.stop(), 0);
  assert.match(serve!.output(), /flushing and stopping/);
  serve = await startServe(env, port);
  await qemuIoOk(serve.url('blank'), checks);
});

test('the data survive kill -9 of serve after a flush; initiators get errors, not a hang, and I/O resumes', async () => {
  const url = serve!.url('blank');
  await qemuIoOk(url, ['write -P 0x99 40M 2M', 'flush']);
  // A reader that keeps reading while serve dies.
  const reads = Array.from({ length: 3000 }, (_, i) => `read ${(i % 60) * MiB} 1M`);
  const reader = qemuIo(url, reads, { timeoutMs: 90_000 });
  await new Promise((r) => setTimeout(r, 700));
  await serve!.kill();
  const result = await reader;
  assert.equal(result.timedOut, false, 'the initiator did not hang');
  assert.match(result.stdout + result.stderr, /failed|error/i, 'the initiator saw errors');
  // While the daemon is down, I/O fails at once (tgtd is still up).
  const down = await qemuIo(url, ['read 0 4096'], { timeoutMs: 60_000 });
  assert.equal(down.timedOut, false);
  assert.match(down.stdout + down.stderr, /failed|error/i);

  serve = await startServe(env, port);
  assert.match(serve.output(), /adopted tgtd/);
  await qemuIoOk(serve.url('blank'), ['read -P 0x99 40M 2M', `read -P 0x5a ${8 * MiB - 64 * 1024} ${256 * 1024}`]);
});

test('CHAP and initiator rules decide who logs in', async () => {
  ok(['volume', 'create', 'secret', '--size', '8M']);
  ok(['target', 'add', 'secret', '--chap', 'alice:correct-horse-1']);
  ok(['volume', 'create', 'fenced', '--size', '8M']);
  ok(['target', 'add', 'fenced', '--allow', '10.9.8.0/24']);
  ok(['volume', 'create', 'named', '--size', '8M']);
  ok(['target', 'add', 'named', '--allow', 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq']);

  const inq = (url: string) => run('iscsi-inq', [url], { timeoutMs: 30_000 });
  assert.notEqual((await inq(serve!.url('secret'))).code, 0, 'no credentials: refused');
  const wrong = await inq(serve!.url('secret', 'alice%wrong-horse-11'));
  assert.notEqual(wrong.code, 0, 'wrong secret: refused');
  assert.match(wrong.stdout + wrong.stderr, /Authentication failure|Login Failed/i);
  assert.match((await inq(serve!.url('secret', 'alice%correct-horse-1'))).stdout, /DIRECT_ACCESS/);

  const fenced = await inq(serve!.url('fenced'));
  assert.notEqual(fenced.code, 0, '127.0.0.1 is not in 10.9.8.0/24');
  assert.match((await inq(serve!.url('named'))).stdout, /DIRECT_ACCESS/, 'the initiator name is allowed');

  const list = JSON.parse(ok(['target', 'list', '--json'])) as Array<{ volume: string; chapUser: string | null; state: string }>;
  assert.deepEqual(list.map((t) => [t.volume, t.state, t.chapUser]), [
    ['blank', 'served', null],
    ['fenced', 'served', null],
    ['img', 'served', null],
    ['named', 'served', null],
    ['secret', 'served', 'alice'],
  ]);
  assert.doesNotMatch(JSON.stringify(list), /correct-horse/, 'secrets are not shown');
  ok(['target', 'remove', 'fenced']);
  assert.notEqual((await inq(serve!.url('fenced'))).code, 0);
});

test('serve refuses a portal it cannot listen on, and leaves no tgtd behind', async () => {
  const other = { ...env, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'state-portal') };
  const tgtdsOn = (portal: string): number[] =>
    fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && (() => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(`portal=${portal}`);
      } catch {
        return false;
      }
    })()).map(Number);
  // taken by another process (here a plain TCP listener; tgtd alone would log its failed bind and run on)
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const taken = (holder.address() as net.AddressInfo).port;
  try {
    const r = swiftvolSync(['serve', '--portal', `127.0.0.1:${taken}`], other);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`portal 127\\.0\\.0\\.1:${taken} is in use by another process`));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(tgtdsOn(`127.0.0.1:${taken}`), []);
  } finally {
    holder.close();
  }
  // taken by the tgtd of the serve that is running (from another state dir)
  const r = swiftvolSync(['serve', '--portal', `127.0.0.1:${port}`], other);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /is in use by another process/);
  assert.equal(tgtdsOn(`127.0.0.1:${port}`).length, 1, 'only the running serve\'s tgtd');
  // not an address of this host
  const away = swiftvolSync(['serve', '--portal', '192.0.2.1:3260'], other);
  assert.equal(away.status, 1, away.stderr);
  assert.match(away.stderr, /192\.0\.2\.1 is not an address of this host/);
  assert.ok(!fs.existsSync(path.join(other.SWIFTVOL_STATE_DIR, 'run', 'tgtd.json')), 'no tgtd recorded');
});

test('target commands refuse bad input', () => {
  const fails = (args: string[], status: number, message: RegExp): void => {
    const r = cli(args);
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
  };
  fails(['target', 'add', 'nosuch'], 1, /volume 'nosuch' does not exist/);
  fails(['target', 'add', 'img'], 1, /already exported/);
  fails(['target', 'add', 'blank', '--allow', 'not-an-address'], 2, /not an initiator address/);
  fails(['target', 'add', 'blank', '--chap', 'bob'], 2, /USER:SECRET/);
  fails(['target', 'add', 'blank', '--chap', 'bob:short'], 2, /12 to 64/);
  fails(['target', 'remove', 'nosuch'], 1, /not exported/);
  fails(['serve', '--portal', 'localhost'], 2, /not ADDR:PORT/);
  fails(['serve', '--portal', `127.0.0.1:${port}`], 1, /already running/);
  // The volume is in use by serve: an export from another process is refused, naming the holder.
  fails(['export', 'blank', path.join(tmp.dir, 'x.raw')], 1, /in use by process \d+ \(swiftvol serve/);
});
