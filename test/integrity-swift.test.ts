// The case of issue 12, as a user meets it: a data object corrupted on the
// object server's disk of a real Swift, read cold through iSCSI (the real
// tgtd, bs_swift.so, swiftvol serve, QEMU's initiator). Reads of 512 B,
// 4 KiB and 1 MiB that touch the bad bytes fail with an I/O error (MEDIUM
// ERROR), serve logs the object, the block and the store, nothing wrong is
// cached, and an export of the volume fails naming the object.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir, writeImage } from './fixtures/files.js';
import { qemuImg, qemuIo } from './fixtures/initiators.js';
import { corrupt, objectFileHolding, restore } from './fixtures/corrupt.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';

const MiB = 1024 * 1024;
const OBJECT = 8 * MiB;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | undefined;
let image: string;
let content: Buffer;

function ok(args: string[], extra: NodeJS.ProcessEnv = {}): string {
  const r = swiftvolSync(args, { ...env, ...extra });
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  swift = await startSwift();
  tmp = tempDir('swiftvol-integrity-');
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'));
  image = path.join(tmp.dir, 'image.raw');
  content = writeImage(image, 32 * MiB, MiB, () => false);
  ok(['import', image, 'vol']);
  ok(['target', 'add', 'vol']);
  serve = await startServe(env, await freePort());
});

after(async () => {
  try {
    await serve?.stop();
  } finally {
    await stopLeftTgtd(path.join(tmp.dir, 'state'));
    await swift?.stop();
    tmp?.remove();
  }
});

test('an object corrupted on the object server: 512 B, 4 KiB and 1 MiB reads through iSCSI fail, nothing wrong is served or cached', async () => {
  const url = serve!.url('vol');
  // Object 1 (volume bytes 8..16 MiB), corrupted at two places: 100000 and 5 MiB + 7 into it.
  const { file, at } = objectFileHolding(swift.dir, content, OBJECT + 100_000);
  assert.equal(at, 100_000, 'the object file holds the chunk from its first byte');
  const saved = corrupt(file, [100_000, 5 * MiB + 7]);
  const reads: Array<[number, number]> = [
    [OBJECT + 99_840, 512], // the sector holding the first bad byte
    [OBJECT + 98_304, 4096], // its 4 KiB block
    [OBJECT + 5 * MiB, MiB], // 1 MiB over the second place
  ];
  for (const [offset, length] of reads) {
    const r = await qemuIo(url, [`read -v ${offset} ${length}`]);
    assert.match(r.stdout + r.stderr, /read failed: Input\/output error/, `read ${length} at ${offset}: ${r.stdout.slice(0, 300)} ${r.stderr}`);
  }
  // serve says what is wrong where
  assert.match(serve!.output(), /object swiftvol-vol\/data\/[0-9a-f]{16}\/000000000001: block 24 failed its CRC32C check twice \(swift http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(serve!.output(), /object swiftvol-vol\/data\/[0-9a-f]{16}\/000000000001: block 1280 failed its CRC32C check twice/);
  // The rest of the volume reads fine meanwhile.
  const other = await qemuIo(url, [`read -v 0 64k`, `read -v ${2 * OBJECT} 1M`]);
  assert.doesNotMatch(other.stdout + other.stderr, /failed/);
  // Put the bytes back: the whole volume reads as the image, so nothing wrong was cached.
  restore(file, saved);
  await qemuImg(['compare', '-f', 'raw', '-F', 'raw', url, image], { timeoutMs: 120_000 });
});

test('an export of a volume with a corrupt object fails, naming it, and leaves no file', () => {
  const { file } = objectFileHolding(swift.dir, content, 3 * OBJECT + 4096);
  corrupt(file, [4096 + 100]);
  const out = path.join(tmp.dir, 'out.raw');
  // from another state directory: everything comes from Swift
  const r = swiftvolSync(['export', 'vol', out], { ...env, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'elsewhere') });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^swiftvol: object swiftvol-vol\/data\/[0-9a-f]{16}\/000000000003: block 1 failed its CRC32C check/m);
  assert.doesNotMatch(r.stderr, /unexpected error|^\s+at /m);
  assert.equal(fs.existsSync(out), false);
});

test('volume verify checks every block of every object, and names each bad one', () => {
  // Object 3 is bad since the export above (and Swift, which read it whole, may have quarantined it).
  const { file } = objectFileHolding(swift.dir, content, 2 * OBJECT + 4096);
  corrupt(file, [3 * 4096 + 1]);
  const v = swiftvolSync(['volume', 'verify', 'vol'], env);
  assert.equal(v.status, 1, v.stdout + v.stderr);
  assert.match(v.stdout, /^corrupt: chunk 2: object swiftvol-vol\/data\/[0-9a-f]{16}\/000000000002: block 3 failed its CRC32C check/m);
  assert.match(v.stdout, /^(corrupt|missing): chunk 3: object swiftvol-vol\/data\/[0-9a-f]{16}\/000000000003/m);
  assert.match(v.stdout, /volume vol \(version 1\): 4 object\(s\), 32M checked, 2 bad$/m);
  assert.match(v.stderr, /^swiftvol: volume vol: 2 of 4 object\(s\) corrupt, missing or unreadable$/m);
  const j = swiftvolSync(['volume', 'verify', 'vol', '--json'], env);
  assert.equal(j.status, 1);
  const report = JSON.parse(j.stdout) as { objects: number; findings: Array<{ chunk: number; problem: string }> };
  assert.equal(report.objects, 4);
  assert.deepEqual(report.findings.map((f) => f.chunk), [2, 3]);
});

test('volume verify of a sound volume says so and exits 0', () => {
  const image2 = path.join(tmp.dir, 'sound.raw');
  writeImage(image2, 12 * MiB, MiB, (piece) => piece === 3);
  ok(['import', image2, 'sound']);
  const clean = JSON.parse(ok(['volume', 'verify', 'sound', '--json'])) as { objects: number; bytes: number; findings: unknown[] };
  assert.deepEqual([clean.objects, clean.bytes, clean.findings], [2, 12 * MiB, []]);
  assert.match(ok(['volume', 'verify', 'sound']), /^volume sound \(version 1\): 2 object\(s\), 12M checked, 0 bad$/m);
  const bad = swiftvolSync(['volume', 'verify', 'sound@nosuch'], env);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /has no snapshot 'nosuch'/);
});
