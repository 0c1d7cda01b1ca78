// The holder's heartbeat (doc/format.md, "lease/<n>", format 5): one object
// per holder (host, process, state dir) in the container swiftvol_holders,
// rewritten every ttl/3 with a new expiry. The leases of format 5 volumes
// name it, and last as long as it is fresh: a gateway holding a thousand
// volumes renews them all with one write, where renewing each lease would be
// two writes per volume (the next lease object, and the delete of an old one)
// every ten seconds, which was enough to saturate a small Swift by itself.
//
// Safety is as with a renewed lease: a contender takes a volume over only
// once the heartbeat its lease names has expired; the holder counts its
// leases safe until the expiry of its last heartbeat written in time (the
// expiry is computed from when the write was sent). A heartbeat written late
// (after the previous one had expired) may have let a contender in, so then
// every lease that follows it is checked against its volume's newest lease
// object, and one that was taken over is reported lost.
import { createHash } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import { isNotFound, putCreatingContainer, type ObjectStore } from '../store/object-store.js';

export const HOLDERS_CONTAINER = 'swiftvol_holders';

export interface HeartbeatRecord {
  holder: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

/** What follows a heartbeat: asked to check itself after a late beat, told when a beat fails. */
export interface HeartbeatFollower {
  verify(): Promise<void>;
  tell(message: string): void;
}

/**
 * The heartbeat object of a holder: a hash (a state dir path can be long),
 * its record says whose it is. In a worker thread (serve's engine threads,
 * each with its own engine and heartbeat) the thread is hashed in too, so
 * that every heartbeat object has one writer: two writers of one object
 * could land a beat sent earlier after a later one, and shorten the expiry
 * the other counts its leases safe until. Leases name their heartbeat's
 * object, so nothing else needs to know.
 */
export function heartbeatObjectName(holder: string): string {
  return createHash('sha256').update(threadId === 0 ? holder : `${holder}\0thread-${threadId}`).digest('hex');
}

/** The expiry a heartbeat object says, or null where it cannot be read as one (missing: never written, or gone). */
export async function readHeartbeat(store: ObjectStore, name: string): Promise<HeartbeatRecord | null> {
  try {
    const doc = JSON.parse((await store.get(HOLDERS_CONTAINER, name)).toString('utf8')) as Partial<HeartbeatRecord>;
    return typeof doc.holder === 'string' && typeof doc.expiresAt === 'number' ? { holder: doc.holder, expiresAt: doc.expiresAt } : null;
  } catch (err) {
    if (isNotFound(err) || err instanceof SyntaxError) return null;
    throw err;
  }
}

export class HolderHeartbeat {
  readonly objectName: string;
  /** Expiry of the last heartbeat written in time (0: none yet). */
  private safeUntil = 0;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> = Promise.resolve();
  private readonly followers = new Set<HeartbeatFollower>();

  constructor(
    private readonly store: ObjectStore,
    readonly holder: string,
    private readonly ttlMs: number,
  ) {
    this.objectName = heartbeatObjectName(holder);
  }

  /**
   * Makes sure a fresh heartbeat is in the store (written now if the last is
   * older than a renewal period) and beating; resolves with its expiry,
   * which a new lease records.
   */
  async fresh(): Promise<number> {
    await this.beating;
    if (this.safeUntil - Date.now() < (this.ttlMs * 2) / 3) await this.beat(true);
    this.keepBeating();
    return this.safeUntil;
  }

  follow(f: HeartbeatFollower): void {
    this.followers.add(f);
    // again here: the last follower may have let go while this one was taking its lease
    this.keepBeating();
  }

  private keepBeating(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.beat(false).catch(() => undefined), Math.max(1000, this.ttlMs / 3));
    this.timer.unref();
  }

  /** A follower that let go; the heartbeat stops with the last one (and runs out by itself). */
  unfollow(f: HeartbeatFollower): void {
    this.followers.delete(f);
    if (this.followers.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Writes the heartbeat; a failure throws when asked (at a lease's start) and is told otherwise (the next beat tries again). */
  private beat(throwing: boolean): Promise<void> {
    this.beating = this.beating.then(async () => {
      const sent = Date.now();
      const expiresAt = sent + this.ttlMs;
      const body = Buffer.from(JSON.stringify({ holder: this.holder, expiresAt } satisfies HeartbeatRecord));
      try {
        await putCreatingContainer(this.store, HOLDERS_CONTAINER, this.objectName, body, { contentType: 'application/json' });
      } catch (err) {
        if (throwing) throw err;
        const message = `could not renew the heartbeat of ${this.holder} (its leases run out at ${new Date(this.safeUntil).toISOString()} unless a later one is written): ${(err as Error).message}`;
        for (const f of this.followers) f.tell(message);
        return;
      }
      const late = this.safeUntil !== 0 && sent >= this.safeUntil;
      this.safeUntil = expiresAt;
      // late: a contender may have taken a volume over meanwhile
      if (late) await Promise.allSettled([...this.followers].map((f) => f.verify()));
    });
    const done = this.beating;
    this.beating = done.catch(() => undefined);
    return done;
  }
}
