// swiftvold: serves exported volumes to tgtd's bs_swift over the block
// socket, drives tgtd (its own, or an existing one) through its control socket, and
// answers the CLI on the control socket.
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Engine } from '../engine/engine.js';
import { EngineError, volumesMessage } from '../engine/engine-error.js';
import type { SnapshotStatus } from '../engine/snapshot.js';
import { BlockServer, type ConnectionTaker, type DeviceDescription, type RequestEvent } from './block-server.js';
import { openFileLimit } from '../engine/processes.js';
import type { Log } from './serve-log.js';
import { UNKNOWN_CONTROL_REQUEST, blockSocketPath, listenControl, type ControlRequest } from './control.js';
import { TargetRegistry, targetName, viewOf, type TargetSpec, type TargetView } from './target-registry.js';
import { TgtAdmin, TgtError, Tgtd, lowestFreeTid, type TargetShow, type TgtdRecord } from './tgtd.js';
import { TgtErrno } from './tgt-ipc.js';
import { runPool } from '../store/run-pool.js';
import { CACHE_OPEN_FILES } from '../cache/block-cache.js';
import { LocalVolumeHost, type HostView, type VolumeHost } from './volume-host.js';
import type { EngineThreads } from './engine-threads.js';
import type { GatewayCache } from '../engine/gateway-cache.js';
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
/** Lineage roots looked up at once (a metadata read each, two for a clone). */
const ROOT_LOOKUPS = 32;

export interface DaemonOptions {
  /** The engine of serve's main thread: it holds the volumes unless `threads` does, and looks up volumes for targets. */
  engine: Engine;
  /** The main thread's gateway cache (without engine threads), for metrics. */
  cache?: GatewayCache;
  /** Engine threads that hold the volumes (none: the main thread holds them). */
  threads?: EngineThreads;
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

/** What serve holds, for metrics: read at each scrape (every host's view, merged). */
export type DaemonView = HostView;

export interface ServedTarget extends TargetSpec {
  tid: number;
  state: 'served' | 'failed';
  error?: string;
}

export class Daemon {
  private readonly registry: TargetRegistry;
  /** The host of every volume when serve has no engine threads. */
  private readonly local: LocalVolumeHost | null;
  /** Sizes of served volumes, for HELLOs that come before their volume is open. */
  private readonly sizes = new Map<string, number>();
  /** The last batch of background opens (tests and stop wait on it). */
  private backgroundOpens: Promise<void> = Promise.resolve();
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

  constructor(private readonly options: DaemonOptions) {
    this.registry = new TargetRegistry(options.stateDir);
    this.local = options.threads ? null : new LocalVolumeHost({ engine: options.engine, log: options.log, cache: options.cache });
  }

  /**
   * With engine threads: the lineage roots of exports being added, looked up
   * many at once (the store has just answered for them; each LUN's HELLO would
   * wait for its own otherwise), kept in their records. One that cannot be
   * found now is looked up at the HELLO.
   */
  private async learnRoots(specs: TargetSpec[]): Promise<void> {
    const threads = this.options.threads;
    if (!threads) return;
    await runPool(specs, ROOT_LOOKUPS, async (spec) => {
      spec.root ??= await threads.rootOf(spec.volume).catch(() => undefined);
    });
  }

  /** Every host of volumes. */
  private hosts(): VolumeHost[] {
    return this.local ? [this.local] : this.options.threads!.threads;
  }

  /** The host of a volume. */
  private hostOf(name: string): Promise<VolumeHost> {
    return this.local ? Promise.resolve(this.local) : this.options.threads!.threadOf(name);
  }

  /** What serve holds now, for metrics. */
  async view(): Promise<DaemonView> {
    return mergeViews(await Promise.all(this.hosts().map((h) => h.view())));
  }

