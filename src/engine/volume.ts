// A volume as a disk: the block I/O path over the local overlay and a base
// version in the store. Reads take valid overlay blocks and the rest from the
// base (BaseFetcher: ranged GETs shared by concurrent readers, clean cache,
// read-ahead); writes go to the overlay at once, never waiting for a chunk
// download, except a write smaller than a 4 KiB block onto a block that is
// not local yet, which must read the rest of that block first. While a
// snapshot is being uploaded, every change goes through its freeze first
// (SnapshotFreeze: copy before change).
import type { GatewayCache } from './gateway-cache.js';
import type { BlockDevice, DirectAccess, DirectSession } from './block-device.js';
import type { DirectIoCounters } from '../overlay/direct-map.js';
import type { ObjectStore } from '../store/object-store.js';
import type { Overlay } from '../overlay/overlay.js';
import { BLOCK_SIZE, SECTOR_SIZE, type VersionTable } from '../format/volume-format.js';
import { BaseFetcher, copyPadded, type Install } from './base-fetcher.js';
import { SnapshotFreeze } from './snapshot-freeze.js';
import type { VolumeKey } from './volume-key.js';

export interface VolumeOptions {
  /** Keep fetched blocks as clean cache (off for one-pass readers such as export). */
  cacheReads?: boolean;
  /** The gateway's cache, shared by the volumes of one serve: fetched blocks are kept there instead of in the overlay. */
  cache?: GatewayCache;
  /** Runs after close() has flushed and released the overlay (to drop a lease, a lock, a temp dir). */
  onClose?: () => void | Promise<void>;
  /** Runs on abandon(), at once: what a crash would release (a lock), not what it would leave (a lease). */
  onAbandon?: () => void;
  /** The key of an encrypted volume. */
  key?: VolumeKey;
}

export class IoRangeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IoRangeError';
  }
}

export class Volume implements BlockDevice, DirectAccess {
  readonly size: number;
  readonly objectSize: number;
  /** Reads that needed data from the store (cold), for metrics; the others were local (hot). */
  readonly counters = { coldReads: 0, coldReadBytes: 0 };
  private readonly blocksPerChunk: number;
  private readonly fetcher: BaseFetcher;
  private readonly onClose: (() => void | Promise<void>) | undefined;
  private readonly onAbandon: (() => void) | undefined;
  private closed = false;
  private freezeState: SnapshotFreeze | null = null;

  constructor(
    readonly name: string,
    store: ObjectStore,
    private readonly overlay: Overlay,
    private base: VersionTable | null,
    options: VolumeOptions = {},
  ) {
    this.size = overlay.size;
    this.objectSize = overlay.objectSize;
    this.blocksPerChunk = this.objectSize / BLOCK_SIZE;
    this.fetcher = new BaseFetcher(store, overlay, () => this.base, { cacheReads: options.cacheReads ?? true, key: options.key, cache: options.cache });
    this.onClose = options.onClose;
    this.onAbandon = options.onAbandon ?? options.onClose;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    // cold: some of the data came from the store (counted for metrics, once per read)
    let cold = false;
    const fromStore = (): void => {
      cold = true;
    };
    const fetched = this.fetcher.fetchedView(offset, length, fromStore);
    let out: Buffer;
    if (fetched) {
      this.fetcher.noteRead(offset, length); // read-ahead, if it continues a stream
      out = await fetched;
    } else {
      out = Buffer.allocUnsafe(length);
      const pending: Promise<void>[] = [];
      for (const seg of this.segments(offset, length)) this.readSegment(out, seg.offset - offset, seg.offset, seg.length, pending, fromStore);
      // streams are made of the reads that go to the store (bs_swift reads local blocks itself, unseen here)
      if (pending.length > 0) this.fetcher.noteRead(offset, length);
      await Promise.all(pending);
    }
    if (cold) {
      this.counters.coldReads++;
      this.counters.coldReadBytes += length;
    }
    return out;
  }

  async write(offset: number, data: Uint8Array, options: { fua?: boolean } = {}): Promise<void> {
    this.checkRange(offset, data.length);
    const pending: Promise<void>[] = [];
    for (const seg of this.segments(offset, data.length)) {
      this.writeSegment(data.subarray(seg.offset - offset, seg.offset - offset + seg.length), seg.offset, pending);
    }
    await Promise.all(pending);
    if (options.fua) await this.overlay.flush();
  }

  flush(): Promise<void> {
    return this.overlay.flush();
  }

  /** PRE-FETCH: warms the cache with the range's base blocks (see BaseFetcher.prefetch). */
  prefetch(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    return this.fetcher.prefetch(offset, length);
  }

