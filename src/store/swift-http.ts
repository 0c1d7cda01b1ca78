// The HTTP plumbing under SwiftStore and the Swift auth modes: one keep-alive
// undici Agent (and Http1Gets for GETs over plain HTTP, the cold read path),
// per-request timeouts, and a retry loop with exponential backoff and full
// jitter. Everything that talks to Swift or Keystone goes through here, so
// nothing can wait forever and every failure after the budget reads the same
// way.

import { createHash, type Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, type Dispatcher } from 'undici';
import { StoreError } from './object-store.js';
import { ioBuffer } from '../native/addons.js';
import { HttpGetError, Http1Gets, NotReadHere } from './http1-gets.js';

export interface RetryPolicy {
  /** Total tries, including the first. */
  attempts: number;
  /** Backoff before try n+1 is random in [0, min(capMs, baseMs * 2^(n-1))]. */
  baseMs: number;
  capMs: number;
}

export const DEFAULT_RETRIES: RetryPolicy = { attempts: 5, baseMs: 100, capMs: 5000 };
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECTIONS = 16;
/** An idle connection is closed after this long. */
const KEEP_ALIVE_MS = 10_000;

export interface SwiftHttpOptions {
  /** Connect, response-headers and body-idle timeout of each request, ms. */
  timeoutMs?: number;
  retries?: Partial<RetryPolicy>;
  /** Connections per origin (GETs over plain HTTP have as many again of their own, Http1Gets). */
  connections?: number;
}

/**
 * Thrown inside an attempt to ask for another one. `giveUp` is what to throw
 * instead of StoreError('unreachable') if the budget runs out (used when the
 * failure is not about reachability, e.g. a checksum mismatch).
 */
export class Transient extends Error {
  readonly retryAfterMs: number | undefined;
  readonly giveUp: StoreError | undefined;
  constructor(message: string, options?: { cause?: unknown; retryAfterMs?: number; giveUp?: StoreError }) {
    super(message, { cause: options?.cause });
    this.name = 'Transient';
    this.retryAfterMs = options?.retryAfterMs;
    this.giveUp = options?.giveUp;
  }
}

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';

/** What the handlers use of an answer's body: undici's stream, or a body read already (ReadBody). */
export interface Body extends AsyncIterable<Buffer> {
  readonly readableEnded: boolean;
  readonly destroyed: boolean;
  destroy(): void;
  dump(options?: { limit: number }): Promise<void>;
}

export interface Response {
  statusCode: number;
  statusText?: string;
  headers: Dispatcher.ResponseData['headers'];
  body: Body;
}

/** A body that arrived whole (Http1Gets): readBody hands out its buffer as it is. */
export class ReadBody implements Body {
  private done = false;
  constructor(readonly data: Buffer) {}
  get readableEnded(): boolean {
    return this.done;
  }
  get destroyed(): boolean {
    return this.done;
  }
  destroy(): void {
    this.done = true;
  }
  async dump(): Promise<void> {
    this.done = true;
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    if (this.done) return;
    this.done = true;
    if (this.data.length > 0) yield this.data;
  }
}

export interface SendOptions {
  method: HttpMethod;
  url: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
}

function describeError(err: unknown, timeoutMs: number): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    // Happy-eyeballs connects fail with one error per address and an empty message.
    const parts = err.errors.map((e) => describeError(e, timeoutMs));
    return [...new Set(parts)].join('; ');
  }
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    switch (code) {
      case 'UND_ERR_HEADERS_TIMEOUT':
        return `no response within ${timeoutMs} ms`;
      case 'UND_ERR_BODY_TIMEOUT':
        return `response body stalled for ${timeoutMs} ms`;
      case 'UND_ERR_CONNECT_TIMEOUT':
        return `connect timed out after ${timeoutMs} ms`;
    }
    if (err.message) return err.message;
    if (typeof code === 'string') return code;
  }
  return String(err);
}

export function header(res: Response, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

export function isRetryableStatus(status: number): boolean {
  // 498 is what Swift's ratelimit middleware answers; 429 the standard one.
  return status >= 500 || status === 429 || status === 498 || status === 408;
}

/** Reads at most a few hundred bytes of an error body for messages, then drops the rest. */
export async function errorText(body: Body): Promise<string> {
  let text = '';
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      if (text.length >= 300) break; // leaving the loop destroys the body
    }
  } catch {
    // The message is best effort.
  }
  text = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
  return text.length > 300 ? `${text.slice(0, 300)}...` : text;
}

/** "503 Service Unavailable: <body>" */
export async function statusLine(res: Response): Promise<string> {
  const text = await errorText(res.body);
  const trans = header(res, 'x-trans-id');
  const base = `${res.statusCode}${res.statusText ? ` ${res.statusText}` : ''}`;
  return `${base}${text ? `: ${text}` : ''}${trans ? ` (${trans})` : ''}`;
}

/** Drains a body we do not need so the connection goes back to the pool. */
export async function drain(body: Body): Promise<void> {
  try {
    await body.dump({ limit: 1 << 20 });
  } catch {
    // Nothing useful to do: the socket is discarded.
  }
}

/**
 * Reads a body into one Buffer, pre-allocated when Content-Length is known
 * (page-aligned from DIRECT_IO_MIN on: a layer above may write it to disk
 * with O_DIRECT, which would otherwise copy it), feeding `hash` on the way
 * so checksumming costs no second pass. Transport failures and short bodies
 * become Transient.
 */
