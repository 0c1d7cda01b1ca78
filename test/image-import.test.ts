// Images as clouds keep them (issue 15): qcow2 (compressed clusters and a
// backing file), vmdk, vhdx, vdi and vpc files, and images already in Swift
// as large-object manifests, imported through QEMU's tools, on a real
// one-node Swift; each compared byte for byte with `qemu-img convert -O raw`
// of the same image. And export to qcow2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { startSwift, type DevSwift } from './fixtures/swift.js';
import { tempDir, sha256File, cliPath } from './fixtures/files.js';
import { swiftvolEnv, swiftvolSync } from './fixtures/serve.js';
import { formatSize } from '../src/cli/sizes.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;

before(async () => {
  swift = await startSwift();
  tmp = tempDir();
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'));
});

after(async () => {
  await swift?.stop();
  tmp?.remove();
});

const file = (name: string): string => path.join(tmp.dir, name);
const qemuImg = (...args: string[]): string => execFileSync('qemu-img', args, { encoding: 'utf8' });
const qemuIo = (image: string, format: string, command: string): void => {
  execFileSync('qemu-io', ['-f', format, '-c', command, image], { stdio: 'ignore' });
};

/** Runs swiftvol; fails the test with its output when the exit code is not `status`. */
function cli(args: string[], status = 0): { stdout: string; stderr: string } {
  const r = swiftvolSync(args, env);
  assert.equal(r.status, status, `swiftvol ${args.join(' ')} exited ${r.status}\n${r.stdout}${r.stderr}`);
  return r;
}

/** The volume's content, exported raw. */
function exported(volume: string): string {
  const out = file(`${volume}.export.raw`);
  cli(['export', volume, out, '--force']);
  return out;
}

/** The image as QEMU reads it, raw. */
function reference(image: string, format: string): string {
  const out = `${image}.ref.raw`;
  qemuImg('convert', '-f', format, '-O', 'raw', image, out);
  return out;
}

/** Bytes of an image qemu-img map lists as data. */
function dataBytes(image: string, format: string): number {
  const extents = JSON.parse(qemuImg('map', '--output=json', '-f', format, image)) as Array<{ length: number; zero: boolean }>;
  return extents.filter((e) => !e.zero).reduce((n, e) => n + e.length, 0);
}

/** A 40 MiB raw image: random data in three places (in the first three 8 MiB chunks), zeros elsewhere. */
function baseImage(): string {
  const base = file('base.raw');
  if (fs.existsSync(base)) return base;
  const fd = fs.openSync(base, 'w');
  fs.writeSync(fd, randomBytes(2 * MiB), 0, 2 * MiB, 1 * MiB);
  fs.writeSync(fd, randomBytes(MiB), 0, MiB, 9 * MiB);
  fs.writeSync(fd, randomBytes(4096), 0, 4096, 17 * MiB);
  fs.ftruncateSync(fd, 40 * MiB);
  fs.closeSync(fd);
  return base;
}

