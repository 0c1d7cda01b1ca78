// The daemon speaks tgtd's management protocol itself (src/daemon/tgt-ipc.ts).
// Checked two ways: its struct layout, enums and error texts against tgt's own
// sources (a C program compiled against tgtadm.h, and tgtadm.c's table), and
// its requests against a real tgtd, read back with the real tgtadm and used
// by a real initiator.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { TGTADM_ERRORS, TGTADM_REQ, TGTADM_RSP_SIZE, TgtErrno, TgtMode, TgtOp, tgtRequest } from '../src/daemon/tgt-ipc.js';
import { TgtAdmin, TgtError } from '../src/daemon/tgtd.js';
import { tempDir } from './fixtures/files.js';
import { qemuIoOk, requireTool } from './fixtures/initiators.js';
import { findRepoRoot } from './fixtures/swift.js';
import { startTgtd, tgtadm } from './fixtures/tgtd.js';

const tgtSrc = path.join(findRepoRoot(), 'build', 'tgt-src', 'usr');

test('struct tgtadm_req, tgtadm_rsp and the enums match tgt’s tgtadm.h', () => {
  const cc = requireTool('cc');
  const { dir, remove } = tempDir('tgt-ipc-');
  try {
    const fields = ['mode', 'op', 'lld', 'len', 'tid', 'sid', 'lun', 'cid', 'host_no', 'device_type', 'ac_dir', 'pack', 'force'];
    const modes = ['SYSTEM', 'TARGET', 'DEVICE', 'PORTAL', 'LLD', 'SESSION', 'CONNECTION', 'ACCOUNT'];
    const ops = ['NEW', 'DELETE', 'SHOW', 'BIND', 'UNBIND', 'UPDATE', 'STATS', 'START', 'STOP'];
    const lines = [
      ...fields.map((f) => `printf("req.${f} %zu\\n", offsetof(struct tgtadm_req, ${f}));`),
      'printf("req.lldLength %zu\\n", sizeof(((struct tgtadm_req *)0)->lld));',
      'printf("req.size %zu\\n", sizeof(struct tgtadm_req));',
      'printf("rsp.size %zu\\n", sizeof(struct tgtadm_rsp));',
      ...modes.map((m) => `printf("mode.${m.toLowerCase()} %d\\n", (int)MODE_${m});`),
      ...ops.map((o) => `printf("op.${o.toLowerCase()} %d\\n", (int)OP_${o});`),
    ];
    const source = path.join(dir, 'layout.c');
    writeFileSync(source, `#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n#include "tgtadm.h"\nint main(void) {\n${lines.join('\n')}\nreturn 0;\n}\n`);
    const binary = path.join(dir, 'layout');
    execFileSync(cc, ['-Wall', '-Werror', '-I', tgtSrc, '-o', binary, source]);
    const got = new Map(execFileSync(binary, { encoding: 'utf8' }).trim().split('\n').map((l) => l.split(' ') as [string, string]));
    const camel = (f: string): string => f.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    for (const f of [...fields, 'lldLength', 'size']) {
      assert.equal(Number(got.get(`req.${f}`)), (TGTADM_REQ as Record<string, number>)[camel(f)], `offset of ${f}`);
    }
    assert.equal(Number(got.get('rsp.size')), TGTADM_RSP_SIZE);
    for (const [name, value] of Object.entries(TgtMode)) assert.equal(Number(got.get(`mode.${name}`)), value, `MODE_${name.toUpperCase()}`);
    for (const [name, value] of Object.entries(TgtOp)) assert.equal(Number(got.get(`op.${name}`)), value, `OP_${name.toUpperCase()}`);
  } finally {
    remove();
  }
});

