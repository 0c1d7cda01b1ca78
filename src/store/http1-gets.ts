// GETs over plain HTTP/1.1 whose bodies the kernel reads straight into the
// buffer they are returned in (net.Socket's `onread`): no per-read buffer
// from Node, no copy into undici's parser, no stream in between. A cold read
// is mostly receiving bodies, and undici cost about twice this per MB here
// (whole 8 MiB GETs at concurrency 16 by hand: 1.96 against 0.93 ms of CPU
// per MB), most of it garbage: every 64 KiB read was a buffer of its own.
//
// It does only what a GET of a Swift object needs: keep-alive connections
// per origin (at most `connections`, the rest queue), a body of a stated
// Content-Length, read whole before the answer is given. An answer it does
// not read (chunked, or of no stated length) fails with NotReadHere before
// any of its body is used, so the caller asks again another way (SwiftHttp:
// through undici). HTTPS is not its business either. Errors of transport
// are HttpGetError; a connection that was reused and closed before
// answering (a keep-alive the server had dropped) is retried once on a new
// one, as undici does for idempotent requests.
import net from 'node:net';
import { ioBuffer } from '../native/addons.js';

/** A GET's answer, its body read whole. Header names are lower-case; a repeated header is a list. */
export interface Http1Answer {
  statusCode: number;
  statusText: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/** Connect, headers or body made no progress for the timeout, or the connection failed. */
export class HttpGetError extends Error {
  override readonly name = 'HttpGetError';
  constructor(
    message: string,
    readonly code: 'timeout' | 'closed' | 'protocol' | 'socket',
  ) {
    super(message);
  }
}

/** An answer this client does not read; nothing of it was used (the connection is closed). */
export class NotReadHere extends Error {
  override readonly name = 'NotReadHere';
}

export interface Http1GetsOptions {
  /** Connections per origin at most. */
  connections: number;
  /** No progress for this long (connect, headers, body) fails the GET, ms. */
  timeoutMs: number;
  /** An idle connection is closed after this long, ms. */
  keepAliveMs: number;
}

/** Header bytes of one answer at most (Swift's are a few hundred; an object's metadata adds at most a few KiB). */
const MAX_HEAD = 64 * 1024;
/** What a connection reads headers into; larger heads grow a copy of it. */
const HEAD_ROOM = 16 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');

interface Waiter {
  resolve: (conn: Connection) => void;
  reject: (err: Error) => void;
}

/** The connections of one origin. */
class OriginPool {
  readonly idle: Connection[] = [];
  readonly waiting: Waiter[] = [];
  open = 0;

  constructor(
    readonly host: string,
    readonly port: number,
    readonly hostHeader: string,
  ) {}
}

interface Exchange {
  resolve: (answer: Http1Answer) => void;
  reject: (err: Error) => void;
  /** Bytes of the head read so far (in `head`, from 0). */
  headLength: number;
  head: Buffer;
  answer?: Omit<Http1Answer, 'body'> & { keepAlive: boolean };
  body?: Buffer;
  /** Body bytes received. */
  got: number;
  /** Any byte of the answer received. */
  started: boolean;
}

class Connection {
  readonly socket: net.Socket;
  /** Requests it has answered (a reused connection may have been dropped by the server meanwhile). */
  served = 0;
  private readonly room = Buffer.allocUnsafeSlow(HEAD_ROOM);
  private exchange: Exchange | null = null;
  private dead = false;

  constructor(
    private readonly pool: OriginPool,
    private readonly owner: Http1Gets,
    private readonly timeoutMs: number,
  ) {
    this.socket = net.connect({
      host: pool.host,
      port: pool.port,
      noDelay: true,
      onread: {
        buffer: () => this.nextBuffer(),
        callback: (n: number, buf: Uint8Array) => {
          this.onBytes(n, buf);
          return true; // never paused: every byte has a place (nextBuffer)
        },
      },
    });
    this.socket.setTimeout(timeoutMs);
    this.socket.on('timeout', () => this.fail(new HttpGetError(this.exchange?.started ? `response body stalled for ${timeoutMs} ms` : `no response within ${timeoutMs} ms`, 'timeout')));
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(new HttpGetError(err.message || err.code || String(err), 'socket')));
    this.socket.on('end', () => this.fail(new HttpGetError('the server closed the connection before the answer ended', 'closed')));
    this.socket.on('close', () => this.fail(new HttpGetError('the connection closed before the answer ended', 'closed')));
  }

  get alive(): boolean {
    return !this.dead;
  }

  send(request: string): Promise<Http1Answer> {
    return new Promise<Http1Answer>((resolve, reject) => {
      this.exchange = { resolve, reject, headLength: 0, head: this.room, got: 0, started: false };
      this.socket.ref();
      this.socket.setTimeout(this.timeoutMs);
      this.socket.write(request);
    });
  }