  /** What bs_swift read and wrote in the overlay file itself (counted in the shared map; never seen here). */
  directIo(): DirectIoCounters {
    return this.overlay.directIo();
  }

  /** Lets bs_swift read and overwrite local blocks in the overlay file itself. */
  openDirect(): DirectSession {
    if (this.closed) throw new Error(`volume ${this.name} is closed`);
    return this.overlay.openDirect();
  }

  /**
   * Whole blocks in the range become zero blocks (their overlay space is
   * freed); sectors of blocks the range covers only in part are written
   * with zeros.
   */
  async unmap(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    const end = offset + length;
    const first = Math.ceil(offset / BLOCK_SIZE);
    let last = Math.floor(end / BLOCK_SIZE);
    if (end === this.size) last = Math.ceil(end / BLOCK_SIZE); // the volume's cut-short last block
    if (first >= last) {
      await this.write(offset, Buffer.alloc(length));
      return;
    }
    const head = first * BLOCK_SIZE - offset;
    const tail = end - Math.min(last * BLOCK_SIZE, end);
    const edges: Promise<void>[] = [];
    if (head > 0) edges.push(this.write(offset, Buffer.alloc(head)));
    if (tail > 0) edges.push(this.write(last * BLOCK_SIZE, Buffer.alloc(tail)));
    for (let chunk = Math.floor(first / this.blocksPerChunk); chunk * this.blocksPerChunk < last; chunk++) this.freezeState?.beforeChange(chunk);
    this.overlay.markZero(first, last);
    await Promise.all(edges);
  }

  /** Flushes and releases the overlay. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fetcher.close();
    try {
      await this.overlay.close();
    } finally {
      await this.onClose?.();
    }
  }

  /** Releases without flushing: what a crash leaves behind (tests, error paths). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.fetcher.close();
    try {
      this.overlay.abandon();
    } finally {
      void this.onAbandon?.();
    }
  }

  /** Local disk space the overlay takes. */
  overlayBytes(): number {
    return this.overlay.allocatedBytes();
  }

  /** Bytes written here and not yet in the base (at 4 KiB granularity). */
  dirtyBytes(): number {
    return this.overlay.dirtyBlocks() * BLOCK_SIZE;
  }

  /**
   * Freezes the dirty set for a snapshot, at once; the freeze says which
   * chunks to upload and composes their frozen content. It lasts until
   * settleSnapshot().
   */
  freeze(): SnapshotFreeze {
    if (this.freezeState) throw new Error('a snapshot of this volume is already in progress');
    this.freezeState = new SnapshotFreeze(this.overlay, this.fetcher, this.base);
    return this.freezeState;
  }

  /**
   * Ends the snapshot in progress: with its committed table, which becomes the
   * base (frozen blocks are clean now); with null, the frozen blocks are
   * dirty again.
   */
  settleSnapshot(table: VersionTable | null): void {
    if (!this.freezeState) return;
    this.freezeState = null;
    if (table) this.setBase(table);
    this.overlay.settleFreeze(table !== null);
  }

  /**
   * Makes `table` the base. With discard, every local block is dropped
   * (rollback); without, the table must hold the same content as the old
   * base (flatten).
   */
  async rebase(table: VersionTable, discard: boolean): Promise<void> {
    if (this.freezeState) throw new Error('a snapshot of this volume is in progress');
    if (discard) await this.overlay.discardAll();
    this.setBase(table);
  }

  /** The version the overlay sits on. */
  baseVersion(): VersionTable | null {
    return this.base;
  }

