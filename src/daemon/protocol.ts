// The bs_swift <-> daemon protocol, version 1 (doc/protocol.md): framing,
// the daemon's encoders, a streaming frame parser and the validation of
// requests. (The client's encoders and decoders, which only tests use, are
// in test/fixtures/protocol-client.ts; the sense data in ./sense.ts.)
//
// The constants below are also bs_swift's: bs_swift/swift_protocol.h is
// their one source, and test/wire-constants.test.ts checks that every one
// here equals the header's.
//
// Every frame is a 40-byte little-endian header followed by payloadLength
// bytes. The parser checks what a header alone can tell (magic, version,
// direction, reserved bytes, payload limit) and lets its owner check the
// rest of a header (opcode, flags, offsets against the volume) before the
// payload is buffered; any failure is a ProtocolError and the connection is
// to be dropped.
import { Senses, type Sense } from './sense.js';

export const MAGIC = 0x42565753; // "SWVB" on the wire
export const VERSION = 1;
export const HEADER_LENGTH = 40;
/** Largest payload of any frame, and the default the daemon advertises. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Smallest max payload a daemon may advertise. */
export const MIN_MAX_PAYLOAD = 64 * 1024;
export const MAX_NAME_LENGTH = 255;
export const MAX_MESSAGE_LENGTH = 1024;
export const HELLO_REPLY_LENGTH = 24;
/** Offsets and lengths are multiples of this (WRITE and VERIFY lengths need not be: PARTIAL_SECTOR). */
export const SECTOR_SIZE = 512;
export const REPLY_BIT = 0x80;
/** Largest physical block size a HELLO reply may give, and largest WRITE SAME block. */
export const MAX_BLOCK_SIZE = 64 * 1024;

