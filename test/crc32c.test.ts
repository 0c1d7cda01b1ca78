// CRC32C (native/crc32c.cc): the RFC 3720 check values, per-block sums and
// their verification (a flipped byte found in its block), views at an offset,
// argument errors; and both the SSE4.2 and the table code against a plain
// TypeScript CRC32C on random data (the table forced in a child process by
// SWIFTVOL_CRC32C_SOFTWARE=1, read when the addon loads).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { crc32c } from '../src/native/addons.js';

const addon = crc32c();
const BLOCK = 4096;

// The bitwise definition: reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF.
function reference(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (crc & 1 ? 0x82f63b78 : 0);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function referenceSums(data: Uint8Array, blockSize: number): Buffer {
  const count = Math.ceil(data.length / blockSize);
  const sums = Buffer.alloc(4 * count);
  for (let i = 0; i < count; i++) sums.writeUInt32LE(reference(data.subarray(i * blockSize, (i + 1) * blockSize)), 4 * i);
  return sums;
}

const LENGTHS = [0, 1, 7, 8, 9, 4095, 4096, 4097, 65536 + 3];

test('crc32c gives the check value and the RFC 3720 (iSCSI) vectors', () => {
  assert.equal(addon.crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(addon.crc32c(Buffer.alloc(32)), 0x8a9136aa);
  assert.equal(addon.crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  assert.equal(addon.crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(addon.crc32c(new Uint8Array(0)), 0);
  assert.equal(reference(Buffer.from('123456789')), 0xe3069283, 'the reference itself');
});

test('blockSums is the crc32c of each piece, the last one short; empty data gives no sums', () => {
  const data = randomBytes(3 * BLOCK + 100);
  const sums = addon.blockSums(data, BLOCK);
  assert.ok(Buffer.isBuffer(sums));
  assert.equal(sums.length, 4 * 4);
  for (let i = 0; i < 4; i++) assert.equal(sums.readUInt32LE(4 * i), addon.crc32c(data.subarray(i * BLOCK, (i + 1) * BLOCK)), `block ${i}`);
  assert.equal(addon.blockSums(Buffer.alloc(0), BLOCK).length, 0);
  assert.deepEqual(addon.blockSums(data, 1 << 30), referenceSums(data, 1 << 30), 'one block larger than the data');
  for (const size of [1, 5, 8, 13, 1000, 4097]) assert.deepEqual(addon.blockSums(data, size), referenceSums(data, size), `blocks of ${size}`);
  assert.equal(addon.verifyBlocks(Buffer.alloc(0), BLOCK, Buffer.alloc(0)), -1);
});

test('verifyBlocks returns -1 on intact data and the first block with a flipped byte', () => {
  for (const length of [4 * BLOCK, 4 * BLOCK + 100]) {
    const data = randomBytes(length);
    const sums = addon.blockSums(data, BLOCK);
    assert.equal(addon.verifyBlocks(data, BLOCK, sums), -1);
    const last = Math.ceil(length / BLOCK) - 1;
    const places = [0, BLOCK - 1, BLOCK, 2 * BLOCK + 1234, 3 * BLOCK - 1, last * BLOCK, length - 1];
    for (const at of places) {
      data[at]! ^= 0x10;
      assert.equal(addon.verifyBlocks(data, BLOCK, sums), Math.floor(at / BLOCK), `${length} bytes, byte ${at} flipped`);
      data[at]! ^= 0x10;
    }
    data[length - 1]! ^= 1;
    data[BLOCK + 5]! ^= 1;
    assert.equal(addon.verifyBlocks(data, BLOCK, sums), 1, 'two bad blocks: the first');
    data[length - 1]! ^= 1;
    data[BLOCK + 5]! ^= 1;
    const badSums = Buffer.from(sums);
    badSums[4 * last]! ^= 1;
    assert.equal(addon.verifyBlocks(data, BLOCK, badSums), last, 'a wrong sum');
  }
  const small = randomBytes(100);
  const smallSums = addon.blockSums(small, 13);
  for (let at = 0; at < small.length; at++) {
    small[at]! ^= 0x80;
    assert.equal(addon.verifyBlocks(small, 13, smallSums), Math.floor(at / 13), `blocks of 13, byte ${at} flipped`);
    small[at]! ^= 0x80;
  }
});

test('views are read at their byteOffset (data and sums)', () => {
  const backing = randomBytes(2 * BLOCK + 50);
  const view = new Uint8Array(backing.buffer, backing.byteOffset + 13, 2 * BLOCK + 20);
  const copy = new Uint8Array(view);
  assert.equal(addon.crc32c(view), reference(copy));
  assert.deepEqual(addon.blockSums(view, BLOCK), referenceSums(copy, BLOCK));
  const sumsBacking = Buffer.alloc(3 + 12);
  referenceSums(copy, BLOCK).copy(sumsBacking, 3);
  const sums = sumsBacking.subarray(3);
  assert.equal(addon.verifyBlocks(view, BLOCK, sums), -1);
  backing[13 + BLOCK + 1]! ^= 1;
  assert.equal(addon.verifyBlocks(view, BLOCK, sums), 1);
});

test('argument errors throw TypeError', () => {
  const data = Buffer.alloc(10);
  const call = (f: string, ...args: unknown[]): void => {
    (addon as unknown as Record<string, (...a: unknown[]) => unknown>)[f]!(...args);
  };
  const bad: Array<[string, unknown[], RegExp]> = [
    ['crc32c', [], /crc32c\(data\)/],
    ['crc32c', ['123456789'], /must be a Uint8Array/],
    ['crc32c', [new Uint16Array(4)], /must be a Uint8Array/],
    ['crc32c', [new Uint8ClampedArray(4)], /must be a Uint8Array/],
    ['crc32c', [new DataView(new ArrayBuffer(4))], /must be a Uint8Array/],
    ['crc32c', [new ArrayBuffer(4)], /must be a Uint8Array/],
    ['blockSums', [data], /blockSums\(data, blockSize\)/],
    ['blockSums', [[1, 2, 3], BLOCK], /data must be a Uint8Array/],
    ...[0, -1, 1.5, NaN, Infinity, 2 ** 30 + 1, '4096', null].map((size): [string, unknown[], RegExp] => ['blockSums', [data, size], /blockSize must be a whole number from 1 to 1073741824/]),
    ['verifyBlocks', [data, BLOCK], /verifyBlocks\(data, blockSize, sums\)/],
    ['verifyBlocks', [data, 0, Buffer.alloc(4)], /blockSize must be/],
    ['verifyBlocks', [data, BLOCK, [0, 0, 0, 0]], /sums must be a Uint8Array/],
    ['verifyBlocks', [data, BLOCK, Buffer.alloc(3)], /sums must hold 4 bytes per block, 4 for 10 bytes in blocks of 4096, not 3/],
    ['verifyBlocks', [data, 4, Buffer.alloc(8)], /12 for 10 bytes in blocks of 4, not 8/],
    ['verifyBlocks', [Buffer.alloc(0), BLOCK, Buffer.alloc(4)], /0 for 0 bytes/],
  ];
  for (const [f, args, message] of bad) assert.throws(() => call(f, ...args), { name: 'TypeError', message }, `${f}(${args.map(String).join(', ')})`);
});

// crc32c and blockSums(4096) of each length's prefix of data, at byteOffset
// 0 and 3 (unaligned loads), as hex; also run in the child, as its source.
function sumsOf(data: Buffer, lengths: number[], crc: (d: Uint8Array) => number, sums: (d: Uint8Array, size: number) => Buffer): string[][] {
  return lengths.map((n) => [0, 3].flatMap((at) => {
    const piece = data.subarray(at, at + n);
    return [crc(piece).toString(16), sums(piece, 4096).toString('hex')];
  }));
}

test('the hardware and the table code agree with a plain CRC32C on random data', () => {
  const data = randomBytes(65536 + 3 + 3);
  const expected = sumsOf(data, LENGTHS, reference, referenceSums);
  assert.deepEqual(sumsOf(data, LENGTHS, addon.crc32c, addon.blockSums), expected, 'as loaded (SSE4.2 where the CPU has it)');
  const addonsUrl = new URL('../src/native/addons.js', import.meta.url).href;
  const script = `
    import { readFileSync } from 'node:fs';
    import { crc32c } from ${JSON.stringify(addonsUrl)};
    ${sumsOf.toString()}
    const addon = crc32c();
    process.stdout.write(JSON.stringify(sumsOf(readFileSync(0), ${JSON.stringify(LENGTHS)}, addon.crc32c, addon.blockSums)));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    input: data,
    env: { ...process.env, SWIFTVOL_CRC32C_SOFTWARE: '1' },
    encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), expected, 'the table (SWIFTVOL_CRC32C_SOFTWARE=1)');
});
