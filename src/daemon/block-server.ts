// BlockServer: the daemon end of the bs_swift protocol (doc/protocol.md).
//
// Listens on a Unix socket. Each connection starts with HELLO (volume name
// -> size, block size, max payload, capabilities); after that its requests
// run concurrently and are answered by tag, in any order. WRITE SAME,
// COMPARE AND WRITE and VERIFY are built here on top of BlockDevice; COMPARE
// AND WRITE, and a WRITE that ends inside a sector (read, merge, write), are
// atomic against writes to their range (a per-device range lock).
// A connection that sends anything invalid is dropped; other connections
// are not affected.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { canOpenDirect, type BlockDevice } from '../engine/block-device.js';
import { BLOCK_SIZE } from '../format/volume-format.js';
import {
  ALL_CAPABILITIES,
  Feature,
  FrameParser,
  MAX_MESSAGE_LENGTH,
  MAX_PAYLOAD,
  MIN_MAX_PAYLOAD,
  Op,
  ProtocolError,
  SECTOR_SIZE,
  Status,
  checkRequestHeader,
  decodeRequest,
  capabilityBit,
  encodeDirectReply,
  encodeHelloReply,
  encodeReply,
  opName,
  requestOpcode,
  type Frame,
  type OpCode,
  type Request,
  type RequestContext,
} from './protocol.js';
import { SenseError, Senses, type Sense } from './sense.js';
import { socketHandoff } from '../native/addons.js';

/** What HELLO answers of a device that is not open yet. */
export interface DeviceDescription {
  size: number;
  /** Whether the device, once open, offers direct I/O. */
  direct: boolean;
}

/**
 * Takes a connection over from another thread (engine-threads.ts): the
 * socket's descriptor, now the taker's, and every byte read from it so far
 * (its HELLO).
 */
export type ConnectionTaker = (fd: number, received: Buffer) => Promise<void>;

export interface BlockServerOptions {
  /** Where it listens (none: it only serves connections given to adopt). */
  socketPath?: string;
  /** Opens (or returns the cached) device of a volume; may run once per connection. */
  openDevice(volume: string): Promise<BlockDevice>;
  /**
   * Describes a volume without opening it. When given, HELLO is answered
   * from it (with Feature.DEFERRED_OPEN) and the device is opened at the
   * connection's first command; a device that cannot open fails that
   * command with NOT READY, and the next command tries again.
   */
  describeDevice?(volume: string): Promise<DeviceDescription>;
  log?: (msg: string) => void;
  /** Largest payload advertised and accepted (default and maximum 32 MiB). */
  maxPayload?: number;
  /** Requests in progress per connection before reading from it pauses (default 64). */
  maxInFlight?: number;
  /**
   * Physical block size reported in the handshake (default 4096, the
   * overlay's block): bs_swift reports it to initiators so they align I/O.
   */
  physicalBlockSize?: number;
  /** Mode of the socket file (default 0o660). */
  socketMode?: number;
  /** Told of every request answered after the handshake (metrics). */
  onRequest?: (event: RequestEvent) => void;
  /**
   * Where a connection's HELLO goes: when given, each connection is handed,
   * at its HELLO, to the taker this returns for its volume, and served there.
   */
  route?(volume: string): Promise<ConnectionTaker>;
}

/** A request the daemon answered: for metrics. */
export interface RequestEvent {
  volume: string;
  op: Exclude<Request['op'], 'hello'>;
  /** Bytes read or written (0 for the others). */
  bytes: number;
  seconds: number;
  good: boolean;
}

/** A device that can warm its cache for PRE-FETCH (optional). */
interface Prefetcher {
  prefetch(offset: number, length: number): Promise<void>;
}

function canPrefetch(d: BlockDevice): d is BlockDevice & Prefetcher {
  return typeof (d as Partial<Prefetcher>).prefetch === 'function';
}

/** Pending replies beyond this many bytes pause reading a connection. */
const WRITE_HIGH_WATER = 64 * 1024 * 1024;
/** WRITE SAME writes at most this much per device.write. */
const WRITE_SAME_CHUNK = 1024 * 1024;

interface LockEntry {
  start: number;
  end: number;
  exclusive: boolean;
  released: Promise<void>;
}

/**
 * FIFO range lock: shared holders (writes) overlap freely; an exclusive
 * holder (COMPARE AND WRITE) waits for every earlier overlapping entry, and
 * later overlapping entries wait for it.
 */
