// What a volume reads from its base version in the store: ranged GETs of
// write-once data objects, shared by concurrent readers of the same blocks;
// the fetched blocks kept in the overlay as clean cache (installed in the
// background); and read-ahead of the sequential streams StreamDetector finds.
//
// "Install before write" lives here: fetched data is written into the
// overlay file after the GET, so a write to those blocks must wait until the
// install has landed (installedBefore), or the older base data would land
// over it.
import type { ObjectStore } from '../store/object-store.js';
import type { Overlay } from '../overlay/overlay.js';
import { BLOCK_SIZE, chunkLength, type ChunkRef, type VersionTable } from '../format/volume-format.js';
import { IntegrityError, chunkObjectsOf, type Checked, type ChunkObjects } from './chunk-objects.js';
import { CACHE_BLOCK } from '../cache/block-cache.js';
import type { VolumeKey } from './volume-key.js';
import { StreamDetector } from './read-ahead.js';
import { objectKey, removeFetch, type Fetch, type GatewayCache } from './gateway-cache.js';

/** Objects' worth a stream is read ahead of at most (8 measured no faster here, and held ~40 MiB more in memory). */
const READ_AHEAD_CHUNKS = 4;
/** Whether the gateway cache's blocks are the format's: then a data object's block sums are the cache's too. */
const SAME_BLOCKS: boolean = CACHE_BLOCK === BLOCK_SIZE;
/** PRE-FETCH warms at most this much per command (a hint: the rest of a larger range is left alone). */
const PREFETCH_MAX = 32 * 1024 * 1024;

/** Fetched blocks [first, end) on their way into the overlay file; data starts at block first. */
export interface Install {
  first: number;
  end: number;
  data: Buffer;
  done: Promise<void>;
}

export interface BaseFetcherOptions {
  /** Keep fetched blocks in the overlay as clean cache (off for one-pass readers such as export). */
  cacheReads: boolean;
  /** The key of an encrypted volume. */
  key?: VolumeKey;
  /** The gateway's cache: fetched blocks are kept there (shared with other volumes), not in the overlay. */
  cache?: GatewayCache;
}

export class BaseFetcher {
  private readonly objectSize: number;
  private readonly size: number;
  private readonly cacheReads: boolean;
  private readonly objects: ChunkObjects;
  private readonly key: VolumeKey | undefined;
  /** In-flight fetches per object, so overlapping readers share one GET (the gateway's readers, with a cache). */
  private readonly fetches: Map<string, Fetch[]>;
  private readonly cache: GatewayCache | undefined;
  /** Fetched blocks being written to the overlay in the background: writes to them wait. */
  private readonly installs = new Set<Install>();
  /** The sequential streams of cold reads (none for a one-pass reader, which fetches what it reads). */
  private readonly streams: StreamDetector | null;
  private closed = false;

  constructor(
    store: ObjectStore,
    private readonly overlay: Overlay,
    /** The base version of the moment (it changes when a snapshot commits or the volume is rebased). */
    private readonly base: () => VersionTable | null,
    options: BaseFetcherOptions,
  ) {
    this.size = overlay.size;
    this.objectSize = overlay.objectSize;
    this.cacheReads = options.cacheReads;
    this.objects = chunkObjectsOf(store);
    this.key = options.key;
    this.cache = options.cacheReads ? options.cache : undefined;
    this.fetches = this.cache?.fetches ?? new Map();
    this.streams = this.cacheReads ? new StreamDetector(READ_AHEAD_CHUNKS * this.objectSize, this.size, this.objectSize) : null;
  }

  /** Installs that land after this do not mark blocks valid (the overlay is going away). */
  close(): void {
    this.closed = true;
  }

