// SwiftStore against a real one-node Swift (scripts/swift-dev via
// test/fixtures/swift.ts), plus a fake Keystone in front of it and a few
// small fake HTTP servers for answers a healthy Swift never gives.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { StoreError } from '../src/store/object-store.js';
import type { SwiftHttp } from '../src/store/swift-http.js';
import {
  KeystoneAuth,
  SwiftStore,
  TempAuth,
  swiftStoreFromEnv,
  type SwiftAuth,
  type SwiftCredentials,
} from '../src/store/swift-store.js';
import { freePort, startSwift, swiftDevScript, type DevSwift } from './fixtures/swift.js';
import { collect, rejectsKind, storeContract } from './fixtures/store-contract.js';

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

// One Swift for the whole file, started on first use.
let swiftP: Promise<DevSwift> | undefined;
const swift = (): Promise<DevSwift> => (swiftP ??= startSwift());
after(async () => {
  if (swiftP) await (await swiftP).stop();
});

const tempAuth = async (): Promise<TempAuth> => {
  const s = await swift();
  return new TempAuth({ authUrl: s.authUrl, user: s.user, key: s.key });
};

const FAST = { attempts: 3, baseMs: 10, capMs: 50 };

/** Wraps an auth; hands out a bad token the first `bad` times. */
class FlakyAuth implements SwiftAuth {
  calls = 0;
  constructor(
    private readonly inner: SwiftAuth,
    private bad: number,
  ) {}
  get authUrl(): string {
    return this.inner.authUrl;
  }
  get user(): string {
    return this.inner.user;
  }
  async authenticate(http: SwiftHttp): Promise<SwiftCredentials> {
    this.calls++;
    const c = await this.inner.authenticate(http);
    if (this.bad > 0) {
      this.bad--;
      return { ...c, token: 'AUTH_tk00000000000000000000000000000bad' };
    }
    return c;
  }
}

