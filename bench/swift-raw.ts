// A minimal Swift client (tempauth v1 over undici), the reference for what
// Swift itself delivers: no retries, no checksums, no copies beyond landing
// the body in one buffer. Everything swiftvol does on top shows as the ratio.
import { Agent, request } from 'undici';
import { Http1Gets } from '../src/store/http1-gets.js';

export class RawSwift {
  /** swiftvol's own GET path (Http1Gets: bodies read straight into their buffer), for a note beside the undici figures. */
  private readonly lean: Http1Gets;

  private constructor(
    private readonly agent: Agent,
    readonly storageUrl: string,
    private readonly token: string,
    connections: number,
  ) {
    this.lean = new Http1Gets({ connections, timeoutMs: 60_000, keepAliveMs: 30_000 });
  }

  static async connect(authUrl: string, user: string, key: string, connections = 32): Promise<RawSwift> {
    const agent = new Agent({ connections, pipelining: 1, keepAliveTimeout: 30_000 });
    const res = await request(authUrl, { dispatcher: agent, headers: { 'x-auth-user': user, 'x-auth-key': key } });
    await res.body.dump();
    const url = res.headers['x-storage-url'];
    const token = res.headers['x-auth-token'];
    if (res.statusCode !== 200 || typeof url !== 'string' || typeof token !== 'string') {
      await agent.close();
      throw new Error(`Swift auth at ${authUrl} answered ${res.statusCode}`);
    }
    return new RawSwift(agent, url, token, connections);
  }

  private url(container: string, name?: string): string {
    const c = encodeURIComponent(container);
    return name === undefined ? `${this.storageUrl}/${c}` : `${this.storageUrl}/${c}/${name.split('/').map(encodeURIComponent).join('/')}`;
  }

  async createContainer(container: string): Promise<void> {
    const res = await request(this.url(container), { method: 'PUT', dispatcher: this.agent, headers: { 'x-auth-token': this.token } });
    await res.body.dump();
    if (res.statusCode !== 201 && res.statusCode !== 202) throw new Error(`PUT container ${container}: ${res.statusCode}`);
  }

  async put(container: string, name: string, body: Buffer): Promise<void> {
    const res = await request(this.url(container, name), {
      method: 'PUT',
      dispatcher: this.agent,
      headers: { 'x-auth-token': this.token, 'content-length': String(body.length), 'content-type': 'application/octet-stream' },
      body,
    });
    await res.body.dump();
    if (res.statusCode !== 201) throw new Error(`PUT ${container}/${name}: ${res.statusCode}`);
  }

  /** GETs an object or a [start, end) range of it into one buffer; returns its length. */
  async get(container: string, name: string, range?: { start: number; end: number }): Promise<number> {
    const headers: Record<string, string> = { 'x-auth-token': this.token };
    if (range) headers.range = `bytes=${range.start}-${range.end - 1}`;
    const res = await request(this.url(container, name), { dispatcher: this.agent, headers });
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      await res.body.dump();
      throw new Error(`GET ${container}/${name}: ${res.statusCode}`);
    }
    const length = Number(res.headers['content-length']);
    const out = Buffer.allocUnsafe(length);
    let off = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      chunk.copy(out, off);
      off += chunk.length;
    }
    if (off !== length) throw new Error(`GET ${container}/${name}: ${off} of ${length} bytes`);
    return off;
  }

  /** As get, through Http1Gets (plain HTTP only). */
  async getLean(container: string, name: string, range?: { start: number; end: number }): Promise<number> {
    const u = new URL(this.url(container, name));
    const headers: Record<string, string> = { 'x-auth-token': this.token };
    if (range) headers.range = `bytes=${range.start}-${range.end - 1}`;
    const res = await this.lean.get(u.origin, u.pathname, headers);
    if (res.statusCode !== (range ? 206 : 200)) throw new Error(`GET ${container}/${name}: ${res.statusCode}`);
    return res.body.length;
  }

  async getJson<T>(container: string, name: string): Promise<T> {
    const res = await request(this.url(container, name), { dispatcher: this.agent, headers: { 'x-auth-token': this.token } });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`GET ${container}/${name}: ${res.statusCode}`);
    }
    return (await res.body.json()) as T;
  }

  /** Objects in a container with a prefix (one page of up to 10000 is plenty here). */
  async list(container: string, prefix: string): Promise<Array<{ name: string; bytes: number }>> {
    const res = await request(`${this.url(container)}?format=json&prefix=${encodeURIComponent(prefix)}`, {
      dispatcher: this.agent,
      headers: { 'x-auth-token': this.token },
    });
    if (res.statusCode === 204) {
      await res.body.dump();
      return [];
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`GET ${container}?prefix=${prefix}: ${res.statusCode}`);
    }
    return ((await res.body.json()) as Array<{ name: string; bytes: number }>).map((o) => ({ name: o.name, bytes: o.bytes }));
  }

  close(): Promise<void> {
    this.lean.close();
    return this.agent.close();
  }
}

/** Runs fn over items with at most `concurrency` in flight. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** Percentile (0..100) of samples, nearest-rank. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}
