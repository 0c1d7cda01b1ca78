// libiscsi's conformance suite, iscsi-test-cu, on two LUNs of the same size
// and content in the same tgtd:
//   - swiftvol: a volume imported into a real Swift (so reads come from
//     Swift), served by the real daemon, `swiftvol serve --tgtd-control N`
//     as a child process, through the real bs_swift.so;
//   - bs_rdwr: tgt's own file backing store, on a copy of the same image.
// Every test that passes on bs_rdwr must pass on swiftvol. The same tgtd
// also shows that serve shares a tgtd politely: it takes a tid nobody uses
// and its stop removes only its own target.
//
// Needs root (tgtd, /var/run/tgtd), tgt, libiscsi-bin, qemu-utils,
// qemu-block-extra, Swift (scripts/setup) and bs_swift.so installed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir, writeImage } from './fixtures/files.js';
import { iscsiInq, iscsiReadCapacity16, iscsiTestCu, qemuImg, qemuIoOk, type CuResult } from './fixtures/initiators.js';
import { startServe, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { startSwift, type DevSwift } from './fixtures/swift.js';
import { startTgtd, type Tgtd } from './fixtures/tgtd.js';

const MODULE = '/usr/lib/tgt/backing-store/bs_swift.so';
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const VOLUME = 'conformance';
const SWIFT_IQN = `iqn.2026-11.org.swiftvol:${VOLUME}`;
const RDWR_IQN = 'iqn.2026-11.org.swiftvol.test:rdwr';

/**
 * The families issue 3 names, in two runs of iscsi-test-cu. CompareAndWrite
 * gets a process of its own: in libiscsi 1.19, CompareAndWrite.
 * InvalidDataOutSize installs a PDU hook that rewrites byte 13 of every CDB
 * (the transfer length of 16-byte CDBs) and, when the target refuses the
 * mangled command as tgt does ("[SKIPPED] COMPAREANDWRITE is not
 * implemented"), returns without removing it: every 16-byte command of the
 * tests after it in the same process (Read16, Write16, WriteVerify16,
 * WriteSame16, ...) then fails, on any target.
 */
const CU_RUNS = [
  [
    'SCSI.Read*', // with SCSI.ReadCapacity* (a pattern of its own would run those twice)
    'SCSI.Write*', // with SCSI.WriteSame*
    'SCSI.TestUnitReady',
    'SCSI.Inquiry',
    'SCSI.SynchronizeCache*',
    'SCSI.Unmap',
    'SCSI.Verify*',
    'SCSI.OrWrite',
    'SCSI.Prefetch*',
    'SCSI.GetLBAStatus',
  ],
  ['SCSI.CompareAndWrite'],
];

/** The runs one after the other on a LUN, merged into one result. */
async function conformance(url: string): Promise<CuResult> {
  const merged: CuResult = { tests: new Map(), details: new Map(), stdout: '', stderr: '', ms: 0 };
  for (const tests of CU_RUNS) {
    const r = await iscsiTestCu(url, tests, { timeoutMs: 200_000 });
    for (const [name, outcome] of r.tests) merged.tests.set(name, outcome);
    for (const [name, text] of r.details) merged.details.set(name, text);
    merged.stdout += r.stdout;
    merged.stderr += r.stderr;
    merged.ms += r.ms;
  }
  return merged;
}

let swift: DevSwift | undefined;
let tmp: { dir: string; remove: () => void } | undefined;
let env: NodeJS.ProcessEnv;
let tgtd: Tgtd | undefined;
let serve: Serve | undefined;
let rdwrTid: number;
let imageFile: string;

function ok(args: string[]): string {
  const r = swiftvolSync(args, env);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function count(r: CuResult, outcome: 'passed' | 'failed' | 'skipped'): number {
  let n = 0;
  for (const o of r.tests.values()) if (o === outcome) n++;
  return n;
}

function summary(r: CuResult): string {
  return `${count(r, 'passed')} passed, ${count(r, 'skipped')} skipped, ${count(r, 'failed')} failed of ${r.tests.size} (${r.ms} ms)`;
}

before(async () => {
  assert.ok(fs.existsSync(MODULE), `${MODULE} is missing: run scripts/setup (or scripts/build-bs-swift as root)`);
  tmp = tempDir('swiftvol-conformance-');
  // Both at once; each kept as soon as it is up, so that after() stops it even if the other fails.
  const started = await Promise.allSettled([startSwift().then((s) => (swift = s)), startTgtd().then((t) => (tgtd = t))]);
  for (const r of started) if (r.status === 'rejected') throw r.reason;
  env = swiftvolEnv(swift!, path.join(tmp.dir, 'state'));
  // Random data in 4 MiB pieces; the 8 MiB object 3 is all zeros, object 1 half.
  imageFile = path.join(tmp.dir, 'image.raw');
  writeImage(imageFile, SIZE, 4 * MiB, (piece) => piece === 3 || piece === 6 || piece === 7);
  ok(['import', imageFile, VOLUME]);
  ok(['target', 'add', VOLUME]);

  // bs_rdwr first, so that serve must find a tid next to one it did not create.
  const rdwrFile = path.join(tmp.dir, 'rdwr.img');
  fs.copyFileSync(imageFile, rdwrFile);
  rdwrTid = await tgtd!.addTarget(RDWR_IQN, rdwrFile, 'rdwr', undefined, { thinProvisioning: true });
  serve = await startServe(env, tgtd!.port, { tgtdControl: tgtd!.control });
});

after(async () => {
  try {
    if (serve) await serve.stop();
    if (process.env.BS_SWIFT_TEST_LOG) process.stderr.write(`--- serve\n${serve?.output() ?? ''}\n`);
  } finally {
    await tgtd?.stop();
    if (process.env.BS_SWIFT_TEST_LOG) process.stderr.write(`--- tgtd\n${tgtd?.output() ?? ''}\n`);
    await swift?.stop();
    tmp?.remove();
  }
});

test('serve shares the tgtd: its target gets a tid nobody uses', async () => {
  const targets = await tgtd!.admin.targets();
  assert.equal(targets.get(rdwrTid), RDWR_IQN);
  const mine = [...targets].filter(([, iqn]) => iqn === SWIFT_IQN).map(([tid]) => tid);
  assert.equal(mine.length, 1, `targets: ${JSON.stringify([...targets])}`);
  assert.notEqual(mine[0], rdwrTid);
  assert.match(serve!.output(), new RegExp(`using the tgtd on control port ${tgtd!.control}`));
});

test('both LUNs have the same size and content; the swiftvol one reads from Swift', async () => {
  const info = JSON.parse(ok(['volume', 'info', VOLUME, '--json'])) as { dirtyBytes: number; storedBytes: number };
  assert.equal(info.dirtyBytes, 0, 'the overlay holds nothing of its own: reads come from Swift');
  assert.equal(info.storedBytes, SIZE - 8 * MiB, 'the zero object is not stored');
  const [swiftCap, rdwrCap] = await Promise.all([iscsiReadCapacity16(serve!.url(VOLUME)), iscsiReadCapacity16(tgtd!.url(RDWR_IQN))]);
  assert.deepEqual(swiftCap, { size: SIZE, blockLength: 512, lbpme: true, lbprz: true });
  assert.deepEqual(rdwrCap, swiftCap);
  // qemu-img compare exits 0 only if the contents are identical.
  await qemuImg(['compare', '-f', 'raw', '-F', 'raw', serve!.url(VOLUME), imageFile], { timeoutMs: 60_000 });
});

test('iscsi-test-cu: every test that passes on bs_rdwr passes on swiftvol', { timeout: 240_000 }, async (t) => {
  // Both at once: different LUNs, so they do not interfere, and it halves the time.
  const [swiftRun, rdwrRun] = await Promise.all([conformance(serve!.url(VOLUME)), conformance(tgtd!.url(RDWR_IQN))]);
  t.diagnostic(`iscsi-test-cu swiftvol (real Swift): ${summary(swiftRun)}`);
  t.diagnostic(`iscsi-test-cu bs_rdwr:              ${summary(rdwrRun)}`);
  const bothFail = [...rdwrRun.tests].filter(([n, o]) => o === 'failed' && swiftRun.tests.get(n) === 'failed').map(([n]) => n);
  if (bothFail.length) t.diagnostic(`failing on both: ${bothFail.join(' ')}`);
  const onlySwift = [...swiftRun.tests].filter(([n, o]) => o === 'passed' && rdwrRun.tests.get(n) !== 'passed').map(([n]) => n);
  if (onlySwift.length) t.diagnostic(`passing on swiftvol only: ${onlySwift.join(' ')}`);
  assert.ok(rdwrRun.tests.size > 100, `only ${rdwrRun.tests.size} tests ran on bs_rdwr`);
  assert.equal(swiftRun.tests.size, rdwrRun.tests.size, 'the same tests ran on both');
  const regressions: string[] = [];
  for (const [name, outcome] of rdwrRun.tests) {
    if (outcome !== 'passed') continue;
    const s = swiftRun.tests.get(name);
    if (s !== 'passed') regressions.push(`${name}: ${s ?? 'not run'}\n${swiftRun.details.get(name) ?? ''}`);
  }
  assert.deepEqual(regressions, [], `tests that pass on bs_rdwr but not on swiftvol:\n${regressions.join('\n')}`);
});

test("serve's stop removes its own target only; the tgtd it was given keeps running", async () => {
  const code = await serve!.stop();
  assert.equal(code, 0, serve!.output());
  const targets = await tgtd!.admin.targets();
  assert.deepEqual([...targets], [[rdwrTid, RDWR_IQN]]);
  await tgtd!.tgtadm(['--mode', 'system', '--op', 'show']); // tgtd still answers
  await qemuIoOk(tgtd!.url(RDWR_IQN), ['read 0 64k']);
});

test("in a shared tgtd, serve takes no foreign target of its name, and leaves no CHAP account behind", async () => {
  // A bs_rdwr target that happens to have the name serve would give the volume.
  const foreignFile = path.join(tmp!.dir, 'foreign.img');
  fs.writeFileSync(foreignFile, Buffer.alloc(MiB));
  const foreignTid = await tgtd!.addTarget(SWIFT_IQN, foreignFile, 'rdwr');
  ok(['volume', 'create', 'guarded', '--size', '8M']);
  ok(['target', 'add', 'guarded', '--chap', 'carol:a-long-secret-1']);
  const again = await startServe(env, tgtd!.port, { tgtdControl: tgtd!.control });
  try {
    const list = JSON.parse(ok(['target', 'list', '--json'])) as Array<{ volume: string; state: string; error?: string }>;
    const mine = list.find((t) => t.volume === VOLUME)!;
    assert.equal(mine.state, 'failed');
    assert.match(mine.error ?? '', /already has a target .* that is not a swift LUN of volume/);
    assert.equal(list.find((t) => t.volume === 'guarded')!.state, 'served');
    assert.match((await iscsiInq(again.url('guarded', 'carol%a-long-secret-1'))).toString(), /DIRECT_ACCESS/);
  } finally {
    assert.equal(await again.stop(), 0, again.output());
  }
  const targets = await tgtd!.admin.targets();
  assert.deepEqual([...targets].sort(), [[rdwrTid, RDWR_IQN], [foreignTid, SWIFT_IQN]].sort(), 'the foreign target stays, ours is gone');
  const accounts = await tgtd!.tgtadm(['--lld', 'iscsi', '--mode', 'account', '--op', 'show']);
  assert.doesNotMatch(accounts, /carol/, 'the CHAP account serve created is gone');
});
