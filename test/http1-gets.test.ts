// Http1Gets (src/store/http1-gets.ts), against a server that writes the bytes
// each case needs: bodies land whole and exact however the answer is cut
// into reads; connections are kept, bounded and replaced; an answer it does
// not read (chunked, no length) is refused before it is used, and SwiftHttp
// asks again through undici; every broken answer or silence fails the GET
// with a message, and nothing unsafe goes on the wire.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { HttpGetError, Http1Gets, NotReadHere } from '../src/store/http1-gets.js';
import { SwiftHttp, readBody } from '../src/store/swift-http.js';
import { overlayIo } from '../src/native/addons.js';

interface Seen {
  /** Connections accepted so far. */
  connections: number;
  /** Most connections open at once. */
  peak: number;
  /** The requests' heads, in order. */
  requests: string[];
}

/** A server that answers request n (0-based, across connections) by `answer`, which writes whatever it likes. */
async function rawServer(answer: (socket: net.Socket, n: number, head: string) => void): Promise<{ origin: string; seen: Seen; close: () => Promise<void> }> {
  const seen: Seen = { connections: 0, peak: 0, requests: [] };
  let open = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    seen.connections++;
    seen.peak = Math.max(seen.peak, ++open);
    socket.on('close', () => {
      open--;
      sockets.delete(socket);
    });
    socket.on('error', () => undefined);
    let pending = '';
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        const n = seen.requests.length;
        seen.requests.push(head);
        answer(socket, n, head);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function ok(body: Buffer, extra = ''): Buffer {
  return Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n`, 'latin1'), body]);
}

/** Writes bytes in pieces of `piece`, each on its own turn of the event loop. */
async function dribble(socket: net.Socket, bytes: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += piece) {
    socket.write(bytes.subarray(at, at + piece));
    await new Promise((r) => setTimeout(r, 1));
  }
}

const client = (connections = 4, timeoutMs = 5000): Http1Gets => new Http1Gets({ connections, timeoutMs, keepAliveMs: 5000 });

/** Runs fn against a rawServer answering by `answer`, with a client of its own (`gets`); stops both. */
async function withServer(answer: Parameters<typeof rawServer>[0], fn: (srv: Awaited<ReturnType<typeof rawServer>>, gets: Http1Gets) => Promise<void>, gets = client()): Promise<void> {
  const srv = await rawServer(answer);
  try {
    await fn(srv, gets);
  } finally {
    gets.close();
    await srv.close();
  }
}

describe('Http1Gets', () => {
  it('reads bodies whole on one kept connection, large ones page-aligned; header names lower-case, repeats listed', async () => {
    const bodies = [randomBytes(100), randomBytes(3 * 1024 * 1024), Buffer.alloc(0)];
    await withServer((s, n) => s.write(ok(bodies[n]!, 'X-Thing: a\r\nx-thing: b\r\nETag: "abc"\r\n')), async (srv, gets) => {
      for (const body of bodies) {
        const a = await gets.get(srv.origin, '/v1/a/c/o%20x', { 'x-auth-token': 't', range: 'bytes=0-9' });
        assert.equal(a.statusCode, 200);
        assert.equal(a.statusText, 'OK');
        assert.ok(a.body.equals(body));
        assert.deepEqual(a.headers['x-thing'], ['a', 'b']);
        assert.equal(a.headers['etag'], '"abc"');
        if (body.length >= 64 * 1024) assert.equal(overlayIo().pageOffset(a.body), 0, 'a large body starts on a page');
      }
      assert.equal(srv.seen.connections, 1, 'one connection kept for all three');
      assert.match(srv.seen.requests[0]!, /^GET \/v1\/a\/c\/o%20x HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\nx-auth-token: t\r\nrange: bytes=0-9$/);
    });
  });

  it('assembles an answer cut anywhere, the head end included, and skips an interim 100', async () => {
    const body = randomBytes(200_000);
    const bytes = Buffer.concat([Buffer.from('HTTP/1.1 100 Continue\r\n\r\n'), ok(body)]);
    for (const piece of [1, 3, 7, 1000, 65_536]) {
      await withServer((s) => void dribble(s, piece === 1 ? bytes.subarray(0, 400) : bytes, piece).then(() => piece === 1 && s.write(bytes.subarray(400))), async (srv, gets) => {
        const a = await gets.get(srv.origin, '/x', {});
        assert.equal(a.statusCode, 200, `pieces of ${piece}`);
        assert.ok(a.body.equals(body), `pieces of ${piece}`);
      });
    }
  });

  it('keeps at most `connections` open; the rest wait their turn', async () => {
    await withServer((s, n) => setTimeout(() => s.write(ok(Buffer.from(`answer ${n}`))), 20), async (srv, gets) => {
      const answers = await Promise.all(Array.from({ length: 7 }, () => gets.get(srv.origin, '/x', {})));
      assert.deepEqual(answers.map((a) => a.body.toString()).sort(), Array.from({ length: 7 }, (_, n) => `answer ${n}`).sort());
      assert.equal(srv.seen.peak, 2);
      assert.equal(srv.seen.connections, 2);
    }, client(2));
  });

  it('sends again on a new connection when a kept one was dropped by the server', async () => {
    await withServer((s, n) => {
      if (n === 0) s.write(ok(Buffer.from('first')));
      else if (n === 1) s.destroy(); // the kept connection, dropped as the request arrives
      else s.write(ok(Buffer.from(`again ${n}`)));
    }, async (srv, gets) => {
      assert.equal((await gets.get(srv.origin, '/x', {})).body.toString(), 'first');
      assert.equal((await gets.get(srv.origin, '/x', {})).body.toString(), 'again 2');
      assert.equal(srv.seen.connections, 2);
    });
  });

  it('does not keep a connection the answer closes (Connection: close, HTTP/1.0)', async () => {
    await withServer((s, n) => {
      const body = Buffer.from(`n${n}`);
      if (n === 0) s.end(ok(body, 'connection: close\r\n'));
      else s.end(Buffer.concat([Buffer.from(`HTTP/1.0 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`), body]));
    }, async (srv, gets) => {
      assert.equal((await gets.get(srv.origin, '/x', {})).body.toString(), 'n0');
      assert.equal((await gets.get(srv.origin, '/x', {})).body.toString(), 'n1');
      assert.equal(srv.seen.connections, 2);
    });
  });

  it('refuses answers it does not read, and SwiftHttp reads them through undici', async () => {
    const srv = await rawServer((s, _n, head) => {
      if (head.startsWith('GET /chunked ')) s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
      else s.end('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end');
    });
    const gets = client();
    const http = new SwiftHttp({ timeoutMs: 5000 });
    try {
      await assert.rejects(gets.get(srv.origin, '/chunked', {}), (e: unknown) => e instanceof NotReadHere && /Transfer-Encoding chunked/.test(e.message));
      await assert.rejects(gets.get(srv.origin, '/close', {}), (e: unknown) => e instanceof NotReadHere && /no single Content-Length/.test(e.message));
      const chunked = await http.send({ method: 'GET', url: `${srv.origin}/chunked` });
      assert.equal((await readBody(chunked)).toString(), 'hello world');
      const delimited = await http.send({ method: 'GET', url: `${srv.origin}/close` });
      assert.equal((await readBody(delimited)).toString(), 'until the end');
      assert.equal(srv.seen.requests.length, 6, 'each refused answer asked once more, through undici');
    } finally {
      gets.close();
      await http.close();
      await srv.close();
    }
  });

  it('fails a GET whose answer is broken, with what was wrong', async () => {
    const cases: Array<{ what: string; write: (s: net.Socket) => void; error: RegExp }> = [
      { what: 'a body cut short', write: (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort'), error: /closed the connection before the answer ended/ },
      { what: 'bytes past the body', write: (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA'), error: /5 bytes past the body's Content-Length 2/ },
      { what: 'a bad status line', write: (s) => s.write('SPDY/3 200 OK\r\n\r\n'), error: /not an HTTP\/1\.x status line/ },
      { what: 'a header line without a name', write: (s) => s.write('HTTP/1.1 200 OK\r\n: x\r\ncontent-length: 0\r\n\r\n'), error: /a header line without a name/ },
      { what: 'a bad length', write: (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1e3\r\n\r\n'), error: /bad Content-Length 1e3/ },
      { what: 'two lengths', write: (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n'), error: /no single Content-Length/ },
      { what: 'a head over 64 KiB', write: (s) => s.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70_000)}\r\n\r\n`), error: /response headers longer than 65536 bytes/ },
    ];
    for (const c of cases) {
      await withServer((s) => c.write(s), async (srv, gets) => {
        await assert.rejects(gets.get(srv.origin, '/x', {}), (e: unknown) => e instanceof Error && c.error.test(e.message), c.what);
      });
    }
  });

  it('times out a server that answers nothing, and one whose body stalls', async () => {
    const silent = await rawServer(() => undefined);
    const stalls = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart'));
    const gets = client(4, 300);
    try {
      await assert.rejects(gets.get(silent.origin, '/x', {}), (e: unknown) => e instanceof HttpGetError && e.code === 'timeout' && /no response within 300 ms/.test(e.message));
      await assert.rejects(gets.get(stalls.origin, '/x', {}), (e: unknown) => e instanceof HttpGetError && /response body stalled for 300 ms/.test(e.message));
    } finally {
      gets.close();
      await silent.close();
      await stalls.close();
    }
  });

  it('reports a port with nothing listening', async () => {
    const srv = await rawServer(() => undefined);
    const origin = srv.origin;
    await srv.close();
    const gets = client();
    try {
      await assert.rejects(gets.get(origin, '/x', {}), (e: unknown) => e instanceof HttpGetError && /ECONNREFUSED/.test(e.message));
    } finally {
      gets.close();
    }
  });

  it('sends nothing for a path or header that could end its line early', async () => {
    await withServer((s) => s.write(ok(Buffer.from('x'))), async (srv, gets) => {
      await assert.rejects(gets.get(srv.origin, '/a b', {}), /a path that cannot go on a request line/);
      await assert.rejects(gets.get(srv.origin, '/a\r\nx: y', {}), /a path that cannot go on a request line/);
      await assert.rejects(gets.get(srv.origin, '/a', { 'x-h': 'v\r\nx-smuggled: 1' }), /a header that cannot be sent: "x-h"/);
      await assert.rejects(gets.get(srv.origin, '/a', { 'x h': 'v' }), /a header that cannot be sent/);
      assert.equal(srv.seen.connections, 0, 'nothing was sent');
    });
  });

  it('after close, fails what waits and what is asked', async () => {
    const srv = await rawServer((s, n) => (n === 0 ? setTimeout(() => s.write(ok(Buffer.from('late'))), 100) : s.write(ok(Buffer.from('x')))));
    const gets = client(1);
    const first = gets.get(srv.origin, '/x', {});
    const waiting = gets.get(srv.origin, '/x', {});
    gets.close();
    try {
      await assert.rejects(waiting, /the client is closed/);
      await assert.rejects(gets.get(srv.origin, '/x', {}), /the client is closed/);
      assert.equal((await first).body.toString(), 'late', 'the GET under way ends');
    } finally {
      await srv.close();
    }
  });
});
