// BlockServer semantics over the protocol, without tgtd: handshake, I/O,
// WRITE SAME, COMPARE AND WRITE (atomic), VERIFY, error mapping, and the
// drop rules. The FrameParser's stream handling is tested here too.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BlockDevice } from '../src/engine/block-device.js';
import { BlockServer } from '../src/daemon/block-server.js';
import {
  ALL_CAPABILITIES,
  Feature,
  Flag,
  capabilityBit,
  FrameParser,
  HEADER_LENGTH,
  MAX_PAYLOAD,
  Op,
  ProtocolError,
  Status,
} from '../src/daemon/protocol.js';
import { SenseError, Senses } from '../src/daemon/sense.js';
import { MemoryBlockDevice } from './fixtures/memory-device.js';
import { ProtocolClient, encodeRequest, type Reply } from './fixtures/protocol-client.js';

const MiB = 1024 * 1024;

function sense(r: Reply): string {
  return r.sense ? `${r.sense.key.toString(16)}/${r.sense.asc.toString(16).padStart(2, '0')}/${r.sense.ascq.toString(16).padStart(2, '0')}` : 'good';
}

describe('FrameParser', () => {
  test('reassembles frames split at every byte and several per chunk', () => {
    const frames: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const payload = Buffer.alloc(i * 512, i + 1);
      frames.push(encodeRequest({ opcode: Op.WRITE, tag: BigInt(i), offset: 0, length: payload.length }, payload), payload);
    }
    const stream = Buffer.concat(frames);
    // one byte at a time
    const p1 = new FrameParser();
    const got1 = [];
    for (let i = 0; i < stream.length; i++) got1.push(...p1.push(stream.subarray(i, i + 1)));
    assert.equal(got1.length, 5);
    got1.forEach((f, i) => {
      assert.equal(f.header.tag, BigInt(i));
      assert.equal(f.payload.length, i * 512);
      assert.ok(f.payload.every((b) => b === i + 1));
    });
    // all at once
    const p2 = new FrameParser();
    assert.equal(p2.push(stream).length, 5);
    assert.equal(p2.pendingBytes, 0);
  });

  test('rejects garbage and stays failed', () => {
    const p = new FrameParser();
    const bad = encodeRequest({ opcode: Op.READ, tag: 1n, offset: 0, length: 512 });
    bad[0] ^= 0xff;
    assert.throws(() => p.push(bad), ProtocolError);
    assert.throws(() => p.push(encodeRequest({ opcode: Op.FLUSH, tag: 2n })), ProtocolError);
  });

  test('rejects a bad version, an oversized payload, an unknown opcode, a reply', () => {
    const v = encodeRequest({ opcode: Op.FLUSH, tag: 1n });
    v[4] = 2;
    assert.throws(() => new FrameParser().push(v), /version 2/);
    const big = encodeRequest({ opcode: Op.WRITE, tag: 1n });
    big.writeUInt32LE(MAX_PAYLOAD + 1, 32);
    assert.throws(() => new FrameParser().push(big), /exceeds/);
    const op = encodeRequest({ opcode: Op.FLUSH, tag: 1n });
    op[5] = 0x42;
    assert.throws(() => new FrameParser().push(op), /unknown/);
    const rep = encodeRequest({ opcode: Op.FLUSH, tag: 1n });
    rep[5] = Op.FLUSH | 0x80;
    assert.throws(() => new FrameParser().push(rep), /reply where a request/);
    const st = encodeRequest({ opcode: Op.FLUSH, tag: 1n });
    st[37] = 3;
    assert.throws(() => new FrameParser().push(st), /non-zero status/);
  });

  test('a header is rejected before its payload arrives', () => {
    const p = new FrameParser({ checkHeader: () => { throw new ProtocolError('no'); } });
    const h = encodeRequest({ opcode: Op.WRITE, tag: 1n, length: 4096 }, Buffer.alloc(4096));
    assert.throws(() => p.push(h.subarray(0, HEADER_LENGTH)), /no/);
  });
});

