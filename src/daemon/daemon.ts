// swiftvold: serves exported volumes to tgtd's bs_swift over the block
// socket, drives tgtd (its own, or an existing one) through its control socket, and
// answers the CLI on the control socket.
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Engine } from '../engine/engine.js';
import type { Volume } from '../engine/volume.js';
import { EngineError, volumesMessage } from '../engine/engine-error.js';
import type { SnapshotJob, SnapshotStatus } from '../engine/snapshot.js';
import { BlockServer, type DeviceDescription, type RequestEvent } from './block-server.js';
import { canOpenDirect } from '../engine/block-device.js';
import { openFileLimit } from '../engine/processes.js';
import type { Log } from './serve-log.js';
import { UNKNOWN_CONTROL_REQUEST, blockSocketPath, listenControl, type ControlRequest } from './control.js';
import { TargetRegistry, targetName, viewOf, type TargetSpec, type TargetView } from './target-registry.js';
import { TgtAdmin, TgtError, Tgtd, lowestFreeTid, type TargetShow, type TgtdRecord } from './tgtd.js';
import { TgtErrno } from './tgt-ipc.js';
import { mirrorOf } from '../store/mirror-store.js';
import { volumeNameOfContainer } from '../format/volume-format.js';
import { runPool } from '../store/run-pool.js';
import { CACHE_OPEN_FILES } from '../cache/block-cache.js';

/** How often serve looks for mirrored volumes with a store behind, and how long it waits before trying one again. */
const RESYNC_CHECK_MS = 1000;
const RESYNC_RETRY_MS = 10_000;
/**
 * Files an open, served volume holds in serve: the overlay (twice), its
 * SQLite database with journal files, the block map, and bs_swift's
 * connections (one for commands, one for direct I/O), measured with 1000 volumes.
 */
const FILES_PER_VOLUME = 8;
/** Volumes opened at once in the background (each is round trips to the store: lease, tables). */
const BACKGROUND_OPENS = 16;
/** Targets made at once when serve starts. */
const START_TARGETS = 4;
/** Volumes closed at once (each flushes and gives its lease back: a write to the store). */
const CLOSES = 16;

export interface DaemonOptions {
  engine: Engine;
  stateDir: string;
  /** Portal of our own tgtd. */
  host: string;
  port: number;
  /** Use the tgtd already running with this control port instead of starting one. */
  existingTgtd?: number;
  /** Run no tgtd and manage no targets: a tgtd configured by hand (targets.conf) connects to the block socket. */
  noTgtd?: boolean;
  log: Log;
  /** Told of every block request answered (metrics). */
  onRequest?: (event: RequestEvent) => void;
}

/** What serve holds, for metrics: read at each scrape. */
export interface DaemonView {
  volumes: Array<{ name: string; volume: Volume; leaseHeld: boolean }>;
  /** Snapshot uploads started here (running, and the last few done), per volume. */
  snapshots: SnapshotStatus[];
  /** Volumes being resynced now. */
  resyncing: string[];
  /** Objects copied by resyncs since serve started, per volume. */
  resyncCopied: Map<string, number>;
}

export interface ServedTarget extends TargetSpec {
  tid: number;
  state: 'served' | 'failed';
  error?: string;
}

export class Daemon {
  private readonly registry: TargetRegistry;
  private readonly volumes = new Map<string, Volume>();
  private readonly opening = new Map<string, Promise<Volume>>();
  /** Sizes of served volumes, for HELLOs that come before their volume is open. */
  private readonly sizes = new Map<string, number>();
  /** The last batch of background opens (tests and stop wait on it). */
  private backgroundOpens: Promise<void> = Promise.resolve();
  /** Snapshots started here, per volume (the last few). */
  private readonly jobs = new Map<string, SnapshotJob[]>();
  private readonly served = new Map<string, ServedTarget>();
  /** In a shared tgtd: the tids its last listing showed in use (see usedTids). */
  private othersTids: Set<number> | null = null;
  private blockServer: BlockServer | null = null;
  private control: net.Server | null = null;
  private tgtd: Tgtd | null = null;
  private admin: TgtAdmin | null = null;
  private stopping: Promise<void> | null = null;
  /** Target changes run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Resyncs running, per volume, and when each was last started. */
  private readonly resyncs = new Map<string, Promise<unknown>>();
  private readonly lastResync = new Map<string, number>();
  private resyncTimer: NodeJS.Timeout | null = null;
  /** Volumes whose lease was lost (another machine may hold it). */
  private readonly leaseLost = new Set<string>();
  private readonly resyncCopied = new Map<string, number>();