class RangeLock {
  private readonly entries = new Set<LockEntry>();

  async acquire(start: number, end: number, exclusive: boolean): Promise<() => void> {
    const waits: Promise<void>[] = [];
    for (const e of this.entries) {
      if (e.start < end && start < e.end && (exclusive || e.exclusive)) waits.push(e.released);
    }
    let release!: () => void;
    const entry: LockEntry = { start, end, exclusive, released: new Promise<void>((r) => (release = r)) };
    this.entries.add(entry);
    if (waits.length > 0) await Promise.all(waits);
    return () => {
      this.entries.delete(entry);
      release();
    };
  }
}

const locks = new WeakMap<BlockDevice, RangeLock>();

function lockOf(device: BlockDevice): RangeLock {
  let l = locks.get(device);
  if (l === undefined) {
    l = new RangeLock();
    locks.set(device, l);
  }
  return l;
}

interface Outcome {
  status: typeof Status.GOOD | typeof Status.CHECK_CONDITION;
  sense?: Sense;
  info?: number;
  payload?: Buffer;
  message?: string;
}

const GOOD: Outcome = { status: Status.GOOD };

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps a device failure to sense data; `fallback` is the operation's own. */
function failure(err: unknown, fallback: Sense, writing: boolean): Outcome {
  if (err instanceof SenseError) return { status: Status.CHECK_CONDITION, sense: err.sense, message: err.message };
  const code = (err as { code?: unknown } | null)?.code;
  if (writing && code === 'ENOSPC') return { status: Status.CHECK_CONDITION, sense: Senses.NO_SPACE, message: errorMessage(err) };
  if (writing && (code === 'EROFS' || code === 'EACCES' || code === 'EPERM')) {
    return { status: Status.CHECK_CONDITION, sense: Senses.WRITE_PROTECTED, message: errorMessage(err) };
  }
  return { status: Status.CHECK_CONDITION, sense: fallback, message: errorMessage(err) };
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  // compare in 4 KiB steps, then find the byte
  for (let i = 0; i < n; i += 4096) {
    const end = Math.min(n, i + 4096);
    if (a.compare(b, i, end, i, end) !== 0) {
      for (let j = i; j < end; j++) if (a[j] !== b[j]) return j;
    }
  }
  return a.length === b.length ? -1 : n;
}

/** length rounded up to whole sectors. */
function sectorsOf(length: number): number {
  return Math.ceil(length / SECTOR_SIZE) * SECTOR_SIZE;
}

async function readExactly(device: BlockDevice, offset: number, length: number): Promise<Buffer> {
  const data = await device.read(offset, length);
  if (data.length !== length) throw new Error(`device returned ${data.length} bytes for a read of ${length}`);
  return data;
}

class Connection {
  private readonly parser: FrameParser;
  private readonly ctx: RequestContext;
  private state: 'hello' | 'opening' | 'ready' | 'closed' = 'hello';
  private device: BlockDevice | null = null;
  private deviceOpening: Promise<BlockDevice> | null = null;
  private volume = '';
  private inFlight = 0;
  private paused = false;
  /** Direct I/O sessions opened on this connection: they end with it. */
  private readonly directSessions: Array<() => void> = [];
  /** What was read before the HELLO was answered, for a connection handed to another thread. */
  private received: Buffer[] | null = [];

