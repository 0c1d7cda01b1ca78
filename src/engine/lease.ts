// The lease: who may write a volume (serve it, snapshot it), kept in the
// store so that two machines never do at once. Swift has no compare-and-swap
// on overwrite, so the lease is a sequence of write-once objects
// `lease/<n>`; taking or renewing writes `lease/<n+1>` with If-None-Match,
// so of two contenders one wins. A lease runs out unless renewed; a holder's
// successor takes over once it has expired (at once if the holder was this
// machine's own process that is gone). Format 5 leases follow their holder's
// heartbeat (holder-heartbeat.ts) instead of being renewed one by one.
import os from 'node:os';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { LEASE_PREFIX, containerName } from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import { isProcessAlive } from './processes.js';
import { readHeartbeat, type HeartbeatFollower, type HolderHeartbeat } from './holder-heartbeat.js';

export interface LeaseRecord {
  /** host:pid:state-dir of the holder. */
  holder: string;
  purpose: string;
  host: string;
  pid: number;
  stateDir: string;
  /** Milliseconds since the epoch; 0 when released. */
  expiresAt: number;
  /**
   * Format 5: the holder's heartbeat object (holder-heartbeat.ts). The lease
   * lasts as long as that heartbeat (of the same holder) is fresh; expiresAt
   * is its expiry when the lease was taken, and counts if it is gone.
   */
  heartbeat?: string;
}

export const DEFAULT_LEASE_MS = 30_000;

function leaseObjectName(n: number): string {
  return `${LEASE_PREFIX}${String(n).padStart(10, '0')}`;
}

export class Lease implements HeartbeatFollower {
  private timer: NodeJS.Timeout | null = null;
  private heartbeat: HolderHeartbeat | null = null;
  private renewing: Promise<void> = Promise.resolve();
  private lost = false;

  private constructor(
    private readonly store: ObjectStore,
    private readonly volume: string,
    private readonly record: LeaseRecord,
    private n: number,
    private readonly ttlMs: number,
    private readonly onLost: (message: string) => void,
  ) {}

  static async acquire(
    store: ObjectStore,
    volume: string,
    stateDir: string,
    purpose: string,
    options: { ttlMs?: number; onLost?: (message: string) => void; heartbeat?: HolderHeartbeat } = {},
  ): Promise<Lease> {
    const ttlMs = options.ttlMs ?? DEFAULT_LEASE_MS;
    const heartbeat = options.heartbeat ?? null;
    const record: LeaseRecord = {
      holder: holderName(stateDir),
      purpose,
      host: os.hostname(),
      pid: process.pid,
      stateDir,
      expiresAt: 0,
    };
    if (heartbeat) record.heartbeat = heartbeat.objectName;
    for (let attempt = 0; attempt < 3; attempt++) {
      const { n, current } = await Lease.latest(store, volume);
      const held = await Lease.heldMessage(store, volume, current, record.holder);
      if (held) throw new EngineError(held);
      const lease = new Lease(store, volume, record, n, ttlMs, options.onLost ?? (() => undefined));
      lease.heartbeat = heartbeat;
      // The lease is only as good as the store's conditional PUT. Where it is not
      // atomic (Swift checks If-None-Match when a PUT starts: two PUTs racing in the
      // same instant can both succeed, the later one winning), reading back catches
      // most such races; where it is (FileStore), the PUT that succeeded won.
      const expiresAt = heartbeat ? await heartbeat.fresh() : undefined;
      const won = (await lease.write(expiresAt)) && (store.consistency.atomicConditionalPut || (await lease.confirm()));
      if (won) {
        // one heartbeat renews every lease of this holder that names it; others renew themselves
        if (heartbeat) heartbeat.follow(lease);
        else {
          lease.timer = setInterval(() => void lease.renew(), Math.max(1000, ttlMs / 3));
          lease.timer.unref();
        }
        return lease;
      }
      // Someone else wrote the next lease object first: look again.
    }
    throw new EngineError(`volume '${volume}': could not take its lease (contended)`);
  }

  /**
   * Why this process could not take the volume's lease now (another live
   * holder's lease has not run out), or null: a look, without taking it.
   */
  static async heldElsewhere(store: ObjectStore, volume: string, stateDir: string): Promise<string | null> {
    return Lease.heldMessage(store, volume, (await Lease.latest(store, volume)).current, holderName(stateDir));
  }

