// ObjectStore on OpenStack Swift over undici. Auth is pluggable (swift-auth),
// timeouts and retries live in swift-http; this file maps the ObjectStore
// operations onto Swift's API and its status codes onto StoreError kinds.

import { createHash } from 'node:crypto';
import {
  StoreError,
  rangesOf,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type ReadRange,
  type StoreConsistency,
} from './object-store.js';
import { ByterangesError, byterangesBoundary, parseByteranges, parseContentRange, partsCover, type BytePart } from './byteranges.js';
import { checkContainerName, checkObjectName, checkRange, isHexMd5 } from './names.js';
import { md5OnPool } from './md5.js';
import { KeystoneAuth, TempAuth, type SwiftAuth, type SwiftCredentials } from './swift-auth.js';
import {
  SwiftHttp,
  Transient,
  drain,
  header,
  isRetryableStatus,
  md5Hex,
  readBody,
  statusLine,
  transientStatus,
  type HttpMethod,
  type Response,
  type RetryPolicy,
} from './swift-http.js';

export { KeystoneAuth, TempAuth, type SwiftAuth, type SwiftCredentials } from './swift-auth.js';
export type { RetryPolicy } from './swift-http.js';

export interface SwiftStoreOptions {
  auth: SwiftAuth;
  /**
   * Connect, response-headers and body-idle timeout per request, ms (default
   * 30000). undici's timers tick about once a second, so short values round up.
   */
  timeoutMs?: number;
  /** Retry budget for transient failures (default 5 attempts, base 100 ms, cap 5 s). */
  retries?: Partial<RetryPolicy>;
  /** Connections per origin (default 16). */
  connections?: number;
  /** Entries per listing request (default 10000, Swift's maximum). */
  listPageSize?: number;
}

/** A 401 inside an attempt: leaves the retry loop so the caller can re-authenticate. */
class Unauthorized extends Error {
  override readonly name = 'Unauthorized';
}

/** How many times a whole-object GET whose MD5 does not match is retried. */
const CHECKSUM_RETRIES = 2;
/** Bodies at least this large are hashed on libuv's pool once received; smaller ones while they arrive. */
const MD5_OFFLOAD_MIN = 1024 * 1024;

function encodeSegment(segment: string): string {
  // '.' and '..' segments would be collapsed by anything that normalises paths.
  if (segment === '.' || segment === '..') return segment.replace(/\./g, '%2E');
  return encodeURIComponent(segment);
}

function objectPath(container: string, name: string): string {
  return `/${encodeURIComponent(container)}/${name.split('/').map(encodeSegment).join('/')}`;
}

/** Swift quotes the ETag of large-object manifests (and may in future of all). */
function unquote(etag: string | undefined): string | undefined {
  return etag?.replace(/^"(.*)"$/, '$1').toLowerCase();
}

/** Ranges as messages show them: '[0, 4096), [8388608, 8396800)'. */
function rangeText(ranges: readonly ByteRange[]): string {
  return ranges.length === 0 ? 'the range' : `range ${ranges.map((r) => `[${r.start}, ${r.end})`).join(', ')}`;
}

function contentLength(res: Response): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

interface ListEntry {
  name?: unknown;
  bytes?: unknown;
  hash?: unknown;
  subdir?: unknown;
}

export class SwiftStore implements ObjectStore {
  /**
   * Not atomic. Swift's object servers check If-None-Match when a PUT
   * arrives, before its body does, and keep whichever object has the later
   * timestamp: two conditional PUTs of one name in flight at once can both be
   * answered 201, the later overwriting the earlier. Each replica checks on
   * its own, too, so a replica that missed the first object (a handoff during
   * a failure) can accept a second. And a retried PUT whose first try landed
   * counts as success when the object's ETag is its own (see put), which two
   * writers of identical bytes cannot tell apart. Callers that must know they
   * won read back (lease.ts, VolumeCatalog).
   */
  readonly consistency: StoreConsistency = Object.freeze({ atomicConditionalPut: false });
  private readonly auth: SwiftAuth;
  private readonly http: SwiftHttp;
  private readonly pageSize: number;
  private creds: SwiftCredentials | null = null;
  private authing: Promise<SwiftCredentials> | null = null;