export async function readBody(res: Response, hash?: Hash): Promise<Buffer> {
  if (res.body instanceof ReadBody) {
    if (res.body.readableEnded) throw new Transient('the response body was read already');
    res.body.destroy();
    hash?.update(res.body.data);
    return res.body.data;
  }
  const lenHeader = header(res, 'content-length');
  const length = lenHeader !== undefined && /^\d+$/.test(lenHeader) ? Number(lenHeader) : undefined;
  try {
    if (length !== undefined) {
      const out = ioBuffer(length);
      let off = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        if (off + chunk.length > length) {
          throw new Transient(`response body longer than its Content-Length ${length}`);
        }
        chunk.copy(out, off);
        off += chunk.length;
        hash?.update(chunk);
      }
      if (off !== length) throw new Transient(`response body ended after ${off} of ${length} bytes`);
      return out;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      hash?.update(chunk);
    }
    return Buffer.concat(chunks);
  } catch (err) {
    if (err instanceof Transient || err instanceof StoreError) throw err;
    throw new Transient(`reading response body: ${describeError(err, 0)}`, { cause: err });
  }
}

export function md5Hex(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

function parseRetryAfter(res: Response): number | undefined {
  const v = header(res, 'retry-after');
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v.trim()) * 1000;
}

/** Turns a 5xx/429/498 answer into a Transient after reading its message. */
export async function transientStatus(res: Response): Promise<Transient> {
  return new Transient(await statusLine(res), { retryAfterMs: parseRetryAfter(res) });
}

/** Origin and raw path+query of an absolute URL, without normalising the path. */
export function splitUrl(url: string): { origin: string; path: string } {
  const m = /^(https?:\/\/[^/?#]+)([^#]*)/i.exec(url);
  if (!m) throw new StoreError('invalid', `not an http(s) URL: ${url}`);
  const origin = new URL(m[1]!).origin;
  const rest = m[2]!;
  return { origin, path: rest.startsWith('/') ? rest : `/${rest}` };
}

export class SwiftHttp {
  readonly timeoutMs: number;
  readonly retries: RetryPolicy;
  private readonly agent: Agent;
  /** GETs over plain HTTP: their bodies land where they are returned (everything else goes through undici). */
  private readonly gets: Http1Gets;
  private closed = false;

  constructor(options: SwiftHttpOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.retries = { ...DEFAULT_RETRIES, ...options.retries };
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${this.timeoutMs}`);
    if (!Number.isInteger(this.retries.attempts) || this.retries.attempts < 1) {
      throw new RangeError(`retries.attempts must be an integer >= 1, got ${this.retries.attempts}`);
    }
    this.gets = new Http1Gets({ connections: options.connections ?? DEFAULT_CONNECTIONS, timeoutMs: this.timeoutMs, keepAliveMs: KEEP_ALIVE_MS });
    this.agent = new Agent({
      connections: options.connections ?? DEFAULT_CONNECTIONS,
      keepAliveTimeout: KEEP_ALIVE_MS,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      connect: { timeout: this.timeoutMs },
    });
  }

  /**
   * One HTTP exchange. Connection errors and timeouts become Transient; the
   * caller owns the response body and must consume or drain it.
   */
  async send(req: SendOptions): Promise<Response> {
    if (this.closed) throw new StoreError('other', 'the Swift store is closed');
    // Not new URL(req.url).pathname: the WHATWG parser would collapse '.' and
    // '..' segments (even as %2E) and so change object names.
    const url = splitUrl(req.url);
    if (req.method === 'GET' && req.body === undefined && Http1Gets.serves(url.origin)) {
      try {
        const answer = await this.gets.get(url.origin, url.path, req.headers ?? {});
        return { statusCode: answer.statusCode, statusText: answer.statusText, headers: answer.headers, body: new ReadBody(answer.body) };
      } catch (err) {
        if (this.closed) throw new StoreError('other', 'the Swift store is closed', { cause: err });
        if (err instanceof RangeError) throw new StoreError('invalid', `bad request to ${url.origin}: ${err.message}`, { cause: err });
        if (err instanceof HttpGetError) throw new Transient(err.message, { cause: err });
        if (!(err instanceof NotReadHere)) throw err;
        // an answer of no stated length: asked again through undici, which reads any
      }
    }
    try {
      return await this.agent.request({
        origin: url.origin,
        path: url.path,
        method: req.method,
        headers: req.headers,
        body: req.body ?? null,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
    } catch (err) {
      if (this.closed) throw new StoreError('other', 'the Swift store is closed', { cause: err });
      const code = err instanceof Error ? (err as Error & { code?: unknown }).code : undefined;
      if (code === 'UND_ERR_INVALID_ARG') {
        throw new StoreError('invalid', `bad request to ${url.origin}: ${describeError(err, this.timeoutMs)}`, { cause: err });
      }
      throw new Transient(describeError(err, this.timeoutMs), { cause: err });
    }
  }

  /**
   * Runs `attempt` until it returns, throws something other than Transient,
   * or the budget is spent; then StoreError('unreachable') naming `target`.
   */
  async withRetries<T>(target: string, attempt: (n: number) => Promise<T>): Promise<T> {
    const { attempts, baseMs, capMs } = this.retries;
    let last: Transient | undefined;
    for (let n = 1; n <= attempts; n++) {
      try {
        return await attempt(n);
      } catch (err) {
        if (!(err instanceof Transient)) throw err;
        last = err;
      }
      if (n < attempts) {
        // Full jitter spreads the retries of many concurrent requests.
        let delay = Math.random() * Math.min(capMs, baseMs * 2 ** (n - 1));
        if (last.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(capMs, last.retryAfterMs));
        await sleep(delay);
        if (this.closed) throw new StoreError('other', 'the Swift store is closed');
      }
    }
    if (last?.giveUp) throw last.giveUp;
    throw new StoreError(
      'unreachable',
      `${target} unreachable after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${last?.message ?? 'unknown error'}`,
      { cause: last },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.gets.close();
    await this.agent.close();
  }
}