  /**
   * Bytes of base blocks [first, end) of a chunk (the caller has checked
   * they come from the base). The result starts at block `first` and may be
   * shorter than the blocks at the volume's end.
   */
  fetch(chunk: number, ref: ChunkRef, first: number, end: number, fromStore?: () => void): Promise<Buffer> {
    const inFlight = this.fetches.get(objectKey(ref, chunk)) ?? [];
    if ((inFlight.length === 0 && this.installs.size === 0) || inFlight.some((f) => f.first <= first && f.end >= end)) return this.fetchBlocks(chunk, ref, first, end, fromStore);
    // Parts of the range are being fetched already (read ahead), or were fetched and are
    // being installed: those are shared, only the gaps fetched.
    const covered = (b: number): boolean => inFlight.some((x) => x.first <= b && b < x.end) || this.installAt(b) !== undefined;
    const parts: Promise<Buffer>[] = [];
    for (let b = first; b < end; ) {
      const f = inFlight.find((x) => x.first <= b && b < x.end);
      const install = f ? undefined : this.installAt(b);
      const from = b;
      if (f) {
        const stop = Math.min(end, f.end);
        if (!f.arrived) fromStore?.();
        parts.push(f.data.then((data) => data.subarray((from - f.first) * BLOCK_SIZE, (stop - f.first) * BLOCK_SIZE)));
        b = stop;
      } else if (install) {
        const stop = Math.min(end, install.end);
        parts.push(Promise.resolve(install.data.subarray((from - install.first) * BLOCK_SIZE, (stop - install.first) * BLOCK_SIZE)));
        b = stop;
      } else {
        let e = b + 1;
        while (e < end && !covered(e)) e++;
        parts.push(this.fetchBlocks(chunk, ref, b, e, fromStore));
        b = e;
      }
    }
    return parts.length === 1 ? parts[0]! : Promise.all(parts).then((bufs) => Buffer.concat(bufs));
  }

  /**
   * A read inside one chunk whose blocks all come from the base: a view of
   * the fetched data (or of data being installed), saving a copy; null for
   * any other read.
   */
  fetchedView(offset: number, length: number, fromStore?: () => void): Promise<Buffer> | null {
    const chunk = Math.floor(offset / this.objectSize);
    const ref = this.base()?.lookup(chunk);
    if (!ref || length === 0 || Math.floor((offset + length - 1) / this.objectSize) !== chunk) return null;
    const first = Math.floor(offset / BLOCK_SIZE);
    const end = Math.ceil((offset + length) / BLOCK_SIZE);
    for (let b = first; b < end; b++) if (this.overlay.blockSource(b) !== 'base') return null;
    const view = (data: Buffer, from: number): Buffer => {
      if (data.length >= from + length) return data.subarray(from, from + length);
      const out = Buffer.allocUnsafe(length); // the volume's end: zeros past the object's
      copyPadded(data, from, length, out, 0);
      return out;
    };
    const install = this.installing(first, end);
    if (install) return Promise.resolve(view(install.data, offset - install.first * BLOCK_SIZE));
    return this.fetch(chunk, ref, first, end, fromStore).then((data) => view(data, offset - first * BLOCK_SIZE));
  }

  /**
   * After a read that went to the store: if it continues a sequential
   * stream, starts fetching what the stream reads next (StreamDetector), so
   * that the reader finds it arriving, or arrived, in the overlay.
   */
  noteRead(offset: number, length: number): void {
    const ahead = this.streams?.onRead(offset, length);
    if (!ahead) return;
    for (let pos = ahead.start; pos < ahead.end; ) {
      const chunk = Math.floor(pos / this.objectSize);
      const stop = Math.min(ahead.end, (chunk + 1) * this.objectSize);
      this.warm(chunk, Math.floor(pos / BLOCK_SIZE), Math.ceil(stop / BLOCK_SIZE))?.catch(() => undefined); // a reader will retry
      pos = stop;
    }
  }