  constructor(
    private readonly server: BlockServer,
    private readonly socket: net.Socket,
    private readonly id: number,
  ) {
    this.ctx = { size: null, maxPayload: server.maxPayload };
    this.parser = new FrameParser({
      direction: 'request',
      maxPayload: server.maxPayload,
      checkHeader: (h) => {
        if (this.state === 'opening') throw new ProtocolError(`${opName(h.opcode)} before the HELLO reply`);
        checkRequestHeader(h, this.ctx);
      },
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.updateFlow());
    socket.on('error', (err) => {
      if (this.state !== 'closed') this.server.log(`connection ${this.id}: ${err.message}`);
    });
    socket.on('close', () => {
      this.state = 'closed';
      for (const end of this.directSessions.splice(0)) end();
      this.server.forget(this);
    });
  }

  get name(): string {
    return this.volume ? `connection ${this.id} (${this.volume})` : `connection ${this.id}`;
  }

  /** Drops the connection: pending work completes, its replies are discarded. */
  drop(reason: string): void {
    if (this.state === 'closed') return;
    this.server.log(`${this.name}: dropped: ${reason}`);
    this.state = 'closed';
    this.socket.destroy();
  }

  close(): void {
    this.state = 'closed';
    this.socket.destroy();
  }

  /** A method, so TypeScript does not narrow state across calls that change it. */
  private isClosed(): boolean {
    return this.state === 'closed';
  }

  /** Bytes read from the socket before it came here (adopt). */
  feed(chunk: Buffer): void {
    if (chunk.length > 0) this.onData(chunk);
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.received?.push(chunk);
    let frames: Frame[];
    try {
      frames = this.parser.push(chunk);
    } catch (err) {
      this.drop(errorMessage(err));
      return;
    }
    for (const frame of frames) {
      if (this.isClosed()) return;
      let req: Request;
      try {
        req = decodeRequest(frame, this.ctx);
      } catch (err) {
        this.drop(errorMessage(err));
        return;
      }
      if (req.op === 'hello') {
        if (this.state !== 'hello') {
          this.drop('second HELLO');
          return;
        }
        const route = this.server.route;
        if (route) {
          this.handOff(route, req.tag, req.volume);
          return;
        }
        this.received = null;
        this.hello(req.tag, req.volume);
      } else {
        this.start(req);
      }
    }
  }

  private hello(tag: bigint, volume: string): void {
    this.state = 'opening';
    this.volume = volume;
    const deferred = this.server.describeDevice(volume);
    const described: Promise<DeviceDescription & { device: BlockDevice | null }> = deferred
      ? deferred.then((d) => ({ ...d, device: null }))
      : this.server.openDevice(volume).then((device) => ({ size: device.size, direct: canOpenDirect(device), device }));
    described
      .then(({ size, direct, device }) => {
        if (this.state === 'closed') return;
        if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) {
          throw new SenseError(Senses.NOT_READY, `device size ${size} is not a positive multiple of ${SECTOR_SIZE}`);
        }
        this.device = device;
        this.ctx.size = size;
        this.state = 'ready';
        let capabilities = direct ? ALL_CAPABILITIES : ALL_CAPABILITIES & ~capabilityBit(Op.DIRECT);
        if (!device) capabilities |= Feature.DEFERRED_OPEN;
        const payload = encodeHelloReply({ size, physicalBlockSize: this.server.physicalBlockSize, maxPayload: this.server.maxPayload, capabilities });
        this.send(Op.HELLO, tag, { status: Status.GOOD, payload });
        this.server.log(`${this.name}: ${device ? 'open' : 'described'}, ${size} bytes`);
      })
      .catch((err: unknown) => {
        if (this.state === 'closed') return;
        const out = failure(err, Senses.NOT_READY, false);
        this.server.log(`${this.name}: cannot open volume: ${out.message ?? ''}`);
        this.send(Op.HELLO, tag, out);
        this.state = 'closed';
        this.socket.end();
      });
  }

  /**
   * Hands the connection, HELLO and all, to the thread that serves its
   * volume: reading stops here, the descriptor is duplicated for the taker,
   * and this side lets go of the socket without a word to the client.
   */
  private handOff(route: (volume: string) => Promise<ConnectionTaker>, tag: bigint, volume: string): void {
    this.state = 'opening';
    this.volume = volume;
    const handle = (this.socket as unknown as { _handle?: { fd?: number; readStop?(): number } })._handle;
    this.socket.pause();
    handle?.readStop?.();
    route(volume)
      .then(async (take) => {
        if (this.isClosed()) return;
        if (typeof handle?.fd !== 'number' || handle.fd < 0) throw new Error('the connection has no descriptor to hand over');
        const rest: unknown = this.socket.read();
        const received = Buffer.concat([...(this.received ?? []), ...(Buffer.isBuffer(rest) ? [rest] : [])]);
        const fd = socketHandoff().dupFd(handle.fd);
        this.state = 'closed';
        this.received = null;
        this.socket.destroy();
        await take(fd, received);
      })
      .catch((err: unknown) => {
        if (this.socket.destroyed) {
          this.server.log(`${this.name}: handing over: ${errorMessage(err)}`);
          return;
        }
        const out = failure(err, Senses.NOT_READY, false);
        this.server.log(`${this.name}: cannot open volume: ${out.message ?? ''}`);
        this.send(Op.HELLO, tag, out);
        this.state = 'closed';
        this.socket.end();
      });
  }