  constructor(options: SwiftStoreOptions) {
    this.auth = options.auth;
    this.http = new SwiftHttp({
      timeoutMs: options.timeoutMs,
      retries: options.retries,
      connections: options.connections,
    });
    this.pageSize = options.listPageSize ?? 10_000;
    if (!Number.isInteger(this.pageSize) || this.pageSize < 1 || this.pageSize > 10_000) {
      throw new RangeError(`listPageSize must be an integer in [1, 10000], got ${this.pageSize}`);
    }
  }

  get description(): string {
    return `swift ${this.creds?.storageUrl ?? this.auth.authUrl}`;
  }

  // ---- auth ----------------------------------------------------------------

  private credentials(): Promise<SwiftCredentials> {
    if (this.creds) return Promise.resolve(this.creds);
    // One authentication at a time: concurrent requests share it.
    this.authing ??= this.auth
      .authenticate(this.http)
      .then((c) => {
        this.creds = c;
        return c;
      })
      .finally(() => {
        this.authing = null;
      });
    return this.authing;
  }

  /** Runs fn with credentials; on 401 re-authenticates once and runs it again. */
  private async authed<T>(fn: (c: SwiftCredentials) => Promise<T>): Promise<T> {
    let creds = await this.credentials();
    try {
      return await fn(creds);
    } catch (err) {
      if (!(err instanceof Unauthorized)) throw err;
      // Tokens expire and do not survive a proxy restart; only drop the token
      // if no concurrent request has already replaced it.
      if (this.creds === creds) this.creds = null;
    }
    creds = await this.credentials();
    try {
      return await fn(creds);
    } catch (err) {
      if (!(err instanceof Unauthorized)) throw err;
      if (this.creds === creds) this.creds = null;
      throw new StoreError(
        'auth',
        `Swift at ${creds.storageUrl} rejected a fresh token for user ${this.auth.user} from ${this.auth.authUrl}: ${err.message}`,
        { cause: err },
      );
    }
  }

  /**
   * One logical request: auth, retries on transport errors / 5xx / 429 / 498,
   * re-auth on 401. `handle` sees every other status and must consume the body.
   */
  private exec<T>(
    method: HttpMethod,
    path: string,
    opts: { query?: string; headers?: Record<string, string>; body?: Uint8Array },
    handle: (res: Response, attempt: number) => Promise<T>,
  ): Promise<T> {
    return this.authed((creds) =>
      this.http.withRetries(`Swift at ${creds.storageUrl}`, async (attempt) => {
        const res = await this.http.send({
          method,
          url: `${creds.storageUrl}${path}${opts.query ?? ''}`,
          headers: { 'x-auth-token': creds.token, ...opts.headers },
          body: opts.body,
        });
        try {
          if (res.statusCode === 401) throw new Unauthorized(await statusLine(res));
          if (isRetryableStatus(res.statusCode)) throw await transientStatus(res);
          return await handle(res, attempt);
        } finally {
          // A handler that threw before reading leaves the body open; free the socket.
          if (!res.body.readableEnded && !res.body.destroyed) res.body.destroy();
        }
      }),
    );
  }

  private async unexpected(res: Response, what: string): Promise<StoreError> {
    return new StoreError('other', `${what}: unexpected answer ${await statusLine(res)}`);
  }

  // ---- containers ------------------------------------------------------------

  async createContainer(container: string): Promise<void> {
    checkContainerName(container);
    const path = `/${encodeURIComponent(container)}`;
    await this.exec('PUT', path, {}, async (res) => {
      if (res.statusCode === 201 || res.statusCode === 202 || res.statusCode === 204) {
        await drain(res.body);
        return;
      }
      if (res.statusCode === 403) {
        throw new StoreError('auth', `creating container ${container}: ${await statusLine(res)}`);
      }
      throw await this.unexpected(res, `creating container ${container}`);
    });
  }