  /**
   * PRE-FETCH: the base blocks of the range that are not local are fetched
   * into the cache (up to PREFETCH_MAX bytes from offset); resolves when they
   * are in the overlay. Does nothing for a volume that keeps no cache.
   */
  async prefetch(offset: number, length: number): Promise<void> {
    if (!this.cacheReads) return;
    const endByte = Math.min(offset + length, offset + PREFETCH_MAX, this.size);
    const warming: Promise<unknown>[] = [];
    for (let pos = offset; pos < endByte; ) {
      const chunk = Math.floor(pos / this.objectSize);
      const stop = Math.min(endByte, (chunk + 1) * this.objectSize);
      const started = this.warm(chunk, Math.floor(pos / BLOCK_SIZE), Math.ceil(stop / BLOCK_SIZE));
      if (started) warming.push(started);
      pos = stop;
    }
    await Promise.all(warming);
    // done when the fetched blocks are in the overlay, not only fetched
    const first = Math.floor(offset / BLOCK_SIZE);
    const end = Math.ceil(endByte / BLOCK_SIZE);
    for (let landing = this.installedBefore(first, end); landing; landing = this.installedBefore(first, end)) await landing;
  }

  /**
   * Fetches, as cache, the blocks of [first, end) of a chunk that are
   * neither local, nor being installed, nor in a fetch already under way
   * (one GET per run of such blocks); null if there is nothing to fetch.
   */
  private warm(chunk: number, first: number, end: number): Promise<unknown> | null {
    const ref = this.base()?.lookup(chunk);
    if (!ref) return null;
    const key = objectKey(ref, chunk);
    const inFlight = this.fetches.get(key) ?? [];
    const base = chunk * (this.objectSize / BLOCK_SIZE);
    const taken = (b: number): boolean =>
      this.overlay.blockSource(b) !== 'base' ||
      this.installing(b, b + 1) !== undefined ||
      inFlight.some((f) => f.first <= b && b < f.end) ||
      (this.cache?.blocks.has(key, b - base, b - base + 1) ?? false);
    const started: Promise<Buffer>[] = [];
    for (let b = first; b < end; ) {
      while (b < end && taken(b)) b++;
      if (b >= end) break;
      let e = b + 1;
      while (e < end && !taken(e)) e++;
      started.push(this.fetchBlocks(chunk, ref, b, e));
      b = e;
    }
    return started.length === 0 ? null : Promise.all(started);
  }

  /** The whole chunk from its data object, checked, not cached (a snapshot composing the chunk's frozen content). */
  readObject(chunk: number, ref: ChunkRef): Promise<Buffer> {
    const chunkBytes = chunkLength(this.size, this.objectSize, chunk);
    return this.read(chunk, ref, 0, chunkBytes).then((r) => r.data);
  }

  /** Bytes [start, end) of a chunk from its object, checked (ChunkObjects), with their block sums if it has them; a bad block's error says where it is in the volume. */
  private read(chunk: number, ref: ChunkRef, start: number, end: number): Promise<Checked> {
    return this.objects.readWithSums(ref, chunk, chunkLength(this.size, this.objectSize, chunk), start, end, this.key).catch((err: unknown) => {
      if (err instanceof IntegrityError) err.volumeOffset = chunk * this.objectSize + err.block * BLOCK_SIZE;
      throw err;
    });
  }

  /** The install covering block b, if any. */
  private installAt(b: number): Install | undefined {
    for (const i of this.installs) if (i.first <= b && b < i.end) return i;
    return undefined;
  }

  /** The install covering all of blocks [first, end), if any: its data is what the blocks hold. */
  installing(first: number, end: number): Install | undefined {
    for (const i of this.installs) if (i.first <= first && end <= i.end) return i;
    return undefined;
  }

  /**
   * Install before write: null if no fetched data is being installed into
   * any of blocks [first, end); else a promise that settles when those
   * installs have landed, after which the caller must look again (a fetch
   * may have started another meanwhile).
   */
  installedBefore(first: number, end: number): Promise<void> | null {
    const landing = [...this.installs].filter((i) => i.first < end && first < i.end);
    return landing.length === 0 ? null : Promise.allSettled(landing.map((i) => i.done)).then(() => undefined);
  }

