// serve's engine threads (issue 14: a gateway in a boot storm must not be
// capped by one JavaScript thread). With `serve --engine-threads N`, the
// volumes are spread over N worker threads, each with its own engine, store
// connections, gateway cache (a share of the budget) and block server; the
// main thread keeps tgtd, the targets, the control socket and the block
// socket's listener.
//
// - A bs_swift connection is accepted on the main thread; at its HELLO the
//   main thread hands the socket itself (a duplicate of its descriptor, and
//   the bytes read so far) to the volume's thread, which answers everything
//   from then on: no byte of a block request passes through the main thread.
// - A volume's thread is chosen by the root of its lineage (the volume its
//   clone chain starts from): the clones of one golden snapshot share a
//   thread, so they still fetch and keep each object once (GatewayCache).
// - Everything else a Daemon asks of a volume (open, close, snapshots,
//   resyncs, metrics) is a VolumeHost call, sent as a message.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { EngineError } from '../engine/engine-error.js';
import type { SnapshotStatus } from '../engine/snapshot.js';
import type { DeviceDescription, RequestEvent } from './block-server.js';
import type { Log, LogFields } from './serve-log.js';
import type { StoreMeter, StoreRequest } from '../store/metered-store.js';
import type { HostView, VolumeHost } from './volume-host.js';

/** What a thread is started with. */
export interface EngineThreadData {
  index: number;
  stateDir: string;
  config?: string;
  keyFile?: string;
  /** Its share of the clean cache's budget, in bytes. */
  cacheBudget: number;
  /** Whether to send its block and store requests for metrics. */
  metrics: boolean;
}

/** A VolumeHost method a thread answers. */
export type HostMethod = keyof VolumeHost;

export interface SerializedError {
  message: string;
  engine: boolean;
  code?: string;
}

export type ToThread =
  | { op: 'call'; id: number; method: HostMethod; args: unknown[] }
  | { op: 'connection'; fd: number; received: Uint8Array; volume: string; sizeHint?: number };

export type FromThread =
  | { op: 'ready'; description: string }
  | { op: 'failed'; error: SerializedError }
  | { op: 'reply'; id: number; value: unknown }
  | { op: 'error'; id: number; error: SerializedError }
  | { op: 'log'; message: string; fields?: LogFields }
  | { op: 'metrics'; requests: RequestEvent[]; store: Array<[string, StoreRequest]> };

export function serializeError(err: unknown): SerializedError {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as NodeJS.ErrnoException).code;
  return { message: e.message, engine: e instanceof EngineError, ...(typeof code === 'string' ? { code } : {}) };
}

/** The error again, on this side: an EngineError stays one (it means "cannot be served here"). */
export function revive(error: SerializedError): Error {
  if (error.engine) return new EngineError(error.message);
  const e = new Error(error.message);
  if (error.code !== undefined) (e as NodeJS.ErrnoException).code = error.code;
  return e;
}

/** Where a thread's metrics go on the main thread. */
export interface ThreadMetrics {
  onRequest(event: RequestEvent): void;
  storeMeter(store: string): StoreMeter;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/**
 * One engine thread, as a VolumeHost. A thread that dies fails its calls in
 * flight and every later one, and is reported (onDeath): serve then stops,
 * as after a crash of serve itself (tgtd keeps its sessions, bs_swift
 * reconnects to the next serve), rather than reopen the dead thread's
 * volumes beside state it left behind (their locks, their leases).
 */
export class EngineThread implements VolumeHost {
  private worker: Worker | null = null;
  private ready: Promise<string> | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private stopped = false;
  private died: Error | null = null;
  private readonly meters = new Map<string, StoreMeter>();

  constructor(
    private readonly data: EngineThreadData,
    private readonly log: Log,
    private readonly metrics?: ThreadMetrics,
    private readonly onDeath: (err: Error) => void = () => undefined,
  ) {}

  get index(): number {
    return this.data.index;
  }