test('the error texts are tgtadm’s, by tgtadm_errno', () => {
  const header = readFileSync(path.join(tgtSrc, 'tgtadm_error.h'), 'utf8');
  const order = [...header.slice(header.indexOf('enum tgtadm_errno')).matchAll(/\b(TGTADM_[A-Z_]+),/g)].map((m) => m[1]!);
  const source = readFileSync(path.join(tgtSrc, 'tgtadm.c'), 'utf8');
  const table = new Map([...source.matchAll(/\{\s*(TGTADM_[A-Z_]+),\s*"([^"]*)"\s*\}/g)].map((m) => [m[1]!, m[2]!]));
  assert.ok(order.length > 20, 'the enum was found');
  assert.equal(TGTADM_ERRORS.length, order.length);
  order.forEach((name, errno) => assert.equal(TGTADM_ERRORS[errno], table.get(name), name));
  for (const [name, errno] of Object.entries(TgtErrno)) assert.equal(order.indexOf(`TGTADM_${name}`), errno, name);
});

test('requests to a real tgtd make what tgtadm would', async (t) => {
  const tgtd = await startTgtd();
  const { dir, remove } = tempDir('tgt-ipc-');
  try {
    const admin = new TgtAdmin(tgtd.control);
    const backing = path.join(dir, 'disk.img');
    writeFileSync(backing, Buffer.alloc(4 << 20));
    const iqn = 'iqn.2026-12.org.swiftvol.test:ipc';
    const tid = await admin.freeTid();

    await t.test('target, LUN, thin provisioning, binding and CHAP', async () => {
      await admin.addTarget(tid, iqn);
      await admin.addLun(tid, 1, backing, { bstype: 'rdwr', thinProvisioning: true, blockSize: 4096 });
      await admin.bindAddress(tid, 'ALL');
      const params = await tgtadm(tgtd.control, ['--lld', 'iscsi', '--mode', 'target', '--op', 'show', '--tid', String(tid)]);
      assert.match(params, /^MaxRecvDataSegmentLength=262144$/m);
      assert.match(params, /^MaxBurstLength=16776192$/m);
      const shown = await tgtadm(tgtd.control, ['--lld', 'iscsi', '--mode', 'target', '--op', 'show']);
      assert.match(shown, new RegExp(`^Target ${tid}: ${iqn.replace(/\./g, '\\.')}$`, 'm'));
      assert.match(shown, /Block size: 4096/);
      assert.match(shown, /Thin-provisioning: Yes/);
      assert.match(shown, new RegExp(`Backing store path: ${backing.replace(/[.\\/]/g, '\\$&')}`));
      assert.match(shown, /ACL information:\s+ALL/);
      // our own parse of the same show
      const mine = (await admin.show()).find((s) => s.tid === tid);
      assert.deepEqual(mine?.luns.find((l) => l.lun === 1), { lun: 1, bstype: 'rdwr', path: backing });

      // a real initiator reads back what it wrote through the LUN
      await qemuIoOk(tgtd.url(iqn), ['write -P 0x5a 8192 8192', 'read -P 0x5a 8192 8192']);
      assert.ok(readFileSync(backing).subarray(8192, 16384).every((b) => b === 0x5a));

      await admin.addChap(tid, 'ipcuser', 'secret,with,commas');
      const accounts = await tgtadm(tgtd.control, ['--lld', 'iscsi', '--mode', 'account', '--op', 'show']);
      assert.match(accounts, /^\s+ipcuser$/m);
      assert.deepEqual((await admin.show()).find((s) => s.tid === tid)?.accounts, ['ipcuser']);
      await admin.deleteAccount('ipcuser').catch(() => undefined); // bound: tgtd may refuse until the target goes
    });

    await t.test('tgtd’s refusals come back as its own words', async () => {
      await assert.rejects(admin.addTarget(tid, 'iqn.2026-12.org.swiftvol.test:again'), (err: Error) => {
        assert.ok(err instanceof TgtError);
        assert.equal(err.message, `tgtd target new tid ${tid} targetname=iqn.2026-12.org.swiftvol.test:again: this target already exists`);
        assert.equal(err.tgtErrno, TgtErrno.TARGET_EXIST);
        return true;
      });
      await assert.rejects(admin.addLun(tid, 1, backing, { bstype: 'rdwr' }), /tgtd logicalunit new tid \d+ lun 1 bstype=rdwr: this logical unit number already exists/);
      await assert.rejects(admin.addLun(tid, 2, path.join(dir, 'absent.img'), { bstype: 'rdwr' }), /tgtd logicalunit new tid \d+ lun 2 bstype=rdwr: /);
      await assert.rejects(admin.deleteTarget(tid + 100), /tgtd target delete tid \d+: can't find the target/);
      await assert.rejects(tgtRequest(tgtd.control, { mode: 'target', op: 'show', lld: 'nosuchdriver' }), /can't find the driver/);
      // nothing changed
      const still = (await admin.show()).find((s) => s.tid === tid);
      assert.deepEqual(still?.luns.map((l) => l.lun), [0, 1]);
    });

    await t.test('delete, then no tgtd at all', async () => {
      await admin.deleteTarget(tid);
      assert.equal((await admin.targets()).has(tid), false);
      await assert.rejects(new TgtAdmin(1).ping(2000), /tgtd system show: no tgtd on control port 1$/);
    });
  } finally {
    await tgtd.stop();
    remove();
  }
});