  /** Where the next read lands: the rest of the body being read, else the head room. */
  private nextBuffer(): Uint8Array {
    const x = this.exchange;
    if (x?.body && x.got < x.body.length) return x.body.subarray(x.got);
    if (x && x.headLength > 0) return x.head.subarray(x.headLength);
    return this.room;
  }

  private onBytes(n: number, buf: Uint8Array): void {
    const x = this.exchange;
    if (!x) {
      // bytes no request asked for: the connection cannot be trusted with the next one
      this.fail(new HttpGetError('the server sent bytes no request asked for', 'protocol'));
      return;
    }
    x.started = true;
    if (x.body) {
      if (buf.buffer !== x.body.buffer || buf.byteOffset !== x.body.byteOffset + x.got) {
        this.fail(new HttpGetError('internal: a read landed outside the body buffer', 'protocol'));
        return;
      }
      x.got += n;
      if (x.got === x.body.length) this.finish(x);
      return;
    }
    // a head: the bytes are in x.head from headLength on (nextBuffer), unless the buffer grew meanwhile
    if (buf.buffer !== x.head.buffer || buf.byteOffset !== x.head.byteOffset + x.headLength) {
      this.fail(new HttpGetError('internal: a read landed outside the head buffer', 'protocol'));
      return;
    }
    const searchFrom = Math.max(0, x.headLength - 3);
    x.headLength += n;
    this.readHead(x, searchFrom);
  }

  private readHead(x: Exchange, searchFrom: number): void {
    for (;;) {
      const end = x.head.subarray(0, x.headLength).indexOf(HEAD_END, searchFrom);
      if (end < 0) {
        if (x.headLength === x.head.length) {
          if (x.head.length >= MAX_HEAD) {
            this.fail(new HttpGetError(`response headers longer than ${MAX_HEAD} bytes`, 'protocol'));
            return;
          }
          const grown = Buffer.allocUnsafe(Math.min(MAX_HEAD, x.head.length * 2));
          x.head.copy(grown, 0, 0, x.headLength);
          x.head = grown;
        }
        return;
      }
      let parsed: { statusCode: number; statusText: string; headers: Record<string, string | string[]>; http10: boolean };
      try {
        parsed = parseHead(x.head.toString('latin1', 0, end));
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      const rest = x.head.subarray(end + HEAD_END.length, x.headLength);
      if (parsed.statusCode >= 100 && parsed.statusCode < 200) {
        // an interim answer (100 Continue, 103 Early Hints): the real one follows
        rest.copy(x.head, 0);
        x.headLength = rest.length;
        searchFrom = 0;
        continue;
      }
      const te = parsed.headers['transfer-encoding'];
      const cl = parsed.headers['content-length'];
      const noBody = parsed.statusCode === 204 || parsed.statusCode === 304;
      if (!noBody && (te !== undefined || cl === undefined || Array.isArray(cl))) {
        this.fail(new NotReadHere(te !== undefined ? `an answer with Transfer-Encoding ${String(te)}` : 'an answer of no single Content-Length'));
        return;
      }
      const lengthText = String(cl ?? '0').trim();
      const length = noBody ? 0 : Number(lengthText);
      if (!/^\d+$/.test(lengthText) || !Number.isSafeInteger(length)) {
        this.fail(new HttpGetError(`bad Content-Length ${String(cl)}`, 'protocol'));
        return;
      }
      if (rest.length > length) {
        this.fail(new HttpGetError(`the server sent ${rest.length - length} bytes past the body's Content-Length ${length}`, 'protocol'));
        return;
      }
      const connection = String(parsed.headers['connection'] ?? '').toLowerCase();
      const keepAlive = parsed.http10 ? connection.includes('keep-alive') : !connection.includes('close');
      x.answer = { statusCode: parsed.statusCode, statusText: parsed.statusText, headers: parsed.headers, keepAlive };
      // page-aligned when large: a layer above may write it with O_DIRECT
      x.body = ioBuffer(length);
      x.got = rest.copy(x.body, 0);
      if (x.got === length) this.finish(x);
      return;
    }
  }

  private finish(x: Exchange): void {
    const answer = x.answer!;
    this.exchange = null;
    this.served++;
    x.resolve({ statusCode: answer.statusCode, statusText: answer.statusText, headers: answer.headers, body: x.body! });
    if (answer.keepAlive && !this.dead) this.owner.release(this.pool, this);
    else this.close();
  }

  /** Fails the GET in progress, if any, and closes the connection: it is not used again. */
  fail(err: Error): void {
    const x = this.exchange;
    this.exchange = null;
    this.close();
    if (x) {
      // a reused connection that closed before any byte of the answer: the server had dropped it
      const stale = err instanceof HttpGetError && err.code !== 'timeout' && !x.started && this.served > 0;
      x.reject(stale ? new StaleConnection(err.message) : err);
    }
  }

  close(): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    this.owner.forget(this.pool, this);
  }

