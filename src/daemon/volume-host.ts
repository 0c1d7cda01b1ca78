// VolumeHost: what holds serve's open volumes, and everything done to them
// while they are open: opening (and the lease), closing, snapshot uploads,
// resyncs of mirrored volumes, and what metrics read of them. The Daemon
// (targets, tgtd, the control socket) asks a host; it never touches a Volume.
//
// LocalVolumeHost holds them on the thread it runs on. serve runs one on its
// main thread, or one per engine thread (engine-threads.ts, behind the same
// interface by messages), so that several volumes read at once use several
// cores. Every method's arguments and results are plain data.
import type { Engine } from '../engine/engine.js';
import type { Volume } from '../engine/volume.js';
import { EngineError } from '../engine/engine-error.js';
import type { SnapshotJob, SnapshotStatus } from '../engine/snapshot.js';
import type { DeviceDescription } from './block-server.js';
import { canOpenDirect } from '../engine/block-device.js';
import type { Log } from './serve-log.js';
import { mirrorOf } from '../store/mirror-store.js';
import { volumeNameOfContainer } from '../format/volume-format.js';
import { runPool } from '../store/run-pool.js';
import type { DirectIoCounters } from '../overlay/direct-map.js';
import type { CacheStats } from '../cache/block-cache.js';
import type { GatewayCache } from '../engine/gateway-cache.js';

/** How often a host looks for mirrored volumes with a store behind, and how long it waits before trying one again. */
const RESYNC_CHECK_MS = 1000;
const RESYNC_RETRY_MS = 10_000;
/** Volumes closed at once (each flushes and gives its lease back: a write to the store). */
const CLOSES = 16;

/** What metrics read of one open volume. */
export interface VolumeView {
  name: string;
  /** The engine thread that serves it (null: the main thread). */
  thread: number | null;
  leaseHeld: boolean;
  direct: DirectIoCounters;
  coldReads: number;
  coldReadBytes: number;
  dirtyBytes: number;
}

/** What metrics read of a mirror's stores, as one host's store sees them. */
export interface MirrorView {
  /** Every member, and whether it answers (false: routed around). */
  members: Array<{ name: string; up: boolean }>;
  states: Array<{ container: string; store: string; state: string }>;
}

/** What a host holds now, for metrics: plain data. */
export interface HostView {
  volumes: VolumeView[];
  /** Snapshot uploads started here (running, and the last few done). */
  snapshots: SnapshotStatus[];
  /** Volumes being resynced now. */
  resyncing: string[];
  /** Objects copied by resyncs since serve started, per volume. */
  resyncCopied: Array<[string, number]>;
  /** The host's gateway cache (null: it has none). */
  cache: CacheStats | null;
  mirror: MirrorView | null;
}

export interface VolumeHost {
  /** What HELLO says of a volume that may not be open yet (sizeHint: its export record's size). */
  describe(name: string, sizeHint?: number): Promise<DeviceDescription>;
  /** Opens the volume (takes its lease) unless it is open. An EngineError means it cannot be served here. */
  open(name: string): Promise<void>;
  /** Flushes and closes the volume if open (waiting for an open under way), and forgets what was known of it. */
  close(name: string): Promise<void>;
  /** Freezes a served volume's dirty set now and uploads it in the background. */
  startSnapshot(name: string, snapshot: string): Promise<SnapshotStatus>;
  snapshotJobs(name: string): Promise<SnapshotStatus[]>;
  /** A job's status once it has settled, or after `ms` (progress), whichever comes first. */
  waitSnapshot(name: string, snapshot: string, startedAt: string, ms: number): Promise<SnapshotStatus>;
  deleteSnapshot(name: string, snapshot: string): Promise<{ objects: number }>;
  resync(name: string, discard?: string): Promise<unknown>;
  view(): Promise<HostView>;
  /** Waits for opens, resyncs and snapshot uploads under way (before the block connections go). */
  drain(): Promise<void>;
  /** Closes every volume. */
  stop(): Promise<void>;
}

export interface LocalVolumeHostOptions {
  engine: Engine;
  log: Log;
  /** The host's gateway cache, for metrics. */
  cache?: GatewayCache;
  /** The engine thread it runs on (none: the main thread). */
  thread?: number;
}

