// Fuzzing BlockServer: thousands of random and mutated frames on many
// connections (valid frames with fields changed, truncated frames, oversized
// lengths, bad magic and version, offsets beyond the end, plain garbage),
// while one good connection does checked I/O on its own volume.
// The server must not crash, the good connection's data must always be
// right, connections that send frames known to be invalid must be dropped,
// and whatever the server sends back must be well-formed replies.
//
// FUZZ_SEED=n reproduces a run (the seed is printed as a diagnostic).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { BlockServer } from '../src/daemon/block-server.js';
import {
  Flag,
  FrameParser,
  HEADER_LENGTH,
  MAX_PAYLOAD,
  Op,
  Status,
  type OpCode,
} from '../src/daemon/protocol.js';
import { MemoryBlockDevice } from './fixtures/memory-device.js';
import { ProtocolClient, decodeReply, encodeRequest } from './fixtures/protocol-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GOOD_SIZE = 16 * MiB;
const FUZZ_SIZE = 4 * MiB;
const SLOTS = 8;
const SLOT = GOOD_SIZE / SLOTS;
const FUZZ_CONNECTIONS = 800;
const FUZZ_PARALLEL = 16;

/** mulberry32: small, seedable. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('protocol fuzz: garbage is dropped, good I/O stays right, the server survives', async (t) => {
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`FUZZ_SEED=${seed}`);
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => {
    const x = xs[int(xs.length)];
    if (x === undefined) throw new Error('empty');
    return x;
  };
  const bytes = (n: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };

  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'protocol-fuzz-'));
  const socketPath = path.join(dir, 'fuzz.sock');
  const good = new MemoryBlockDevice(GOOD_SIZE);
  const fuzz = new MemoryBlockDevice(FUZZ_SIZE);
  let dropLogs = 0;
  const server = new BlockServer({
    socketPath,
    openDevice: async (volume) => (volume === 'good' ? good : fuzz),
    log: (m) => {
      if (/dropped/.test(m)) dropLogs++;
    },
  });
  await server.listen();

  try {
    // ---- the good connection: checked I/O on 8 disjoint slots at a time
    const { client } = await ProtocolClient.open(socketPath, 'good');
    const shadow = Buffer.alloc(GOOD_SIZE);
    const problems: string[] = [];
    let goodOps = 0;
    let fuzzing = true;

    const sector = (max: number) => 512 * (1 + int(Math.max(1, Math.floor(max / 512))));
    const goodOp = async (slot: number): Promise<void> => {
      const base = slot * SLOT;
      const length = Math.min(sector(pick([4 * KiB, 64 * KiB, 256 * KiB])), SLOT);
      const offset = base + 512 * int((SLOT - length) / 512 + 1);
      const kind = pick(['write', 'write', 'read', 'read', 'writeSame', 'caw', 'verify', 'unmap', 'flush'] as const);
      const where = `${kind} ${offset}+${length}`;
      switch (kind) {
        case 'write': {
          const data = bytes(length);
          const r = await client.write(offset, data, rand() < 0.2 ? Flag.FUA : 0);
          if (r.status !== Status.GOOD) problems.push(`${where}: status ${r.status}`);
          else data.copy(shadow, offset);
          break;
        }
        case 'read': {
          const r = await client.read(offset, length);
          if (r.status !== Status.GOOD) problems.push(`${where}: status ${r.status}`);
          else if (!r.payload.equals(shadow.subarray(offset, offset + length))) problems.push(`${where}: wrong data`);
          break;
        }
        case 'writeSame': {
          const block = bytes(512);
          const r = await client.request(Op.WRITE_SAME, { offset, length }, block);
          if (r.status !== Status.GOOD) problems.push(`${where}: status ${r.status}`);
          else for (let i = offset; i < offset + length; i += 512) block.copy(shadow, i);
          break;
        }
        case 'caw': {
          const n = Math.min(length, 8 * KiB);
          const compare = Buffer.from(shadow.subarray(offset, offset + n));
          const bad = rand() < 0.3 ? int(n) : -1;
          if (bad >= 0) compare[bad] = (compare[bad] ?? 0) ^ 0xff;
          const data = bytes(n);
          const r = await client.request(Op.COMPARE_AND_WRITE, { offset, length: n }, Buffer.concat([compare, data]));
          if (bad >= 0) {
            if (r.status !== Status.CHECK_CONDITION || r.sense?.key !== 0x0e || r.info !== bad) {
              problems.push(`${where}: expected MISCOMPARE at ${bad}, got status ${r.status} info ${r.info}`);
            }
          } else if (r.status !== Status.GOOD) problems.push(`${where}: status ${r.status}`);
          else data.copy(shadow, offset);
          break;
        }
        case 'verify': {
          const data = Buffer.from(shadow.subarray(offset, offset + length));
          const bad = rand() < 0.5 ? int(length) : -1;
          if (bad >= 0) data[bad] = (data[bad] ?? 0) ^ 0x01;
          const r = await client.request(Op.VERIFY, { offset, length }, data);
          if (bad >= 0 ? r.info !== bad || r.sense?.key !== 0x0e : r.status !== Status.GOOD) {
            problems.push(`${where}: verify answered status ${r.status} info ${r.info}, expected ${bad}`);
          }
          break;
        }
        case 'unmap': {
          const r = await client.request(Op.UNMAP, { offset, length });
          if (r.status !== Status.GOOD) problems.push(`${where}: status ${r.status}`);
          else shadow.fill(0, offset, offset + length);
          break;
        }
        case 'flush': {
          const r = await client.request(Op.FLUSH, {});
          if (r.status !== Status.GOOD) problems.push(`flush: status ${r.status}`);
          break;
        }
      }
      goodOps++;
    };
    const goodLoop = (async () => {
      while (fuzzing || goodOps < 200) {
        await Promise.all(Array.from({ length: SLOTS }, (_, s) => goodOp(s)));
      }
      // a final full read-back of the good volume
      for (let off = 0; off < GOOD_SIZE; off += 4 * MiB) {
        const r = await client.read(off, 4 * MiB);
        if (!r.payload.equals(shadow.subarray(off, off + 4 * MiB))) problems.push(`final read at ${off}: wrong data`);
      }
    })();

    // ---- fuzz connections
    let framesSent = 0;
    let expectedDrops = 0;
    let observedDrops = 0;
    const badReplies: string[] = [];

    /** A valid request for the fuzz volume. */
    const validFrame = (tag: bigint): { frame: Buffer; op: OpCode } => {
      const length = sector(pick([512, 4 * KiB, 64 * KiB]));
      const offset = 512 * int((FUZZ_SIZE - length) / 512 + 1);
      const op = pick([Op.READ, Op.WRITE, Op.FLUSH, Op.UNMAP, Op.WRITE_SAME, Op.COMPARE_AND_WRITE, Op.VERIFY, Op.PREFETCH] as const);
      let payload = Buffer.alloc(0);
      let flags = 0;
      let len = length;
      let off = offset;
      switch (op) {
        case Op.WRITE:
        case Op.VERIFY:
          payload = bytes(length);
          flags = op === Op.WRITE && rand() < 0.3 ? Flag.FUA : 0;
          break;
        case Op.WRITE_SAME:
          payload = rand() < 0.8 ? bytes(512) : Buffer.alloc(0);
          flags = pick([0, Flag.UNMAP, Flag.FUA, payload.length ? Flag.LBDATA : 0]);
          break;
        case Op.COMPARE_AND_WRITE:
          len = 512;
          payload = Buffer.concat([Buffer.from(fuzz.bytes.subarray(off, off + 512)), bytes(512)]);
          break;
        case Op.FLUSH:
          len = 0;
          off = 0;
          break;
      }
      return { frame: Buffer.concat([encodeRequest({ opcode: op, tag, flags, offset: off, length: len }, payload), payload]), op };
    };

    type Mutation = { frame: Buffer; invalid: boolean; truncated: boolean };
    const mutate = (f: Buffer): Mutation => {
      const m = Buffer.from(f);
      switch (int(10)) {
        case 0: // flip a random header byte: validity unknown
          m[int(HEADER_LENGTH)] = int(256);
          return { frame: m, invalid: false, truncated: false };
        case 1:
          m.writeUInt32LE((m.readUInt32LE(0) ^ (1 << int(32))) >>> 0, 0);
          return { frame: m, invalid: true, truncated: false };
        case 2:
          m[4] = pick([0, 2, 3, 255]);
          return { frame: m, invalid: true, truncated: false };
        case 3:
          m.writeUInt32LE(MAX_PAYLOAD + 1 + int(2 ** 31), 32);
          return { frame: m.subarray(0, HEADER_LENGTH), invalid: true, truncated: false };
        case 4: // offset at or beyond the end (or misaligned) of a ranged request
          if (m[5] === Op.FLUSH) m.writeBigUInt64LE(512n, 16);
          else m.writeBigUInt64LE(pick([BigInt(FUZZ_SIZE), BigInt(FUZZ_SIZE) + 512n, 2n ** 63n, 2n ** 64n - 512n, 1n, 511n]), 16);
          return { frame: m, invalid: true, truncated: false };
        case 5: // length beyond the end
          if (m[5] === Op.FLUSH) m.writeBigUInt64LE(512n, 24);
          else m.writeBigUInt64LE(pick([BigInt(FUZZ_SIZE) + 512n, 2n ** 64n - 512n, 3n]), 24);
          return { frame: m, invalid: true, truncated: false };
        case 6:
          m[5] = pick([0x00, 0x0b, 0x7f, 0x81, 0xff]); // not opcodes (0x0a is DIRECT)
          return { frame: m, invalid: true, truncated: false };
        case 7: // unknown flag bits
          m.writeUInt16LE(m.readUInt16LE(6) | (0x10 << int(12)), 6);
          return { frame: m, invalid: true, truncated: false };
        case 8: // truncated
          return { frame: m.subarray(0, int(m.length)), invalid: false, truncated: true };
        default: // a random byte anywhere
          m[int(m.length)] = int(256);
          return { frame: m, invalid: false, truncated: false };
      }
    };

    const fuzzConnection = async (): Promise<void> => {
      const socket = net.connect(socketPath);
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      const parser = new FrameParser({ direction: 'reply' });
      const sentTags = new Set<bigint>();
      let tagsUncertain = false; // a mutation may have hit a tag
      let firstReply!: () => void;
      const replied = new Promise<void>((resolve) => (firstReply = resolve));
      void closed.then(() => firstReply());
      socket.on('data', (chunk: Buffer) => {
        try {
          for (const f of parser.push(chunk)) {
            const r = decodeReply(f);
            if (!tagsUncertain && !sentTags.has(r.tag)) badReplies.push(`reply to unknown tag ${r.tag}`);
            firstReply();
          }
        } catch (err) {
          badReplies.push(`unparseable reply: ${String(err)}`);
        }
      });
      const send = (b: Buffer) => {
        if (!socket.destroyed) socket.write(b);
        framesSent++;
      };

      let expectDrop = false;
      let what = '';
      const mode = int(10);
      if (mode === 0) {
        // garbage, no handshake: a whole header of it is a drop (bad magic),
        // less than a header waits for more
        const n = 1 + int(300);
        send(bytes(n));
        expectDrop = n >= HEADER_LENGTH;
        what = `${n} bytes of garbage`;
      } else {
        let tag = 1n;
        const hello = Buffer.from(pick(['fuzz', 'fuzz-volume', 'x'.repeat(255)]));
        const helloFrame = Buffer.concat([encodeRequest({ opcode: Op.HELLO, tag }, hello), hello]);
        sentTags.add(tag);
        if (mode === 1) {
          const m = mutate(helloFrame);
          tagsUncertain = true;
          send(m.frame);
          expectDrop = m.invalid;
          what = `mutated HELLO ${m.frame.subarray(0, HEADER_LENGTH).toString('hex')}`;
        } else {
          send(helloFrame);
          // wait for the HELLO reply (a request pipelined behind HELLO is a drop)
          await replied;
          const n = 1 + int(40);
          for (let i = 0; i < n && !expectDrop; i++) {
            tag++;
            sentTags.add(tag);
            const v = validFrame(tag);
            if (rand() < 0.8) {
              send(v.frame);
            } else {
              const m = mutate(v.frame);
              if (!m.invalid) tagsUncertain = true;
              send(m.frame);
              if (m.invalid) {
                expectDrop = true;
                what = `mutated request ${m.frame.subarray(0, HEADER_LENGTH).toString('hex')}`;
              }
              if (m.truncated) break;
            }
          }
        }
      }
      if (expectDrop) {
        expectedDrops++;
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 3000).unref());
        const outcome = await Promise.race([closed.then(() => 'closed' as const), timer]);
        if (outcome === 'closed') observedDrops++;
        else badReplies.push(`not dropped after ${what}`);
      }
      socket.end();
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000).unref());
      if ((await Promise.race([closed.then(() => 'closed' as const), timer])) === 'timeout') socket.destroy();
    };

    let next = 0;
    const workers = Array.from({ length: FUZZ_PARALLEL }, async () => {
      while (next < FUZZ_CONNECTIONS) {
        next++;
        await fuzzConnection();
      }
    });
    await Promise.all(workers);
    fuzzing = false;
    await goodLoop;

    t.diagnostic(
      `${framesSent} fuzz frames on ${FUZZ_CONNECTIONS} connections; ${observedDrops}/${expectedDrops} expected drops seen; ` +
        `${dropLogs} drops logged; ${goodOps} checked good operations`,
    );
    assert.deepEqual(problems, [], 'the good connection saw wrong results');
    assert.deepEqual(badReplies.slice(0, 10), [], 'bad replies or missing drops');
    assert.equal(client.isClosed, false, 'the good connection was never dropped');
    assert.ok(framesSent >= 3000, `only ${framesSent} frames sent`);
    assert.equal(observedDrops, expectedDrops);
    assert.ok(dropLogs >= expectedDrops);

    // the server still serves new connections, and holds only the good one
    const { client: after } = await ProtocolClient.open(socketPath, 'good');
    const r = await after.read(0, 4096);
    assert.ok(r.payload.equals(shadow.subarray(0, 4096)));
    after.close();
    await after.closed;
    const deadline = Date.now() + 3000;
    while (server.connectionCount > 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    assert.equal(server.connectionCount, 1, 'fuzz connections are all gone');
    client.close();
    assert.deepEqual(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