describe('BlockServer', () => {
  let dir: string;
  let socketPath: string;
  let server: BlockServer;
  const dev = new MemoryBlockDevice(16 * MiB);
  const failing = new MemoryBlockDevice(1 * MiB);
  const logs: string[] = [];
  let opens = 0;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'block-server-test-'));
    socketPath = path.join(dir, 's.sock');
    server = new BlockServer({
      socketPath,
      openDevice: async (v): Promise<BlockDevice> => {
        opens++;
        if (v === 'disk') return dev;
        if (v === 'failing') return failing;
        if (v === 'odd') return { ...dev, size: 1000, read: dev.read.bind(dev), write: dev.write.bind(dev), flush: dev.flush.bind(dev), unmap: dev.unmap.bind(dev) };
        if (v === 'protected') throw new SenseError(Senses.WRITE_PROTECTED, 'read-only volume');
        throw new Error(`no volume ${v}`);
      },
      log: (m) => logs.push(m),
    });
    await server.listen();
  });

  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('handshake returns size, block size, max payload, capabilities', async () => {
    const { client, hello } = await ProtocolClient.open(socketPath, 'disk');
    // A device in memory has no file for direct I/O: every opcode but DIRECT.
    const capabilities = ALL_CAPABILITIES & ~capabilityBit(Op.DIRECT);
    assert.deepEqual(hello, { size: 16 * MiB, physicalBlockSize: 4096, maxPayload: MAX_PAYLOAD, capabilities });
    client.close();
  });

  test('DIRECT on a device without direct I/O: INVALID COMMAND OPERATION CODE, the connection stays usable', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const reply = await client.request(Op.DIRECT, {});
    assert.equal(reply.status, Status.CHECK_CONDITION);
    assert.deepEqual(reply.sense, Senses.INVALID_OPCODE);
    assert.equal((await client.request(Op.READ, { offset: 0, length: 4096 })).status, Status.GOOD);
    client.close();
  });

  test('unknown volume: CHECK CONDITION with a message, then the connection ends', async () => {
    const c = await ProtocolClient.connect(socketPath);
    const r = await c.request(Op.HELLO, {}, Buffer.from('missing'));
    assert.equal(r.status, Status.CHECK_CONDITION);
    assert.equal(sense(r), '2/04/00');
    assert.match(r.payload.toString(), /no volume missing/);
    await c.closed;
    const c2 = await ProtocolClient.connect(socketPath);
    const r2 = await c2.request(Op.HELLO, {}, Buffer.from('protected'));
    assert.equal(sense(r2), '7/27/00');
    await c2.closed;
    const c3 = await ProtocolClient.connect(socketPath);
    const r3 = await c3.request(Op.HELLO, {}, Buffer.from('odd'));
    assert.equal(r3.status, Status.CHECK_CONDITION, 'a device size that is not a multiple of 512 is refused');
    await c3.closed;
  });

  test('read, write (FUA), flush, unmap', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const data = Buffer.alloc(8192);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const fua = dev.fuaWrites;
    assert.equal((await client.write(8 * MiB - 4096, data, Flag.FUA)).status, Status.GOOD);
    assert.equal(dev.fuaWrites, fua + 1);
    const r = await client.read(8 * MiB - 4096, 8192);
    assert.equal(r.status, Status.GOOD);
    assert.ok(r.payload.equals(data));
    const flushes = dev.flushes;
    assert.equal((await client.request(Op.FLUSH, {})).status, Status.GOOD);
    assert.equal(dev.flushes, flushes + 1);
    assert.equal((await client.request(Op.UNMAP, { offset: 8 * MiB - 4096, length: 4096 })).status, Status.GOOD);
    const z = await client.read(8 * MiB - 4096, 8192);
    assert.ok(z.payload.subarray(0, 4096).every((b) => b === 0));
    assert.ok(z.payload.subarray(4096).equals(data.subarray(4096)));
    client.close();
  });

  test('requests run concurrently and replies come back by tag', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    dev.readDelayMs = 30;
    try {
      const started = Date.now();
      const rs = await Promise.all(Array.from({ length: 32 }, (_, i) => client.read(i * 4096, 4096)));
      const ms = Date.now() - started;
      assert.ok(rs.every((r) => r.status === Status.GOOD));
      assert.ok(ms < 32 * 30, `32 reads of 30 ms took ${ms} ms: not concurrent`);
    } finally {
      dev.readDelayMs = 0;
    }
    client.close();
  });

  test('WRITE SAME: pattern, LBDATA, PBDATA, NDOB zeros, UNMAP', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const block = Buffer.alloc(512, 0xab);
    const off = 3 * MiB;
    let r = await client.request(Op.WRITE_SAME, { offset: off, length: 2 * MiB + 4096 }, block);
    assert.equal(r.status, Status.GOOD);
    assert.ok(dev.bytes.subarray(off, off + 2 * MiB + 4096).every((b) => b === 0xab));
    r = await client.request(Op.WRITE_SAME, { offset: off, length: 2048, flags: Flag.LBDATA }, block);
    assert.equal(r.status, Status.GOOD);
    for (let i = 0; i < 4; i++) {
      assert.equal(dev.bytes.readUInt32BE(off + i * 512), off / 512 + i);
      assert.equal(dev.bytes[off + i * 512 + 4], 0xab);
    }
    r = await client.request(Op.WRITE_SAME, { offset: off, length: 1024, flags: Flag.PBDATA }, block);
    assert.equal(r.status, Status.GOOD);
    assert.equal(dev.bytes.readBigUInt64BE(off + 512), BigInt(off / 512 + 1));
    r = await client.request(Op.WRITE_SAME, { offset: off, length: 4096 });
    assert.equal(r.status, Status.GOOD);
    assert.ok(dev.bytes.subarray(off, off + 4096).every((b) => b === 0));
    const unmaps = dev.unmaps;
    r = await client.request(Op.WRITE_SAME, { offset: off, length: MiB, flags: Flag.UNMAP }, block);
    assert.equal(r.status, Status.GOOD);
    assert.equal(dev.unmaps, unmaps + 1);
    assert.ok(dev.bytes.subarray(off, off + MiB).every((b) => b === 0));
    client.close();
  });

  test('COMPARE AND WRITE: writes on a match, MISCOMPARE with the offset otherwise', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const off = 5 * MiB;
    const a = Buffer.alloc(1024, 0x41);
    const b = Buffer.alloc(1024, 0x42);
    await client.write(off, a);
    let r = await client.request(Op.COMPARE_AND_WRITE, { offset: off, length: 1024 }, Buffer.concat([a, b]));
    assert.equal(r.status, Status.GOOD);
    assert.ok(dev.bytes.subarray(off, off + 1024).equals(b));
    const wrong = Buffer.from(b);
    wrong[700] = 0;
    r = await client.request(Op.COMPARE_AND_WRITE, { offset: off, length: 1024 }, Buffer.concat([wrong, a]));
    assert.equal(sense(r), 'e/1d/00');
    assert.equal(r.info, 700);
    assert.ok(dev.bytes.subarray(off, off + 1024).equals(b), 'nothing written on a miscompare');
    client.close();
  });

  test('COMPARE AND WRITE is atomic against other CAWs and writes on its range', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const { client: other } = await ProtocolClient.open(socketPath, 'disk');
    const off = 6 * MiB;
    await client.write(off, Buffer.alloc(512, 0));
    dev.readDelayMs = 5;
    dev.writeDelayMs = 5;
    try {
      // 20 CAWs racing to turn 0 into i: exactly one wins each round
      let value = 0;
      for (let round = 0; round < 5; round++) {
        const cur = Buffer.alloc(512, value);
        const tries = Array.from({ length: 8 }, (_, i) => {
          const c = i % 2 ? other : client;
          return c.request(Op.COMPARE_AND_WRITE, { offset: off, length: 512 }, Buffer.concat([cur, Buffer.alloc(512, 100 + round * 10 + i)]));
        });
        const rs = await Promise.all(tries);
        const winners = rs.map((r, i) => (r.status === Status.GOOD ? i : -1)).filter((i) => i >= 0);
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} CAWs succeeded`);
        const w = winners[0] ?? -1;
        value = 100 + round * 10 + w;
        assert.ok(dev.bytes.subarray(off, off + 512).every((x) => x === value));
      }
      // a CAW still reading, and a write that arrives meanwhile: the write waits and lands after it
      dev.readDelayMs = 100;
      const caw = client.request(
        Op.COMPARE_AND_WRITE,
        { offset: off, length: 512 },
        Buffer.concat([Buffer.alloc(512, value), Buffer.alloc(512, 1)]),
      );
      await new Promise((r) => setTimeout(r, 30));
      const w = other.write(off, Buffer.alloc(512, 2));
      assert.equal((await caw).status, Status.GOOD);
      assert.equal((await w).status, Status.GOOD);
      assert.ok(dev.bytes.subarray(off, off + 512).every((x) => x === 2), 'the later write was not overtaken by the CAW');
    } finally {
      dev.readDelayMs = 0;
      dev.writeDelayMs = 0;
    }
    client.close();
    other.close();
  });

  test('PARTIAL_SECTOR: a WRITE or VERIFY that ends inside a sector touches exactly its bytes', async () => {
    const { client, hello } = await ProtocolClient.open(socketPath, 'disk');
    assert.ok(hello.capabilities & Feature.PARTIAL_SECTOR, 'the daemon offers partial sectors');
    const off = 5 * MiB;
    const before = Buffer.alloc(2048);
    for (let i = 0; i < before.length; i++) before[i] = (i * 13 + 1) & 0xff;
    assert.equal((await client.write(off, before)).status, Status.GOOD);
    // 200 bytes (less than a sector), then 1000 (a sector and a part)
    for (const n of [200, 1000]) {
      const data = Buffer.alloc(n, 0xb0 + (n % 7));
      assert.equal((await client.write(off, data)).status, Status.GOOD);
      const r = await client.read(off, 2048);
      assert.ok(r.payload.subarray(0, n).equals(data), `the ${n} bytes were written`);
      assert.ok(r.payload.subarray(n).equals(before.subarray(n)), `nothing past ${n} bytes changed`);
      before.set(data, 0);
      assert.equal((await client.request(Op.VERIFY, { offset: off, length: n }, data)).status, Status.GOOD);
      const bad = Buffer.from(data);
      bad[n - 1] ^= 1;
      const v = await client.request(Op.VERIFY, { offset: off, length: n }, bad);
      assert.equal(sense(v), 'e/1d/00');
      assert.equal(v.info, n - 1);
    }
    // the partial write's read-merge-write is exclusive: a write to the
    // same sector that arrives meanwhile lands after it, whole
    const { client: other } = await ProtocolClient.open(socketPath, 'disk');
    dev.readDelayMs = 100;
    try {
      const partial = client.write(off, Buffer.alloc(100, 1));
      await new Promise((r) => setTimeout(r, 30));
      const whole = other.write(off, Buffer.alloc(512, 2));
      assert.equal((await partial).status, Status.GOOD);
      assert.equal((await whole).status, Status.GOOD);
    } finally {
      dev.readDelayMs = 0;
    }
    assert.ok(dev.bytes.subarray(off, off + 512).every((x) => x === 2), 'the later whole-sector write was not overtaken');
    // the offset must still be a sector's, and other opcodes take whole sectors
    await dropped('partial UNMAP', (c) => void c.request(Op.UNMAP, { offset: 0, length: 100 }).catch(() => {}));
    await dropped('partial READ', (c) => void c.read(0, 100).catch(() => {}));
    await dropped('misaligned write', (c) => void c.write(100, Buffer.alloc(100)).catch(() => {}));
    client.close();
    other.close();
  });

  test('VERIFY: GOOD on a match, MISCOMPARE with the offset otherwise', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    const off = 7 * MiB;
    const data = Buffer.alloc(4096, 0x5a);
    await client.write(off, data);
    assert.equal((await client.request(Op.VERIFY, { offset: off, length: 4096 }, data)).status, Status.GOOD);
    const bad = Buffer.from(data);
    bad[3000] = 1;
    const r = await client.request(Op.VERIFY, { offset: off, length: 4096 }, bad);
    assert.equal(sense(r), 'e/1d/00');
    assert.equal(r.info, 3000);
    assert.equal((await client.request(Op.PREFETCH, { offset: 0, length: MiB })).status, Status.GOOD);
    client.close();
  });

  test('device failures map to sense data', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'failing');
    failing.failReads = true;
    failing.failWrites = true;
    try {
      assert.equal(sense(await client.read(0, 512)), '3/11/00');
      assert.equal(sense(await client.write(0, Buffer.alloc(512))), '3/0c/00');
      assert.equal(sense(await client.request(Op.FLUSH, {})), '3/0c/00');
      assert.equal(sense(await client.request(Op.UNMAP, { offset: 0, length: 512 })), '4/44/00');
      assert.equal(sense(await client.request(Op.VERIFY, { offset: 0, length: 512 }, Buffer.alloc(512))), '3/11/00');
      const caw = await client.request(Op.COMPARE_AND_WRITE, { offset: 0, length: 512 }, Buffer.alloc(1024));
      assert.equal(sense(caw), '3/11/00');
      failing.failReads = false;
      const caw2 = await client.request(Op.COMPARE_AND_WRITE, { offset: 0, length: 512 }, Buffer.alloc(1024));
      assert.equal(sense(caw2), '3/0c/00');
      const r = await client.read(0, 512);
      assert.equal(r.status, Status.GOOD, 'the connection survives device errors');
    } finally {
      failing.failReads = false;
      failing.failWrites = false;
    }
    client.close();
  });

  const dropped = async (name: string, send: (c: ProtocolClient) => void, hello = true) => {
    const c = hello ? (await ProtocolClient.open(socketPath, 'disk')).client : await ProtocolClient.connect(socketPath);
    send(c);
    const t = setTimeout(() => assert.fail(`${name}: connection not dropped`), 3000);
    await c.closed;
    clearTimeout(t);
  };

  test('invalid requests drop the connection', async () => {
    await dropped('read before HELLO', (c) => void c.read(0, 512).catch(() => {}), false);
    await dropped('second HELLO', (c) => void c.request(Op.HELLO, {}, Buffer.from('disk')).catch(() => {}));
    await dropped('beyond the end', (c) => void c.read(16 * MiB, 512).catch(() => {}));
    await dropped('straddling the end', (c) => void c.read(16 * MiB - 512, 1024).catch(() => {}));
    await dropped('misaligned', (c) => void c.read(100, 512).catch(() => {}));
    await dropped('zero length', (c) => void c.read(0, 0).catch(() => {}));
    await dropped('read too long', (c) => void c.request(Op.READ, { offset: 0, length: MAX_PAYLOAD + 512 }).catch(() => {}));
    await dropped('write length mismatch', (c) => void c.request(Op.WRITE, { offset: 0, length: 1024 }, Buffer.alloc(512)).catch(() => {}));
    await dropped('bad flags', (c) => void c.request(Op.READ, { offset: 0, length: 512, flags: Flag.FUA }).catch(() => {}));
    await dropped('CAW payload', (c) => void c.request(Op.COMPARE_AND_WRITE, { offset: 0, length: 512 }, Buffer.alloc(512)).catch(() => {}));
    await dropped('flush with a range', (c) => void c.request(Op.FLUSH, { offset: 512 }).catch(() => {}));
    await dropped('garbage', (c) => c.raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(4))), false);
    await dropped('empty volume name', (c) => void c.request(Op.HELLO, {}).catch(() => {}), false);
    await dropped('request pipelined behind HELLO', (c) => {
      void c.request(Op.HELLO, {}, Buffer.from('disk')).catch(() => {});
      void c.read(0, 512).catch(() => {});
    }, false);
    await dropped('non-UTF-8 name', (c) => void c.request(Op.HELLO, {}, Buffer.from([0xff, 0xfe])).catch(() => {}), false);
    // the server is fine
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    assert.equal((await client.read(0, 512)).status, Status.GOOD);
    client.close();
    assert.ok(logs.some((l) => /dropped: .*beyond the volume/.test(l)), 'drops are logged with the reason');
  });

  test('close() ends connections; a new server on the same path serves again', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'disk');
    await server.close();
    await client.closed;
    await assert.rejects(ProtocolClient.connect(socketPath));
    server = new BlockServer({ socketPath, openDevice: async () => dev });
    await server.listen();
    const { client: c2 } = await ProtocolClient.open(socketPath, 'disk');
    assert.equal((await c2.read(0, 512)).status, Status.GOOD);
    c2.close();
    assert.ok(opens > 0);
  });
});

describe('BlockServer with deferred opens (describeDevice)', () => {
  let dir: string;
  let socketPath: string;
  let server: BlockServer;
  const dev = new MemoryBlockDevice(4 * MiB);
  const opened: string[] = [];
  let failNextOpens = 0;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'block-server-deferred-'));
    socketPath = path.join(dir, 's.sock');
    server = new BlockServer({
      socketPath,
      describeDevice: async (v) => {
        if (v === 'ghost') throw new SenseError(Senses.NOT_READY, "volume 'ghost' does not exist");
        // 'grown' is described smaller than it opens (a volume made again under its name)
        return { size: v === 'grown' ? 2 * MiB : 4 * MiB, direct: false };
      },
      openDevice: async (v) => {
        opened.push(v);
        if (failNextOpens > 0) {
          failNextOpens--;
          throw new Error('the store does not answer');
        }
        return dev;
      },
      log: () => undefined,
    });
    await server.listen();
  });

  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('HELLO is answered from the description with DEFERRED_OPEN; the device opens at the first command', async () => {
    const { client, hello } = await ProtocolClient.open(socketPath, 'lazy');
    assert.equal(hello.size, 4 * MiB);
    assert.equal(hello.capabilities, (ALL_CAPABILITIES & ~capabilityBit(Op.DIRECT)) | Feature.DEFERRED_OPEN);
    assert.deepEqual(opened, [], 'nothing opened by HELLO');
    await dev.write(8192, Buffer.alloc(4096, 0x3c));
    // several commands at once: one open for the connection
    const [a, b] = await Promise.all([client.read(8192, 4096), client.read(0, 4096)]);
    assert.equal(a.status, Status.GOOD);
    assert.ok(a.payload.every((x) => x === 0x3c));
    assert.equal(b.status, Status.GOOD);
    assert.deepEqual(opened, ['lazy']);
    assert.equal((await client.write(0, Buffer.alloc(512, 7))).status, Status.GOOD);
    assert.deepEqual(opened, ['lazy'], 'opened once');
    client.close();
  });

  test('an open that fails fails its command with NOT READY; the next command tries again', async () => {
    opened.length = 0;
    failNextOpens = 1;
    const { client } = await ProtocolClient.open(socketPath, 'flaky');
    const first = await client.read(0, 4096);
    assert.equal(first.status, Status.CHECK_CONDITION);
    assert.equal(sense(first), '2/04/00');
    assert.match(first.payload.toString(), /cannot open volume: the store does not answer/);
    const second = await client.read(0, 4096);
    assert.equal(second.status, Status.GOOD);
    assert.deepEqual(opened, ['flaky', 'flaky']);
    client.close();
  });

  test('a volume whose size is not the one described is refused at its first command; one that cannot be described, at HELLO', async () => {
    const { client } = await ProtocolClient.open(socketPath, 'grown');
    const r = await client.read(0, 512);
    assert.equal(sense(r), '2/04/00');
    assert.match(r.payload.toString(), /is 4194304 bytes now, not the 2097152 it had when the LU was made/);
    client.close();
    await assert.rejects(ProtocolClient.open(socketPath, 'ghost'), /does not exist|NOT READY|refused/i);
  });
});
