// What the volumes one serve has open share of what they fetch (issue 14):
// the gateway's clean cache (BlockCache, bounded, on local disk) and the
// fetches in flight, both keyed by data object. N clones of one golden
// snapshot read the same objects: booting at once, they fetch each block
// once, and keep it once.
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
}

export class GatewayCache {
  /** Fetches in flight by object key, for every volume of the gateway. */
  readonly fetches = new Map<string, Fetch[]>();

  constructor(readonly blocks: BlockCache) {}

  /** The cache of a state dir (under <stateDir>/cache) with a budget in bytes. */
  static open(stateDir: string, budget: number): GatewayCache {
    return new GatewayCache(BlockCache.open(GatewayCache.dir(stateDir), budget));
  }

  static dir(stateDir: string): string {
    return path.join(stateDir, 'cache');
  }

  close(): void {
    this.blocks.close();
  }
}

/** The key an object is cached and fetched under: its container and name. */
export function objectKey(ref: ChunkRef, chunk: number): string {
  return `${ref.container}/${dataObjectName(ref.generation, chunk)}`;
}