  private static async heldMessage(store: ObjectStore, volume: string, current: LeaseRecord | null, holder: string): Promise<string | null> {
    if (!current || current.expiresAt === 0 || current.holder === holder || Lease.holderIsGone(current)) return null;
    const until = await Lease.expiryOf(store, current);
    if (until <= Date.now()) return null;
    return `volume '${volume}' is held by ${current.holder} (${current.purpose}) until ${new Date(until).toISOString()}`;
  }

  /** When a lease runs out: its heartbeat's expiry where it follows one (of its holder), else its own. */
  private static async expiryOf(store: ObjectStore, record: LeaseRecord): Promise<number> {
    if (!record.heartbeat) return record.expiresAt;
    const beat = await readHeartbeat(store, record.heartbeat);
    return beat && beat.holder === record.holder ? beat.expiresAt : record.expiresAt;
  }

  /** A heartbeat that could not be written: as a failed renewal (the next one tries again). */
  tell(message: string): void {
    this.onLost(`volume '${this.volume}': ${message}`);
  }

  /** After a late heartbeat: still ours unless someone wrote a newer lease object meanwhile. */
  async verify(): Promise<void> {
    if (this.lost) return;
    const { n } = await Lease.latest(this.store, this.volume);
    if (n === this.n) return;
    this.lost = true;
    this.heartbeat?.unfollow(this);
    this.onLost(`lost the lease of volume '${this.volume}': another holder took it over while its heartbeat was late`);
  }

  /** The newest lease object and its record. */
  private static async latest(store: ObjectStore, volume: string): Promise<{ n: number; current: LeaseRecord | null }> {
    const container = containerName(volume);
    let last: string | null = null;
    for await (const obj of store.list(container, LEASE_PREFIX)) last = obj.name;
    if (last === null) return { n: 0, current: null };
    const n = Number(last.slice(LEASE_PREFIX.length));
    try {
      return { n, current: JSON.parse((await store.get(container, last)).toString('utf8')) as LeaseRecord };
    } catch (err) {
      if (isNotFound(err) || err instanceof SyntaxError) return { n, current: null };
      throw err;
    }
  }

  /** A holder on this machine whose process is gone cannot renew: no need to wait for expiry. */
  private static holderIsGone(record: LeaseRecord): boolean {
    return record.host === os.hostname() && !isProcessAlive(record.pid);
  }

  /** Writes lease/<n+1>; false if another writer got there first. */
  private async write(expiresAt = Date.now() + this.ttlMs): Promise<boolean> {
    const container = containerName(this.volume);
    const next = this.n + 1;
    const body = Buffer.from(JSON.stringify({ ...this.record, expiresAt }));
    try {
      await this.store.put(container, leaseObjectName(next), body, { ifNoneMatch: true, contentType: 'application/json' });
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'conflict') return false;
      throw err;
    }
    const previous = this.n;
    this.n = next;
    // Older lease objects are history: keep the one before, drop the rest.
    if (previous > 1) void this.store.delete(container, leaseObjectName(previous - 1)).catch(() => undefined);
    return true;
  }

  /** Whether the lease object just written still says we hold it. */
  private async confirm(): Promise<boolean> {
    await new Promise((r) => setTimeout(r, 50));
    try {
      const data = await this.store.get(containerName(this.volume), leaseObjectName(this.n));
      return (JSON.parse(data.toString('utf8')) as LeaseRecord).holder === this.record.holder;
    } catch {
      return false;
    }
  }

  private renew(): Promise<void> {
    this.renewing = this.renewing.then(async () => {
      if (this.lost || this.timer === null) return;
      try {
        if (!(await this.write())) {
          this.lost = true;
          this.stop();
          this.onLost(`lost the lease of volume '${this.volume}': another holder took it over`);
        }
      } catch (err) {
        // Transient: the next renewal tries again, well before expiry.
        this.onLost(`could not renew the lease of volume '${this.volume}': ${(err as Error).message}`);
      }
    });
    return this.renewing;
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.heartbeat?.unfollow(this);
  }

  /**
   * Stops renewing without letting go, as a crash would (tests, error paths).
   * A lease that follows a heartbeat stays held while that heartbeat is
   * renewed for the holder's other leases, until the process ends.
   */
  abandon(): void {
    this.stop();
  }

  /** Gives the lease up (a released lease can be taken at once). */
  async release(): Promise<void> {
    this.stop();
    await this.renewing;
    if (!this.lost) await this.write(0).catch(() => undefined);
  }
}

/** Who holds a lease: this host, process and state directory. */
export function holderName(stateDir: string): string {
  return `${os.hostname()}:${process.pid}:${stateDir}`;
}