export const Op = {
  HELLO: 0x01,
  READ: 0x02,
  WRITE: 0x03,
  FLUSH: 0x04,
  UNMAP: 0x05,
  WRITE_SAME: 0x06,
  COMPARE_AND_WRITE: 0x07,
  VERIFY: 0x08,
  PREFETCH: 0x09,
  DIRECT: 0x0a,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

const OP_CODES: ReadonlySet<number> = new Set<number>(Object.values(Op));

export function isOpCode(n: number): n is OpCode {
  return OP_CODES.has(n);
}

export function opName(n: number): string {
  for (const [name, code] of Object.entries(Op)) if (code === (n & ~REPLY_BIT)) return name + (n & REPLY_BIT ? ' reply' : '');
  return `opcode 0x${n.toString(16)}`;
}

/** Request flags. */
export const Flag = {
  FUA: 0x0001,
  UNMAP: 0x0002,
  LBDATA: 0x0004,
  PBDATA: 0x0008,
} as const;

/** Flags each request opcode may carry. */
const ALLOWED_FLAGS: Readonly<Record<OpCode, number>> = {
  [Op.HELLO]: 0,
  [Op.READ]: 0,
  [Op.WRITE]: Flag.FUA,
  [Op.FLUSH]: 0,
  [Op.UNMAP]: 0,
  [Op.WRITE_SAME]: Flag.FUA | Flag.UNMAP | Flag.LBDATA | Flag.PBDATA,
  [Op.COMPARE_AND_WRITE]: Flag.FUA,
  [Op.VERIFY]: 0,
  [Op.PREFETCH]: 0,
  [Op.DIRECT]: 0,
};

/** Reply flags. */
export const ReplyFlag = {
  /** The header's offset field holds the sense INFORMATION field. */
  INFO_VALID: 0x0001,
} as const;

/** SAM status codes, as in the reply header. */
export const Status = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** Capability bit of an opcode in the HELLO reply: 1 << opcode. */
export function capabilityBit(op: OpCode): number {
  return 1 << op;
}
export const ALL_OPCODES = Object.values(Op).reduce((acc, op) => acc | capabilityBit(op), 0);

/** Capability bits above the opcodes' (doc/protocol.md, "Handshake"): features a client may use only if the daemon sets them. */
export const Feature = {
  /**
   * WRITE and VERIFY take a length that is not a multiple of 512: exactly
   * that many bytes are written or compared, and the rest of the last
   * sector is kept (an iSCSI data-out shorter than the SCSI transfer).
   */
  PARTIAL_SECTOR: 1 << 16,
  /**
   * The daemon opens the volume at the connection's first command, not at
   * HELLO (answered from what it knows of the volume): the client asks for
   * DIRECT after its first good exchange rather than while the LU is being
   * created, so that creating a LU never waits on the store.
   */
  DEFERRED_OPEN: 1 << 17,
} as const;

/** Everything this daemon offers: every opcode and every feature. */
export const ALL_CAPABILITIES = ALL_OPCODES | Feature.PARTIAL_SECTOR;

/** Version of the direct I/O map a DIRECT reply names (doc/protocol.md, "Direct I/O"). */
export const DIRECT_MAP_VERSION = 1;
/** Longest path a DIRECT reply carries. */
export const MAX_DIRECT_PATH = 4095;

/** The payload of a GOOD reply to DIRECT. */
export interface DirectReply {
  /** The overlay file bs_swift reads and writes. */
  dataPath: string;
  /** The shared map of the overlay's blocks. */
  mapPath: string;
}

export function encodeDirectReply(d: DirectReply): Buffer {
  const data = Buffer.from(d.dataPath, 'utf8');
  const map = Buffer.from(d.mapPath, 'utf8');
  if (data.length === 0 || map.length === 0 || data.length > MAX_DIRECT_PATH || map.length > MAX_DIRECT_PATH) {
    throw new Error('DIRECT reply: path empty or too long');
  }
  const b = Buffer.alloc(8 + data.length + map.length);
  b.writeUInt32LE(DIRECT_MAP_VERSION, 0);
  b.writeUInt16LE(data.length, 4);
  b.writeUInt16LE(map.length, 6);
  data.copy(b, 8);
  map.copy(b, 8 + data.length);
  return b;
}

/** A frame (or stream) that breaks the protocol: the connection is dropped. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface FrameHeader {
  opcode: number;
  flags: number;
  tag: bigint;
  offset: bigint;
  length: bigint;
  payloadLength: number;
  status: number;
  senseKey: number;
  asc: number;
  ascq: number;
}

export interface Frame {
  header: FrameHeader;
  payload: Buffer;
}

export function encodeHeader(h: FrameHeader): Buffer {
  const b = Buffer.alloc(HEADER_LENGTH);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt8(VERSION, 4);
  b.writeUInt8(h.opcode, 5);
  b.writeUInt16LE(h.flags, 6);
  b.writeBigUInt64LE(h.tag, 8);
  b.writeBigUInt64LE(h.offset, 16);
  b.writeBigUInt64LE(h.length, 24);
  b.writeUInt32LE(h.payloadLength, 32);
  b.writeUInt8(h.status, 36);
  b.writeUInt8(h.senseKey, 37);
  b.writeUInt8(h.asc, 38);
  b.writeUInt8(h.ascq, 39);
  return b;
}

/** Decodes a header whose magic and version have been checked. */
function decodeHeader(b: Buffer): FrameHeader {
  return {
    opcode: b.readUInt8(5),
    flags: b.readUInt16LE(6),
    tag: b.readBigUInt64LE(8),
    offset: b.readBigUInt64LE(16),
    length: b.readBigUInt64LE(24),
    payloadLength: b.readUInt32LE(32),
    status: b.readUInt8(36),
    senseKey: b.readUInt8(37),
    asc: b.readUInt8(38),
    ascq: b.readUInt8(39),
  };
}

export interface ReplyInit {
  opcode: OpCode;
  tag: bigint;
  status: StatusCode;
  sense?: Sense;
  /** The sense INFORMATION field (sets INFO_VALID). */
  info?: number;
}

export function encodeReply(r: ReplyInit, payloadLength: number): Buffer {
  const sense = r.status === Status.GOOD ? undefined : (r.sense ?? Senses.INTERNAL);
  return encodeHeader({
    opcode: r.opcode | REPLY_BIT,
    flags: r.info !== undefined ? ReplyFlag.INFO_VALID : 0,
    tag: r.tag,
    offset: BigInt(r.info ?? 0),
    length: 0n,
    payloadLength,
    status: r.status,
    senseKey: sense?.key ?? 0,
    asc: sense?.asc ?? 0,
    ascq: sense?.ascq ?? 0,
  });
}

/** The payload of a GOOD reply to HELLO. */
export interface HelloReply {
  /** Volume size in bytes (a multiple of 512). */
  size: number;
  /** Physical block size: the daemon's I/O granularity (power of two, 512..65536). */
  physicalBlockSize: number;
  /** Largest payload the daemon accepts (>= 64 KiB, <= 32 MiB, multiple of 512). */
  maxPayload: number;
  capabilities: number;
}

export function encodeHelloReply(h: HelloReply): Buffer {
  const b = Buffer.alloc(HELLO_REPLY_LENGTH);
  b.writeBigUInt64LE(BigInt(h.size), 0);
  b.writeUInt32LE(h.physicalBlockSize, 8);
  b.writeUInt32LE(h.maxPayload, 12);
  b.writeUInt32LE(h.capabilities >>> 0, 16);
  return b;
}

export type FrameDirection = 'request' | 'reply';

export interface FrameParserOptions {
  /** Which frames this side receives (default 'request': the daemon). */
  direction?: FrameDirection;
  /** Largest payload accepted (default MAX_PAYLOAD). */
  maxPayload?: number;
  /**
   * Checks a complete header before its payload is buffered; throws
   * ProtocolError to reject the frame. Called in stream order, synchronously.
   */
  checkHeader?: (h: FrameHeader) => void;
}

/**
 * Splits a byte stream into frames. push() returns the frames completed by
 * a chunk; it throws ProtocolError on garbage, after which the parser stays
 * failed (the stream cannot be resynchronized: drop the connection).
 */
export class FrameParser {
  private readonly direction: FrameDirection;
  private readonly maxPayload: number;
  private readonly checkHeader: ((h: FrameHeader) => void) | undefined;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private header: FrameHeader | null = null;
  private failed: ProtocolError | null = null;

  constructor(options: FrameParserOptions = {}) {
    this.direction = options.direction ?? 'request';
    this.maxPayload = Math.min(options.maxPayload ?? MAX_PAYLOAD, MAX_PAYLOAD);
    this.checkHeader = options.checkHeader;
  }

  /** Bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (this.header === null) {
          if (this.buffered < HEADER_LENGTH) break;
          const raw = this.take(HEADER_LENGTH);
          this.header = this.parseHeader(raw);
        }
        if (this.buffered < this.header.payloadLength) break;
        const payload = this.take(this.header.payloadLength);
        frames.push({ header: this.header, payload });
        this.header = null;
      }
    } catch (err) {
      this.failed = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      this.chunks = [];
      this.buffered = 0;
      throw this.failed;
    }
    return frames;
  }

  private parseHeader(raw: Buffer): FrameHeader {
    const magic = raw.readUInt32LE(0);
    if (magic !== MAGIC) throw new ProtocolError(`bad magic 0x${magic.toString(16).padStart(8, '0')}`);
    const version = raw.readUInt8(4);
    if (version !== VERSION) throw new ProtocolError(`unsupported protocol version ${version}`);
    const h = decodeHeader(raw);
    if (h.payloadLength > this.maxPayload) {
      throw new ProtocolError(`payload of ${h.payloadLength} bytes exceeds the limit of ${this.maxPayload}`);
    }
    const isReply = (h.opcode & REPLY_BIT) !== 0;
    if (isReply !== (this.direction === 'reply')) {
      throw new ProtocolError(`${isReply ? 'reply' : 'request'} where a ${this.direction} was expected`);
    }
    if (!isOpCode(h.opcode & ~REPLY_BIT)) throw new ProtocolError(`unknown ${opName(h.opcode)}`);
    if (!isReply && (h.status !== 0 || h.senseKey !== 0 || h.asc !== 0 || h.ascq !== 0)) {
      throw new ProtocolError('request with non-zero status or sense bytes');
    }
    if (this.checkHeader) this.checkHeader(h);
    return h;
  }

  /** Removes n buffered bytes; zero-copy when they lie in one chunk. */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      if (c === undefined) throw new ProtocolError('internal: parser underrun');
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }
}