  /** One GET for blocks [first, end) of a chunk, or a share of one in flight that covers them. */
  /** `fromStore` is told when the blocks come from a GET (its own, or one in flight), not from the gateway cache. */
  private fetchBlocks(chunk: number, ref: ChunkRef, first: number, end: number, fromStore?: () => void): Promise<Buffer> {
    const key = objectKey(ref, chunk);
    const list = this.fetches.get(key);
    const shared = list?.find((f) => f.first <= first && f.end >= end);
    if (shared) {
      if (!shared.arrived) fromStore?.();
      return shared.data.then((data) => data.subarray((first - shared.first) * BLOCK_SIZE));
    }

    const chunkStart = chunk * this.objectSize;
    const chunkBytes = chunkLength(this.size, this.objectSize, chunk);
    const start = first * BLOCK_SIZE - chunkStart;
    const stop = Math.min(end * BLOCK_SIZE - chunkStart, chunkBytes);
    const cache = this.cache?.blocks;
    const base = chunkStart / BLOCK_SIZE;
    // held in the gateway cache: read from there (a block that fails its check is dropped, and then fetched)
    if (cache?.has(key, first - base, end - base)) {
      return cache.read(key, first - base, end - base, stop - start).then((hit) => hit ?? this.fetchBlocks(chunk, ref, first, end, fromStore));
    }
    fromStore?.();
    const entry: Fetch = {
      first,
      end,
      data: this.read(chunk, ref, start, stop).then(({ data, sums }) => {
        if (data.length !== stop - start) {
          throw new Error(`chunk ${chunk} of ${ref.container} returned ${data.length} bytes for a ${stop - start}-byte range`);
        }
        entry.arrived = true;
        if (cache) {
          // the fetch stays shared until its blocks are in the cache: a reader meanwhile would fetch them again
          // (with the sums just checked: the cache's blocks are the format's, so it need not compute them again)
          entry.kept = cache.write(key, Math.ceil(chunkBytes / BLOCK_SIZE), first - base, data, SAME_BLOCKS ? (sums ?? undefined) : undefined).catch(() => undefined);
        } else if (this.cacheReads) this.installClean(first, data);
        return data;
      }),
    };
    const entries = list ?? [];
    entries.push(entry);
    this.fetches.set(key, entries);
    const forget = (): void => removeFetch(this.fetches, key, entry);
    const gateway = this.cache;
    entry.data.then(
      (data) => (entry.kept ?? Promise.resolve()).then(() => (gateway ? gateway.keep(key, entry, data.length) : forget())),
      forget,
    );
    return entry.data;
  }

  /**
   * Keeps fetched base blocks as clean cache, skipping any block written or
   * unmapped meanwhile. The file write runs in the background (readers have
   * the data already); the blocks become valid once it is done, except those
   * written or unmapped since (writes to them wait for it: installedBefore).
   */
  private installClean(first: number, data: Buffer): void {
    const blocks = Math.ceil(data.length / BLOCK_SIZE);
    const installable = (b: number): boolean => this.overlay.blockSource(b) === 'base' && !this.installing(b, b + 1);
    let i = 0;
    while (i < blocks) {
      if (!installable(first + i)) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < blocks && installable(first + j)) j++;
      const runFirst = first + i;
      const runEnd = first + j;
      const entry: Install = {
        first: runFirst,
        end: runEnd,
        data: data.subarray(i * BLOCK_SIZE),
        done: this.overlay
          .writeInBackground(data.subarray(i * BLOCK_SIZE, Math.min(j * BLOCK_SIZE, data.length)), runFirst * BLOCK_SIZE)
          .then(() => {
            if (this.closed) return;
            for (let b = runFirst; b < runEnd; b++) if (this.overlay.blockSource(b) === 'base') this.overlay.markValid(b, b + 1, false);
          })
          .catch(() => undefined) // a cache that could not be written is no cache: reads fetch again
          .finally(() => this.installs.delete(entry)),
      };
      this.installs.add(entry);
      i = j;
    }
  }
}

/** Copies length bytes of source from sourceOffset into target, zero-filling what source lacks. */
export function copyPadded(source: Buffer, sourceOffset: number, length: number, target: Buffer, targetOffset: number): void {
  const copied = Math.max(0, Math.min(length, source.length - sourceOffset));
  if (copied > 0) source.copy(target, targetOffset, sourceOffset, sourceOffset + copied);
  if (copied < length) target.fill(0, targetOffset + copied, targetOffset + length);
}