test('a qcow2 with compressed clusters over a backing file imports byte-identical, reading only its data', () => {
  const backing = file('backing.qcow2');
  qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', baseImage(), backing);
  const top = file('top.qcow2');
  qemuImg('create', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', top);
  qemuIo(top, 'qcow2', 'write -P 0x5a 20M 1M');
  qemuIo(top, 'qcow2', 'write -P 0x33 1M 64k');
  const ref = reference(top, 'qcow2');

  const r = cli(['import', top, 'q1']);
  assert.match(r.stdout, /\(qcow2\) as volume q1: 40M/);
  // what was read is what qemu-img map lists as data (of both images of the chain)
  assert.match(r.stdout, new RegExp(`, ${formatSize(dataBytes(top, 'qcow2')).replace('.', '\\.')} read from the image`));
  assert.equal(sha256File(exported('q1')), sha256File(ref));
});

test('vmdk, vhdx, vdi and vpc images import byte-identical', () => {
  for (const format of ['vmdk', 'vhdx', 'vdi', 'vpc']) {
    const image = file(`base.${format}`);
    qemuImg('convert', '-f', 'raw', '-O', format, baseImage(), image);
    const ref = reference(image, format);
    const r = cli(['import', image, `img-${format}`]);
    assert.match(r.stdout, new RegExp(`\\(${format}\\) as volume img-${format}:`));
    assert.equal(sha256File(exported(`img-${format}`)), sha256File(ref), `${format} content`);
  }
});

test('a sparse 10 GiB qcow2 with 1 MiB of data reads 1 MiB and stores one object', () => {
  const image = file('sparse.qcow2');
  qemuImg('create', '-f', 'qcow2', image, '10G');
  qemuIo(image, 'qcow2', 'write -P 0x77 5G 1M');
  const r = cli(['import', image, 'sparse']);
  assert.match(r.stdout, /as volume sparse: 10G, 1M read from the image, 8M stored/);
  const info = JSON.parse(cli(['volume', 'info', 'sparse', '--json']).stdout) as { size: number; storedBytes: number };
  assert.equal(info.size, 10 * 1024 * MiB);
  assert.equal(info.storedBytes, 8 * MiB);
});

test('a qcow2 whose file size is a multiple of 512 is still detected; --format raw takes it as bytes', () => {
  const image = file('aligned.qcow2');
  qemuImg('create', '-f', 'qcow2', image, '64M');
  qemuIo(image, 'qcow2', 'write -P 0x11 0 1M');
  fs.truncateSync(image, Math.ceil(fs.statSync(image).size / 512) * 512);
  const r = cli(['import', image, 'aligned']);
  assert.match(r.stdout, /\(qcow2\) as volume aligned: 64M/);
  assert.equal(sha256File(exported('aligned')), sha256File(reference(image, 'qcow2')));
  const forced = cli(['import', image, 'aligned-raw', '--format', 'raw']);
  assert.match(forced.stdout, /\(raw\) as volume aligned-raw/);
  assert.equal(sha256File(exported('aligned-raw')), sha256File(image), 'the file itself, header and all');
});

test('bad image input: a clear line, a non-zero exit, no volume', () => {
  const image = file('bad.qcow2');
  qemuImg('create', '-f', 'qcow2', image, '8M');
  const wrong = swiftvolSync(['import', image, 'bad1', '--format', 'vmdk'], env);
  assert.equal(wrong.status, 1, wrong.stderr);
  assert.match(wrong.stderr, /^swiftvol: .*(vmdk|VMDK|format)/);
  assert.equal(wrong.stderr.trim().split('\n').length, 1, wrong.stderr);
  const unknown = swiftvolSync(['import', image, 'bad2', '--format', 'qcow3'], env);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /'qcow3' is not an image format/);
  const missing = swiftvolSync(['import', file('absent.qcow2'), 'bad3'], env);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /does not exist/);
  const notSwift = swiftvolSync(['import', 'swift://no-such-container/img', 'bad4'], env);
  assert.equal(notSwift.status, 1);
  assert.match(notSwift.stderr, /no-such-container\/img does not exist/);
  const list = cli(['volume', 'list']).stdout;
  for (const v of ['bad1', 'bad2', 'bad3', 'bad4']) assert.doesNotMatch(list, new RegExp(`\\b${v}\\b`));
  // nothing left running or lying about
  assert.deepEqual(fs.readdirSync('/tmp').filter((n) => n.startsWith('swiftvol-nbd-') && fs.statSync(path.join('/tmp', n)).mtimeMs > Date.now() - 60_000), []);
});

test('a raw image whose size is not a multiple of 512 becomes a volume rounded up, with a message', () => {
  const image = file('odd.raw');
  const data = randomBytes(1000);
  fs.writeFileSync(image, data);
  const r = cli(['import', image, 'odd']);
  assert.match(r.stderr, /is 1000 bytes, not a multiple of 512: volume odd is 1024 bytes, the rest zeros/);
  const out = fs.readFileSync(exported('odd'));
  assert.equal(out.length, 1024);
  assert.ok(out.subarray(0, 1000).equals(data));
  assert.ok(out.subarray(1000).equals(Buffer.alloc(24)));
});