  /** Waiting for its next GET: closed after keepAliveMs, and it keeps no process alive meanwhile. */
  idle(keepAliveMs: number): void {
    this.socket.setTimeout(keepAliveMs);
    this.socket.unref();
  }
}

/** A reused connection closed before answering: the GET is sent again on a new one. */
class StaleConnection extends Error {}

/** Parses a status line and header lines (no final CRLF). */
function parseHead(text: string): { statusCode: number; statusText: string; headers: Record<string, string | string[]>; http10: boolean } {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (!m) throw new HttpGetError(`not an HTTP/1.x status line: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`, 'protocol');
  const headers: Record<string, string | string[]> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpGetError(`a header line without a name: ${JSON.stringify(line.slice(0, 80))}`, 'protocol');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const had = headers[name];
    headers[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return { statusCode: Number(m[2]), statusText: m[3] ?? '', headers, http10: m[1] === '0' };
}

/** Header names and values that could not end a line early or smuggle another. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const PATH = /^\/[\x21-\x7e]*$/;

export class Http1Gets {
  private readonly pools = new Map<string, OriginPool>();
  private closed = false;

  constructor(private readonly options: Http1GetsOptions) {}

  /** Whether this client can GET from the origin ('http://host[:port]'). */
  static serves(origin: string): boolean {
    return origin.startsWith('http://');
  }

  /**
   * GET path (raw, already encoded) from origin with the headers; the answer
   * with its whole body. Throws HttpGetError on transport failure, NotReadHere
   * for an answer it does not read, RangeError for a path or header that
   * cannot be sent as it is.
   */
  async get(origin: string, path: string, headers: Record<string, string>): Promise<Http1Answer> {
    if (this.closed) throw new HttpGetError('the client is closed', 'closed');
    if (!PATH.test(path)) throw new RangeError(`a path that cannot go on a request line: ${JSON.stringify(path.slice(0, 80))}`);
    const pool = this.poolOf(origin);
    let request = `GET ${path} HTTP/1.1\r\nhost: ${pool.hostHeader}\r\n`;
    for (const [name, value] of Object.entries(headers)) {
      if (!TOKEN.test(name) || !VALUE.test(value)) throw new RangeError(`a header that cannot be sent: ${JSON.stringify(name)}`);
      request += `${name}: ${value}\r\n`;
    }
    request += '\r\n';
    for (let tries = 0; ; tries++) {
      const conn = await this.acquire(pool);
      try {
        return await conn.send(request);
      } catch (err) {
        if (err instanceof StaleConnection && tries === 0) continue;
        if (err instanceof StaleConnection) throw new HttpGetError(err.message, 'closed');
        throw err;
      }
    }
  }

  private poolOf(origin: string): OriginPool {
    let pool = this.pools.get(origin);
    if (!pool) {
      const url = new URL(origin);
      if (url.protocol !== 'http:') throw new RangeError(`not a plain HTTP origin: ${origin}`);
      const port = url.port === '' ? 80 : Number(url.port);
      pool = new OriginPool(url.hostname.replace(/^\[(.*)\]$/, '$1'), port, url.host);
      this.pools.set(origin, pool);
    }
    return pool;
  }

  private acquire(pool: OriginPool): Promise<Connection> {
    for (let c = pool.idle.pop(); c; c = pool.idle.pop()) if (c.alive) return Promise.resolve(c);
    if (pool.open < this.options.connections) {
      pool.open++;
      return Promise.resolve(new Connection(pool, this, this.options.timeoutMs));
    }
    return new Promise((resolve, reject) => pool.waiting.push({ resolve, reject }));
  }

  /** A connection done with its GET: to the next waiter, or idle. */
  release(pool: OriginPool, conn: Connection): void {
    if (this.closed) {
      conn.close();
      return;
    }
    const next = pool.waiting.shift();
    if (next) {
      next.resolve(conn);
      return;
    }
    conn.idle(this.options.keepAliveMs);
    pool.idle.push(conn);
  }

  /** A connection closed: its place goes to a waiter, on a new connection. */
  forget(pool: OriginPool, conn: Connection): void {
    const i = pool.idle.indexOf(conn);
    if (i >= 0) pool.idle.splice(i, 1);
    pool.open--;
    const next = pool.waiting.shift();
    if (!next) return;
    if (this.closed) {
      next.reject(new HttpGetError('the client is closed', 'closed'));
      return;
    }
    pool.open++;
    next.resolve(new Connection(pool, this, this.options.timeoutMs));
  }

  close(): void {
    this.closed = true;
    for (const pool of this.pools.values()) {
      for (const w of pool.waiting.splice(0)) w.reject(new HttpGetError('the client is closed', 'closed'));
      for (const c of [...pool.idle]) c.close();
    }
  }
}