async function listen(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

storeContract('SwiftStore', {
  pageSize: 3,
  atomicIfNoneMatch: false,
  async open() {
    return new SwiftStore({ auth: await tempAuth(), listPageSize: 3 });
  },
});

describe('SwiftStore auth', () => {
  it('names the auth URL before authenticating and the storage URL after', async () => {
    const s = await swift();
    const store = new SwiftStore({ auth: await tempAuth() });
    try {
      assert.equal(store.description, `swift ${s.authUrl}`);
      await store.listContainers('');
      assert.match(store.description, new RegExp(`^swift http://127\\.0\\.0\\.1:${s.port}/v1/AUTH_test$`));
    } finally {
      await store.close();
    }
  });

  it('re-authenticates once on 401 and retries the request', async () => {
    const auth = new FlakyAuth(await tempAuth(), 1);
    const store = new SwiftStore({ auth });
    try {
      await store.createContainer('reauth');
      assert.equal(auth.calls, 2);
      await store.put('reauth', 'o', Buffer.from('x'));
      assert.equal((await store.get('reauth', 'o')).toString(), 'x');
      assert.equal(auth.calls, 2, 'a good token is kept');
    } finally {
      await store.close();
    }
  });

  it('shares one re-authentication between concurrent requests', async () => {
    const auth = new FlakyAuth(await tempAuth(), 1);
    const store = new SwiftStore({ auth });
    try {
      await store.createContainer('reauth-many');
      const before = auth.calls;
      await Promise.all(Array.from({ length: 10 }, (_, i) => store.put('reauth-many', `o${i}`, Buffer.from('x'))));
      assert.equal(auth.calls, before);
    } finally {
      await store.close();
    }
  });

  it('gives up with a clear auth error when a fresh token is refused', async () => {
    const s = await swift();
    const auth = new FlakyAuth(await tempAuth(), 100);
    const store = new SwiftStore({ auth });
    try {
      const err = await rejectsKind(store.head('c', 'o'), 'auth');
      assert.match(err.message, /rejected a fresh token/);
      assert.ok(err.message.includes(s.authUrl), err.message);
      assert.ok(err.message.includes(s.user), err.message);
      assert.equal(auth.calls, 2);
    } finally {
      await store.close();
    }
  });

  it('reports wrong credentials as auth, naming user and URL', async () => {
    const s = await swift();
    const store = new SwiftStore({ auth: new TempAuth({ authUrl: s.authUrl, user: s.user, key: 'wrong' }) });
    try {
      const err = await rejectsKind(store.listContainers(''), 'auth');
      assert.equal(err.message.startsWith(`authentication failed for user ${s.user} at ${s.authUrl}: 401`), true, err.message);
    } finally {
      await store.close();
    }
  });

  it('survives a proxy restart, which forgets every token', async () => {
    const s = await swift();
    const store = new SwiftStore({ auth: await tempAuth(), retries: { attempts: 8, baseMs: 50, capMs: 500 } });
    const run = promisify(execFile);
    try {
      await store.createContainer('restart');
      await store.put('restart', 'before', Buffer.from('b'));
      await run(swiftDevScript(), ['stop', s.dir]);
      await run(swiftDevScript(), ['start', s.dir, String(s.port)]);
      // The pooled connection is dead and the token unknown: both must be handled.
      assert.equal((await store.get('restart', 'before')).toString(), 'b');
      await store.put('restart', 'after', Buffer.from('a'));
      assert.deepEqual((await collect(store.list('restart'))).map((o) => o.name), ['after', 'before']);
    } finally {
      await store.close();
    }
  });
});

describe('SwiftStore failures', () => {
  it('reports a port with nothing listening as unreachable, quickly', async () => {
    const port = await freePort();
    const authUrl = `http://127.0.0.1:${port}/auth/v1.0`;
    const store = new SwiftStore({ auth: new TempAuth({ authUrl, user: 'u', key: 'k' }), retries: FAST });
    const t = performance.now();
    try {
      const err = await rejectsKind(store.get('c', 'o'), 'unreachable');
      assert.ok(err.message.includes(authUrl), err.message);
      assert.match(err.message, /after 3 attempts: .*ECONNREFUSED/);
      assert.ok(performance.now() - t < 2000, `took ${performance.now() - t} ms`);
    } finally {
      await store.close();
    }
  });

  it('times out a server that accepts and never answers', async () => {
    const sockets = new Set<Socket>();
    const server = createTcpServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
    });
    const port = await listen(server);
    const store = new SwiftStore({
      auth: new TempAuth({ authUrl: `http://127.0.0.1:${port}/auth/v1.0`, user: 'u', key: 'k' }),
      timeoutMs: 200,
      retries: { attempts: 2, baseMs: 10, capMs: 10 },
    });
    const t = performance.now();
    try {
      const err = await rejectsKind(store.put('c', 'o', Buffer.from('x')), 'unreachable');
      assert.match(err.message, /after 2 attempts: no response within 200 ms/);
      // undici's request timers tick about once a second, so 200 ms means up to ~1 s.
      const took = performance.now() - t;
      assert.ok(took >= 390 && took < 5000, `took ${took} ms`);
    } finally {
      await store.close();
      for (const s of sockets) s.destroy();
      server.close();
    }
  });

  it('fails requests after close instead of hanging', async () => {
    const store = new SwiftStore({ auth: await tempAuth() });
    await store.listContainers('');
    await store.close();
    await assert.rejects(store.head('c', 'o'), (e: unknown) => e instanceof StoreError && /closed/.test(e.message));
  });

  it('rejects a wrong ETag on put and keeps nothing', async () => {
    const store = new SwiftStore({ auth: await tempAuth() });
    try {
      await store.createContainer('etag');
      const err = await rejectsKind(store.put('etag', 'o', Buffer.from('data'), { md5: md5(Buffer.from('other')) }), 'checksum');
      assert.match(err.message, /422/);
      assert.equal(await store.head('etag', 'o'), null);
    } finally {
      await store.close();
    }
  });
});

/**
 * A fake Swift for answers the real one does not give on demand. `route`
 * answers object requests; auth always succeeds with a storage URL on itself.
 */