  /** The device, opened at the first command after a deferred HELLO; a failed open is tried again by the next command. */
  private openDevice(): Promise<BlockDevice> {
    this.deviceOpening ??= this.server.openDevice(this.volume).then(
      (device) => {
        if (device.size !== this.ctx.size) {
          throw new SenseError(Senses.NOT_READY, `volume '${this.volume}' is ${device.size} bytes now, not the ${this.ctx.size ?? 0} it had when the LU was made: recreate the target`);
        }
        this.device = device;
        return device;
      },
      (err: unknown) => {
        this.deviceOpening = null;
        throw err;
      },
    );
    return this.deviceOpening;
  }

  private start(req: Request): void {
    if (this.state !== 'ready') {
      this.drop('request before HELLO');
      return;
    }
    this.inFlight++;
    this.updateFlow();
    const started = process.hrtime.bigint();
    let work: Promise<Outcome>;
    try {
      const device = this.device;
      work = device
        ? this.execute(device, req)
        : this.openDevice().then(
            (d) => this.execute(d, req),
            (err: unknown) => {
              const out = failure(err, Senses.NOT_READY, false);
              out.message = `cannot open volume: ${out.message ?? ''}`;
              return out;
            },
          );
    } catch (err) {
      work = Promise.resolve(failure(err, Senses.INTERNAL, false));
    }
    work
      .catch((err: unknown) => failure(err, Senses.INTERNAL, false))
      .then((out) => {
        if (out.status !== Status.GOOD && out.message !== undefined) {
          this.server.log(`${this.name}: ${req.op}: ${out.message}`);
        }
        this.send(requestOpcode(req), req.tag, out);
        const observe = this.server.onRequest;
        if (observe && this.volume && req.op !== 'hello') {
          const bytes = req.op === 'read' ? req.length : req.op === 'write' ? req.data.length : 0;
          observe({ volume: this.volume, op: req.op, bytes, seconds: Number(process.hrtime.bigint() - started) / 1e9, good: out.status === Status.GOOD });
        }
      })
      .finally(() => {
        this.inFlight--;
        this.updateFlow();
      });
  }

