// The body of a multi-range answer (RFC 7233, appendix A: a 206 whose
// Content-Type is multipart/byteranges): parts, each with its own
// Content-Range. Each part's length comes from its Content-Range, so its
// bytes are never scanned for the boundary (binary data may hold it). A
// server may send the ranges in another order, or coalesce ranges into one
// part: a caller takes each range it asked for from whichever part holds it
// (partsCover).
import type { ByteRange } from './object-store.js';
import { ioBuffer } from '../native/addons.js';

/** One part: bytes [start, end) of an object of `total` bytes (undefined: '*'). */
export interface BytePart {
  start: number;
  end: number;
  total: number | undefined;
  data: Buffer;
}

export class ByterangesError extends Error {
  override readonly name = 'ByterangesError';
}

/** The boundary of a multipart/byteranges Content-Type; null for any other type. */
export function byterangesBoundary(contentType: string | undefined): string | null {
  if (!contentType || !/^\s*multipart\/byteranges\s*(;|$)/i.test(contentType)) return null;
  const m = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) throw new ByterangesError('multipart/byteranges answer without a boundary');
  return boundary;
}

/** A Content-Range value, 'bytes FIRST-LAST/TOTAL', as [start, end) and the total; null if it is not one. */
export function parseContentRange(value: string | undefined): { start: number; end: number; total: number | undefined } | null {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value ?? '');
  if (!m) return null;
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  if (end <= start) return null;
  return { start, end, total: m[3] === '*' ? undefined : Number(m[3]) };
}

const CRLF = Buffer.from('\r\n');
const HEADERS_END = Buffer.from('\r\n\r\n');

/** Splits a multipart/byteranges body into its parts (views of body). */
export function parseByteranges(body: Buffer, boundary: string): BytePart[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: BytePart[] = [];
  // the first delimiter: at the start, or after a preamble ending in CRLF
  let at = body.subarray(0, delimiter.length).equals(delimiter) ? 0 : body.indexOf(Buffer.concat([CRLF, delimiter]));
  if (at < 0) throw new ByterangesError('multipart/byteranges body without its boundary');
  if (at > 0) at += CRLF.length;
  for (;;) {
    at += delimiter.length;
    if (body[at] === 0x2d && body[at + 1] === 0x2d) break; // "--": the close delimiter
    // transport padding (spaces, tabs) may follow a delimiter before its CRLF
    while (body[at] === 0x20 || body[at] === 0x09) at++;
    if (!body.subarray(at, at + 2).equals(CRLF)) throw new ByterangesError('multipart/byteranges delimiter not followed by a line end');
    at += 2;
    const headersEnd = body.indexOf(HEADERS_END, at - 2);
    if (headersEnd < 0) throw new ByterangesError('multipart/byteranges part without the end of its headers');
    let range: ReturnType<typeof parseContentRange> = null;
    for (const line of body.subarray(at, headersEnd).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'content-range') range = parseContentRange(line.slice(colon + 1));
    }
    if (!range) throw new ByterangesError('multipart/byteranges part without a valid Content-Range');
    const dataStart = headersEnd + HEADERS_END.length;
    const dataEnd = dataStart + (range.end - range.start);
    if (dataEnd > body.length) throw new ByterangesError(`multipart/byteranges part of bytes ${range.start}-${range.end - 1} is cut short`);
    parts.push({ ...range, data: body.subarray(dataStart, dataEnd) });
    if (!body.subarray(dataEnd, dataEnd + CRLF.length + delimiter.length).equals(Buffer.concat([CRLF, delimiter]))) {
      throw new ByterangesError(`multipart/byteranges part of bytes ${range.start}-${range.end - 1} is not followed by the boundary`);
    }
    at = dataEnd + CRLF.length;
  }
  if (parts.length === 0) throw new ByterangesError('multipart/byteranges body without parts');
  return parts;
}

/**
 * The bytes of `ranges`, concatenated, taken from parts that hold them (a
 * server may coalesce or reorder ranges); null when a range is in no part.
 * Several pieces are copied into one buffer (ioBuffer), as a body is
 * (readBody).
 */
export function partsCover(parts: readonly BytePart[], ranges: readonly ByteRange[]): Buffer | null {
  const pieces: Buffer[] = [];
  for (const r of ranges) {
    const p = parts.find((x) => x.start <= r.start && r.end <= x.end);
    if (!p) return null;
    pieces.push(p.data.subarray(r.start - p.start, r.end - p.start));
  }
  if (pieces.length === 1) return pieces[0]!;
  const out = ioBuffer(pieces.reduce((n, piece) => n + piece.length, 0));
  let at = 0;
  for (const piece of pieces) at += piece.copy(out, at);
  return out;
}