  /** With engine threads: the thread a bs_swift connection goes to, at its HELLO. */
  private async route(volume: string): Promise<ConnectionTaker> {
    const thread = await this.options.threads!.threadOf(volume, this.served.get(volume)?.root);
    const hint = this.sizeHint(volume);
    return (fd, received) => thread.takeConnection(fd, received, volume, hint);
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
      const local = this.local;
      this.blockServer = new BlockServer({
        socketPath: blockSocketPath(stateDir),
        openDevice: (volume) => (local ? local.device(volume) : Promise.reject(new Error('no volume is served on the main thread'))),
        describeDevice: (volume) => this.describe(volume),
        ...(local ? {} : { route: (volume: string) => this.route(volume) }),
        log,
        onRequest: this.options.onRequest,
      });
      await this.blockServer.listen();
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

      warnIfFewFiles(specs.length, this.hosts().length, log);
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
      // the roots the LUNs' HELLOs looked up (engine threads) are kept for the next start, in one write
      const threads = this.options.threads;
      const learned = threads ? specs.filter((s) => s.root === undefined && threads.knownRoot(s.volume) !== undefined && this.served.get(s.volume)?.state === 'served') : [];
      if (learned.length > 0) this.registry.put(...learned.map((s) => ({ ...s, root: threads!.knownRoot(s.volume) })));
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
      // Only what is ours: a tid whose target still has our IQN, accounts we created.
      const present = await this.admin?.targets().catch(() => new Map<number, string>());
      for (const target of this.served.values()) {
        if (target.state !== 'served') continue;
        if (present?.get(target.tid) === target.iqn) await this.admin?.deleteTarget(target.tid).catch((err: Error) => log(err.message));
        if (target.chap) await this.admin?.deleteAccount(target.chap.user).catch((err: Error) => log(err.message));
      }
      this.served.clear();
      // Opens, resyncs and snapshot uploads under way end first (uploads read the overlay), then the connections, then the volumes.
      await this.backgroundOpens.catch(() => undefined);
      await Promise.all(this.hosts().map((h) => h.drain().catch((err: Error) => log(err.message, { level: 'error' }))));
      await this.blockServer?.close();
      await Promise.all(this.hosts().map((h) => h.stop().catch((err: Error) => log(err.message, { level: 'error' }))));
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
        return this.hostOf(req.volume).then((h) => h.snapshotJobs(req.volume));
      case 'snapshot.wait':
        return this.hostOf(req.volume).then((h) => h.waitSnapshot(req.volume, req.name, req.startedAt, req.ms));
      case 'snapshot.delete':
        return this.hostOf(req.volume).then((h) => h.deleteSnapshot(req.volume, req.name));
      case 'volume.resync':
        if (typeof req.volume !== 'string' || (req.discard !== undefined && typeof req.discard !== 'string')) return Promise.reject(new EngineError('volume.resync: bad request'));
        return this.hostOf(req.volume).then((h) => h.resync(req.volume, req.discard));
      default:
        return Promise.reject(new Error(UNKNOWN_CONTROL_REQUEST));
    }
  }

  /** Freezes a served volume's dirty set now and uploads it in the background. */
  private async startSnapshot(name: string, snapshot: string): Promise<SnapshotStatus> {
    if (this.served.get(name)?.state !== 'served' && !(await this.isOpen(name))) throw new EngineError(`volume '${name}' is not served here`);
    return (await this.hostOf(name)).startSnapshot(name, snapshot);
  }

  /** Whether a host holds the volume open (a LUN configured in tgtd by hand that connected). */
  private async isOpen(name: string): Promise<boolean> {
    const view = await (await this.hostOf(name)).view();
    return view.volumes.some((v) => v.name === name);
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
        await (await this.hostOf(name)).open(name);
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

  /** What HELLO says of a volume that may not be open yet (no engine threads: those answer their own HELLOs). */
  private describe(name: string): Promise<DeviceDescription> {
    if (this.stopping) return Promise.reject(new Error('swiftvol serve is stopping'));
    return this.local!.describe(name, this.sizeHint(name));
  }

  /** A served volume's size as its export record or target add gave it: a HELLO is answered from it before the volume is open. */
  private sizeHint(name: string): number | undefined {
    return this.sizes.get(name) ?? this.served.get(name)?.size;
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
    specs = specs.map((s) => ({ ...s }));
    await this.learnRoots(specs);
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
      await (await this.hostOf(volume)).close(volume);
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
function warnIfFewFiles(volumes: number, caches: number, log: Log): void {
  const limit = openFileLimit();
  // every host (an engine thread) has a cache of its own, with its own open files
  const need = volumes * FILES_PER_VOLUME + 256 + caches * CACHE_OPEN_FILES;
  if (limit !== null && need > limit) {
    log(`${volumes} exported volumes need about ${need} open files, and this process may open ${limit}: raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit)`, { level: 'warn' });
  }
}

/** The views of several hosts as one: a mirror store is up only where every host finds it up. */
function mergeViews(views: HostView[]): DaemonView {
  const cached = views.map((v) => v.cache).filter((c): c is NonNullable<HostView['cache']> => c !== null);
  const mirrors = views.map((v) => v.mirror).filter((m): m is NonNullable<HostView['mirror']> => m !== null);
  const up = new Map<string, boolean>();
  for (const m of mirrors) for (const member of m.members) up.set(member.name, (up.get(member.name) ?? true) && member.up);
  return {
    volumes: views.flatMap((v) => v.volumes),
    snapshots: views.flatMap((v) => v.snapshots),
    resyncing: views.flatMap((v) => v.resyncing),
    resyncCopied: views.flatMap((v) => v.resyncCopied),
    cache:
      cached.length === 0
        ? null
        : cached.reduce((a, c) => ({ bytes: a.bytes + c.bytes, budget: a.budget + c.budget, objects: a.objects + c.objects, evicted: a.evicted + c.evicted })),
    mirror: mirrors.length === 0 ? null : { members: [...up].map(([name, isUp]) => ({ name, up: isUp })), states: mirrors.flatMap((m) => m.states) },
  };
}