  private updateFlow(): void {
    if (this.state === 'closed') return;
    const busy = this.inFlight >= this.server.maxInFlight || this.socket.writableLength > WRITE_HIGH_WATER;
    if (busy && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!busy && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private send(opcode: OpCode, tag: bigint, out: Outcome): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    let payload = out.payload ?? Buffer.alloc(0);
    if (out.status !== Status.GOOD) {
      const msg = Buffer.from(out.message ?? '', 'utf8');
      payload = msg.length > MAX_MESSAGE_LENGTH ? msg.subarray(0, MAX_MESSAGE_LENGTH) : msg;
    }
    const header = encodeReply({ opcode, tag, status: out.status, sense: out.sense, info: out.info }, payload.length);
    this.socket.cork();
    this.socket.write(header);
    if (payload.length > 0) this.socket.write(payload);
    this.socket.uncork();
  }

  private async execute(device: BlockDevice, req: Request): Promise<Outcome> {
    switch (req.op) {
      case 'hello':
        throw new ProtocolError('second HELLO');
      case 'read':
        try {
          return { status: Status.GOOD, payload: await readExactly(device, req.offset, req.length) };
        } catch (err) {
          const out = failure(err, Senses.READ_ERROR, false);
          // A device that can place the failure (a block that failed its checksum) says
          // where: the volume offset goes in the information field (bs_swift: its LBA).
          // (A bad block outside the range, fetched with it, fails the read without a place.)
          const at = (err as { volumeOffset?: unknown } | null)?.volumeOffset;
          if (typeof at === 'number' && at < req.offset + req.length && at + BLOCK_SIZE > req.offset) out.info = Math.max(at, req.offset);
          return out;
        }
      case 'write': {
        // A write that ends inside a sector keeps the rest of that sector:
        // read, merge, write, exclusive of other writes to the range.
        const partial = req.data.length % SECTOR_SIZE !== 0;
        const end = req.offset + sectorsOf(req.data.length);
        const release = await lockOf(device).acquire(req.offset, end, partial);
        try {
          let data: Uint8Array = req.data;
          if (partial) {
            const tail = end - SECTOR_SIZE;
            let current: Buffer;
            try {
              current = await readExactly(device, tail, SECTOR_SIZE);
            } catch (err) {
              return failure(err, Senses.READ_ERROR, false);
            }
            const whole = Buffer.allocUnsafe(end - req.offset);
            req.data.copy(whole, 0);
            current.copy(whole, req.data.length, req.offset + req.data.length - tail);
            data = whole;
          }
          await device.write(req.offset, data, { fua: req.fua });
          return GOOD;
        } catch (err) {
          return failure(err, Senses.WRITE_ERROR, true);
        } finally {
          release();
        }
      }
      case 'flush':
        try {
          await device.flush();
          return GOOD;
        } catch (err) {
          return failure(err, Senses.WRITE_ERROR, true);
        }
      case 'unmap': {
        const release = await lockOf(device).acquire(req.offset, req.offset + req.length, false);
        try {
          await device.unmap(req.offset, req.length);
          return GOOD;
        } catch (err) {
          // as bs_rdwr reports a failed hole punch
          return failure(err, Senses.INTERNAL, true);
        } finally {
          release();
        }
      }
      case 'writeSame':
        return this.writeSame(device, req);
      case 'compareAndWrite':
        return this.compareAndWrite(device, req);
      case 'verify':
        try {
          // a length that ends inside a sector compares only its own bytes
          const current = (await readExactly(device, req.offset, sectorsOf(req.data.length))).subarray(0, req.data.length);
          const at = firstDifference(req.data, current);
          if (at >= 0) return { status: Status.CHECK_CONDITION, sense: Senses.MISCOMPARE, info: at };
          return GOOD;
        } catch (err) {
          return failure(err, Senses.READ_ERROR, false);
        }
      case 'direct': {
        if (!canOpenDirect(device)) {
          return { status: Status.CHECK_CONDITION, sense: Senses.INVALID_OPCODE, message: 'this device has no direct I/O' };
        }
        const session = device.openDirect();
        if (this.isClosed()) {
          session.close();
          return GOOD;
        }
        this.directSessions.push(() => session.close());
        return { status: Status.GOOD, payload: encodeDirectReply(session) };
      }
      case 'prefetch':
        if (!canPrefetch(device)) return GOOD;
        try {
          await device.prefetch(req.offset, req.length);
          return GOOD;
        } catch (err) {
          return failure(err, Senses.READ_ERROR, false);
        }
    }
  }

  private async writeSame(device: BlockDevice, req: Extract<Request, { op: 'writeSame' }>): Promise<Outcome> {
    const block = req.block;
    const release = await lockOf(device).acquire(req.offset, req.offset + req.length, false);
    try {
      // As bs_rdwr: the UNMAP bit deallocates the range whatever the data
      // (LBPRZ is set, so it reads back as zeros).
      if (req.unmap) {
        try {
          await device.unmap(req.offset, req.length);
          if (req.fua) await device.flush();
          return GOOD;
        } catch (err) {
          return failure(err, Senses.INTERNAL, true);
        }
      }
      const bs = block.length === 0 ? SECTOR_SIZE : block.length;
      const perChunk = Math.max(1, Math.floor(WRITE_SAME_CHUNK / bs)) * bs;
      const pattern = Buffer.alloc(Math.min(perChunk, req.length));
      if (block.length > 0) for (let i = 0; i < pattern.length; i += bs) block.copy(pattern, i);
      for (let done = 0; done < req.length; done += pattern.length) {
        const n = Math.min(pattern.length, req.length - done);
        const chunk = pattern.subarray(0, n);
        if (req.lbdata || req.pbdata) {
          for (let i = 0; i < n; i += bs) {
            const lba = (req.offset + done + i) / bs;
            if (req.lbdata) chunk.writeUInt32BE(lba % 2 ** 32, i);
            else chunk.writeBigUInt64BE(BigInt(lba), i);
          }
        }
        try {
          await device.write(req.offset + done, chunk, { fua: req.fua });
        } catch (err) {
          return failure(err, Senses.WRITE_ERROR, true);
        }
      }
      return GOOD;
    } finally {
      release();
    }
  }

  private async compareAndWrite(device: BlockDevice, req: Extract<Request, { op: 'compareAndWrite' }>): Promise<Outcome> {
    const release = await lockOf(device).acquire(req.offset, req.offset + req.length, true);
    try {
      let current: Buffer;
      try {
        current = await readExactly(device, req.offset, req.length);
      } catch (err) {
        return failure(err, Senses.READ_ERROR, false);
      }
      const at = firstDifference(req.compare, current);
      if (at >= 0) return { status: Status.CHECK_CONDITION, sense: Senses.MISCOMPARE, info: at };
      try {
        await device.write(req.offset, req.data, { fua: req.fua });
      } catch (err) {
        return failure(err, Senses.WRITE_ERROR, true);
      }
      return GOOD;
    } finally {
      release();
    }
  }
}

export class BlockServer {
  readonly socketPath: string | undefined;
  readonly maxPayload: number;
  readonly maxInFlight: number;
  readonly physicalBlockSize: number;
  readonly onRequest: ((event: RequestEvent) => void) | undefined;
  private readonly opts: BlockServerOptions;
  private readonly server: net.Server;
  private readonly conns = new Set<Connection>();
  private nextId = 1;
  private listening = false;
  private closing: Promise<void> | null = null;

