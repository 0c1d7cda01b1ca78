// A client of the NBD protocol (https://github.com/NetworkBlockDevice/nbd,
// doc/proto.md), as much of it as reading an image needs: the fixed newstyle
// handshake with NBD_OPT_EXPORT_NAME, and pipelined NBD_CMD_READ with simple
// replies. qemu-nbd serves images of every format QEMU reads as raw bytes
// over it, so swiftvol reads qcow2 and the rest through QEMU, not a parser of
// its own.
import net from 'node:net';

const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_EXPORT_NAME = 1;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const CMD_READ = 0;
const CMD_DISC = 2;
/** Reads are split into pieces of at most this (qemu-nbd accepts 32 MiB). */
const MAX_READ = 8 * 1024 * 1024;

export class NbdError extends Error {
  override readonly name = 'NbdError';
}

interface PendingRead {
  out: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class NbdClient {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly pending = new Map<bigint, PendingRead>();
  /** The read whose data is arriving, and how much of it has. */
  private receiving: { read: PendingRead; got: number } | null = null;
  private nextHandle = 1n;
  private failure: Error | null = null;

  private constructor(
    private readonly socket: net.Socket,
    /** The export's size in bytes. */
    readonly size: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new NbdError(`NBD connection: ${err.message}`)));
    socket.on('close', () => this.fail(new NbdError('NBD server closed the connection')));
  }

  /** Connects to the NBD server on a Unix socket and negotiates its default export. */
  static async connect(socketPath: string): Promise<NbdClient> {
    const socket = net.connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const reader = new HandshakeReader(socket);
    try {
      const hello = await reader.take(18);
      if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdError('not an NBD server (no newstyle greeting)');
      const serverFlags = hello.readUInt16BE(16);
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new NbdError('the NBD server does not speak fixed newstyle');
      const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0;
      const client = Buffer.alloc(4 + 16);
      client.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0), 0);
      client.writeBigUInt64BE(IHAVEOPT, 4);
      client.writeUInt32BE(OPT_EXPORT_NAME, 12);
      client.writeUInt32BE(0, 16); // the default export: ""
      socket.write(client);
      const exportInfo = await reader.take(10 + (noZeroes ? 0 : 124));
      const size = Number(exportInfo.readBigUInt64BE(0));
      const rest = reader.release();
      const nbd = new NbdClient(socket, size);
      if (rest.length > 0) nbd.onData(rest);
      return nbd;
    } catch (err) {
      socket.destroy();
      throw err instanceof NbdError ? err : new NbdError(`NBD handshake: ${(err as Error).message}`);
    }
  }

  /** Fills out with the export's bytes from position (pipelined with other reads). */
  async read(out: Buffer, position: number): Promise<void> {
    if (position < 0 || position + out.length > this.size) throw new NbdError(`read [${position}, ${position + out.length}) is past the export's end (${this.size} bytes)`);
    const pieces: Promise<void>[] = [];
    for (let at = 0; at < out.length; at += MAX_READ) pieces.push(this.readPiece(out.subarray(at, Math.min(out.length, at + MAX_READ)), position + at));
    await Promise.all(pieces);
  }

  private readPiece(out: Buffer, position: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const handle = this.nextHandle++;
    const req = Buffer.alloc(28);
    req.writeUInt32BE(REQUEST_MAGIC, 0);
    req.writeUInt16BE(0, 4);
    req.writeUInt16BE(CMD_READ, 6);
    req.writeBigUInt64BE(handle, 8);
    req.writeBigUInt64BE(BigInt(position), 16);
    req.writeUInt32BE(out.length, 24);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { out, resolve, reject });
      this.socket.write(req);
    });
  }

  /** Sends NBD_CMD_DISC and closes. */
  async close(): Promise<void> {
    if (!this.socket.destroyed && !this.failure) {
      const req = Buffer.alloc(28);
      req.writeUInt32BE(REQUEST_MAGIC, 0);
      req.writeUInt16BE(CMD_DISC, 6);
      req.writeBigUInt64BE(this.nextHandle++, 8);
      await new Promise<void>((resolve) => this.socket.end(req, resolve));
    }
    this.failure ??= new NbdError('the NBD connection is closed');
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let data = this.buffered.length > 0 ? Buffer.concat([this.buffered, chunk]) : chunk;
    for (;;) {
      if (this.receiving) {
        const { read } = this.receiving;
        const n = Math.min(data.length, read.out.length - this.receiving.got);
        data.copy(read.out, this.receiving.got, 0, n);
        this.receiving.got += n;
        data = data.subarray(n);
        if (this.receiving.got < read.out.length) break;
        this.receiving = null;
        read.resolve();
        continue;
      }
      if (data.length < 16) break;
      const magic = data.readUInt32BE(0);
      if (magic !== SIMPLE_REPLY_MAGIC) {
        this.fail(new NbdError(`unexpected NBD reply (magic 0x${magic.toString(16)})`));
        this.socket.destroy();
        return;
      }
      const error = data.readUInt32BE(4);
      const handle = data.readBigUInt64BE(8);
      data = data.subarray(16);
      const read = this.pending.get(handle);
      if (!read) {
        this.fail(new NbdError(`NBD reply for unknown handle ${handle}`));
        this.socket.destroy();
        return;
      }
      this.pending.delete(handle);
      if (error !== 0) read.reject(new NbdError(`NBD read failed (error ${error})`));
      else this.receiving = { read, got: 0 };
    }
    this.buffered = data.length > 0 ? Buffer.from(data) : Buffer.alloc(0);
  }

  private fail(err: Error): void {
    if (this.failure && this.pending.size === 0 && !this.receiving) return;
    this.failure ??= err;
    const reads = [...this.pending.values()];
    if (this.receiving) reads.push(this.receiving.read);
    this.pending.clear();
    this.receiving = null;
    for (const r of reads) r.reject(this.failure);
  }
}

/** Reads exact byte counts off a socket during the handshake. */
class HandshakeReader {
  private data: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private error: Error | null = null;
  private readonly onData = (chunk: Buffer): void => {
    this.data = Buffer.concat([this.data, chunk]);
    this.waiter?.();
  };
  private readonly onEnd = (): void => {
    this.error = new NbdError('the NBD server closed the connection during the handshake');
    this.waiter?.();
  };

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('error', (err) => {
      this.error = err;
      this.waiter?.();
    });
  }

  async take(n: number): Promise<Buffer> {
    while (this.data.length < n) {
      if (this.error) throw this.error;
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
    const out = this.data.subarray(0, n);
    this.data = this.data.subarray(n);
    return out;
  }

  /** Stops reading; returns what arrived beyond the handshake. */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onEnd);
    this.socket.removeAllListeners('error');
    return this.data;
  }
}