/** A validated request, as the daemon acts on it. */
export type Request =
  | { op: 'hello'; tag: bigint; volume: string }
  | { op: 'read'; tag: bigint; offset: number; length: number }
  | { op: 'write'; tag: bigint; offset: number; data: Buffer; fua: boolean }
  | { op: 'flush'; tag: bigint }
  | { op: 'unmap'; tag: bigint; offset: number; length: number }
  | {
      op: 'writeSame';
      tag: bigint;
      offset: number;
      length: number;
      /** One block, or empty: zeros (NDOB). */
      block: Buffer;
      unmap: boolean;
      lbdata: boolean;
      pbdata: boolean;
      fua: boolean;
    }
  | { op: 'compareAndWrite'; tag: bigint; offset: number; length: number; compare: Buffer; data: Buffer; fua: boolean }
  | { op: 'verify'; tag: bigint; offset: number; data: Buffer }
  | { op: 'prefetch'; tag: bigint; offset: number; length: number }
  | { op: 'direct'; tag: bigint };

/** What request validation needs to know about the connection. */
export interface RequestContext {
  /** Volume size in bytes; null before the handshake. */
  size: number | null;
  /** Largest payload this side accepts. */
  maxPayload: number;
}

function fail(h: FrameHeader, why: string): never {
  throw new ProtocolError(`${opName(h.opcode)} (tag ${h.tag}): ${why}`);
}

