// Bringing a mirror's members level (doc/mirroring.md, "Resync"). Objects
// are write-once, so a member that is behind lacks names, or (a write that
// was cut off while it was being left out) holds a name with other bytes
// than the copy that is in sync: the listings say which, by name and ETag,
// and those objects are copied from an in-sync member. Commits (version
// tables) are copied last and in order, so a member never holds a table
// before the objects it names. The last pass runs with the container's
// commits held off (MirrorStore.rejoin). Resumable and idempotent: what was
// copied is not copied again, and nothing is kept anywhere but the stores.
// A resync deletes only what --discard asks for (the commits of the copy
// given up in a split brain) and, on a member being caught up, commits older
// than the in-sync copy's newest that the in-sync copy no longer holds
// (snapshots deleted, tables collected while it was away): never the only
// copy of data.
import { StoreError, isNotFound, type ObjectInfo, type ObjectStore } from './object-store.js';
import { MIRROR_PREFIX, type MirrorStatus, type MirrorStore } from './mirror-store.js';
import { compareNames } from './names.js';
import { runPool } from './run-pool.js';

export interface ResyncOptions {
  /** Give up this member's divergent commits (split brain) and copy the others' over them. */
  discard?: string;
  /** Objects copied so far, of how many found missing. */
  onProgress?: (done: number, total: number) => void;
  /** Parallel copies (default 8). */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface ResyncReport {
  container: string;
  /** Objects copied onto members that lacked them. */
  copied: number;
  /** Commits deleted (given up with --discard, or gone from the in-sync copy). */
  deleted: number;
  /** The members' states once done. */
  after: MirrorStatus;
}

const BEHIND_PREFIX = `${MIRROR_PREFIX}behind/`;

async function listAll(store: ObjectStore, container: string): Promise<Map<string, ObjectInfo> | null> {
  const out = new Map<string, ObjectInfo>();
  try {
    for await (const o of store.list(container)) if (!o.name.startsWith(BEHIND_PREFIX)) out.set(o.name, o);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  return out;
}

/** How many objects `target` lacks (or holds with other bytes) of what `source` holds of the container. */
export async function countLacking(mirror: MirrorStore, container: string, source: string, target: string): Promise<number> {
  const have = await listAll(mirror.storeOf(source), container);
  const there = (await listAll(mirror.storeOf(target), container)) ?? new Map<string, ObjectInfo>();
  return [...(have ?? new Map<string, ObjectInfo>()).values()].filter((o) => there.get(o.name)?.etag !== o.etag).length;
}

export async function resyncContainer(mirror: MirrorStore, container: string, options: ResyncOptions = {}): Promise<ResyncReport> {
  let status = await mirror.status(container);
  if (!status) throw new StoreError('not-found', `container ${container} does not exist on any store`);
  let deleted = 0;
  const split = status.stores.filter((s) => s.state === 'split-brain');
  if (options.discard !== undefined) {
    const discard = options.discard;
    if (!status.set.includes(discard)) throw new StoreError('invalid', `${container} does not live on store '${discard}' (its stores: ${status.set.join(', ')})`);
    const kept = status.stores.filter((s) => s.name !== discard && (s.state === 'in-sync' || s.state === 'split-brain'));
    if (kept.length === 0) throw new StoreError('invalid', `${container}: no other copy to keep if '${discard}' is discarded`);
    deleted += await discardCommits(mirror, container, discard, kept.map((k) => k.name));
    status = (await mirror.status(container))!;
  } else if (split.length > 0) {
    throw new StoreError(
      'conflict',
      `${container} is in split brain: ${split[0]!.reason}; choose the copy to give up with --discard STORE (one of ${split.map((s) => s.name).join(', ')})`,
    );
  }
  const sources = status.stores.filter((s) => s.state === 'in-sync').map((s) => s.name);
  if (sources.length === 0) throw new StoreError('unreachable', `${container}: no store holds an in-sync copy to resync from`);
  const targets = status.stores.filter((s) => s.state === 'behind').map((s) => s.name);
  let copied = 0;
  let found = 0;
  for (const target of targets) {
    // passes outside the lock while there is much to copy, the last one inside it
    for (let pass = 0; pass < 3; pass++) {
      const r = await copyMissing(mirror, container, sources, target, options, (n) => (found += n), () => options.onProgress?.(++copied, found));
      deleted += r.deleted;
      if (r.copied === 0) break;
    }
    await mirror.rejoin(container, target, async () => {
      const r = await copyMissing(mirror, container, sources, target, options, (n) => (found += n), () => options.onProgress?.(++copied, found));
      deleted += r.deleted;
    });
  }
  options.onProgress?.(copied, found);
  return { container, copied, deleted, after: (await mirror.status(container))! };
}

/** Copies onto `target` what the first answering source holds and it lacks; data first, commits last and in order. */
async function copyMissing(
  mirror: MirrorStore,
  container: string,
  sources: string[],
  target: string,
  options: ResyncOptions,
  onFound: (n: number) => void,
  onCopied: () => void,
): Promise<{ copied: number; deleted: number }> {
  const source = mirror.storeOf(sources[0]!);
  const dest = mirror.storeOf(target);
  const have = await listAll(source, container);
  if (!have) throw new StoreError('not-found', `${container} is gone from store '${sources[0]}'`);
  let there = await listAll(dest, container);
  if (!there) {
    await dest.createContainer(container);
    there = new Map();
  }
  const lacking = [...have.values()].filter((o) => there!.get(o.name)?.etag !== o.etag).map((o) => o.name);
  const commits = lacking.filter((n) => n.startsWith(mirror.commitPrefix)).sort(compareNames);
  const rest = lacking.filter((n) => !n.startsWith(mirror.commitPrefix));
  onFound(lacking.length);
  const copy = async (name: string): Promise<void> => {
    // a whole read is checked against its ETag; the put is checked against the same MD5
    const data = await mirror.firstAnswer(sources, `a read of ${container}/${name}`, (s) => s.get(container, name));
    await dest.put(container, name, data, { md5: have.get(name)!.etag });
    onCopied();
  };
  await runPool(rest, options.concurrency ?? 8, copy, options.signal);
  for (const name of commits) {
    if (options.signal?.aborted) throw options.signal.reason;
    await copy(name);
  }
  // commits the in-sync copy gave up (deleted snapshots, collected tables), older than its newest
  const newest = [...have.keys()].filter((n) => n.startsWith(mirror.commitPrefix)).sort(compareNames).at(-1);
  const stale = [...there.keys()].filter((n) => n.startsWith(mirror.commitPrefix) && !have.has(n) && newest !== undefined && compareNames(n, newest) < 0);
  for (const name of stale) await dest.delete(container, name);
  return { copied: lacking.length, deleted: stale.length };
}

/** Deletes the commits of `discard` that the kept copies do not hold alike, and its records of others being behind. */
async function discardCommits(mirror: MirrorStore, container: string, discard: string, kept: string[]): Promise<number> {
  const dest = mirror.storeOf(discard);
  const own = await listAll(dest, container);
  if (!own) return 0;
  const keep = await listAll(mirror.storeOf(kept[0]!), container);
  if (!keep) throw new StoreError('not-found', `${container} is gone from store '${kept[0]}'`);
  const divergent = [...own.values()].filter((o) => o.name.startsWith(mirror.commitPrefix) && keep.get(o.name)?.etag !== o.etag).map((o) => o.name);
  for (const name of divergent.sort(compareNames).reverse()) await dest.delete(container, name);
  for await (const o of dest.list(container, BEHIND_PREFIX)) await dest.delete(container, o.name);
  return divergent.length;
}
