// The multipart/byteranges parser (src/store/byteranges.ts): bodies as Swift
// sends them and as RFC 7233 allows them (a preamble, a quoted boundary,
// padding after a delimiter, parts reordered or coalesced), and the broken
// ones a reader must refuse rather than misread.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ByterangesError, byterangesBoundary, parseByteranges, parseContentRange, partsCover } from '../src/store/byteranges.js';
import { overlayIo } from '../src/native/addons.js';

/** A multipart/byteranges body of the given parts of `object`, as Swift's swob writes it. */
function body(object: Buffer, parts: Array<[number, number]>, boundary: string, options: { preamble?: string; padding?: string } = {}): Buffer {
  const pieces: Buffer[] = [];
  if (options.preamble) pieces.push(Buffer.from(`${options.preamble}\r\n`));
  for (const [s, e] of parts) {
    pieces.push(Buffer.from(`--${boundary}${options.padding ?? ''}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${s}-${e - 1}/${object.length}\r\n\r\n`));
    pieces.push(object.subarray(s, e), Buffer.from('\r\n'));
  }
  pieces.push(Buffer.from(`--${boundary}--`));
  return Buffer.concat(pieces);
}

describe('multipart/byteranges', () => {
  const object = randomBytes(10_000);

  it('finds the boundary of a multipart/byteranges type, quoted or not, and of no other type', () => {
    assert.equal(byterangesBoundary('multipart/byteranges;boundary=fddf6a85'), 'fddf6a85');
    assert.equal(byterangesBoundary('Multipart/Byteranges; boundary="a b;c"'), 'a b;c');
    assert.equal(byterangesBoundary('application/octet-stream'), null);
    assert.equal(byterangesBoundary(undefined), null);
    assert.throws(() => byterangesBoundary('multipart/byteranges'), ByterangesError);
  });

  it('reads Content-Range values', () => {
    assert.deepEqual(parseContentRange('bytes 0-4095/8396800'), { start: 0, end: 4096, total: 8_396_800 });
    assert.deepEqual(parseContentRange('bytes 10-19/*'), { start: 10, end: 20, total: undefined });
    assert.equal(parseContentRange('bytes 20-10/100'), null);
    assert.equal(parseContentRange('items 0-1/2'), null);
    assert.equal(parseContentRange(undefined), null);
  });

  it('splits a body into its parts, whatever bytes the data holds', () => {
    const boundary = 'fddf6a85d9a4b43a1db9d3c4a3b7ed57';
    // data that holds the delimiter itself must not end a part early
    const tricky = Buffer.concat([Buffer.from(`\r\n--${boundary}\r\n`), randomBytes(100)]);
    const obj = Buffer.concat([object, tricky]);
    const parts = parseByteranges(body(obj, [[0, 4096], [10_000, obj.length]], boundary), boundary);
    assert.equal(parts.length, 2);
    assert.deepEqual([parts[0]!.start, parts[0]!.end, parts[0]!.total], [0, 4096, obj.length]);
    assert.ok(parts[0]!.data.equals(obj.subarray(0, 4096)));
    assert.ok(parts[1]!.data.equals(tricky));
  });

  it('allows a preamble and padding after a delimiter', () => {
    const parts = parseByteranges(body(object, [[1, 2], [500, 600]], 'b', { preamble: 'ignore me', padding: ' \t' }), 'b');
    assert.deepEqual(
      parts.map((p) => [p.start, p.end]),
      [
        [1, 2],
        [500, 600],
      ],
    );
    assert.ok(parts[1]!.data.equals(object.subarray(500, 600)));
  });

  it('takes each range asked for from the part that holds it: reordered or coalesced', () => {
    const parts = parseByteranges(body(object, [[5000, 6000], [0, 3000]], 'b'), 'b');
    const got = partsCover(parts, [
      { start: 10, end: 20 },
      { start: 2000, end: 3000 },
      { start: 5500, end: 6000 },
    ]);
    assert.ok(got?.equals(Buffer.concat([object.subarray(10, 20), object.subarray(2000, 3000), object.subarray(5500, 6000)])));
    assert.equal(partsCover(parts, [{ start: 2500, end: 3500 }]), null, 'a range no part holds');
  });

  it('joins large pieces into a page-aligned buffer (a data range and its block sums, as a sums miss asks)', () => {
    const big = randomBytes(3 * 1024 * 1024);
    const wanted = [
      { start: 4096, end: 4096 + 1024 * 1024 },
      { start: big.length - 8192, end: big.length },
    ];
    const parts = parseByteranges(body(big, wanted.map((r): [number, number] => [r.start, r.end]), 'z'), 'z');
    const got = partsCover(parts, wanted)!;
    assert.ok(got.equals(Buffer.concat(wanted.map((r) => big.subarray(r.start, r.end)))));
    assert.equal(overlayIo().pageOffset(got), 0);
  });

  it('refuses bodies that are cut short, lack a Content-Range or their boundary', () => {
    const good = body(object, [[0, 100], [200, 300]], 'b');
    assert.throws(() => parseByteranges(good.subarray(0, good.length - 50), 'b'), /bytes 200-299 is cut short/);
    assert.throws(() => parseByteranges(good.subarray(0, good.length - 120), 'b'), /without the end of its headers/);
    assert.throws(() => parseByteranges(good.subarray(0, good.length - 3), 'b'), /bytes 200-299 is not followed by the boundary/);
    assert.throws(() => parseByteranges(good, 'other'), /without its boundary/);
    const noRange = Buffer.from('--b\r\nContent-Type: x\r\n\r\nabc\r\n--b--');
    assert.throws(() => parseByteranges(noRange, 'b'), /without a valid Content-Range/);
    const longer = Buffer.from('--b\r\nContent-Range: bytes 0-1/10\r\n\r\nabc\r\n--b--'); // 3 bytes for a 2-byte part
    assert.throws(() => parseByteranges(longer, 'b'), /not followed by the boundary/);
    assert.throws(() => parseByteranges(Buffer.from('--b--'), 'b'), /without parts/);
  });
});