export class LocalVolumeHost implements VolumeHost {
  private readonly volumes = new Map<string, Volume>();
  private readonly opening = new Map<string, Promise<Volume>>();
  /** Sizes of served volumes, for HELLOs that come before their volume is open. */
  private readonly sizes = new Map<string, number>();
  /** Snapshots started here, per volume (the last few). */
  private readonly jobs = new Map<string, SnapshotJob[]>();
  /** Resyncs running, per volume, and when each was last started. */
  private readonly resyncs = new Map<string, Promise<unknown>>();
  private readonly lastResync = new Map<string, number>();
  private readonly resyncCopied = new Map<string, number>();
  private resyncTimer: NodeJS.Timeout | null = null;
  /** Volumes whose lease was lost (another machine may hold it). */
  private readonly leaseLost = new Set<string>();
  private stopping = false;

  constructor(private readonly options: LocalVolumeHostOptions) {
    if (mirrorOf(options.engine.store)) {
      this.resyncTimer = setInterval(() => void this.resyncLagging().catch((err: Error) => options.log(`background resync: ${err.message}`)), RESYNC_CHECK_MS);
      this.resyncTimer.unref();
    }
  }

  /**
   * What HELLO says of a volume that may not be open yet: its size, from the
   * open volume, the export record, or the volume's metadata (read once).
   * Sizes never change (a volume deleted and made again under the same name
   * is refused at its first command, when the open finds another size).
   */
  async describe(name: string, sizeHint?: number): Promise<DeviceDescription> {
    const open = this.volumes.get(name);
    if (open) return { size: open.size, direct: canOpenDirect(open) };
    if (this.stopping) throw new Error('swiftvol serve is stopping');
    let size = this.sizes.get(name) ?? sizeHint;
    if (size === undefined) {
      const sizes = await this.options.engine.sizesOf([name]);
      size = sizes.get(name);
      if (size === undefined) throw new EngineError(`volume '${name}' does not exist`);
    }
    this.sizes.set(name, size);
    return { size, direct: true };
  }

  async open(name: string): Promise<void> {
    await this.device(name);
  }

  /**
   * The open volume behind a LUN. Volumes are opened when exported, or on the
   * first connection for a LUN configured directly in tgtd (targets.conf).
   */
  device(name: string): Promise<Volume> {
    const open = this.volumes.get(name);
    if (open) return Promise.resolve(open);
    if (this.stopping) return Promise.reject(new Error('swiftvol serve is stopping'));
    let pending = this.opening.get(name);
    if (!pending) {
      const onLeaseLost = (message: string): void => {
        this.leaseLost.add(name);
        this.options.log(message, { volume: name, level: 'error' });
      };
      pending = this.options.engine.open(name, `swiftvol serve (pid ${process.pid})`, { onLeaseLost }).then((volume) => {
        this.leaseLost.delete(name);
        this.volumes.set(name, volume);
        return volume;
      });
      const forget = (): void => void this.opening.delete(name);
      pending.then(forget, forget);
      this.opening.set(name, pending);
    }
    return pending;
  }

  async close(name: string): Promise<void> {
    this.sizes.delete(name);
    await this.opening.get(name)?.catch(() => undefined);
    const device = this.volumes.get(name);
    this.volumes.delete(name);
    await device?.close();
  }

  async startSnapshot(name: string, snapshot: string): Promise<SnapshotStatus> {
    const volume = await this.device(name);
    const job = await this.options.engine.startSnapshot(volume, snapshot);
    // Uploads in progress, and the last few finished ones: a CLI waiting on a job may ask again after it settled.
    const old = this.jobs.get(name) ?? [];
    const finished = old.filter((j) => j.state !== 'uploading').slice(-4);
    const list = [...old.filter((j) => j.state === 'uploading' || finished.includes(j)), job];
    this.jobs.set(name, list);
    this.options.log(`snapshot ${name}@${snapshot}: frozen ${job.changedBytes} changed bytes, uploading ${job.totalBytes}`, { volume: name });
    job.done.then(
      (table) => this.options.log(`snapshot ${name}@${snapshot}: committed as version ${table.seq}`, { volume: name }),
      (err: Error) => this.options.log(`snapshot ${name}@${snapshot} failed: ${err.message}`, { volume: name, level: 'error' }),
    );
    return job.status();
  }

  snapshotJobs(name: string): Promise<SnapshotStatus[]> {
    return Promise.resolve((this.jobs.get(name) ?? []).map((j) => j.status()));
  }