  constructor(opts: BlockServerOptions) {
    const maxPayload = opts.maxPayload ?? MAX_PAYLOAD;
    if (!Number.isInteger(maxPayload) || maxPayload < MIN_MAX_PAYLOAD || maxPayload > MAX_PAYLOAD || maxPayload % SECTOR_SIZE) {
      throw new RangeError(`maxPayload must be a multiple of 512 from ${MIN_MAX_PAYLOAD} to ${MAX_PAYLOAD}`);
    }
    const maxInFlight = opts.maxInFlight ?? 64;
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) throw new RangeError('maxInFlight must be a positive integer');
    const pbs = opts.physicalBlockSize ?? 4096;
    if (!Number.isInteger(pbs) || pbs < SECTOR_SIZE || pbs > 65536 || (pbs & (pbs - 1)) !== 0) {
      throw new RangeError('physicalBlockSize must be a power of two from 512 to 65536');
    }
    this.physicalBlockSize = pbs;
    this.onRequest = opts.onRequest;
    this.opts = opts;
    this.socketPath = opts.socketPath;
    this.maxPayload = maxPayload;
    this.maxInFlight = maxInFlight;
    this.server = net.createServer((socket) => {
      if (this.closing) {
        socket.destroy();
        return;
      }
      const c = new Connection(this, socket, this.nextId++);
      this.conns.add(c);
    });
    this.server.on('error', (err) => {
      if (this.listening) this.log(`server: ${err.message}`);
    });
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.conns.size;
  }

  log(msg: string): void {
    this.opts.log?.(`block-server: ${msg}`);
  }

  openDevice(volume: string): Promise<BlockDevice> {
    return this.opts.openDevice(volume);
  }

  /** The deferred HELLO's description, or null where HELLO opens the device. */
  describeDevice(volume: string): Promise<DeviceDescription> | null {
    return this.opts.describeDevice?.(volume) ?? null;
  }

  get route(): ((volume: string) => Promise<ConnectionTaker>) | undefined {
    return this.opts.route?.bind(this.opts);
  }

  /** Serves a connection accepted elsewhere (another thread's listener): its descriptor, and what was read from it. */
  adopt(fd: number, received: Buffer): void {
    if (this.closing) {
      fs.closeSync(fd);
      return;
    }
    const socket = new net.Socket({ fd, readable: true, writable: true });
    const c = new Connection(this, socket, this.nextId++);
    this.conns.add(c);
    c.feed(received);
  }

  /** @internal */
  forget(c: Connection): void {
    this.conns.delete(c);
  }

  /** Starts listening; a stale socket file (nobody listening) is replaced. */
  async listen(): Promise<void> {
    if (this.listening) return;
    const socketPath = this.socketPath;
    if (socketPath === undefined) throw new Error('this block server has no socket path to listen on');
    try {
      await this.tryListen(socketPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || (await isAlive(socketPath))) throw err;
      this.log(`removing stale socket ${socketPath}`);
      fs.unlinkSync(socketPath);
      await this.tryListen(socketPath);
    }
    fs.chmodSync(socketPath, this.opts.socketMode ?? 0o660);
    this.listening = true;
  }

  private tryListen(socketPath: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(socketPath, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  /** Stops listening and ends every connection (in-flight replies are lost). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      for (const c of this.conns) c.close();
      this.conns.clear();
      if (!this.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
    });
    return this.closing;
  }
}

function isAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
