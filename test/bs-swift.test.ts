// bs_swift.so end to end: initiator -> tgtd -> bs_swift.so -> Unix socket
// -> BlockServer (in this process) -> MemoryBlockDevice: what only a device
// in the test process can check — the exact bytes and FUA flags that reach
// the device, commands split into several messages (small maxPayload),
// commands in flight at once pipelined on one connection, the
// daemon going away mid-read, a daemon too slow for bs_swift's timeout.
// The real path (Swift, `swiftvol serve`) is in serve.test.ts, and libiscsi's
// conformance suite against bs_rdwr in conformance.test.ts.
//
// Needs root (tgtd, /var/run/tgtd), tgt, libiscsi-bin, qemu-utils,
// qemu-block-extra, and the module installed by scripts/build-bs-swift.
// Anything missing fails the test with what to do.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { BlockServer } from '../src/daemon/block-server.js';
import { MemoryBlockDevice } from './fixtures/memory-device.js';
import { qemuIo, qemuIoOk } from './fixtures/initiators.js';
import { findRepoRoot } from './fixtures/swift.js';
import { startTgtd } from './fixtures/tgtd.js';

const MODULE = '/usr/lib/tgt/backing-store/bs_swift.so';
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const SWIFT_IQN = 'iqn.2026-11.org.swiftvol.test:swift';
const SLOW_IQN = 'iqn.2026-11.org.swiftvol.test:slow';
function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