  async deleteContainer(container: string): Promise<void> {
    checkContainerName(container);
    const path = `/${encodeURIComponent(container)}`;
    await this.exec('DELETE', path, {}, async (res) => {
      if (res.statusCode === 204 || res.statusCode === 200 || res.statusCode === 404) {
        await drain(res.body);
        return;
      }
      if (res.statusCode === 409) {
        throw new StoreError('conflict', `container ${container} is not empty: ${await statusLine(res)}`);
      }
      throw await this.unexpected(res, `deleting container ${container}`);
    });
  }

  async listContainers(prefix: string): Promise<string[]> {
    const names: string[] = [];
    for await (const entry of this.listing('', prefix, `listing containers`)) {
      if (typeof entry.name === 'string') names.push(entry.name);
    }
    return names;
  }

  /** Pages through a JSON listing (account when path is '', else a container). */
  private async *listing(path: string, prefix: string, what: string): AsyncGenerator<ListEntry> {
    let marker = '';
    for (;;) {
      const query =
        `?format=json&limit=${this.pageSize}` +
        `&prefix=${encodeURIComponent(prefix)}&marker=${encodeURIComponent(marker)}`;
      const page = await this.exec('GET', path, { query }, async (res): Promise<ListEntry[]> => {
        if (res.statusCode === 204) {
          await drain(res.body);
          return [];
        }
        if (res.statusCode === 404) {
          await drain(res.body);
          // An account that was never written to may not exist yet: it has no containers.
          if (path === '') return [];
          throw new StoreError('not-found', `${what}: container does not exist`);
        }
        if (res.statusCode !== 200) throw await this.unexpected(res, what);
        const text = (await readBody(res)).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          throw new Transient(`${what}: listing is not valid JSON`, {
            giveUp: new StoreError('other', `${what}: listing is not valid JSON`),
          });
        }
        if (!Array.isArray(parsed)) throw new StoreError('other', `${what}: listing is not a JSON array`);
        return parsed as ListEntry[];
      });
      for (const entry of page) yield entry;
      if (page.length < this.pageSize) return;
      const last = page[page.length - 1];
      const lastName = typeof last?.name === 'string' ? last.name : typeof last?.subdir === 'string' ? last.subdir : undefined;
      if (lastName === undefined) throw new StoreError('other', `${what}: listing entry without a name`);
      marker = lastName;
    }
  }

  // ---- objects ---------------------------------------------------------------

  async put(container: string, name: string, data: Uint8Array, options: PutOptions = {}): Promise<{ etag: string }> {
    checkContainerName(container);
    checkObjectName(name);
    const given = options.md5;
    if (typeof given === 'string' && !isHexMd5(given)) {
      throw new StoreError('invalid', `md5 ${JSON.stringify(given)} is not a hex MD5`);
    }
    // A hash still being computed is checked against Swift's ETag afterwards; otherwise Swift checks it.
    const later = typeof given === 'object' ? given.then((m) => m.toLowerCase()) : undefined;
    later?.catch(() => undefined); // awaited below; a PUT that fails first must not leave it unobserved
    const expected = async (): Promise<string> => md5 ?? (await later!);
    const md5 = typeof given === 'string' ? given.toLowerCase() : given === undefined ? md5Hex(data) : undefined;
    const what = `${container}/${name}`;
    const headers: Record<string, string> = {
      'content-type': options.contentType ?? 'application/octet-stream',
    };
    if (md5 !== undefined) headers.etag = md5;
    if (options.ifNoneMatch) headers['if-none-match'] = '*';
    return this.exec('PUT', objectPath(container, name), { headers, body: data }, async (res, attempt) => {
      switch (res.statusCode) {
        case 201: {
          await drain(res.body);
          const etag = unquote(header(res, 'etag'));
          const want = await expected();
          if (etag !== want) {
            throw new StoreError('checksum', `Swift stored ${what} with ETag ${etag ?? '(none)'}, expected ${want}`);
          }
          return { etag };
        }
        case 422:
          throw new StoreError('checksum', `Swift refused ${what}: data does not match MD5 ${md5} (${await statusLine(res)})`);
        case 412: {
          await drain(res.body);
          // A retry of a conditional PUT whose first try did land finds its own
          // object: that is success, not a conflict.
          if (attempt > 1) {
            const info = await this.head(container, name);
            const want = await expected();
            if (info && info.etag === want) return { etag: want };
          }
          throw new StoreError('conflict', `object ${what} already exists`);
        }
        case 404:
          await drain(res.body);
          throw new StoreError('not-found', `container ${container} does not exist (putting ${name})`);
        case 403:
          throw new StoreError('auth', `putting ${what}: ${await statusLine(res)}`);
        default:
          throw await this.unexpected(res, `putting ${what}`);
      }
    });
  }

  async get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    checkContainerName(container);
    checkObjectName(name);
    const what = `${container}/${name}`;
    if (range) {
      checkRange(range);
      if ('start' in range && range.start === range.end) {
        // HTTP cannot ask for zero bytes; still report a missing object or a bad range.
        const info = await this.head(container, name);
        if (!info) throw new StoreError('not-found', `object ${what} does not exist`);
        if (range.start > info.size) {
          throw new StoreError('invalid', `range [${range.start}, ${range.end}) is past the end of ${what} (${info.size} bytes)`);
        }
        return Buffer.alloc(0);
      }
    }
    const ranges = range ? rangesOf(range) : undefined;
    // several ranges: one GET for all of them (RFC 7233 multi-range; Swift answers multipart/byteranges)
    const headers: Record<string, string> = ranges ? { range: `bytes=${ranges.map((r) => `${r.start}-${r.end - 1}`).join(',')}` } : {};
    let badChecksums = 0;
    return this.exec('GET', objectPath(container, name), { headers }, async (res) => {
      switch (res.statusCode) {
        case 200:
          return this.readWhole(res, what, ranges, () => ++badChecksums <= CHECKSUM_RETRIES);
        case 206:
          if (!ranges) throw await this.unexpected(res, `getting ${what}`);
          return ranges.length === 1 ? this.readRange(res, what, ranges[0]!) : this.readRanges(res, what, ranges);
        case 404:
          await drain(res.body);
          throw new StoreError('not-found', `object ${what} does not exist`);
        case 416: {
          await drain(res.body);
          const size = /\/(\d+)$/.exec(header(res, 'content-range') ?? '')?.[1];
          throw new StoreError('invalid', `${rangeText(ranges ?? [])} is past the end of ${what}${size ? ` (${size} bytes)` : ''}`);
        }
        case 403:
          throw new StoreError('auth', `getting ${what}: ${await statusLine(res)}`);
        default:
          throw await this.unexpected(res, `getting ${what}`);
      }
    });
  }

  /** A 200: the whole object, checked against its ETag (sliced if ranges were asked for). */
  private async readWhole(res: Response, what: string, ranges: readonly ByteRange[] | undefined, mayRetry: () => boolean): Promise<Buffer> {
    // Manifests of large objects carry a quoted ETag that is not the MD5 of the body.
    const manifest = header(res, 'x-static-large-object') === 'True' || header(res, 'x-object-manifest') !== undefined;
    const etag = manifest ? undefined : unquote(header(res, 'etag'));
    // A large body is hashed on the pool once received (the event loop is the
    // daemon's bottleneck on cold reads); a small one while it arrives.
    const offload = etag !== undefined && (contentLength(res) ?? 0) >= MD5_OFFLOAD_MIN;
    const hash = etag && !offload ? createHash('md5') : undefined;
    const data = await readBody(res, hash);
    let actual: string | undefined;
    if (offload) {
      try {
        actual = await md5OnPool(data);
      } catch (err) {
        throw new Transient(`hashing ${what}: ${(err as Error).message}`, { cause: err });
      }
    } else if (hash) {
      actual = hash.digest('hex');
    }
    if (etag && actual !== undefined) {
      if (actual !== etag) {
        const err = new StoreError('checksum', `${what}: body MD5 ${actual} does not match ETag ${etag}`);
        if (mayRetry()) throw new Transient(err.message, { giveUp: err });
        throw err;
      }
    }
    if (!ranges) return data;
    // A server may ignore Range and send everything: cut out what was asked for.
    const past = ranges.find((r) => r.end > data.length);
    if (past) throw new StoreError('invalid', `${rangeText([past])} is past the end of ${what} (${data.length} bytes)`);
    return partsCover([{ start: 0, end: data.length, total: data.length, data }], ranges)!;
  }

  /**
   * A 206 to a request for several ranges: a multipart/byteranges body, or
   * one part when the server coalesced them (or could satisfy only one);
   * exactly the bytes asked for, or a retry.
   */
  private async readRanges(res: Response, what: string, ranges: readonly ByteRange[]): Promise<Buffer> {
    const bad = (message: string): Transient => {
      const err = new StoreError('checksum', `${what}: ${message}`);
      return new Transient(err.message, { giveUp: err });
    };
    let parts: BytePart[];
    try {
      const body = await readBody(res); // first: a body left unread would hold its connection
      const boundary = byterangesBoundary(header(res, 'content-type'));
      const single = boundary === null ? parseContentRange(header(res, 'content-range')) : null;
      if (boundary !== null) parts = parseByteranges(body, boundary);
      else if (single && body.length === single.end - single.start) parts = [{ ...single, data: body }];
      else throw new ByterangesError(`a 206 answer of ${body.length} bytes whose Content-Range (${header(res, 'content-range') ?? 'none'}) does not describe them`);
    } catch (err) {
      if (!(err instanceof ByterangesError)) throw err;
      throw bad(`asked for ${rangeText(ranges)}: ${err.message}`);
    }
    const total = parts.find((p) => p.total !== undefined)?.total;
    const past = total === undefined ? undefined : ranges.find((r) => r.end > total);
    if (past) throw new StoreError('invalid', `${rangeText([past])} is past the end of ${what} (${total} bytes)`);
    const out = partsCover(parts, ranges);
    if (!out) throw bad(`asked for ${rangeText(ranges)}, got ${rangeText(parts)}`);
    return out;
  }

  /** A 206: exactly the asked bytes, or a retry. */
  private async readRange(res: Response, what: string, range: ByteRange): Promise<Buffer> {
    const want = range.end - range.start;
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
    if (m) {
      const total = m[3] === '*' ? undefined : Number(m[3]);
      if (total !== undefined && total < range.end) {
        await drain(res.body);
        throw new StoreError('invalid', `range [${range.start}, ${range.end}) is past the end of ${what} (${total} bytes)`);
      }
      if (Number(m[1]) !== range.start || Number(m[2]) !== range.end - 1) {
        await drain(res.body);
        const err = new StoreError('checksum', `${what}: asked for bytes ${range.start}-${range.end - 1}, got ${m[0]}`);
        throw new Transient(err.message, { giveUp: err });
      }
    }
    const len = contentLength(res);
    if (len !== undefined && len !== want) {
      await drain(res.body);
      const err = new StoreError('checksum', `${what}: asked for ${want} bytes, Content-Length is ${len}`);
      throw new Transient(err.message, { giveUp: err });
    }
    const data = await readBody(res);
    if (data.length !== want) {
      const err = new StoreError('checksum', `${what}: asked for ${want} bytes, got ${data.length}`);
      throw new Transient(err.message, { giveUp: err });
    }
    return data;
  }

  async head(container: string, name: string): Promise<ObjectInfo | null> {
    checkContainerName(container);
    checkObjectName(name);
    const what = `${container}/${name}`;
    return this.exec('HEAD', objectPath(container, name), {}, async (res) => {
      await drain(res.body);
      if (res.statusCode === 404) return null;
      if (res.statusCode === 200 || res.statusCode === 204) {
        const size = contentLength(res);
        const etag = unquote(header(res, 'etag'));
        if (size === undefined || etag === undefined) {
          throw new StoreError('other', `HEAD ${what}: answer without Content-Length or ETag`);
        }
        return { name, size, etag };
      }
      if (res.statusCode === 403) throw new StoreError('auth', `HEAD ${what}: 403 Forbidden`);
      throw new StoreError('other', `HEAD ${what}: unexpected answer ${res.statusCode}`);
    });
  }

  async delete(container: string, name: string): Promise<void> {
    checkContainerName(container);
    checkObjectName(name);
    const what = `${container}/${name}`;
    await this.exec('DELETE', objectPath(container, name), {}, async (res) => {
      if (res.statusCode === 204 || res.statusCode === 200 || res.statusCode === 404) {
        await drain(res.body);
        return;
      }
      if (res.statusCode === 403) throw new StoreError('auth', `deleting ${what}: ${await statusLine(res)}`);
      throw await this.unexpected(res, `deleting ${what}`);
    });
  }

  async *list(container: string, prefix = ''): AsyncIterable<ObjectInfo> {
    checkContainerName(container);
    const what = `listing container ${container}`;
    for await (const entry of this.listing(`/${encodeURIComponent(container)}`, prefix, what)) {
      if (typeof entry.name !== 'string') continue; // "subdir" entries only appear with a delimiter
      if (typeof entry.bytes !== 'number' || typeof entry.hash !== 'string') {
        throw new StoreError('other', `${what}: entry ${entry.name} without bytes or hash`);
      }
      yield { name: entry.name, size: entry.bytes, etag: unquote(entry.hash) ?? entry.hash };
    }
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}

