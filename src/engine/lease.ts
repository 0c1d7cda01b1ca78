// The lease: who may write a volume (serve it, snapshot it), kept in the
// store so that two machines never do at once. Swift has no compare-and-swap
// on overwrite, so the lease is a sequence of write-once objects
// `lease/<n>`; taking or renewing writes `lease/<n+1>` with If-None-Match,
// so of two contenders one wins. A lease runs out unless renewed; a holder's
// successor takes over once it has expired (at once if the holder was this
// machine's own process that is gone).
import os from 'node:os';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { LEASE_PREFIX, containerName } from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import { isProcessAlive } from './processes.js';

export interface LeaseRecord {
  /** host:pid:state-dir of the holder. */
  holder: string;
  purpose: string;
  host: string;
  pid: number;
  stateDir: string;
  /** Milliseconds since the epoch; 0 when released. */
  expiresAt: number;
}

export const DEFAULT_LEASE_MS = 30_000;

function leaseObjectName(n: number): string {
  return `${LEASE_PREFIX}${String(n).padStart(10, '0')}`;
}

export class Lease {
  private timer: NodeJS.Timeout | null = null;
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
    options: { ttlMs?: number; onLost?: (message: string) => void } = {},
  ): Promise<Lease> {
    const ttlMs = options.ttlMs ?? DEFAULT_LEASE_MS;
    const record: LeaseRecord = {
      holder: holderName(stateDir),
      purpose,
      host: os.hostname(),
      pid: process.pid,
      stateDir,
      expiresAt: 0,
    };
    for (let attempt = 0; attempt < 3; attempt++) {
      const { n, current } = await Lease.latest(store, volume);
      const held = Lease.heldMessage(volume, current, record.holder);
      if (held) throw new EngineError(held);
      const lease = new Lease(store, volume, record, n, ttlMs, options.onLost ?? (() => undefined));
      // The lease is only as good as the store's conditional PUT. Where it is not
      // atomic (Swift checks If-None-Match when a PUT starts: two PUTs racing in the
      // same instant can both succeed, the later one winning), reading back catches
      // most such races; where it is (FileStore), the PUT that succeeded won.
      const won = (await lease.write()) && (store.consistency.atomicConditionalPut || (await lease.confirm()));
      if (won) {
        lease.timer = setInterval(() => void lease.renew(), Math.max(1000, ttlMs / 3));
        lease.timer.unref();
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
    return Lease.heldMessage(volume, (await Lease.latest(store, volume)).current, holderName(stateDir));
  }

  private static heldMessage(volume: string, current: LeaseRecord | null, holder: string): string | null {
    if (!current || current.expiresAt <= Date.now() || current.holder === holder || Lease.holderIsGone(current)) return null;
    return `volume '${volume}' is held by ${current.holder} (${current.purpose}) until ${new Date(current.expiresAt).toISOString()}`;
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
  }

  /** Stops renewing without letting go, as a crash would (tests, error paths). */
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
function holderName(stateDir: string): string {
  return `${os.hostname()}:${process.pid}:${stateDir}`;
}
