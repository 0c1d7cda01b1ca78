// A store layer that runs GETs on worker threads (issue 14: a gateway
// in a boot storm must not be capped by one JavaScript thread). Receiving an
// HTTP body is most of what serve's one thread spends per cold byte (the
// bench's notes break it down); each FetchThreads worker holds its own
// SwiftStore, built from the same settings, and hands the bytes back without
// a copy (the buffer is transferred). Everything else passes through to the
// store on the calling thread: the engine above, the gateway cache and its
// sharing of fetches by object stay on one thread, so N clones still fetch
// a block once.
//
// Every GET goes to the threads, small ranged ones too: a boot reads ~100 KiB
// at a time, and kept on the calling thread such reads were what held it.
// Measured here (two volumes read cold at once, --fetch-threads 1 against
// GETs under 256 KiB on the main thread): the main thread's CPU per read fell
// by a third (128 KiB QD16: 4.48 -> 2.91 ms per MB; 16 KiB QD1: 34 -> 22;
// 4 KiB QD1: 128 -> 87), and latency did not move (4 KiB QD1 mean 5.29 ms
// on the main thread, 5.31 on a thread, 2 runs each: a read waits on Swift,
// not on the hop); the process spends 10-20% more CPU in all on such reads,
// on cores the main thread does not need.
import { Worker } from 'node:worker_threads';
import { StoreError, type ReadRange } from './object-store.js';
import { PassThroughStore } from './pass-through-store.js';
import type { SwiftStore, SwiftStoreOptions } from './swift-store.js';
import type { FetchReply, FetchRequest } from './fetch-thread.js';

/** How a worker builds its copy of a store: the settings swiftStoreFromEnv reads, and the options beside them. */
export interface StoreSpec {
  settings: Record<string, string>;
  options: Omit<SwiftStoreOptions, 'auth'>;
}

interface Pending {
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

interface Thread {
  worker: Worker;
  pending: Map<number, Pending>;
  /** GETs it has answered, for stats. */
  served: number;
}

/**
 * A pool of worker threads that run GETs for ThreadedStores: each request goes
 * to the thread with the fewest in flight. A thread that dies fails what it
 * had in flight and is replaced on the next request.
 */
export class FetchThreads {
  private readonly threads: Array<Thread | null>;
  private readonly specs = new Map<number, StoreSpec>();
  private nextStore = 0;
  private nextRequest = 0;
  private closed = false;

  constructor(readonly count: number) {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`fetch threads must be an integer >= 1, got ${count}`);
    this.threads = new Array<Thread | null>(count).fill(null);
  }

  /** Registers a store the threads build for themselves; returns its id. */
  register(spec: StoreSpec): number {
    const id = this.nextStore++;
    this.specs.set(id, spec);
    for (const t of this.threads) t?.worker.postMessage({ op: 'open', store: id, spec } satisfies FetchRequest);
    return id;
  }

  /** Forgets a store; the pool stops once it has none left. */
  async release(id: number): Promise<void> {
    this.specs.delete(id);
    for (const t of this.threads) t?.worker.postMessage({ op: 'close', store: id } satisfies FetchRequest);
    if (this.specs.size === 0) await this.close();
  }

  get(store: number, container: string, name: string, range: ReadRange | undefined): Promise<Buffer> {
    if (this.closed) return Promise.reject(new StoreError('other', 'the store is closed'));
    const thread = this.pick();
    const id = this.nextRequest++;
    return new Promise<Buffer>((resolve, reject) => {
      if (thread.pending.size === 0) thread.worker.ref(); // a GET in flight keeps the process alive, as its socket would
      thread.pending.set(id, { resolve, reject });
      thread.worker.postMessage({ op: 'get', id, store, container, name, range } satisfies FetchRequest);
    });
  }

  /** How many stores use the threads now. */
  get stores(): number {
    return this.specs.size;
  }

  /** GETs answered by each thread so far. */
  stats(): number[] {
    return this.threads.map((t) => t?.served ?? 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const live = this.threads.filter((t): t is Thread => t !== null);
    this.threads.fill(null);
    await Promise.all(live.map((t) => t.worker.terminate()));
    for (const t of live) fail(t, new StoreError('other', 'the store is closed'));
  }

  private pick(): Thread {
    let best = -1;
    for (let i = 0; i < this.threads.length; i++) {
      const t = this.threads[i];
      if (!t) {
        best = i;
        break;
      }
      if (best < 0 || t.pending.size < this.threads[best]!.pending.size) best = i;
    }
    return this.threads[best] ?? this.start(best);
  }

  private start(slot: number): Thread {
    const worker = new Worker(new URL('./fetch-thread.js', import.meta.url));
    const thread: Thread = { worker, pending: new Map(), served: 0 };
    this.threads[slot] = thread;
    for (const [store, spec] of this.specs) worker.postMessage({ op: 'open', store, spec } satisfies FetchRequest);
    worker.on('message', (reply: FetchReply) => {
      const p = thread.pending.get(reply.id);
      if (!p) return;
      thread.pending.delete(reply.id);
      if (thread.pending.size === 0) worker.unref();
      thread.served++;
      if (reply.ok) p.resolve(Buffer.from(reply.buffer, reply.offset, reply.length));
      else p.reject(new StoreError(reply.kind, reply.message));
    });
    const gone = (why: string): void => {
      if (this.threads[slot] === thread) this.threads[slot] = null;
      fail(thread, new StoreError('other', `fetch thread ${why}`));
    };
    worker.on('error', (err) => gone(`failed: ${err.message}`));
    worker.on('exit', (code) => gone(`exited (code ${code})`));
    // Like an idle socket of the store, an idle thread does not keep the process alive.
    worker.unref();
    return thread;
  }
}

function fail(thread: Thread, err: StoreError): void {
  for (const p of thread.pending.values()) p.reject(err);
  thread.pending.clear();
}

/** A SwiftStore whose GETs run on FetchThreads, each thread with its own copy of it. */
export class ThreadedStore extends PassThroughStore {
  private readonly id: number;

  constructor(
    inner: SwiftStore,
    spec: StoreSpec,
    private readonly threads: FetchThreads,
  ) {
    super(inner);
    this.id = threads.register(spec);
  }

  override get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    return this.call('get', () => this.threads.get(this.id, container, name, range));
  }

  override async close(): Promise<void> {
    await Promise.all([this.inner.close(), this.threads.release(this.id)]);
  }
}
