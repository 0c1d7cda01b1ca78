// What the volumes one serve has open share of what they fetch (issue 14):
// the gateway's clean cache (BlockCache, bounded, on local disk) and the
// fetches in flight, both keyed by data object. N clones of one golden
// snapshot read the same objects: booting at once, they fetch each block
// once, and keep it once.
import fs from 'node:fs';
import path from 'node:path';
import { dataObjectName, type ChunkRef } from '../format/volume-format.js';
import { BlockCache } from '../cache/block-cache.js';

/** A fetch in flight: volume blocks [first, end) of one object (clones share the geometry of what they read). */
export interface Fetch {
  first: number;
  end: number;
  data: Promise<Buffer>;
  /** Settles once the fetched blocks are in the gateway cache. */
  kept?: Promise<void>;
  /** Its data has arrived: a reader sharing it now waits on no GET (it is read from memory). */
  arrived?: boolean;
}

/**
 * Bytes of fetched data kept in memory after it reached the cache, for the
 * readers right behind a read-ahead (16 MiB read a cold stream as fast here
 * as 32 did, with a peak RSS ~10 MiB lower: serve's heap is marked less
 * often now, src/cli/heap-growth.ts, so dead buffers wait longer to be freed).
 */
const RECENT_BYTES = 16 * 1024 * 1024;

export class GatewayCache {
  /** Fetches in flight by object key, for every volume of the gateway (and the most recent done ones: `keep`). */
  readonly fetches = new Map<string, Fetch[]>();
  /** Done fetches still in `fetches`, oldest first, with their bytes. */
  private readonly recent: Array<{ key: string; fetch: Fetch; bytes: number }> = [];
  private recentBytes = 0;

  constructor(readonly blocks: BlockCache) {}

  /**
   * A fetch whose data reached the cache stays shared a little longer, from
   * memory: a stream's reader follows right behind its read-ahead, and would
   * otherwise read back from the cache file what was just written there.
   */
  keep(key: string, fetch: Fetch, bytes: number): void {
    this.recent.push({ key, fetch, bytes });
    this.recentBytes += bytes;
    while (this.recentBytes > RECENT_BYTES && this.recent.length > 0) {
      const old = this.recent.shift()!;
      this.recentBytes -= old.bytes;
      removeFetch(this.fetches, old.key, old.fetch);
    }
  }

  /**
   * The cache of a state dir with a budget in bytes: under <stateDir>/cache,
   * or for engine thread `index` > 0 (src/daemon/engine-threads.ts) under
   * <stateDir>/cache-<index>.
   */
  static open(stateDir: string, budget: number, index = 0): GatewayCache {
    return new GatewayCache(BlockCache.open(GatewayCache.dir(stateDir, index), budget));
  }

  static dir(stateDir: string, index = 0): string {
    return path.join(stateDir, index === 0 ? 'cache' : `cache-${index}`);
  }

  /** Every cache directory of a state dir (serve's threads' too), as indexes. */
  static indexes(stateDir: string): number[] {
    let names: string[];
    try {
      names = fs.readdirSync(stateDir);
    } catch {
      return [];
    }
    return names.flatMap((n) => (n === 'cache' ? [0] : /^cache-[1-9][0-9]*$/.test(n) ? [Number(n.slice(6))] : []));
  }

  /**
   * Removes the caches of engine threads a serve with `count` threads does
   * not have (an earlier serve's, with more): what they hold would count
   * against no budget. Clean data only: it is fetched again when read.
   */
  static removeUnused(stateDir: string, count: number): void {
    for (const i of GatewayCache.indexes(stateDir)) if (i >= Math.max(count, 1)) fs.rmSync(GatewayCache.dir(stateDir, i), { recursive: true, force: true });
  }

  /** Blocks held by object, over every cache of a state dir (BlockCache.committedBlocks). */
  static committedBlocks(stateDir: string): Map<string, number> {
    const held = new Map<string, number>();
    for (const i of GatewayCache.indexes(stateDir)) {
      for (const [key, blocks] of BlockCache.committedBlocks(GatewayCache.dir(stateDir, i))) held.set(key, (held.get(key) ?? 0) + blocks);
    }
    return held;
  }

  close(): void {
    this.blocks.close();
  }
}

/** Takes a fetch out of the fetches of its object (the object's entry goes with its last fetch). */
export function removeFetch(fetches: Map<string, Fetch[]>, key: string, fetch: Fetch): void {
  const list = fetches.get(key);
  const i = list?.indexOf(fetch) ?? -1;
  if (!list || i < 0) return;
  list.splice(i, 1);
  if (list.length === 0) fetches.delete(key);
}

/** The key an object is cached and fetched under: its container and name. */
export function objectKey(ref: ChunkRef, chunk: number): string {
  return `${ref.container}/${dataObjectName(ref.generation, chunk)}`;
}