/**
 * A SwiftStore configured from the environment with python-swiftclient's
 * variables: ST_AUTH/ST_USER/ST_KEY (v1) take precedence over
 * OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME (Keystone v3, with
 * OS_USER_DOMAIN_NAME/OS_PROJECT_DOMAIN_NAME defaulting to "Default",
 * OS_REGION_NAME and OS_INTERFACE optional). Returns null when neither set is
 * present; throws naming the missing variable when one is incomplete.
 */
export function swiftStoreFromEnv(
  env: NodeJS.ProcessEnv,
  options: Omit<SwiftStoreOptions, 'auth'> = {},
): SwiftStore | null {
  const get = (k: string): string | undefined => {
    const v = env[k];
    return v === undefined || v === '' ? undefined : v;
  };
  const need = (set: string, keys: string[]): void => {
    for (const k of keys) {
      if (get(k) === undefined) throw new Error(`Swift credentials in ${set} are incomplete: ${k} is not set`);
    }
  };

  const v1 = ['ST_AUTH', 'ST_USER', 'ST_KEY'];
  if (v1.some((k) => get(k) !== undefined)) {
    need('ST_AUTH/ST_USER/ST_KEY', v1);
    const auth = new TempAuth({ authUrl: get('ST_AUTH')!, user: get('ST_USER')!, key: get('ST_KEY')! });
    return new SwiftStore({ ...options, auth });
  }

  const v3 = ['OS_AUTH_URL', 'OS_USERNAME', 'OS_PASSWORD'];
  const projectName = get('OS_PROJECT_NAME') ?? get('OS_TENANT_NAME');
  const projectId = get('OS_PROJECT_ID') ?? get('OS_TENANT_ID');
  if (v3.some((k) => get(k) !== undefined)) {
    need('OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME', v3);
    if (!projectName && !projectId) {
      throw new Error('Swift credentials in OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME are incomplete: OS_PROJECT_NAME is not set');
    }
    const auth = new KeystoneAuth({
      authUrl: get('OS_AUTH_URL')!,
      username: get('OS_USERNAME')!,
      password: get('OS_PASSWORD')!,
      projectName,
      projectId,
      userDomainName: get('OS_USER_DOMAIN_NAME'),
      userDomainId: get('OS_USER_DOMAIN_ID'),
      projectDomainName: get('OS_PROJECT_DOMAIN_NAME'),
      projectDomainId: get('OS_PROJECT_DOMAIN_ID'),
      region: get('OS_REGION_NAME'),
      interface: get('OS_INTERFACE') ?? get('OS_ENDPOINT_TYPE'),
    });
    return new SwiftStore({ ...options, auth });
  }
  return null;
}
