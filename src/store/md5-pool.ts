// MD5 of large buffers on worker threads, so that hashing an 8 MiB object
// does not stop the event loop (and the transfers it drives) for ~15 ms.
// Buffers in shared memory (sharedBuffer()) are hashed where they are, with
// no copy; others are hashed in place on the calling thread.
import { Worker } from 'node:worker_threads';
import { createHash } from 'node:crypto';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ id, buffer, offset, length, moved }) => {
  const md5 = createHash('md5').update(new Uint8Array(buffer, offset, length)).digest('hex');
  if (moved) parentPort.postMessage({ id, md5, buffer }, [buffer]); // hand the memory back
  else parentPort.postMessage({ id, md5 });
});
`;

/** Below this size a round trip to a worker costs more than it saves. */
const MIN_OFFLOAD = 256 * 1024;

/**
 * A fixed set of equal buffers in shared memory, which Md5Pool can hash off
 * the main thread. Reused rather than allocated per object: V8 does not count
 * shared memory towards garbage collection, so one-off shared buffers pile up.
 */
export class SharedBufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(b: Buffer) => void> = [];

  constructor(count: number, readonly size: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(new SharedArrayBuffer(size)));
  }

  /** A buffer of `length` bytes (at most size), zero-filled if asked; waits while all are in use. */
  async take(length: number, zero = false): Promise<Buffer> {
    const buffer = this.free.pop() ?? (await new Promise<Buffer>((resolve) => this.waiting.push(resolve)));
    const view = buffer.subarray(0, length);
    if (zero) view.fill(0);
    return view;
  }

  give(view: Buffer): void {
    const whole = Buffer.from(view.buffer, 0, this.size);
    const next = this.waiting.shift();
    if (next) next(whole);
    else this.free.push(whole);
  }
}

interface WorkerReply {
  md5: string;
  /** The memory of a moved buffer, handed back. */
  buffer?: ArrayBuffer;
}

export class Md5Pool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (reply: WorkerReply) => void; reject: (err: Error) => void; worker: Worker }>();
  /** Jobs per worker: a worker with work keeps the process alive, an idle one does not. */
  private readonly busy = new Map<Worker, number>();
  private nextId = 0;
  private next = 0;

  constructor(size = 2) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (msg: WorkerReply & { id: number }) => {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        this.release(p.worker);
        p.resolve(msg);
      });
      worker.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref(); // idle workers must not keep a CLI process alive
      this.workers.push(worker);
    }
  }

  /** Hex MD5 of data. */
  md5(data: Buffer): Promise<string> {
    if (data.length < MIN_OFFLOAD || !(data.buffer instanceof SharedArrayBuffer)) {
      return Promise.resolve(createHash('md5').update(data).digest('hex'));
    }
    return this.post(data, false).then((reply) => reply.md5);
  }

  /**
   * Hex MD5 of a buffer that has its memory to itself (a large Buffer.allocUnsafe),
   * hashed on a worker by moving the memory there and back, without a copy.
   * `data` is unusable until the promise settles; use the buffer it gives back.
   * Other buffers are hashed here.
   */
  async md5Moved(data: Buffer): Promise<{ md5: string; data: Buffer }> {
    const ownsMemory = data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.length === data.buffer.byteLength;
    const here = (): { md5: string; data: Buffer } => ({ md5: createHash('md5').update(data).digest('hex'), data });
    if (data.length < MIN_OFFLOAD || !ownsMemory) return here();
    let posted: Promise<WorkerReply>;
    try {
      posted = this.post(data, true);
    } catch {
      return here(); // memory that cannot be moved (nothing was moved then)
    }
    const reply = await posted;
    if (!reply.buffer) throw new Error('MD5 worker did not give the buffer back');
    return { md5: reply.md5, data: Buffer.from(reply.buffer) };
  }

  private post(data: Buffer, move: boolean): Promise<WorkerReply> {
    const id = this.nextId++;
    const worker = this.workers[this.next++ % this.workers.length]!;
    const jobs = this.busy.get(worker) ?? 0;
    if (jobs === 0) worker.ref();
    this.busy.set(worker, jobs + 1);
    let settle: { resolve: (reply: WorkerReply) => void; reject: (err: Error) => void } | undefined;
    const reply = new Promise<WorkerReply>((resolve, reject) => (settle = { resolve, reject }));
    this.pending.set(id, { ...settle!, worker });
    const message = { id, buffer: data.buffer, offset: data.byteOffset, length: data.length, moved: move };
    try {
      if (move) worker.postMessage(message, [data.buffer as ArrayBuffer]);
      else worker.postMessage(message);
    } catch (err) {
      // thrown here, not as a rejection: the caller can still use the buffer
      this.pending.delete(id);
      this.release(worker);
      throw err;
    }
    return reply;
  }

  private release(worker: Worker): void {
    const jobs = (this.busy.get(worker) ?? 1) - 1;
    this.busy.set(worker, jobs);
    if (jobs === 0) worker.unref();
  }
}

/** The process's pool, started on first use. */
let shared: Md5Pool | null = null;
export function md5Pool(): Md5Pool {
  shared ??= new Md5Pool();
  return shared;
}
