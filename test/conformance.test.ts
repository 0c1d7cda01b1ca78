// libiscsi's conformance suite, iscsi-test-cu, on two LUNs of the same size
// and content in the same tgtd:
//   - swiftvol: a volume imported into a real Swift (so reads come from
//     Swift), served by the real daemon, `swiftvol serve --tgtd-control N`
//     as a child process, through the real bs_swift.so;
//   - bs_rdwr: tgt's own file backing store, on a copy of the same image.
// The SCSI and iSCSI families run as users run them: once as one run
// (`iscsi-test-cu -d -t SCSI,iSCSI`, one process), and then every suite in
// a process of its own, so that a test that breaks its session cannot hide
// the tests after it. In both, every test that passes on bs_rdwr must pass
// on swiftvol, every test that fails on both must be explained below
// (FAILS_ON_BOTH), and the tests the backing store decides (MUST_PASS) must
// pass on swiftvol whatever bs_rdwr does. The same tgtd also shows that
// serve shares a tgtd politely: it takes a tid nobody uses and its stop
// removes only its own target.
//
// Needs root (tgtd, /var/run/tgtd), tgt, libiscsi-bin, qemu-utils,
// qemu-block-extra, Swift (scripts/setup) and bs_swift.so installed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir, writeImage } from './fixtures/files.js';
import { cuSuites, iscsiInq, iscsiReadCapacity16, iscsiTestCu, qemuImg, qemuIoOk, type CuResult } from './fixtures/initiators.js';
import { startServe, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';
import { startSwift, type DevSwift } from './fixtures/swift.js';
import { startTgtd, type Tgtd } from './fixtures/tgtd.js';

const MODULE = '/usr/lib/tgt/backing-store/bs_swift.so';
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const VOLUME = 'conformance';
const SWIFT_IQN = `iqn.2026-11.org.swiftvol:${VOLUME}`;
const RDWR_IQN = 'iqn.2026-11.org.swiftvol.test:rdwr';
const FAMILIES = ['SCSI', 'iSCSI'];

type RunKind = 'one run' | 'per suite';

/**
 * Tests that fail on bs_rdwr and on swiftvol alike (tgt 1.0.85, libiscsi
 * 1.19), each with the reason. A test that fails on both and is not here
 * fails this suite: a new failure must be understood, not ignored.
 */
const FAILS_ON_BOTH: Array<{ test: RegExp; runs: RunKind[]; why: string }> = [
  {
    test: /^SCSI\.GetLBAStatus\.BeyondEol$/,
    runs: ['per suite'],
    why: 'tgt answers GET LBA STATUS itself (sbc.c, sbc_getlbastatus): it shifts the LBA to a byte offset in 64 bits, so LBA 2^63 wraps to 0, passes the range check and gets GOOD',
  },
  {
    test: /^SCSI\.GetLBAStatus\.UnmapSingle$/,
    runs: ['per suite'],
    why: 'libiscsi asks about LBA i+1 and expects the first descriptor at i + logical blocks per physical block; tgt answers from the requested LBA, as SBC says, and both LUNs report 4 KiB physical blocks (8 logical), which initiators need to align their I/O',
  },
  {
    test: /^SCSI\.PrinServiceactionRange\.Range$/,
    runs: ['one run', 'per suite'],
    why: 'tgt answers PERSISTENT RESERVE IN itself (spc.c) and does not implement service action READ FULL STATUS (0x03): INVALID FIELD IN CDB',
  },
  {
    test: /^SCSI\.ProutReserve\.Ownership(EA|WE|EARO|WERO)$/,
    runs: ['one run', 'per suite'],
    why: "tgt answers PERSISTENT RESERVE OUT itself (spc.c): when the holder unregisters, ua_sense_add_other_it_nexus queues RESERVATIONS RELEASED (2a/04) on the nexus that unregistered too, so that initiator's next PERSISTENT RESERVE IN fails",
  },
  {
    test: /^SCSI\.Reserve6\.2Initiators$/,
    runs: ['one run', 'per suite'],
    why: 'tgt answers RESERVE(6)/RELEASE(6) itself (spc.c) and its MODE SENSE never checks the reservation: a second initiator gets GOOD where the test expects RESERVATION CONFLICT',
  },
  {
    test: /^iSCSI\.iSCSIdatasn\.iSCSIDataSnInvalid$/,
    runs: ['one run', 'per suite'],
    why: "tgt's iSCSI layer (iscsi/iscsid.c) places Data-Out by its buffer offset and never checks DataSN, so out-of-order DataSNs are not rejected",
  },
  {
    // In one process, CompareAndWrite.InvalidDataOutSize (as patched in
    // Debian's 1.19.0-3) replaces the TCP transport's queue_pdu with a hook
    // that sets byte 13 of every CDB to 1 (the transfer length of 16-byte
    // CDBs), and when the target says COMPARE AND WRITE is not implemented,
    // as tgt 1.0.85 does, returns before restoring it; the transport is
    // shared by every later login of the process (fixed upstream in
    // libiscsi cc3ddbf). These tests pass in the per-suite runs.
    test: /^SCSI\.(Read16|Write16|Verify16|WriteSame16|Prefetch16|OrWrite|WriteVerify16)\./,
    runs: ['one run'],
    why: "libiscsi's CompareAndWrite.InvalidDataOutSize leaves a hook that sets byte 13 of every later CDB of the process (the transfer length of 16-byte CDBs) to 1",
  },
];

/**
 * Tests the backing store decides: they must pass on swiftvol whatever
 * bs_rdwr does (in the per-suite runs; the one run is judged by the rules
 * above, where FAILS_ON_BOTH names what libiscsi itself breaks there).
 */
const MUST_PASS: RegExp[] = [
  /^iSCSI\.iSCSIResiduals\./, // data-out shorter or longer than the transfer: exactly min(EDTL, TL) bytes written
  /^SCSI\.Unmap\.ZeroBlocks$/, // zero-length descriptors, one at the end of the LUN, none at all
  /^SCSI\.WriteSame1[06]\.Unmap/, // the unmapped range reads zeros
];

/** A run on both LUNs at once: different LUNs, so they do not interfere, and it halves the time. */
async function onBoth(run: (url: string) => Promise<CuResult>): Promise<{ swift: CuResult; rdwr: CuResult }> {
  const [swiftRun, rdwrRun] = await Promise.all([run(serve!.url(VOLUME)), run(tgtd!.url(RDWR_IQN))]);
  return { swift: swiftRun, rdwr: rdwrRun };
}

/** Every suite of the families in a process of its own, merged into one result. */
async function perSuite(url: string): Promise<CuResult> {
  const merged: CuResult = { tests: new Map(), details: new Map(), stdout: '', stderr: '', ms: 0 };
  for (const suite of await cuSuites(FAMILIES)) {
    const r = await iscsiTestCu(url, [suite], { timeoutMs: 120_000 });
    for (const [name, outcome] of r.tests) merged.tests.set(name, outcome);
    for (const [name, text] of r.details) merged.details.set(name, text);
    merged.stdout += r.stdout;
    merged.stderr += r.stderr;
    merged.ms += r.ms;
  }
  return merged;
}

/** Applies the rules of this file to a run on both LUNs; returns what breaks them. */
function judge(kind: RunKind, swiftRun: CuResult, rdwrRun: CuResult, t: { diagnostic(m: string): void }): string[] {
  t.diagnostic(`${kind}: swiftvol (real Swift): ${summary(swiftRun)}`);
  t.diagnostic(`${kind}: bs_rdwr:              ${summary(rdwrRun)}`);
  const problems: string[] = [];
  if (rdwrRun.tests.size < 200) problems.push(`only ${rdwrRun.tests.size} tests ran on bs_rdwr`);
  const names = (r: CuResult) => [...r.tests.keys()].sort().join(' ');
  if (names(swiftRun) !== names(rdwrRun)) problems.push('different tests ran on the two LUNs');
  for (const [name, outcome] of rdwrRun.tests) {
    const s = swiftRun.tests.get(name);
    if (outcome === 'passed' && s !== 'passed') problems.push(`passes on bs_rdwr, ${s ?? 'not run'} on swiftvol: ${name}\n${swiftRun.details.get(name) ?? ''}`);
    if (outcome === 'failed' && s === 'failed') {
      const reason = FAILS_ON_BOTH.find((e) => e.runs.includes(kind) && e.test.test(name));
      if (reason) t.diagnostic(`fails on both: ${name}: ${reason.why}`);
      else problems.push(`fails on both, unexplained: ${name}\n${swiftRun.details.get(name) ?? ''}`);
    }
  }
  if (kind === 'per suite') {
    for (const must of MUST_PASS) {
      const matched = [...swiftRun.tests].filter(([name]) => must.test(name));
      if (matched.length === 0) problems.push(`no test matches ${must}`);
      for (const [name, outcome] of matched) {
        if (outcome !== 'passed') problems.push(`must pass on swiftvol, ${outcome}: ${name}\n${swiftRun.details.get(name) ?? ''}`);
      }
    }
  }
  const onlySwift = [...swiftRun.tests].filter(([n, o]) => o === 'passed' && rdwrRun.tests.get(n) === 'failed').map(([n]) => n);
  if (onlySwift.length) t.diagnostic(`${kind}: passing on swiftvol only: ${onlySwift.join(' ')}`);
  return problems;
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

test('GET LBA STATUS never reports data deallocated: qemu-img map and convert see all of it, in the overlay and only in Swift', async () => {
  // Blocks of the overlay (written now) beside blocks only in Swift (the import).
  const url = serve!.url(VOLUME);
  await qemuIoOk(url, [`write -P 0x5c ${5 * MiB} ${MiB}`, 'flush']);
  const expected = fs.readFileSync(imageFile);
  expected.fill(0x5c, 5 * MiB, 6 * MiB);
  // tgt answers GET LBA STATUS itself from the LU's file; swiftvol has none
  // there, so every block is reported mapped (the safe answer).
  const map = JSON.parse(await qemuImg(['map', '--output=json', '-f', 'raw', url], { timeoutMs: 60_000 })) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  assert.deepEqual(
    map.map((e) => [e.start, e.length, e.data, e.zero]),
    [[0, SIZE, true, false]],
    'the whole LUN is data',
  );
  // qemu-img convert skips what block status calls deallocated: a wrong answer would lose those bytes in the copy.
  const copy = path.join(tmp!.dir, 'convert.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', url, copy], { timeoutMs: 120_000 });
  assert.ok(fs.readFileSync(copy).equals(expected), 'the copy holds every byte, from the overlay and from Swift');
  fs.rmSync(copy);
});

test('WRITE SAME 16 with UNMAP: the range reads zeros and its overlay space is freed', async () => {
  const url = serve!.url(VOLUME);
  const overlay = path.join(tmp!.dir, 'state', 'volumes', VOLUME, 'overlay');
  const allocated = () => fs.statSync(overlay).blocks * 512;
  // Blocks fetched by the reads before (qemu-img convert) land in the cache in the background: let them.
  for (let last = -1, i = 0; allocated() !== last; i++) {
    assert.ok(i < 50, 'the overlay file keeps growing');
    last = allocated();
    await new Promise((r) => setTimeout(r, 200));
  }
  await qemuIoOk(url, [`write -P 0x77 ${40 * MiB} ${4 * MiB}`, 'flush']);
  const written = allocated();
  assert.ok(written >= 4 * MiB, `the overlay holds the 4 MiB written (${written} bytes allocated)`);
  // qemu's iSCSI driver sends a write of zeros that may unmap as WRITE SAME 16 with the UNMAP bit (the LUN has LBPWS)
  await qemuIoOk(url, [`write -z -u ${40 * MiB} ${4 * MiB}`, 'flush', `read -P 0 ${40 * MiB} ${4 * MiB}`, `read -P 0x5c ${5 * MiB} ${MiB}`]);
  const freed = written - allocated();
  assert.ok(freed >= 4 * MiB, `the unmapped 4 MiB are freed in the overlay file (freed ${freed} bytes)`);
});

test('iscsi-test-cu -t SCSI,iSCSI in one run: swiftvol no worse than bs_rdwr', { timeout: 300_000 }, async (t) => {
  const { swift: swiftRun, rdwr: rdwrRun } = await onBoth((url) => iscsiTestCu(url, FAMILIES, { timeoutMs: 280_000 }));
  const problems = judge('one run', swiftRun, rdwrRun, t);
  assert.deepEqual(problems, [], problems.join('\n'));
});

test('iscsi-test-cu, every suite of SCSI and iSCSI in a process of its own: swiftvol no worse than bs_rdwr', { timeout: 300_000 }, async (t) => {
  const { swift: swiftRun, rdwr: rdwrRun } = await onBoth(perSuite);
  const problems = judge('per suite', swiftRun, rdwrRun, t);
  assert.deepEqual(problems, [], problems.join('\n'));
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