  constructor(private readonly options: DaemonOptions) {
    this.registry = new TargetRegistry(options.stateDir);
  }

  /** What serve holds now, for metrics. */
  view(): DaemonView {
    return {
      volumes: [...this.volumes].map(([name, volume]) => ({ name, volume, leaseHeld: !this.leaseLost.has(name) })),
      snapshots: [...this.jobs.values()].flat().map((j) => j.status()),
      resyncing: [...this.resyncs.keys()],
      resyncCopied: this.resyncCopied,
    };
  }

  /** Where initiators connect, as far as this daemon knows. */
  get portal(): string {
    if (this.options.noTgtd) return 'the tgtd configured by hand';
    if (this.options.existingTgtd !== undefined) return `the portals of tgtd ${this.options.existingTgtd}`;
    return `${this.options.host}:${this.options.port}`;
  }

  async start(): Promise<void> {
    const { stateDir, log } = this.options;
    try {
      this.control = await listenControl(stateDir, (req) => this.handle(req));
      this.blockServer = new BlockServer({
        socketPath: blockSocketPath(stateDir),
        openDevice: (volume) => this.device(volume),
        describeDevice: (volume) => this.describe(volume),
        log,
        onRequest: this.options.onRequest,
      });
      await this.blockServer.listen();
      if (mirrorOf(this.options.engine.store)) {
        this.resyncTimer = setInterval(() => void this.resyncLagging().catch((err: Error) => log(`background resync: ${err.message}`)), RESYNC_CHECK_MS);
        this.resyncTimer.unref();
      }
      if (this.options.noTgtd) {
        log(`no tgtd of our own: LUNs with bstype swift and bsopts socket=${blockSocketPath(stateDir)} are served`);
        return;
      }
      if (this.options.existingTgtd !== undefined) {
        this.admin = new TgtAdmin(this.options.existingTgtd);
        await this.admin.ping();
        log(`using the tgtd on control port ${this.options.existingTgtd}`);
      } else {
        this.tgtd = await this.ownTgtd();
        this.admin = this.tgtd.admin;
      }
      const existing = await this.admin.show();
      const specs = this.registry.list();
      warnIfFewFiles(specs.length, log);
      // The targets first, tids handed out from one listing; LUNs are described
      // from the export records, and the volumes open in the background (or at
      // their first command), so that serve is ready without waiting on the store.
      const used = new Set(existing.map((t) => t.tid));
      if (!this.tgtd) this.othersTids = new Set(used);
      // a few targets at once: tgtd runs one request at a time, but the volumes' HELLOs and our turns overlap
      await runPool(specs, START_TARGETS, async (spec) => {
        try {
          await this.serve(spec, existing, used);
        } catch (err) {
          log(`cannot serve ${spec.volume}: ${(err as Error).message}`, { volume: spec.volume, level: 'error' });
          this.served.set(spec.volume, { ...spec, tid: 0, state: 'failed', error: (err as Error).message });
        }
      });
      this.openInBackground(specs.map((s) => s.volume).filter((v) => this.served.get(v)?.state === 'served'));
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Removes the targets (initiators are logged out), flushes and closes volumes, stops tgtd. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const { log } = this.options;
      this.control?.close();
      if (this.resyncTimer) clearInterval(this.resyncTimer);
      await Promise.allSettled([...this.resyncs.values()]);
      // Only what is ours: a tid whose target still has our IQN, accounts we created.
      const present = await this.admin?.targets().catch(() => new Map<number, string>());
      for (const target of this.served.values()) {
        if (target.state !== 'served') continue;
        if (present?.get(target.tid) === target.iqn) await this.admin?.deleteTarget(target.tid).catch((err: Error) => log(err.message));
        if (target.chap) await this.admin?.deleteAccount(target.chap.user).catch((err: Error) => log(err.message));
      }
      this.served.clear();
      // Opens under way end first, so that their volumes are closed below.
      await this.backgroundOpens.catch(() => undefined);
      await Promise.allSettled([...this.opening.values()]);
      // Snapshots being uploaded finish first: they read the overlay.
      await Promise.allSettled([...this.jobs.values()].flat().map((j) => j.done));
      await this.blockServer?.close();
      await runPool([...this.volumes], CLOSES, ([name, volume]) =>
        volume.close().catch((err: Error) => log(`closing ${name}: ${err.message}`, { volume: name, level: 'error' })),
      );
      this.volumes.clear();
      if (this.tgtd) {
        await this.tgtd.stop();
        fs.rmSync(path.join(this.options.stateDir, 'run', 'tgtd.json'), { force: true });
      }
    })();
    return this.stopping;
  }

  /** The targets, CHAP secrets left out. */
  targets(): TargetView[] {
    return [...this.served.values()].sort((a, b) => a.volume.localeCompare(b.volume)).map(viewOf);
  }

  private handle(req: ControlRequest): Promise<unknown> {
    switch (req.op) {
      case 'status':
        return Promise.resolve({ pid: process.pid, portal: this.portal, targets: this.targets() });
      case 'target.list':
        return Promise.resolve(this.targets());
      case 'target.add':
        return this.addMany([{ volume: req.volume, iqn: targetName(req.iqnPrefix, req.volume), allow: req.allow, chap: req.chap }]);
      case 'target.remove':
        return this.serialized(async () => (await this.removeMany([req.volume]))[0]);
      case 'targets.add':
        return this.addMany(req.volumes.map((volume) => ({ volume, iqn: targetName(req.iqnPrefix, volume), allow: req.allow, chap: req.chap })));
      case 'targets.remove':
        return this.serialized(() => this.removeMany(req.volumes));
      case 'snapshot.create':
        return this.startSnapshot(req.volume, req.name);
      case 'snapshot.jobs':
        return Promise.resolve((this.jobs.get(req.volume) ?? []).map((j) => j.status()));
      case 'snapshot.wait':
        return this.waitSnapshot(req.volume, req.name, req.startedAt, req.ms);
      case 'snapshot.delete':
        return this.deleteSnapshot(req.volume, req.name);
      case 'volume.resync':
        if (typeof req.volume !== 'string' || (req.discard !== undefined && typeof req.discard !== 'string')) return Promise.reject(new EngineError('volume.resync: bad request'));
        return this.resync(req.volume, req.discard);
      default:
        return Promise.reject(new Error(UNKNOWN_CONTROL_REQUEST));
    }
  }

  /** A snapshot job's status once it has settled, or after `ms` (progress), whichever comes first. */
  private async waitSnapshot(volume: string, name: string, startedAt: string, ms: number): Promise<SnapshotStatus> {
    const job = (this.jobs.get(volume) ?? []).find((j) => j.name === name && j.startedAt === startedAt);
    if (!job) throw new EngineError(`no snapshot ${volume}@${name} started at ${String(startedAt)} is known to this serve`);
    let timer: NodeJS.Timeout | undefined;
    const wait = Number.isFinite(ms) ? Math.min(Math.max(ms, 0), 5000) : 0;
    await Promise.race([job.done.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, wait)))]);
    clearTimeout(timer);
    return job.status();
  }

  /** Freezes a served volume's dirty set now and uploads it in the background. */
  private async startSnapshot(name: string, snapshot: string): Promise<SnapshotStatus> {
    if (!this.volumes.has(name) && this.served.get(name)?.state !== 'served') throw new EngineError(`volume '${name}' is not served here`);
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

  /** One resync per volume at a time; the background one and a CLI's share it. */
  private resync(name: string, discard?: string): Promise<unknown> {
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

  /** Deletes a snapshot of a served volume (the engine spares uploads in progress). */
  private deleteSnapshot(name: string, snapshot: string): Promise<{ objects: number }> {
    return this.options.engine.deleteSnapshot(name, snapshot);
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Opens served volumes BACKGROUND_OPENS at once, so that leases are taken
   * and first commands find their volume open; a command that comes first
   * opens its volume at once. A volume that cannot be served here (held by
   * another machine, deleted) has its target taken down and marked failed; a
   * store that does not answer leaves the target up, and the next command
   * tries again.
   */
  private openInBackground(names: string[]): void {
    if (names.length === 0) return;
    const started = Date.now();
    let failed = 0;
    const opens = runPool(names, BACKGROUND_OPENS, async (name) => {
      if (this.stopping || this.served.get(name)?.state !== 'served') return;
      try {
        await this.device(name);
      } catch (err) {
        failed++;
        await this.openFailed(name, err as Error);
      }
    });
    this.backgroundOpens = opens.then(() => {
      if (!this.stopping) this.options.log(`opened ${names.length - failed} of ${names.length} volume(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    });
  }

  private async openFailed(name: string, err: Error): Promise<void> {
    const { log } = this.options;
    const target = this.served.get(name);
    if (!(err instanceof EngineError) || target?.state !== 'served') {
      log(`cannot open ${name} yet (its next command tries again): ${err.message}`, { volume: name, level: 'warn' });
      return;
    }
    log(`cannot serve ${name}: ${err.message}`, { volume: name, level: 'error' });
    await this.serialized(async () => {
      if (this.served.get(name) !== target || this.stopping) return;
      await this.takeDown([target]).catch((e: Error) => log(e.message));
      this.served.set(name, { ...target, tid: 0, state: 'failed', error: err.message });
    });
  }

  /**
   * What HELLO says of a volume that may not be open yet: its size, from the
   * open volume, the export record, or the volume's metadata (read once).
   * Sizes never change (a volume deleted and made again under the same name
   * is refused at its first command, when the open finds another size).
   */
  private async describe(name: string): Promise<DeviceDescription> {
    const open = this.volumes.get(name);
    if (open) return { size: open.size, direct: canOpenDirect(open) };
    if (this.stopping) throw new Error('swiftvol serve is stopping');
    let size = this.sizes.get(name) ?? this.served.get(name)?.size;
    if (size === undefined) {
      const sizes = await this.options.engine.sizesOf([name]);
      size = sizes.get(name);
      if (size === undefined) throw new EngineError(`volume '${name}' does not exist`);
    }
    this.sizes.set(name, size);
    return { size, direct: true };
  }

  /**
   * target add of one or more: every name checked before anything changes
   * (exists, not held elsewhere); the targets made one at a time, then the
   * volumes opened in the background.
   */
  private async addMany(specs: TargetSpec[]): Promise<TargetView[]> {
    if (this.stopping) throw new Error('swiftvol serve is stopping');
    const already = specs.filter((s) => this.served.get(s.volume)?.state === 'served');
    if (already.length > 0) throw new EngineError(volumesMessage(already.map((s) => s.volume), 'is already exported', 'are already exported'));
    // exists and is not held elsewhere: checked now, the open itself comes after (openInBackground)
    const sizes = await this.options.engine.servable(specs.map((s) => s.volume));
    return this.serialized(async () => {
      if (this.stopping) throw new Error('swiftvol serve is stopping');
      const raced = specs.filter((s) => this.served.get(s.volume)?.state === 'served');
      if (raced.length > 0) throw new EngineError(volumesMessage(raced.map((s) => s.volume), 'is already exported', 'are already exported'));
      const used = await this.usedTids();
      const made: TargetSpec[] = [];
      try {
        for (const spec of specs) {
          const sized = { ...spec, size: sizes.get(spec.volume) };
          await this.serve(sized, [], used);
          made.push(sized);
        }
      } finally {
        // recorded for the next start: what was made, also when a later one failed
        this.registry.put(...made);
        this.openInBackground(made.map((s) => s.volume));
      }
      return made.map((spec) => viewOf(this.served.get(spec.volume)!));
    });
  }

  /**
   * target remove of one or more: every name checked first; the targets go
   * one at a time (tgtd runs one request at a time), then the volumes close
   * CLOSES at once (each flushes and gives its lease back to the store).
   */
  private async removeMany(volumes: string[]): Promise<Array<{ volume: string }>> {
    const recorded = new Set(this.registry.list().map((t) => t.volume));
    const absent = volumes.filter((v) => !this.served.has(v) && !recorded.has(v));
    if (absent.length > 0) throw new EngineError(volumesMessage(absent, 'is not exported', 'are not exported'));
    this.registry.remove(...volumes);
    const served = volumes.map((v) => this.served.get(v)).filter((t): t is ServedTarget => t?.state === 'served');
    for (const volume of volumes) {
      this.served.delete(volume);
      this.sizes.delete(volume);
    }
    await this.takeDown(served);
    await runPool(volumes, CLOSES, async (volume) => {
      await this.opening.get(volume)?.catch(() => undefined);
      const device = this.volumes.get(volume);
      this.volumes.delete(volume);
      await device?.close();
      this.options.log(`stopped serving ${volume}`, { volume });
    });
    return volumes.map((volume) => ({ volume }));
  }

  /**
   * Deletes these served targets from tgtd, one at a time (tgtd runs one
   * request at a time), then their CHAP accounts that no other target uses
   * (accounts are global in tgtd), with one listing.
   */
  private async takeDown(targets: ServedTarget[]): Promise<void> {
    const chapUsers = new Set<string>();
    // Our own tgtd has our targets only; a shared one is asked (one listing) whether each tid still has our IQN.
    const listed = this.tgtd || targets.length === 0 ? null : await this.admin!.targets();
    for (const target of targets) {
      if (listed === null || listed.get(target.tid) === target.iqn) {
        await this.admin!.deleteTarget(target.tid).catch(ignoreNoTarget);
        this.othersTids?.delete(target.tid); // free again (a tid another tool has taken meanwhile stays used)
      }
      if (target.chap) chapUsers.add(target.chap.user);
    }
    if (chapUsers.size === 0) return;
    const inUse = new Set((await this.admin!.show()).flatMap((t) => t.accounts));
    for (const user of chapUsers) if (!inUse.has(user)) await this.admin!.deleteAccount(user).catch(() => undefined);
  }

  /**
   * Tids in use: ours, in our own tgtd (whose targets are all ours); in a
   * shared one, also those its listing showed, listed once and again only
   * when asked to (a tid we chose turned out taken): a listing of a tgtd
   * with a thousand targets is a megabyte of text.
   */
  private async usedTids(relist = false): Promise<Set<number>> {
    const ours = [...this.served.values()].filter((t) => t.state === 'served').map((t) => t.tid);
    if (this.tgtd) return new Set(ours);
    if (relist || !this.othersTids) this.othersTids = new Set((await this.admin!.targets()).keys());
    return new Set([...this.othersTids, ...ours]);
  }

  /**
   * The open volume behind a LUN. Volumes are opened when exported, or on the
   * first connection for a LUN configured directly in tgtd (targets.conf).
   */
  private device(name: string): Promise<Volume> {
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

  /**
   * Our tgtd: the one a crashed predecessor left running on the same portal
   * (its initiators stay logged in and bs_swift reconnects to us), or a new one.
   */
  private async ownTgtd(): Promise<Tgtd> {
    const { stateDir, host, port, log } = this.options;
    const recordFile = path.join(stateDir, 'run', 'tgtd.json');
    let record: TgtdRecord | null = null;
    try {
      record = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as TgtdRecord;
    } catch {
      // none
    }
    if (record) {
      const left = await Tgtd.adopt(record);
      if (left && record.host === host && record.port === port) {
        log(`adopted tgtd ${left.pid} on ${this.portal} (control port ${record.control}) left by an earlier serve`);
        return left;
      }
      if (left) await left.stop();
    }
    const logFile = path.join(stateDir, 'run', 'tgtd.log');
    const tgtd = await Tgtd.start({ host, port, logFile });
    fs.writeFileSync(recordFile, JSON.stringify(tgtd.record) + '\n', { mode: 0o600 });
    log(`tgtd ${tgtd.pid} listening on ${this.portal} (control port ${tgtd.record.control}, log ${logFile})`);
    return tgtd;
  }

  /**
   * Opens the volume and creates its target, unless tgtd has it already (an
   * adopted tgtd); undoes what it did if a step fails.
   */
  private async serve(spec: TargetSpec, existing: TargetShow[] = [], usedTids?: Set<number>): Promise<ServedTarget> {
    const admin = this.admin;
    if (!admin) throw new EngineError('this swiftvol serve runs without tgtd (--no-tgtd): configure the target in tgtd');
    const same = existing.find((t) => t.iqn === spec.iqn);
    if (same) {
      // An adopted tgtd kept our target; anything else of that name is not ours to take.
      const lun = same.luns.find((l) => l.lun === 1);
      if (lun?.bstype !== 'swift' || lun.path !== spec.volume) {
        throw new EngineError(`tgtd already has a target ${spec.iqn} (tid ${same.tid}) that is not a swift LUN of volume '${spec.volume}'`);
      }
      const target: ServedTarget = { ...spec, tid: same.tid, state: 'served' };
      this.served.set(spec.volume, target);
      this.options.log(`serving ${spec.volume} as ${spec.iqn} again (tid ${same.tid}, kept by tgtd)`, { volume: spec.volume });
      return target;
    }
    if (spec.size !== undefined) this.sizes.set(spec.volume, spec.size);
    // a batch (and the start) hands tids out from one listing; one target asks tgtd
    const used = usedTids ?? (await this.usedTids());
    let tid = lowestFreeTid(used);
    used.add(tid);
    let created = false;
    let account = false;
    let relisted = false;
    try {
      for (;;) {
        try {
          await admin.addTarget(tid, spec.iqn);
          break;
        } catch (err) {
          // a tid taken meanwhile (another tool, in a shared tgtd): list again once, then the next one
          if (!(err instanceof TgtError && err.tgtErrno === TgtErrno.TARGET_EXIST)) throw err;
          if (!relisted && !this.tgtd) {
            for (const t of await this.usedTids(true)) used.add(t);
            relisted = true;
          }
          tid = lowestFreeTid(used);
          used.add(tid);
        }
      }
      created = true;
      await admin.addLun(tid, 1, spec.volume, { bstype: 'swift', bsopts: `socket=${blockSocketPath(this.options.stateDir)}`, thinProvisioning: true });
      if (spec.chap) {
        await admin.addChap(tid, spec.chap.user, spec.chap.secret);
        account = true;
      }
      for (const allowed of spec.allow) {
        if (/^(iqn|eui)\./.test(allowed)) await admin.bindName(tid, allowed);
        else await admin.bindAddress(tid, allowed);
      }
    } catch (err) {
      if (created) await admin.deleteTarget(tid).catch(() => undefined);
      if (account && spec.chap) await admin.deleteAccount(spec.chap.user).catch(() => undefined);
      throw err;
    }
    const target: ServedTarget = { ...spec, tid, state: 'served' };
    this.served.set(spec.volume, target);
    this.options.log(`serving ${spec.volume} as ${spec.iqn} (tid ${tid}, LUN 1, allowed: ${spec.allow.join(' ')}${spec.chap ? ', CHAP' : ''})`, { volume: spec.volume });
    return target;
  }
}

/** A target already gone (deleted by hand) is as good as deleted. */
function ignoreNoTarget(err: unknown): void {
  if (!(err instanceof TgtError && err.tgtErrno === TgtErrno.NO_TARGET)) throw err;
}

/** Says so at start when the exported volumes will need more open files than this process may have. */
function warnIfFewFiles(volumes: number, log: Log): void {
  const limit = openFileLimit();
  const need = volumes * FILES_PER_VOLUME + 256 + CACHE_OPEN_FILES;
  if (limit !== null && need > limit) {
    log(`${volumes} exported volumes need about ${need} open files, and this process may open ${limit}: raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit)`, { level: 'warn' });
  }
}