test('export --format qcow2 writes a sparse qcow2 of the volume', () => {
  cli(['import', baseImage(), 'to-qcow2']);
  const out = file('out.qcow2');
  const r = cli(['export', 'to-qcow2', out, '--format', 'qcow2']);
  assert.match(r.stdout, /to .*out\.qcow2 \(qcow2\)/);
  const info = JSON.parse(qemuImg('info', '--output=json', out)) as { format: string; 'virtual-size': number };
  assert.equal(info.format, 'qcow2');
  assert.equal(info['virtual-size'], 40 * MiB);
  assert.equal(sha256File(reference(out, 'qcow2')), sha256File(baseImage()));
  assert.ok(dataBytes(out, 'qcow2') <= 3 * 8 * MiB, 'the zero chunks stay unallocated');
  assert.ok(fs.statSync(out).size < 30 * MiB, `the qcow2 is sparse (${fs.statSync(out).size} bytes)`);
  assert.equal(fs.readdirSync(tmp.dir).filter((n) => n.includes('.swiftvol-')).length, 0, 'no temporary files left');
  const again = swiftvolSync(['export', 'to-qcow2', out, '--format', 'qcow2'], env);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /exists; use --force/);
  // where no image can be written: one line naming the file and why, nothing left behind
  const ro = file('read-only');
  fs.mkdirSync(ro);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', ro]);
  try {
    for (const [target, args, why] of [
      [path.join(tmp.dir, 'no-such-dir', 'x.raw'), [], /no directory .*no-such-dir$/],
      [path.join(tmp.dir, 'no-such-dir', 'x.qcow2'), ['--format', 'qcow2'], /no directory .*no-such-dir$/],
      ['/proc/x.raw', [], /no file can be made in \/proc$/],
      [tmp.dir, ['--force'], /it is a directory$/],
      [path.join(ro, 'x.raw'), [], /read-only file system$/],
    ] as Array<[string, string[], RegExp]>) {
      const r = swiftvolSync(['export', 'to-qcow2', target, ...args], env);
      assert.equal(r.status, 1, `${target}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0]!.startsWith(`swiftvol: cannot write image '${target}': `), r.stderr);
      assert.match(lines[0]!, why);
    }
  } finally {
    execFileSync('umount', [ro]);
  }
  assert.equal(fs.readdirSync(tmp.dir).filter((n) => n.includes('.swiftvol-')).length, 0, 'no temporary files left');
});

/** Token and storage URL of the test Swift's account. */
async function account(): Promise<{ url: string; token: string }> {
  const res = await fetch(swift.authUrl, { headers: { 'x-auth-user': swift.user, 'x-auth-key': swift.key } });
  assert.equal(res.status, 200);
  return { url: res.headers.get('x-storage-url')!, token: res.headers.get('x-auth-token')! };
}

async function put(url: string, token: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(url, { method: 'PUT', headers: { 'x-auth-token': token, ...headers }, body: typeof body === 'string' ? body : new Uint8Array(body) });
  assert.ok(res.status === 201 || res.status === 202, `PUT ${url}: ${res.status} ${await res.text()}`);
}

test('images already in Swift import without a local copy: a qcow2 as a dynamic large object, a raw one as a static one', async () => {
  const { url, token } = await account();
  await put(`${url}/glance`, token, '');
  // qcow2 in 1 MiB segments under a DLO manifest, as Glance's Swift store writes large images
  const qcow2 = file('glance.qcow2');
  qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', baseImage(), qcow2);
  const q = fs.readFileSync(qcow2);
  for (let i = 0; i * MiB < q.length; i++) await put(`${url}/glance/img-qcow2-${String(i).padStart(5, '0')}`, token, q.subarray(i * MiB, (i + 1) * MiB));
  await put(`${url}/glance/img-qcow2`, token, '', { 'x-object-manifest': 'glance/img-qcow2-' });
  const r1 = cli(['import', 'swift://glance/img-qcow2', 'from-dlo']);
  assert.match(r1.stdout, /\(qcow2\) as volume from-dlo: 40M/);
  assert.equal(sha256File(exported('from-dlo')), sha256File(baseImage()));

  // raw in 4 MiB segments under an SLO manifest
  const raw = fs.readFileSync(baseImage());
  const segments: Array<{ path: string; size_bytes: number }> = [];
  for (let i = 0; i * 4 * MiB < raw.length; i++) {
    const name = `segments/img-raw-${i}`;
    await put(`${url}/glance/${name}`, token, raw.subarray(i * 4 * MiB, (i + 1) * 4 * MiB));
    segments.push({ path: `glance/${name}`, size_bytes: 4 * MiB });
  }
  await put(`${url}/glance/img-raw?multipart-manifest=put`, token, JSON.stringify(segments));
  const r2 = cli(['import', 'swift://glance/img-raw', 'from-slo']);
  assert.match(r2.stdout, /\(raw\) as volume from-slo: 40M/);
  assert.equal(sha256File(exported('from-slo')), sha256File(baseImage()));
  const info = JSON.parse(cli(['volume', 'info', 'from-slo', '--json']).stdout) as { storedBytes: number };
  assert.equal(info.storedBytes, 3 * 8 * MiB, 'zero chunks of an object are not stored either');
});

test('a qcow2 import killed midway leaves an incomplete volume and no qemu-nbd behind', async () => {
  const raw = file('big.raw');
  fs.writeFileSync(raw, randomBytes(96 * MiB));
  const image = file('big.qcow2');
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, image);
  fs.rmSync(raw);
  const child = spawn(process.execPath, [cliPath, 'import', image, 'killed', '--object-size', '1M', '--concurrency', '1'], { env, stdio: 'ignore' });
  const { url, token } = await account();
  for (const deadline = Date.now() + 60_000; ; ) {
    const listing = await fetch(`${url}/swiftvol-killed?prefix=data/&format=json`, { headers: { 'x-auth-token': token } });
    if (listing.status === 200 && ((await listing.json()) as unknown[]).length >= 3) break;
    assert.ok(Date.now() < deadline, 'the import never started uploading');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await once(child, 'exit');
  const list = JSON.parse(cli(['volume', 'list', '--json']).stdout) as Array<{ name: string; state: string }>;
  assert.equal(list.find((v) => v.name === 'killed')?.state, 'incomplete');
  // qemu-nbd served that one connection: it exits when the connection goes
  const nbdOf = (): string[] =>
    fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && (() => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(image);
      } catch {
        return false;
      }
    })());
  for (let i = 0; i < 100 && nbdOf().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(nbdOf(), [], 'no process holds the image');
  cli(['volume', 'delete', 'killed']);
});
