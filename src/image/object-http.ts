// An object of the store, served over HTTP on 127.0.0.1 for QEMU's curl
// driver while an import reads it: QEMU reads qcow2 and the other formats
// from any URL that answers HEAD and ranged GETs, and this one takes them
// through the store layer (its auth, retries and mirror), so QEMU never sees
// a credential. The path is random, so other local users cannot guess it.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { StoreError, type ObjectStore } from '../store/object-store.js';

export class ObjectHttp {
  private constructor(
    private readonly server: http.Server,
    /** The URL QEMU reads the object from. */
    readonly url: string,
  ) {}

  static async serve(store: ObjectStore, container: string, name: string, size: number): Promise<ObjectHttp> {
    const token = randomBytes(16).toString('hex');
    const server = http.createServer((req, res) => {
      void answer(req, res).catch((err: Error) => {
        if (!res.headersSent) res.writeHead(err instanceof StoreError && err.kind === 'not-found' ? 404 : 502, { 'content-type': 'text/plain' });
        res.end(`${err.message}\n`);
      });
    });
    const answer = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      if (req.url !== `/${token}`) {
        res.writeHead(404).end();
        return;
      }
      if (req.method === 'HEAD') {
        res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' }).end();
        return;
      }
      if (req.method !== 'GET') {
        res.writeHead(405).end();
        return;
      }
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      if (!m) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end(); // whole GETs are not needed and not served
        return;
      }
      const start = Number(m[1]);
      const end = Math.min(size, m[2] ? Number(m[2]) + 1 : size);
      if (start >= end) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      const data = await store.get(container, name, { start, end });
      res.writeHead(206, { 'content-length': data.length, 'content-range': `bytes ${start}-${end - 1}/${size}`, 'accept-ranges': 'bytes' });
      res.end(data);
    };
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = server.address() as { port: number };
    return new ObjectHttp(server, `http://127.0.0.1:${port}/${token}`);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