  private setBase(table: VersionTable): void {
    this.base = table;
    this.overlay.setBase(table);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new IoRangeError(`bad I/O range ${offset}+${length}`);
    }
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) {
      throw new IoRangeError(`I/O range ${offset}+${length} is not aligned to ${SECTOR_SIZE} bytes`);
    }
    if (offset + length > this.size) {
      throw new IoRangeError(`I/O range ${offset}+${length} is beyond the end of the volume (${this.size})`);
    }
  }

  /** Splits a byte range at chunk boundaries. */
  private *segments(offset: number, length: number): Generator<{ chunk: number; offset: number; length: number }> {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const chunk = Math.floor(pos / this.objectSize);
      const next = Math.min(end, (chunk + 1) * this.objectSize);
      yield { chunk, offset: pos, length: next - pos };
      pos = next;
    }
  }

  /** Fills out[outOffset..] with bytes [pos, pos+length) of one chunk; async parts go to pending. */
  private readSegment(out: Buffer, outOffset: number, pos: number, length: number, pending: Promise<void>[], fromStore?: () => void): void {
    const chunk = Math.floor(pos / this.objectSize);
    const ref = this.base?.lookup(chunk);
    const endPos = pos + length;
    let block = Math.floor(pos / BLOCK_SIZE);
    const endBlock = Math.ceil(endPos / BLOCK_SIZE);
    let install: Install | undefined;
    while (block < endBlock) {
      const where = this.overlay.blockSource(block);
      let next = block + 1;
      while (next < endBlock && this.overlay.blockSource(next) === where) next++;
      const start = Math.max(pos, block * BLOCK_SIZE);
      const stop = Math.min(endPos, next * BLOCK_SIZE);
      const into = outOffset + start - pos;
      if (where === 'overlay') {
        this.overlay.read(out, into, stop - start, start);
      } else if (where === 'zero' || !ref) {
        out.fill(0, into, into + stop - start);
      } else if ((install = this.fetcher.installing(block, next))) {
        copyPadded(install.data, start - install.first * BLOCK_SIZE, stop - start, out, into);
      } else {
        const runStart = block * BLOCK_SIZE;
        pending.push(
          this.fetcher.fetch(chunk, ref, block, next, fromStore).then((data) => {
            copyPadded(data, start - runStart, stop - start, out, into);
          }),
        );
      }
      block = next;
    }
  }

  private writeSegment(data: Uint8Array, pos: number, pending: Promise<void>[]): void {
    const chunk = Math.floor(pos / this.objectSize);
    const endPos = pos + data.length;
    const endBlock = Math.ceil(endPos / BLOCK_SIZE);
    let block = Math.floor(pos / BLOCK_SIZE);
    // Install before write: fetched data being installed there could land after this write.
    const installed = this.fetcher.installedBefore(block, endBlock);
    if (installed) {
      pending.push(
        installed.then(() => {
          const inner: Promise<void>[] = [];
          this.writeSegment(data, pos, inner);
          return Promise.all(inner).then(() => undefined);
        }),
      );
      return;
    }
    this.freezeState?.beforeChange(chunk);
    while (block < endBlock) {
      // Runs of blocks the write covers whole go straight to the overlay.
      let next = block;
      while (next < endBlock && this.coversBlock(next, pos, endPos)) next++;
      if (next > block) {
        const start = block * BLOCK_SIZE;
        const stop = Math.min(next * BLOCK_SIZE, endPos);
        this.overlay.write(data.subarray(start - pos, stop - pos), start);
        this.overlay.markValid(block, next, true);
        block = next;
        continue;
      }
      // A block the write covers only in part.
      const start = Math.max(pos, block * BLOCK_SIZE);
      const stop = Math.min(endPos, (block + 1) * BLOCK_SIZE);
      const piece = data.subarray(start - pos, stop - pos);
      const ref = this.base?.lookup(chunk);
      const target = block;
      if (this.overlay.blockSource(block) !== 'base' || !ref) {
        this.mergeBlock(block, start, piece, null);
      } else {
        pending.push(
          this.fetcher.fetch(chunk, ref, block, block + 1).then(async (base) => {
            // the fetch may have started installing this block: let that land first
            for (let i = this.fetcher.installedBefore(target, target + 1); i; i = this.fetcher.installedBefore(target, target + 1)) await i;
            this.mergeBlock(target, start, piece, base);
          }),
        );
      }
      block++;
    }
  }

  /** Whether [pos, endPos) covers every byte of block (the last block may be cut by the volume's end). */
  private coversBlock(block: number, pos: number, endPos: number): boolean {
    const blockStart = block * BLOCK_SIZE;
    return pos <= blockStart && endPos >= Math.min(blockStart + BLOCK_SIZE, this.size);
  }

  /** Writes piece at pos inside block: over the overlay if the block is valid there, else over base (or zeros). */
  private mergeBlock(block: number, pos: number, piece: Uint8Array, base: Buffer | null): void {
    this.freezeState?.beforeChange(Math.floor(block / this.blocksPerChunk));
    if (this.overlay.isValid(block)) {
      this.overlay.write(piece, pos);
      this.overlay.markValid(block, block + 1, true);
      return;
    }
    const blockStart = block * BLOCK_SIZE;
    const blockBytes = Math.min(BLOCK_SIZE, this.size - blockStart);
    const whole = Buffer.alloc(blockBytes);
    // A block unmapped while its base was being fetched is zeros now.
    if (base && !this.overlay.isZero(block)) base.copy(whole, 0, 0, Math.min(base.length, blockBytes));
    whole.set(piece, pos - blockStart);
    this.overlay.write(whole, blockStart);
    this.overlay.markValid(block, block + 1, true);
  }
}