function aligned(n: bigint): boolean {
  return n % BigInt(SECTOR_SIZE) === 0n;
}

/**
 * Checks a request header against the connection state, before its payload
 * arrives. Throws ProtocolError. Rules (doc/protocol.md):
 *  - HELLO first and only once; nothing else before it;
 *  - flags known for the opcode; offsets and lengths multiples of 512
 *    (a WRITE or VERIFY length need not be);
 *  - offset + length inside the volume;
 *  - payload length as the opcode requires.
 */
export function checkRequestHeader(h: FrameHeader, ctx: RequestContext): void {
  const op = h.opcode;
  if (!isOpCode(op)) fail(h, 'unknown opcode');
  if ((h.flags & ~ALLOWED_FLAGS[op]) !== 0) fail(h, `flags 0x${h.flags.toString(16)} not allowed`);
  if (op === Op.HELLO) {
    if (ctx.size !== null) fail(h, 'second HELLO');
    if (h.offset !== 0n || h.length !== 0n) fail(h, 'offset and length must be 0');
    if (h.payloadLength < 1 || h.payloadLength > MAX_NAME_LENGTH) fail(h, `volume name of ${h.payloadLength} bytes`);
    return;
  }
  if (ctx.size === null) fail(h, 'request before HELLO');
  const size = BigInt(ctx.size);
  if (op === Op.FLUSH || op === Op.DIRECT) {
    if (h.offset !== 0n || h.length !== 0n || h.payloadLength !== 0) fail(h, 'offset, length and payload must be 0');
    return;
  }
  // Only WRITE and VERIFY may end inside a sector (Feature.PARTIAL_SECTOR).
  const partialAllowed = op === Op.WRITE || op === Op.VERIFY;
  if (!aligned(h.offset) || (!partialAllowed && !aligned(h.length))) fail(h, 'offset or length not a multiple of 512');
  if (h.length === 0n) fail(h, 'zero length');
  if (h.offset > size || h.length > size - h.offset) fail(h, `range ${h.offset}+${h.length} beyond the volume (${size} bytes)`);
  const max = BigInt(ctx.maxPayload);
  switch (op) {
    case Op.READ:
      if (h.length > max) fail(h, 'length exceeds the max payload');
      if (h.payloadLength !== 0) fail(h, 'payload not allowed');
      return;
    case Op.WRITE:
    case Op.VERIFY:
      if (BigInt(h.payloadLength) !== h.length) fail(h, 'payload length differs from length');
      return;
    case Op.UNMAP:
    case Op.PREFETCH:
      if (h.payloadLength !== 0) fail(h, 'payload not allowed');
      return;
    case Op.COMPARE_AND_WRITE:
      if (BigInt(h.payloadLength) !== 2n * h.length) fail(h, 'payload must be twice the length');
      return;
    case Op.WRITE_SAME: {
      const p = h.payloadLength;
      if (p === 0) {
        if (h.flags & (Flag.LBDATA | Flag.PBDATA)) fail(h, 'LBDATA/PBDATA need a block');
      } else if (p % SECTOR_SIZE !== 0 || p > MAX_BLOCK_SIZE || h.length % BigInt(p) !== 0n) {
        fail(h, `block of ${p} bytes for a length of ${h.length}`);
      }
      if ((h.flags & Flag.LBDATA) && (h.flags & Flag.PBDATA)) fail(h, 'LBDATA and PBDATA both set');
      return;
    }
  }
}