test('bs_swift.so behind tgtd', async (t) => {
  assert.ok(existsSync(MODULE), `${MODULE} is missing: run scripts/build-bs-swift (as root), then rerun`);
  const built = path.join(findRepoRoot(), 'bs_swift', 'bs_swift.so');
  if (existsSync(built) && !readFileSync(built).equals(readFileSync(MODULE))) {
    t.diagnostic(`warning: ${MODULE} differs from ${built}: run scripts/build-bs-swift`);
  }

  const dir = mkdtempSync(path.join(os.tmpdir(), 'bs-swift-test-'));
  const socketPath = path.join(dir, 'bs.sock');
  const dev = new MemoryBlockDevice(SIZE);
  const slow = new MemoryBlockDevice(SIZE);
  const logs: string[] = [];
  const makeServer = () =>
    new BlockServer({
      socketPath,
      openDevice: async (volume) => {
        if (volume === 'vol1') return dev;
        if (volume === 'slow') return slow;
        throw new Error(`no volume ${volume}`);
      },
      log: (m) => logs.push(m),
      // small, so that bs_swift splits large commands into several messages
      maxPayload: 256 * 1024,
    });
  let server = makeServer();
  await server.listen();
  const tgtd = await startTgtd();
  try {
    await tgtd.addTarget(SWIFT_IQN, 'vol1', 'swift', `socket=${socketPath};timeout=5`, { thinProvisioning: true });
    const url = tgtd.url(SWIFT_IQN);

    await t.test('a LU on an unknown volume is refused', async () => {
      await assert.rejects(
        tgtd.addTarget('iqn.2026-11.org.swiftvol.test:nope', 'nope', 'swift', `socket=${socketPath}`),
        /tgtd logicalunit new tid \d+ lun 1/,
      );
      await assert.rejects(
        tgtd.addTarget('iqn.2026-11.org.swiftvol.test:badopt', 'vol1', 'swift', `socket=${socketPath};colour=blue`),
        /tgtd logicalunit new tid \d+ lun 1/,
      );
    });

    await t.test('qemu-io patterns across 8 MiB boundaries read back exactly', async () => {
      const writes: [number, number, number][] = [
        // [pattern, offset, length]
        [0x11, 8 * MiB - 4096, 8192],
        [0x22, 16 * MiB - 512, 1024],
        [0x33, 24 * MiB - MiB, 3 * MiB],
        [0x44, 32 * MiB - 65536, 8 * MiB + 131072],
        [0x55, SIZE - 8192, 8192],
      ];
      const cmds: string[] = [];
      for (const [p, off, len] of writes) cmds.push(`write -P 0x${p.toString(16)} ${off} ${len}`);
      cmds.push('flush');
      for (const [p, off, len] of writes) cmds.push(`read -P 0x${p.toString(16)} ${off} ${len}`);
      const flushes = dev.flushes;
      await qemuIoOk(url, cmds);
      assert.ok(dev.flushes > flushes, 'flush reached the device');
      for (const [p, off, len] of writes) {
        const got = dev.bytes.subarray(off, off + len);
        assert.ok(got.every((b) => b === p), `device bytes at ${off}+${len} are not 0x${p.toString(16)}`);
        if (off >= 512) assert.equal(dev.bytes[off - 1], 0, `byte before ${off} was touched`);
        if (off + len < SIZE) assert.equal(dev.bytes[off + len], 0, `byte after ${off}+${len} was touched`);
      }
      // FUA writes arrive as FUA
      const fua = dev.fuaWrites;
      await qemuIoOk(url, ['write -f -P 0x66 4096 4096', 'read -P 0x66 4096 4096']);
      assert.ok(dev.fuaWrites > fua, 'qemu-io write -f arrived with FUA');
    });

    await t.test('commands in flight at once are pipelined on the LU\'s one connection, and each gets its own reply', async () => {
      // a distinct pattern per 64 KiB, so that a reply handed to the wrong
      // command shows; reads slow enough that they overlap
      const base = 40 * MiB;
      const pattern = (i: number) => 0x80 + (i % 64);
      for (let i = 0; i < 64; i++) dev.bytes.fill(pattern(i), base + i * 65536, base + (i + 1) * 65536);
      const hellos = () => logs.filter((m) => /\(vol1\): (open|described)/.test(m)).length;
      const before = hellos();
      dev.maxReadsInFlight = 0;
      dev.readDelayAt = (off) => (off >= base ? 30 + ((off / 65536) % 7) * 10 : 0);
      try {
        const cmds: string[] = [];
        for (let i = 0; i < 64; i++) cmds.push(`aio_read -P 0x${pattern(i).toString(16)} ${base + i * 65536} 65536`);
        cmds.push('aio_flush');
        await qemuIoOk(url, cmds);
      } finally {
        dev.readDelayAt = null;
      }
      // writes in flight at once, with reads of what they do not touch
      dev.writeDelayMs = 20;
      try {
        const cmds: string[] = [];
        for (let i = 0; i < 32; i++) {
          cmds.push(`aio_write -P 0x${(0x10 + i).toString(16)} ${base + i * 2 * 65536} 65536`);
          cmds.push(`aio_read -P 0x${pattern(i * 2 + 1).toString(16)} ${base + (i * 2 + 1) * 65536} 65536`);
        }
        cmds.push('aio_flush');
        await qemuIoOk(url, cmds);
      } finally {
        dev.writeDelayMs = 0;
      }
      for (let i = 0; i < 64; i++) {
        const want = i % 2 === 0 ? 0x10 + i / 2 : pattern(i);
        const got = dev.bytes.subarray(base + i * 65536, base + (i + 1) * 65536);
        assert.ok(got.every((b) => b === want), `64 KiB block ${i} does not hold 0x${want.toString(16)}`);
      }
      t.diagnostic(`${dev.maxReadsInFlight} reads at once, ${hellos() - before} new connection(s)`);
      assert.ok(dev.maxReadsInFlight >= 4, `only ${dev.maxReadsInFlight} read(s) reached the device at once`);
      assert.ok(hellos() - before <= 1, `${hellos() - before} connections were opened for one LU's reads`);
    });

    await t.test('daemon gone: I/O fails quickly, and works again when it is back', async () => {
      // many in flight at once on the LU's connection when it goes
      dev.readDelayMs = 100;
      const reads: string[] = [];
      for (let i = 0; i < 300; i++) reads.push(`aio_read ${(i % 64) * 65536} 65536`);
      reads.push('aio_flush');
      const running = qemuIo(url, reads, { timeoutMs: 120_000 });
      await sleep(1000);
      const closedAt = Date.now();
      await server.close();
      const r = await running;
      const afterClose = Date.now() - closedAt;
      dev.readDelayMs = 0;
      t.diagnostic(`qemu-io ended ${afterClose} ms after the daemon closed`);
      assert.equal(r.timedOut, false);
      // qemu-io reports a failed aio_read on stdout (its exit code is 0)
      assert.match(r.stdout, /(aio_read|readv) failed/, `qemu-io did not report the failed reads:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, /SENSE KEY:(NOT READY|HARDWARE_ERROR)/);
      assert.ok(afterClose < 10_000, `qemu-io took ${afterClose} ms to finish after the daemon went away`);

      // still down: a new command fails at once
      const down = await qemuIo(url, ['read 0 4096'], { timeoutMs: 60_000 });
      assert.notEqual(down.code, 0);
      assert.match(down.stderr, /NOT READY/);

      // tgtd itself never hung
      await tgtd.tgtadm(['--mode', 'target', '--op', 'show']);

      server = makeServer();
      await server.listen();
      await qemuIoOk(url, ['write -P 0x77 8388608 65536', 'read -P 0x77 8388608 65536', 'flush']);
      assert.ok(dev.bytes.subarray(8388608, 8388608 + 65536).every((b) => b === 0x77));
    });

    await t.test('daemon not answering: commands fail after the timeout', async () => {
      await tgtd.addTarget(SLOW_IQN, 'slow', 'swift', `socket=${socketPath};timeout=1`);
      slow.bytes.fill(0xa1, 0, 4096);
      slow.bytes.fill(0xb2, 65536, 65536 + 4096);
      // the read at 0 answers after 4 s; the others in 0.7 s, within the timeout
      slow.readDelayAt = (off) => (off === 0 ? 4000 : 700);
      try {
        const started = Date.now();
        const r = await qemuIo(tgtd.url(SLOW_IQN), ['read 0 4096'], { timeoutMs: 60_000 });
        const ms = Date.now() - started;
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /HARDWARE_ERROR.*0x0801/);
        assert.ok(ms < 3500, `the read failed after ${ms} ms, not after the 1 s timeout`);
        // the late reply (with 0xa1) comes while these wait on the same
        // connection: it is thrown away, and each read gets its own bytes
        const reads: string[] = [];
        for (let i = 0; i < 7; i++) reads.push('read -P 0xb2 65536 4096');
        await qemuIoOk(tgtd.url(SLOW_IQN), reads);
        assert.match(tgtd.output(), /bs_swift slow: late reply to op 02 tag \d+ thrown away/);
      } finally {
        slow.readDelayAt = null;
      }
    });
  } finally {
    await tgtd.stop();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
    if (process.env.BS_SWIFT_TEST_LOG) {
      process.stderr.write(`--- tgtd output\n${tgtd.output()}\n--- block-server log\n${logs.join('\n')}\n`);
    }
  }
});
