// Encryption at rest on a real Swift, as a user runs it: import --encrypt,
// writes through iSCSI (tgtd, bs_swift.so, serve), snapshot, clone, export;
// nothing in Swift holds the plaintext, the wrong key and no key are refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir } from './fixtures/files.js';
import { qemuIoOk } from './fixtures/initiators.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { swiftStoreFromEnv } from '../src/store/swift-store.js';
import type { ObjectStore } from '../src/store/object-store.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let store: ObjectStore;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | undefined;
let expected: Buffer;
let keyFile: string;
let wrongKeyFile: string;
/** 4 KiB patterns written into the volume: none may be found in Swift. */
const P = Buffer.alloc(4096);
const Q = Buffer.alloc(4096);

function cli(args: string[], extra: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  return swiftvolSync(args, { ...env, ...extra });
}

function ok(args: string[], extra: NodeJS.ProcessEnv = {}): string {
  const r = cli(args, extra);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Every object of every swiftvol container, searched for the patterns (and for any 64 bytes of them). */
async function storedObjectsHold(patterns: Buffer[]): Promise<string[]> {
  const found: string[] = [];
  for (const container of await store.listContainers('swiftvol-')) {
    for await (const o of store.list(container)) {
      const data = await store.get(container, o.name);
      for (const p of patterns) if (data.includes(p.subarray(0, 64)) || data.includes(p.subarray(2000, 2064))) found.push(`${container}/${o.name}`);
    }
  }
  return found;
}

before(async () => {
  swift = await startSwift();
  store = swiftStoreFromEnv({ ST_AUTH: swift.authUrl, ST_USER: swift.user, ST_KEY: swift.key })!;
  tmp = tempDir('swiftvol-encryption-');
  keyFile = path.join(tmp.dir, 'key');
  fs.writeFileSync(keyFile, randomBytes(32));
  wrongKeyFile = path.join(tmp.dir, 'wrong.key');
  fs.writeFileSync(wrongKeyFile, randomBytes(32).toString('hex') + '\n'); // the hex form
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'), { SWIFTVOL_KEY_FILE: keyFile });
  for (let i = 0; i < 4096; i += 16) P.write('swiftvol-secret!', i);
  for (let i = 0; i < 4096; i += 16) Q.write('written-by-iscsi', i);
  // 20 MiB: P at several places, random data, and an 8 MiB chunk of zeros (chunk 1)
  expected = randomBytes(20 * MiB);
  expected.fill(0, 8 * MiB, 16 * MiB);
  for (const at of [0, 4096 * 7, 16 * MiB + 12288]) P.copy(expected, at);
  fs.writeFileSync(path.join(tmp.dir, 'image.raw'), expected);
});

after(async () => {
  try {
    await serve?.stop();
  } finally {
    await stopLeftTgtd(path.join(tmp.dir, 'state'));
    await store?.close();
    await swift?.stop();
    tmp?.remove();
  }
});

test('import --encrypt: nothing in Swift holds the plaintext, zero chunks are not stored, the metadata holds a key check only', async () => {
  ok(['import', path.join(tmp.dir, 'image.raw'), 'sealed', '--encrypt']);
  const info = JSON.parse(ok(['volume', 'info', 'sealed', '--json'])) as { encrypted: boolean; storedBytes: number };
  assert.equal(info.encrypted, true);
  assert.equal(info.storedBytes, 12 * MiB, 'the zero chunk is not stored');
  assert.deepEqual(await storedObjectsHold([P]), []);
  const meta = (await store.get('swiftvol-sealed', 'volume.json')).toString();
  assert.match(meta, /"cipher": "aes-256-gcm"/);
  assert.doesNotMatch(meta, new RegExp(fs.readFileSync(keyFile).toString('hex')));
  assert.match(ok(['volume', 'info', 'sealed']), /encrypted:\s+yes \(AES-256-GCM\)/);
});

test('an encrypted volume served over iSCSI: reads decrypt, writes land sealed in its snapshot, a clone and exports read back', async () => {
  ok(['target', 'add', 'sealed']);
  serve = await startServe(env, await freePort());
  const url = serve.url('sealed');
  await qemuIoOk(url, [`read -P 0 ${8 * MiB} 1M`]);
  // the plaintext through iSCSI: P where the image had it
  const out = await qemuIoOk(url, [`read -v 0 64`]);
  assert.match(out, /^00000000:  73 77 69 66 74 76 6f 6c 2d 73 65 63 72 65 74 21 /m); // "swiftvol-secret!"
  await qemuIoOk(url, [`write -P 0x00 ${9 * MiB} 4k`, 'flush']);
  const at = 9 * MiB;
  // Q through qemu-io: write the pattern file's bytes with a 16-byte repeating text
  const qFile = path.join(tmp.dir, 'q.raw');
  fs.writeFileSync(qFile, Q);
  await qemuIoOk(url, [`write -s ${qFile} ${at} 4k`, 'flush']);
  Q.copy(expected, at);
  ok(['snapshot', 'create', 'sealed', 's1']);
  ok(['clone', 'sealed@s1', 'kid']);
  const kidInfo = JSON.parse(ok(['volume', 'info', 'kid', '--json'])) as { encrypted: boolean };
  assert.equal(kidInfo.encrypted, true, "a clone has its parent's encryption");
  for (const [ref, file] of [['sealed@s1', 'snap.raw'], ['kid', 'kid.raw']] as const) {
    ok(['export', ref, path.join(tmp.dir, file)]);
    assert.ok(fs.readFileSync(path.join(tmp.dir, file)).equals(expected), `${ref} exports as written`);
  }
  assert.deepEqual(await storedObjectsHold([P, Q]), [], 'no stored object holds a pattern written into the volume');
  const report = JSON.parse(ok(['volume', 'verify', 'sealed', '--json'])) as { findings: unknown[]; objects: number };
  assert.deepEqual(report.findings, []);
  assert.equal(report.objects, 3);
});

test('the wrong key and no key are refused with a clear error and read nothing; a bad key file is refused', () => {
  const out = path.join(tmp.dir, 'wrong.raw');
  const elsewhere = { SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'elsewhere') };
  const wrong = cli(['export', 'sealed@s1', out], { ...elsewhere, SWIFTVOL_KEY_FILE: wrongKeyFile });
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /^swiftvol: the key given is not the key of volume 'sealed' \(its key check does not match\)$/m);
  assert.equal(fs.existsSync(out), false);
  const none = cli(['export', 'kid', out], { ...elsewhere, SWIFTVOL_KEY_FILE: '' });
  assert.equal(none.status, 1);
  assert.match(none.stderr, /^swiftvol: volume 'kid' is encrypted: give its key with --key-file FILE or SWIFTVOL_KEY_FILE$/m);
  assert.equal(fs.existsSync(out), false);
  // a clone with the wrong key or none is refused by its parent's key check, and nothing is created
  const wrongClone = cli(['clone', 'sealed@s1', 'kid2'], { ...elsewhere, SWIFTVOL_KEY_FILE: wrongKeyFile });
  assert.equal(wrongClone.status, 1);
  assert.match(wrongClone.stderr, /^swiftvol: the key given is not the key of volume 'sealed' \(its key check does not match\)$/m);
  const noKeyClone = cli(['clone', 'sealed@s1', 'kid2'], { ...elsewhere, SWIFTVOL_KEY_FILE: '' });
  assert.equal(noKeyClone.status, 1);
  assert.match(noKeyClone.stderr, /^swiftvol: volume 'sealed' is encrypted: give its key with --key-file FILE or SWIFTVOL_KEY_FILE$/m);
  assert.equal(cli(['volume', 'info', 'kid2'], elsewhere).status, 1, 'no volume kid2');
  const missing = cli(['volume', 'info', 'sealed'], { SWIFTVOL_KEY_FILE: path.join(tmp.dir, 'no-such.key') });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^swiftvol: key file .*no-such\.key does not exist$/m);
  const short = path.join(tmp.dir, 'short.key');
  fs.writeFileSync(short, 'too short');
  const bad = cli(['volume', 'info', 'sealed'], { SWIFTVOL_KEY_FILE: short });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^swiftvol: key file .*short\.key holds 9 bytes: a key is 32 bytes, or 64 hex digits$/m);
  const noKey = cli(['volume', 'create', 'nokey', '--size', '8M', '--encrypt'], { SWIFTVOL_KEY_FILE: '' });
  assert.equal(noKey.status, 1);
  assert.match(noKey.stderr, /--encrypt needs a key/);
  assert.doesNotMatch(wrong.stderr + none.stderr + bad.stderr + noKey.stderr, /unexpected error|^\s+at /m);
});