function decodeVolumeName(h: FrameHeader, payload: Buffer): string {
  let name: string;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch {
    fail(h, 'volume name is not UTF-8');
  }
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) fail(h, 'control character in volume name');
  }
  return name;
}

/** Turns a frame whose header passed checkRequestHeader into a Request. */
export function decodeRequest(frame: Frame, ctx: RequestContext): Request {
  const h = frame.header;
  checkRequestHeader(h, ctx);
  const p = frame.payload;
  if (p.length !== h.payloadLength) fail(h, 'payload length mismatch');
  const tag = h.tag;
  const offset = Number(h.offset);
  const length = Number(h.length);
  switch (h.opcode) {
    case Op.HELLO:
      return { op: 'hello', tag, volume: decodeVolumeName(h, p) };
    case Op.READ:
      return { op: 'read', tag, offset, length };
    case Op.WRITE:
      return { op: 'write', tag, offset, data: p, fua: (h.flags & Flag.FUA) !== 0 };
    case Op.FLUSH:
      return { op: 'flush', tag };
    case Op.UNMAP:
      return { op: 'unmap', tag, offset, length };
    case Op.WRITE_SAME:
      return {
        op: 'writeSame',
        tag,
        offset,
        length,
        block: p,
        unmap: (h.flags & Flag.UNMAP) !== 0,
        lbdata: (h.flags & Flag.LBDATA) !== 0,
        pbdata: (h.flags & Flag.PBDATA) !== 0,
        fua: (h.flags & Flag.FUA) !== 0,
      };
    case Op.COMPARE_AND_WRITE:
      return {
        op: 'compareAndWrite',
        tag,
        offset,
        length,
        compare: p.subarray(0, length),
        data: p.subarray(length),
        fua: (h.flags & Flag.FUA) !== 0,
      };
    case Op.VERIFY:
      return { op: 'verify', tag, offset, data: p };
    case Op.PREFETCH:
      return { op: 'prefetch', tag, offset, length };
    case Op.DIRECT:
      return { op: 'direct', tag };
    default:
      return fail(h, 'unknown opcode');
  }
}

/** Opcode number of a decoded request. */
export function requestOpcode(r: Request): OpCode {
  switch (r.op) {
    case 'hello':
      return Op.HELLO;
    case 'read':
      return Op.READ;
    case 'write':
      return Op.WRITE;
    case 'flush':
      return Op.FLUSH;
    case 'unmap':
      return Op.UNMAP;
    case 'writeSame':
      return Op.WRITE_SAME;
    case 'compareAndWrite':
      return Op.COMPARE_AND_WRITE;
    case 'verify':
      return Op.VERIFY;
    case 'prefetch':
      return Op.PREFETCH;
    case 'direct':
      return Op.DIRECT;
  }
}