  /** Starts the thread (if it is not running) and waits for its engine; resolves to what it says of its store. */
  start(): Promise<string> {
    if (this.died) return Promise.reject(this.died);
    if (this.stopped) return Promise.reject(new Error('swiftvol serve is stopping'));
    if (this.ready) return this.ready;
    const worker = new Worker(new URL('./engine-thread.js', import.meta.url), { workerData: this.data });
    this.worker = worker;
    let started = false;
    this.ready = new Promise<string>((resolve, reject) => {
      worker.on('message', (msg: FromThread) => {
        switch (msg.op) {
          case 'ready':
            started = true;
            resolve(msg.description);
            break;
          case 'failed':
            reject(revive(msg.error));
            break;
          case 'reply':
          case 'error': {
            const p = this.pending.get(msg.id);
            this.pending.delete(msg.id);
            if (msg.op === 'reply') p?.resolve(msg.value);
            else p?.reject(revive(msg.error));
            break;
          }
          case 'log':
            this.log(msg.message, msg.fields);
            break;
          case 'metrics':
            for (const e of msg.requests) this.metrics?.onRequest(e);
            for (const [store, r] of msg.store) this.meterOf(store)?.(r);
            break;
        }
      });
      worker.on('error', (err) => this.log(`engine thread ${this.index}: ${err.message}`, { level: 'error' }));
      worker.on('exit', (code) => {
        this.worker = null;
        const err = new Error(`engine thread ${this.index} exited (code ${code})`);
        reject(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        this.died = err;
        // one that never started failed its start, which says why
        if (this.stopped || !started) return;
        this.log(`${err.message}: serve stops`, { level: 'error' });
        this.onDeath(err);
      });
    });
    return this.ready;
  }

  private meterOf(store: string): StoreMeter | undefined {
    if (!this.metrics) return undefined;
    let m = this.meters.get(store);
    if (!m) this.meters.set(store, (m = this.metrics.storeMeter(store)));
    return m;
  }

  private async call<T>(method: HostMethod, ...args: unknown[]): Promise<T> {
    await this.start();
    const worker = this.worker!;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ op: 'call', id, method, args } satisfies ToThread);
    });
  }

  /**
   * Gives the thread a bs_swift connection whose HELLO it answers: `fd` is
   * the thread's from now on (closed here if the thread cannot take it).
   */
  async takeConnection(fd: number, received: Buffer, volume: string, sizeHint?: number): Promise<void> {
    try {
      await this.start();
      this.worker!.postMessage({ op: 'connection', fd, received, volume, ...(sizeHint === undefined ? {} : { sizeHint }) } satisfies ToThread);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  describe(name: string, sizeHint?: number): Promise<DeviceDescription> {
    return this.call('describe', name, sizeHint);
  }
  open(name: string): Promise<void> {
    return this.call('open', name);
  }
  close(name: string): Promise<void> {
    // a thread not running (dead) holds nothing to close
    return this.worker ? this.call('close', name) : Promise.resolve();
  }
  startSnapshot(name: string, snapshot: string): Promise<SnapshotStatus> {
    return this.call('startSnapshot', name, snapshot);
  }
  snapshotJobs(name: string): Promise<SnapshotStatus[]> {
    return this.call('snapshotJobs', name);
  }
  waitSnapshot(name: string, snapshot: string, startedAt: string, ms: number): Promise<SnapshotStatus> {
    return this.call('waitSnapshot', name, snapshot, startedAt, ms);
  }
  deleteSnapshot(name: string, snapshot: string): Promise<{ objects: number }> {
    return this.call('deleteSnapshot', name, snapshot);
  }
  resync(name: string, discard?: string): Promise<unknown> {
    return this.call('resync', name, discard);
  }
  view(): Promise<HostView> {
    return this.worker ? this.call('view') : Promise.resolve({ volumes: [], snapshots: [], resyncing: [], resyncCopied: [], cache: null, mirror: null });
  }
  drain(): Promise<void> {
    return this.worker ? this.call('drain') : Promise.resolve();
  }

  /** Closes the thread's volumes, block connections, store and cache, and ends the thread. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (worker) await this.call('stop').catch((err: Error) => this.log(`engine thread ${this.index}: stopping: ${err.message}`, { level: 'error' }));
    this.stopped = true;
    if (worker) {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      await worker.terminate();
      await exited;
    }
  }
}

export interface EngineThreadsOptions {
  count: number;
  stateDir: string;
  config?: string;
  keyFile?: string;
  /** The clean cache's budget, shared out evenly. */
  cacheBudget: number;
  log: Log;
  metrics?: ThreadMetrics;
  /** Told when a thread dies (serve stops). */
  onDeath?: (err: Error) => void;
  /** The volume a volume's clone chain starts from (itself when it is no clone). */
  lineageRoot(name: string): Promise<string>;
}

/** The engine threads of one serve, and which of them serves a volume. */
export class EngineThreads {
  readonly threads: EngineThread[];
  /** Each thread's share of the clean cache's budget, in bytes (whole 4 KiB blocks). */
  readonly cacheShare: number;
  private readonly routes = new Map<string, Promise<EngineThread>>();
  /** The lineage roots found so far, by volume. */
  private readonly roots = new Map<string, string>();

  constructor(private readonly options: EngineThreadsOptions) {
    const { count, cacheBudget } = options;
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`engine threads must be an integer >= 1, got ${count}`);
    const share = Math.floor(cacheBudget / count / 4096) * 4096;
    this.cacheShare = share;
    this.threads = Array.from(
      { length: count },
      (_, index) =>
        new EngineThread(
          { index, stateDir: options.stateDir, config: options.config, keyFile: options.keyFile, cacheBudget: share, metrics: options.metrics !== undefined },
          options.log,
          options.metrics,
          options.onDeath,
        ),
    );
  }

  /** Starts every thread; fails (and stops those started) if one cannot open its store. */
  async start(): Promise<string> {
    const started = await Promise.allSettled(this.threads.map((t) => t.start()));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await this.stop();
      throw failed.reason;
    }
    return (started[0] as PromiseFulfilledResult<string>).value;
  }

  /** The root of a volume's lineage if a route has found it. */
  knownRoot(name: string): string | undefined {
    return this.roots.get(name);
  }

  /** The root of a volume's lineage (a lookup in the store). */
  rootOf(name: string): Promise<string> {
    return this.options.lineageRoot(name);
  }

  /** The thread of a volume: by its lineage's root (`root` when it is known already), so that clones of one snapshot share one. */
  threadOf(name: string, root?: string): Promise<EngineThread> {
    let route = this.routes.get(name);
    if (!route) {
      route = (root === undefined ? this.options.lineageRoot(name) : Promise.resolve(root)).then((r) => {
        this.roots.set(name, r);
        return this.threads[threadIndex(r, this.threads.length)]!;
      });
      // a failed lookup (the store did not answer) is tried again next time
      route.catch(() => this.routes.delete(name));
      this.routes.set(name, route);
    }
    return route;
  }

  async stop(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.stop()));
  }
}

/** A root volume's thread: a hash of its name, so that the same volumes share a thread (and its cache) from one start to the next. */
export function threadIndex(root: string, count: number): number {
  return createHash('sha1').update(root).digest().readUInt32BE(0) % count;
}