  async waitSnapshot(name: string, snapshot: string, startedAt: string, ms: number): Promise<SnapshotStatus> {
    const job = (this.jobs.get(name) ?? []).find((j) => j.name === snapshot && j.startedAt === startedAt);
    if (!job) throw new EngineError(`no snapshot ${name}@${snapshot} started at ${String(startedAt)} is known to this serve`);
    let timer: NodeJS.Timeout | undefined;
    const wait = Number.isFinite(ms) ? Math.min(Math.max(ms, 0), 5000) : 0;
    await Promise.race([job.done.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, wait)))]);
    clearTimeout(timer);
    return job.status();
  }

  /** Deletes a snapshot of a served volume (the engine spares uploads in progress). */
  deleteSnapshot(name: string, snapshot: string): Promise<{ objects: number }> {
    return this.options.engine.deleteSnapshot(name, snapshot);
  }

  /** One resync per volume at a time; the background one and a CLI's share it. */
  resync(name: string, discard?: string): Promise<unknown> {
    const running = this.resyncs.get(name);
    if (running && discard === undefined) return running;
    const run = (running ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.options.engine.resync(name, discard === undefined ? {} : { discard }))
      .then((r) => {
        this.resyncCopied.set(name, (this.resyncCopied.get(name) ?? 0) + r.copied);
        if (r.copied > 0 || r.deleted > 0) this.options.log(`resync ${name}: ${r.copied} object(s) copied, ${r.deleted} version(s) dropped; ${r.stores.map((s) => `${s.name} ${s.state}`).join(', ')}`, { volume: name });
        return r;
      })
      .finally(() => {
        if (this.resyncs.get(name) === run) this.resyncs.delete(name);
      });
    this.resyncs.set(name, run);
    return run;
  }

  /**
   * Mirrored volumes whose stores fell behind are resynced in the
   * background once the store answers (tried again at most every
   * RESYNC_RETRY_MS while it fails).
   */
  private async resyncLagging(): Promise<void> {
    const mirror = mirrorOf(this.options.engine.store);
    if (!mirror || this.stopping) return;
    const now = Date.now();
    for (const container of await mirror.lagging()) {
      const name = volumeNameOfContainer(container);
      if (name === null || !this.volumes.has(name) || this.resyncs.has(name)) continue;
      if ((this.lastResync.get(name) ?? 0) + RESYNC_RETRY_MS > now) continue;
      this.lastResync.set(name, now);
      this.resync(name).catch((err: Error) => this.options.log(`resync ${name} failed (tried again later): ${err.message}`, { volume: name, level: 'warn' }));
    }
  }

  async view(): Promise<HostView> {
    const mirror = mirrorOf(this.options.engine.store);
    const served = new Set(this.volumes.keys());
    return {
      volumes: [...this.volumes].map(([name, volume]) => ({
        name,
        thread: this.options.thread ?? null,
        leaseHeld: !this.leaseLost.has(name),
        direct: volume.directIo(),
        coldReads: volume.counters.coldReads,
        coldReadBytes: volume.counters.coldReadBytes,
        dirtyBytes: volume.dirtyBytes(),
      })),
      snapshots: [...this.jobs.values()].flat().map((j) => j.status()),
      resyncing: [...this.resyncs.keys()],
      resyncCopied: [...this.resyncCopied],
      cache: this.options.cache?.blocks.stats() ?? null,
      mirror: mirror
        ? {
            members: mirror.members.map((m) => ({ name: m.name, up: !mirror.isDown(m.name) })),
            states: (await mirror.knownStates()).filter((k) => {
              const name = volumeNameOfContainer(k.container);
              return name !== null && served.has(name);
            }),
          }
        : null,
    };
  }

  async drain(): Promise<void> {
    this.stopping = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await Promise.allSettled([...this.resyncs.values()]);
    // Opens under way end first, so that their volumes are closed by stop.
    await Promise.allSettled([...this.opening.values()]);
    // Snapshots being uploaded finish first: they read the overlay.
    await Promise.allSettled([...this.jobs.values()].flat().map((j) => j.done));
  }

  async stop(): Promise<void> {
    await this.drain();
    await runPool([...this.volumes], CLOSES, ([name, volume]) =>
      volume.close().catch((err: Error) => this.options.log(`closing ${name}: ${err.message}`, { volume: name, level: 'error' })),
    );
    this.volumes.clear();
  }
}
