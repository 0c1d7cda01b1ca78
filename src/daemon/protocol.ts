// The bs_swift <-> daemon protocol, version 1 (doc/protocol.md): framing,
// encoding, a streaming frame parser and the validation of requests.
//
// Every frame is a 40-byte little-endian header followed by payloadLength
// bytes. The parser checks what a header alone can tell (magic, version,
// direction, reserved bytes, payload limit) and lets its owner check the
// rest of a header (opcode, flags, offsets against the volume) before the
// payload is buffered; any failure is a ProtocolError and the connection is
// to be dropped.

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

export function decodeDirectReply(b: Buffer): DirectReply {
  if (b.length < 8) throw new ProtocolError(`DIRECT reply payload of ${b.length} bytes`);
  if (b.readUInt32LE(0) !== DIRECT_MAP_VERSION) throw new ProtocolError(`DIRECT reply: map version ${b.readUInt32LE(0)}`);
  const dataLength = b.readUInt16LE(4);
  const mapLength = b.readUInt16LE(6);
  if (dataLength === 0 || mapLength === 0 || b.length !== 8 + dataLength + mapLength) throw new ProtocolError('DIRECT reply: bad path lengths');
  return {
    dataPath: b.toString('utf8', 8, 8 + dataLength),
    mapPath: b.toString('utf8', 8 + dataLength),
  };
}

export const SenseKey = {
  NO_SENSE: 0x00,
  RECOVERED_ERROR: 0x01,
  NOT_READY: 0x02,
  MEDIUM_ERROR: 0x03,
  HARDWARE_ERROR: 0x04,
  ILLEGAL_REQUEST: 0x05,
  UNIT_ATTENTION: 0x06,
  DATA_PROTECT: 0x07,
  ABORTED_COMMAND: 0x0b,
  MISCOMPARE: 0x0e,
} as const;

export interface Sense {
  key: number;
  asc: number;
  ascq: number;
}

/** Sense data the daemon uses. */
export const Senses = {
  /** MEDIUM ERROR, UNRECOVERED READ ERROR */
  READ_ERROR: { key: SenseKey.MEDIUM_ERROR, asc: 0x11, ascq: 0x00 },
  /** MEDIUM ERROR, WRITE ERROR */
  WRITE_ERROR: { key: SenseKey.MEDIUM_ERROR, asc: 0x0c, ascq: 0x00 },
  /** MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION */
  MISCOMPARE: { key: SenseKey.MISCOMPARE, asc: 0x1d, ascq: 0x00 },
  /** HARDWARE ERROR, INTERNAL TARGET FAILURE */
  INTERNAL: { key: SenseKey.HARDWARE_ERROR, asc: 0x44, ascq: 0x00 },
  /** NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE */
  NOT_READY: { key: SenseKey.NOT_READY, asc: 0x04, ascq: 0x00 },
  /** DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT */
  NO_SPACE: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x07 },
  /** DATA PROTECT, WRITE PROTECTED */
  WRITE_PROTECTED: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x00 },
  /** ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE */
  LBA_OUT_OF_RANGE: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x21, ascq: 0x00 },
  /** ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE */
  INVALID_OPCODE: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x20, ascq: 0x00 },
  /** ILLEGAL REQUEST, INVALID FIELD IN CDB */
  INVALID_FIELD: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x24, ascq: 0x00 },
} as const satisfies Record<string, Sense>;

/**
 * An error that carries its own sense data: a BlockDevice (or openDevice)
 * may throw it to choose what the initiator sees.
 */
export class SenseError extends Error {
  readonly sense: Sense;
  constructor(sense: Sense, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SenseError';
    this.sense = sense;
  }
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

export interface RequestInit {
  opcode: OpCode;
  tag: bigint;
  flags?: number;
  offset?: bigint | number;
  length?: bigint | number;
}

/** Encodes a request header for the given payload (the client side; tests). */
export function encodeRequest(r: RequestInit, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  return encodeHeader({
    opcode: r.opcode,
    flags: r.flags ?? 0,
    tag: r.tag,
    offset: BigInt(r.offset ?? 0),
    length: BigInt(r.length ?? 0),
    payloadLength: payload.length,
    status: 0,
    senseKey: 0,
    asc: 0,
    ascq: 0,
  });
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

export function decodeHelloReply(b: Buffer): HelloReply {
  if (b.length !== HELLO_REPLY_LENGTH) throw new ProtocolError(`HELLO reply payload of ${b.length} bytes`);
  if (b.readUInt32LE(20) !== 0) throw new ProtocolError('HELLO reply: reserved field not zero');
  const size = b.readBigUInt64LE(0);
  if (size === 0n || size % BigInt(SECTOR_SIZE) !== 0n || size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ProtocolError(`HELLO reply: bad size ${size}`);
  }
  const pbs = b.readUInt32LE(8);
  if (pbs < SECTOR_SIZE || pbs > 65536 || (pbs & (pbs - 1)) !== 0) throw new ProtocolError(`HELLO reply: bad physical block size ${pbs}`);
  const maxPayload = b.readUInt32LE(12);
  if (maxPayload < MIN_MAX_PAYLOAD || maxPayload % SECTOR_SIZE !== 0) throw new ProtocolError(`HELLO reply: bad max payload ${maxPayload}`);
  return { size: Number(size), physicalBlockSize: pbs, maxPayload, capabilities: b.readUInt32LE(16) };
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
      } else if (p % SECTOR_SIZE !== 0 || p > 65536 || h.length % BigInt(p) !== 0n) {
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

/** A reply as a client sees it. */
export interface Reply {
  opcode: OpCode;
  tag: bigint;
  status: number;
  sense: Sense | null;
  info: number | null;
  payload: Buffer;
}

/** Validates a reply frame (client side). */
export function decodeReply(frame: Frame): Reply {
  const h = frame.header;
  const op = h.opcode & ~REPLY_BIT;
  if ((h.opcode & REPLY_BIT) === 0 || !isOpCode(op)) throw new ProtocolError(`not a reply: ${opName(h.opcode)}`);
  if ((h.flags & ~ReplyFlag.INFO_VALID) !== 0) throw new ProtocolError('unknown reply flags');
  if (h.length !== 0n) throw new ProtocolError('reply length field not zero');
  const infoValid = (h.flags & ReplyFlag.INFO_VALID) !== 0;
  if (!infoValid && h.offset !== 0n) throw new ProtocolError('reply offset without INFO_VALID');
  if (h.status === Status.GOOD) {
    if (h.senseKey || h.asc || h.ascq || infoValid) throw new ProtocolError('GOOD reply with sense data');
    return { opcode: op, tag: h.tag, status: h.status, sense: null, info: null, payload: frame.payload };
  }
  if (h.status !== Status.CHECK_CONDITION) throw new ProtocolError(`reply status 0x${h.status.toString(16)}`);
  if (h.senseKey === 0 || h.senseKey > SenseKey.MISCOMPARE) throw new ProtocolError('CHECK CONDITION without a sense key');
  if (h.payloadLength > MAX_MESSAGE_LENGTH) throw new ProtocolError('error message too long');
  return {
    opcode: op,
    tag: h.tag,
    status: h.status,
    sense: { key: h.senseKey, asc: h.asc, ascq: h.ascq },
    info: infoValid ? Number(h.offset) : null,
    payload: frame.payload,
  };
}