async function fakeSwift(route: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<{
  store: SwiftStore;
  close(): Promise<void>;
}> {
  const server = createHttpServer(async (req, res) => {
    const body = await readAll(req);
    if (req.url === '/auth/v1.0') {
      res.writeHead(200, { 'x-storage-url': `http://127.0.0.1:${port}/v1/AUTH_fake`, 'x-auth-token': 'tok' });
      res.end();
      return;
    }
    route(req, res, body);
  });
  const port = await listen(server);
  const store = new SwiftStore({
    auth: new TempAuth({ authUrl: `http://127.0.0.1:${port}/auth/v1.0`, user: 'u', key: 'k' }),
    retries: { attempts: 4, baseMs: 5, capMs: 20 },
    timeoutMs: 2000,
  });
  return {
    store,
    async close() {
      await store.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('SwiftStore against misbehaving servers', () => {
  const data = randomBytes(1000);

  it('retries 503 and 498, then succeeds', async () => {
    let n = 0;
    const f = await fakeSwift((_req, res) => {
      n++;
      if (n === 1) res.writeHead(503).end('busy');
      else if (n === 2) res.writeHead(498).end('slow down');
      else res.writeHead(200, { etag: md5(data), 'content-length': data.length }).end(data);
    });
    try {
      assert.ok((await f.store.get('c', 'o')).equals(data));
      assert.equal(n, 3);
    } finally {
      await f.close();
    }
  });

  it('reports persistent 500s as unreachable with the last answer', async () => {
    let n = 0;
    const f = await fakeSwift((_req, res) => {
      n++;
      res.writeHead(500).end('<html><h1>Internal Error</h1></html>');
    });
    try {
      const err = await rejectsKind(f.store.delete('c', 'o'), 'unreachable');
      assert.match(err.message, /unreachable after 4 attempts: 500 Internal Server Error: Internal Error/);
      assert.equal(n, 4);
    } finally {
      await f.close();
    }
  });

  // 1000 bytes are hashed as they arrive, 2 MiB on libuv's pool once received: both paths.
  for (const body of [data, randomBytes(2 * 1024 * 1024)]) {
    it(`retries a whole GET whose body does not match its ETag, then reports checksum (${body.length} bytes)`, async () => {
      let n = 0;
      const f = await fakeSwift((_req, res) => {
        n++;
        const sent = Buffer.from(body);
        if (n === 1 || n >= 3) sent[sent.length - 1]! ^= 0xff;
        res.writeHead(200, { etag: md5(body), 'content-length': sent.length }).end(sent);
      });
      try {
        assert.ok((await f.store.get('c', 'o')).equals(body), 'a transient corruption is retried');
        const err = await rejectsKind(f.store.get('c', 'o'), 'checksum', /does not match ETag/);
        assert.ok(err);
      } finally {
        await f.close();
      }
    });
  }

  it('slices a 200 answer to a ranged GET and retries a short 206', async () => {
    let n = 0;
    const f = await fakeSwift((req, res) => {
      n++;
      assert.equal(req.headers.range, 'bytes=10-19');
      if (n === 1) res.writeHead(200, { etag: md5(data), 'content-length': data.length }).end(data);
      else if (n === 2) res.writeHead(206, { 'content-range': `bytes 10-14/${data.length}`, 'content-length': 5 }).end(data.subarray(10, 15));
      else res.writeHead(206, { 'content-range': `bytes 10-19/${data.length}`, 'content-length': 10 }).end(data.subarray(10, 20));
    });
    try {
      assert.ok((await f.store.get('c', 'o', { start: 10, end: 20 })).equals(data.subarray(10, 20)));
      assert.ok((await f.store.get('c', 'o', { start: 10, end: 20 })).equals(data.subarray(10, 20)));
      assert.equal(n, 3);
    } finally {
      await f.close();
    }
  });

  it('retries a body cut short by a dropped connection', async () => {
    let n = 0;
    const f = await fakeSwift((_req, res) => {
      n++;
      res.writeHead(200, { etag: md5(data), 'content-length': data.length });
      if (n === 1) {
        res.write(data.subarray(0, 100));
        setTimeout(() => res.socket?.destroy(), 10);
      } else res.end(data);
    });
    try {
      assert.ok((await f.store.get('c', 'o')).equals(data));
      assert.equal(n, 2);
    } finally {
      await f.close();
    }
  });

  it('treats a 412 on a retried conditional PUT that did land as success', async () => {
    let stored: Buffer | undefined;
    const f = await fakeSwift((req, res, body) => {
      if (req.method === 'PUT') {
        assert.equal(req.headers['if-none-match'], '*');
        if (stored) return void res.writeHead(412).end();
        stored = body;
        res.socket?.destroy(); // stored, but the reply is lost
      } else if (req.method === 'HEAD') {
        if (!stored) return void res.writeHead(404).end();
        res.writeHead(200, { etag: md5(stored), 'content-length': stored.length }).end();
      }
    });
    try {
      assert.deepEqual(await f.store.put('c', 'o', data, { ifNoneMatch: true }), { etag: md5(data) });
      await rejectsKind(f.store.put('c', 'o', Buffer.from('other'), { ifNoneMatch: true }), 'conflict');
    } finally {
      await f.close();
    }
  });

  it('rejects a put whose returned ETag differs', async () => {
    const f = await fakeSwift((_req, res) => {
      res.writeHead(201, { etag: md5(Buffer.from('something else')) }).end();
    });
    try {
      await rejectsKind(f.store.put('c', 'o', data), 'checksum', /expected/);
    } finally {
      await f.close();
    }
  });
});

interface KeystoneRequest {
  auth?: {
    identity?: { methods?: string[]; password?: { user?: { name?: string; password?: string; domain?: { name?: string } } } };
    scope?: { project?: { name?: string; domain?: { name?: string } } };
  };
}

/** A fake Keystone v3 whose catalog points at the real dev Swift and whose tokens are real tempauth tokens. */
async function fakeKeystone(): Promise<{ url: string; requests: number; close(): Promise<void> }> {
  const s = await swift();
  const state = { requests: 0 };
  const server = createHttpServer(async (req, res) => {
    const body = await readAll(req);
    if (req.method !== 'POST' || req.url !== '/v3/auth/tokens') return void res.writeHead(404).end();
    state.requests++;
    let parsed: KeystoneRequest;
    try {
      parsed = JSON.parse(body.toString()) as KeystoneRequest;
    } catch {
      return void res.writeHead(400).end('bad json');
    }
    const id = parsed.auth?.identity;
    const ok =
      req.headers['content-type'] === 'application/json' &&
      id?.methods?.[0] === 'password' &&
      id.password?.user?.name === 'alice' &&
      id.password.user.password === 's3cret' &&
      id.password.user.domain?.name === 'Default' &&
      parsed.auth?.scope?.project?.name === 'vols' &&
      parsed.auth.scope.project.domain?.name === 'Default';
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return void res.end('{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}');
    }
    // A real token from the dev Swift, so the object I/O is real.
    const auth = await fetch(s.authUrl, { headers: { 'x-auth-user': s.user, 'x-auth-key': s.key } });
    const token = auth.headers.get('x-auth-token')!;
    const storageUrl = auth.headers.get('x-storage-url')!;
    const dead = `http://127.0.0.1:1/v1/AUTH_dead`;
    res.writeHead(201, { 'x-subject-token': token, 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        token: {
          methods: ['password'],
          catalog: [
            { type: 'identity', name: 'keystone', endpoints: [{ interface: 'public', region: 'RegionOne', url: `http://127.0.0.1:${port}/v3` }] },
            {
              type: 'object-store',
              name: 'swift',
              endpoints: [
                { interface: 'internal', region: 'RegionOne', region_id: 'RegionOne', url: dead },
                { interface: 'public', region: 'RegionZero', region_id: 'RegionZero', url: dead },
                { interface: 'public', region: 'RegionOne', region_id: 'RegionOne', url: storageUrl },
              ],
            },
          ],
        },
      }),
    );
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}/v3`,
    get requests() {
      return state.requests;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('SwiftStore with Keystone v3', () => {
  it('authenticates with a password and does real object I/O through the catalog endpoint', async () => {
    const ks = await fakeKeystone();
    const store = new SwiftStore({
      auth: new KeystoneAuth({ authUrl: ks.url, username: 'alice', password: 's3cret', projectName: 'vols', region: 'RegionOne' }),
    });
    try {
      await store.createContainer('ks');
      const data = randomBytes(50_000);
      await store.put('ks', 'a/b', data);
      assert.ok((await store.get('ks', 'a/b')).equals(data));
      assert.deepEqual((await collect(store.list('ks'))).map((o) => o.name), ['a/b']);
      assert.match(store.description, /\/v1\/AUTH_test$/);
      assert.equal(ks.requests, 1);
    } finally {
      await store.close();
      await ks.close();
    }
  });

  it('accepts OS_AUTH_URL without /v3, and picks the endpoint by region and interface', async () => {
    const ks = await fakeKeystone();
    const wrongRegion = new SwiftStore({
      auth: new KeystoneAuth({
        authUrl: ks.url.replace(/\/v3$/, ''),
        username: 'alice',
        password: 's3cret',
        projectName: 'vols',
        region: 'RegionZero', // dead endpoint
      }),
      retries: FAST,
    });
    const noEndpoint = new SwiftStore({
      auth: new KeystoneAuth({ authUrl: ks.url, username: 'alice', password: 's3cret', projectName: 'vols', interface: 'admin' }),
    });
    try {
      await rejectsKind(wrongRegion.listContainers(''), 'unreachable', /127\.0\.0\.1:1\/v1\/AUTH_dead/);
      await rejectsKind(noEndpoint.listContainers(''), 'auth', /no object-store endpoint \(interface admin\)/);
    } finally {
      await wrongRegion.close();
      await noEndpoint.close();
      await ks.close();
    }
  });

  it('reports a wrong password as auth', async () => {
    const ks = await fakeKeystone();
    const store = new SwiftStore({
      auth: new KeystoneAuth({ authUrl: ks.url, username: 'alice', password: 'wrong', projectName: 'vols' }),
    });
    try {
      const err = await rejectsKind(store.head('c', 'o'), 'auth');
      assert.ok(err.message.startsWith(`authentication failed for user alice at ${ks.url}: 401`), err.message);
      assert.equal(ks.requests, 1, 'a refused password is not retried');
    } finally {
      await store.close();
      await ks.close();
    }
  });
});

describe('swiftStoreFromEnv', () => {
  it('returns null without credentials', () => {
    assert.equal(swiftStoreFromEnv({}), null);
    assert.equal(swiftStoreFromEnv({ OS_REGION_NAME: 'RegionOne', ST_AUTH: '' }), null);
  });

  it('names the missing variable of an incomplete set', () => {
    assert.throws(() => swiftStoreFromEnv({ ST_AUTH: 'http://x/auth/v1.0', ST_USER: 'a:b' }), /ST_KEY is not set/);
    assert.throws(() => swiftStoreFromEnv({ ST_KEY: 'k' }), /ST_AUTH is not set/);
    assert.throws(() => swiftStoreFromEnv({ OS_AUTH_URL: 'http://x/v3', OS_USERNAME: 'u' }), /OS_PASSWORD is not set/);
    assert.throws(
      () => swiftStoreFromEnv({ OS_AUTH_URL: 'http://x/v3', OS_USERNAME: 'u', OS_PASSWORD: 'p' }),
      /OS_PROJECT_NAME is not set/,
    );
    assert.throws(() => swiftStoreFromEnv({ ST_AUTH: 'not a url', ST_USER: 'u', ST_KEY: 'k' }), /not a valid URL/);
  });

  it('builds a working v1 store from ST_*', async () => {
    const s = await swift();
    const store = swiftStoreFromEnv({ ST_AUTH: s.authUrl, ST_USER: s.user, ST_KEY: s.key });
    assert.ok(store);
    try {
      await store.createContainer('env');
      await store.put('env', 'o', Buffer.from('v'));
      assert.equal((await store.get('env', 'o')).toString(), 'v');
    } finally {
      await store.close();
    }
  });

  it('builds a working Keystone store from OS_*', async () => {
    const ks = await fakeKeystone();
    const store = swiftStoreFromEnv({
      OS_AUTH_URL: ks.url,
      OS_USERNAME: 'alice',
      OS_PASSWORD: 's3cret',
      OS_PROJECT_NAME: 'vols',
      OS_REGION_NAME: 'RegionOne',
      OS_INTERFACE: 'public',
    });
    assert.ok(store);
    try {
      await store.createContainer('env-ks');
      assert.ok((await store.listContainers('env-ks')).includes('env-ks'));
    } finally {
      await store.close();
      await ks.close();
    }
  });
});
