// A volume as a disk: the local overlay over a base version in the store.
// Reads take valid overlay blocks and fetch the rest with ranged GETs (one
// GET per contiguous run of missing blocks, shared by concurrent readers);
// writes go to the overlay at once, never waiting for a chunk download, except
// a write smaller than a 4 KiB block onto a block that is not local yet, which
// must read the rest of that block first.
import type { BlockDevice, DirectAccess, DirectSession } from './block-device.js';
import type { ObjectStore } from '../store/object-store.js';
import type { FrozenChunk, Overlay } from '../overlay/overlay.js';
import { countBits, testBit } from '../overlay/bitmap.js';
import { BLOCK_SIZE, SECTOR_SIZE, chunkLength, dataObjectName, type ChunkRef, type VersionTable } from '../format/volume-format.js';

export interface VolumeOptions {
  /** Keep fetched blocks in the overlay as clean cache (off for one-pass readers such as export). */
  cacheReads?: boolean;
  /** Runs after close() has flushed and released the overlay (to drop a lease, a lock, a temp dir). */
  onClose?: () => void | Promise<void>;
  /** Runs on abandon(), at once: what a crash would release (a lock), not what it would leave (a lease). */
  onAbandon?: () => void;
}

/** A snapshot between freeze and commit: what was frozen, and copies of frozen chunks written since. */
interface Freeze {
  frozen: Map<number, FrozenChunk>;
  /** Frozen overlay blocks of chunks modified after the freeze, copied before the change. */
  preserved: Map<number, Buffer>;
  /** Chunks already read for upload: later changes need no copy. */
  composed: Set<number>;
}

/** Reads at least this long are taken as sequential streaming (read-ahead on). */
const READ_AHEAD_MIN_LENGTH = 128 * 1024;
/** Objects fetched ahead of a streaming reader (8 measured no faster here, and held ~40 MiB more in memory). */
const READ_AHEAD_CHUNKS = 4;

/** Fetched blocks [first, end) on their way into the overlay file; data starts at block first. */
interface Install {
  first: number;
  end: number;
  data: Buffer;
  done: Promise<void>;
}

interface Fetch {
  first: number;
  end: number;
  data: Promise<Buffer>;
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
  private readonly blocksPerChunk: number;
  private readonly cacheReads: boolean;
  private readonly onClose: (() => void | Promise<void>) | undefined;
  private readonly onAbandon: (() => void) | undefined;
  /** In-flight fetches per chunk, so overlapping readers share one GET. */
  private readonly fetches = new Map<number, Fetch[]>();
  /** Fetched blocks being written to the overlay in the background: writes to them wait. */
  private readonly installs = new Set<Install>();
  private closed = false;
  private freezeState: Freeze | null = null;

  constructor(
    readonly name: string,
    private readonly store: ObjectStore,
    private readonly overlay: Overlay,
    private base: VersionTable | null,
    options: VolumeOptions = {},
  ) {
    this.size = overlay.size;
    this.objectSize = overlay.objectSize;
    this.blocksPerChunk = this.objectSize / BLOCK_SIZE;
    this.cacheReads = options.cacheReads ?? true;
    this.onClose = options.onClose;
    this.onAbandon = options.onAbandon ?? options.onClose;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    // Large reads are streaming reads: fetch whole objects and the next few ahead.
    const streaming = this.cacheReads && length >= READ_AHEAD_MIN_LENGTH;
    const fetched = this.fetchedView(offset, length, streaming);
    if (fetched) {
      if (streaming) this.readAhead(Math.floor((offset + length - 1) / this.objectSize));
      return fetched;
    }
    const out = Buffer.allocUnsafe(length);
    const pending: Promise<void>[] = [];
    for (const seg of this.segments(offset, length)) this.readSegment(out, seg.offset - offset, seg.offset, seg.length, pending, streaming);
    if (streaming) this.readAhead(Math.floor((offset + length - 1) / this.objectSize));
    await Promise.all(pending);
    return out;
  }

  /**
   * A read inside one chunk whose blocks all come from the base: a view of
   * the fetched data (or of data being installed), saving a copy; null for
   * any other read.
   */
  private fetchedView(offset: number, length: number, streaming: boolean): Promise<Buffer> | null {
    const chunk = Math.floor(offset / this.objectSize);
    const ref = this.base?.lookup(chunk);
    if (!ref || length === 0 || Math.floor((offset + length - 1) / this.objectSize) !== chunk) return null;
    const first = Math.floor(offset / BLOCK_SIZE);
    const end = Math.ceil((offset + length) / BLOCK_SIZE);
    for (let b = first; b < end; b++) if (this.source(b) !== 'base') return null;
    const view = (data: Buffer, from: number): Buffer => {
      if (data.length >= from + length) return data.subarray(from, from + length);
      const out = Buffer.allocUnsafe(length); // the volume's end: zeros past the object's
      copyPadded(data, from, length, out, 0);
      return out;
    };
    const install = this.installing(first, end);
    if (install) return Promise.resolve(view(install.data, offset - install.first * BLOCK_SIZE));
    const fetchEnd = streaming ? this.chunkEndBlock(chunk) : end;
    return this.fetchBlocks(chunk, ref, first, fetchEnd).then((data) => view(data, offset - first * BLOCK_SIZE));
  }

  /**
   * Starts fetching the next chunks after `chunk` that are not local yet, so
   * that a sequential reader finds them arriving (or arrived) in the overlay.
   */
  private readAhead(chunk: number): void {
    const last = Math.min(chunk + READ_AHEAD_CHUNKS, Math.ceil(this.size / this.objectSize) - 1);
    for (let c = chunk + 1; c <= last; c++) {
      const ref = this.base?.lookup(c);
      if (!ref || this.fetches.has(c)) continue;
      const first = c * this.blocksPerChunk;
      const end = this.chunkEndBlock(c);
      let missing = first;
      while (missing < end && (this.source(missing) !== 'base' || this.installing(missing, missing + 1))) missing++;
      if (missing < end) this.fetchBlocks(c, ref, missing, end).catch(() => undefined); // a reader will retry
    }
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
    let first = Math.ceil(offset / BLOCK_SIZE);
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
    for (let chunk = Math.floor(first / this.blocksPerChunk); chunk * this.blocksPerChunk < last; chunk++) this.beforeChange(chunk);
    this.overlay.markZero(first, last);
    await Promise.all(edges);
  }

  /** Flushes and releases the overlay. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
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

  /** The block after a chunk's last one (the volume's end cuts the last chunk short). */
  private chunkEndBlock(chunk: number): number {
    return Math.ceil(Math.min((chunk + 1) * this.objectSize, this.size) / BLOCK_SIZE);
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
  private readSegment(out: Buffer, outOffset: number, pos: number, length: number, pending: Promise<void>[], streaming = false): void {
    const chunk = Math.floor(pos / this.objectSize);
    const ref = this.base?.lookup(chunk);
    const endPos = pos + length;
    let block = Math.floor(pos / BLOCK_SIZE);
    const endBlock = Math.ceil(endPos / BLOCK_SIZE);
    let install: Install | undefined;
    while (block < endBlock) {
      const where = this.source(block);
      let next = block + 1;
      while (next < endBlock && this.source(next) === where) next++;
      const start = Math.max(pos, block * BLOCK_SIZE);
      const stop = Math.min(endPos, next * BLOCK_SIZE);
      const into = outOffset + start - pos;
      if (where === 'overlay') {
        this.overlay.read(out, into, stop - start, start);
      } else if (where === 'zero' || !ref) {
        out.fill(0, into, into + stop - start);
      } else if ((install = this.installing(block, next))) {
        copyPadded(install.data, start - install.first * BLOCK_SIZE, stop - start, out, into);
      } else {
        const runStart = block * BLOCK_SIZE;
        // A streaming reader gets the rest of the object in the same GET.
        const fetchEnd = streaming ? this.chunkEndBlock(chunk) : next;
        pending.push(this.fetchBlocks(chunk, ref, block, fetchEnd).then((data) => {
          copyPadded(data, start - runStart, stop - start, out, into);
        }));
      }
      block = next;
    }
  }

  /**
   * Freezes the dirty set for a snapshot (synchronous: I/O pauses only for
   * the copy of the dirty chunks' bitmaps). Returns the frozen chunks.
   */
  freeze(): number[] {
    if (this.freezeState) throw new Error('a snapshot of this volume is already in progress');
    const frozen = this.overlay.freeze();
    this.freezeState = { frozen, preserved: new Map(), composed: new Set() };
    return [...frozen.keys()].sort((a, b) => a - b);
  }

  /** Bytes dirty at the freeze. */
  frozenBytes(): number {
    let blocks = 0;
    for (const f of this.freezeState?.frozen.values() ?? []) blocks += countBits(f.dirty);
    return blocks * BLOCK_SIZE;
  }

  /**
   * The content a frozen chunk had at the freeze, composed into `into` (at
   * least a chunk long): frozen overlay blocks (or their preserved copies)
   * over the base object; null if it is all zeros.
   */
  async frozenChunk(chunk: number, into: Buffer): Promise<Buffer | null> {
    const state = this.freezeState;
    const frozen = state?.frozen.get(chunk);
    if (!state || !frozen) throw new Error(`chunk ${chunk} is not part of the snapshot in progress`);
    const length = chunkLength(this.size, this.objectSize, chunk);
    const blocks = Math.ceil(length / BLOCK_SIZE);
    const ref = this.base?.lookup(chunk);
    let needBase = false;
    for (let i = 0; i < blocks && !needBase; i++) needBase = !testBit(frozen.valid, i) && !testBit(frozen.zero, i);
    const out = into.subarray(0, length);
    const chunkStart = chunk * this.objectSize;
    // Runs of blocks of one kind: one read or copy each (not one per 4 KiB block).
    const runs: Array<{ kind: 'zero' | 'local' | 'base'; start: number; stop: number }> = [];
    const kindOf = (i: number): 'zero' | 'local' | 'base' => (testBit(frozen.zero, i) ? 'zero' : testBit(frozen.valid, i) ? 'local' : 'base');
    for (let first = 0; first < blocks; ) {
      const kind = kindOf(first);
      let end = first + 1;
      while (end < blocks && kindOf(end) === kind) end++;
      runs.push({ kind, start: first * BLOCK_SIZE, stop: Math.min(end * BLOCK_SIZE, length) });
      first = end;
    }
    // Local blocks are read off the event loop, with the base object's GET. A
    // write that changes them meanwhile first copies them (beforeChange), so
    // if a copy exists once the reads are done, it is what the freeze saw.
    const reads = state.preserved.has(chunk)
      ? []
      : runs.filter((r) => r.kind === 'local').map((r) => this.overlay.readInBackground(out, r.start, r.stop - r.start, chunkStart + r.start));
    const settled = await Promise.allSettled([needBase && ref ? this.store.get(ref.container, dataObjectName(ref.generation, chunk)) : null, ...reads]);
    // all settled first: no read may still land in `into` once the caller has it back
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const base = (settled[0] as PromiseFulfilledResult<Buffer | null>).value;
    // From here on synchronous: no write can slip in between the check for a preserved copy and its use.
    const preserved = state.preserved.get(chunk);
    for (const { kind, start, stop } of runs) {
      if (kind === 'local') {
        if (preserved) preserved.copy(out, start, start, stop);
      } else if (kind === 'base' && base && start < base.length) {
        const copied = base.copy(out, start, start, Math.min(base.length, stop));
        out.fill(0, start + copied, stop);
      } else {
        out.fill(0, start, stop);
      }
    }
    state.composed.add(chunk);
    state.preserved.delete(chunk);
    return isAllZero(out) ? null : out;
  }

  /**
   * Ends the snapshot in progress: with its committed table, which becomes the
   * base (frozen blocks are clean now); with null, the frozen blocks are
   * dirty again.
   */
  settleSnapshot(table: VersionTable | null): void {
    if (!this.freezeState) return;
    this.freezeState = null;
    if (table) {
      this.base = table;
      this.overlay.setInfo('baseTable', table.encode().toString('utf8'));
      this.overlay.setInfo('baseSeq', String(table.seq));
    }
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
    this.base = table;
    this.overlay.setInfo('baseTable', table.encode().toString('utf8'));
    this.overlay.setInfo('baseSeq', String(table.seq));
  }

  /** The version the overlay sits on. */
  baseVersion(): VersionTable | null {
    return this.base;
  }

  /** Copies a frozen, not yet uploaded chunk's overlay blocks before they change. */
  private beforeChange(chunk: number): void {
    const state = this.freezeState;
    if (!state || state.composed.has(chunk) || state.preserved.has(chunk)) return;
    const frozen = state.frozen.get(chunk);
    if (!frozen) return;
    const length = chunkLength(this.size, this.objectSize, chunk);
    const copy = Buffer.alloc(length);
    const chunkStart = chunk * this.objectSize;
    for (let i = 0; i * BLOCK_SIZE < length; i++) {
      if (!testBit(frozen.valid, i)) continue;
      let j = i + 1;
      while (j * BLOCK_SIZE < length && testBit(frozen.valid, j)) j++;
      const start = i * BLOCK_SIZE;
      const stop = Math.min(j * BLOCK_SIZE, length);
      this.overlay.read(copy, start, stop - start, chunkStart + start);
      i = j;
    }
    state.preserved.set(chunk, copy);
  }

  /** Where a block's content is: the overlay file, nowhere (zeros), or the base. */
  private source(block: number): 'overlay' | 'zero' | 'base' {
    if (this.overlay.isValid(block)) return 'overlay';
    return this.overlay.isZero(block) ? 'zero' : 'base';
  }

  private writeSegment(data: Uint8Array, pos: number, pending: Promise<void>[]): void {
    const chunk = Math.floor(pos / this.objectSize);
    const endPos = pos + data.length;
    const endBlock = Math.ceil(endPos / BLOCK_SIZE);
    let block = Math.floor(pos / BLOCK_SIZE);
    // Fetched data being installed there could land after this write: wait for it first.
    const installing = [...this.installs].filter((i) => i.first < endBlock && block < i.end);
    if (installing.length > 0) {
      pending.push(
        Promise.allSettled(installing.map((i) => i.done)).then(() => {
          const inner: Promise<void>[] = [];
          this.writeSegment(data, pos, inner);
          return Promise.all(inner).then(() => undefined);
        }),
      );
      return;
    }
    this.beforeChange(chunk);
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
      if (this.source(block) !== 'base' || !ref) {
        this.mergeBlock(block, start, piece, null);
      } else {
        pending.push(
          this.fetchBlocks(chunk, ref, block, block + 1).then(async (base) => {
            // the fetch may have started installing this block: let that land first
            for (let i = this.installing(target, target + 1); i; i = this.installing(target, target + 1)) await i.done;
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
    this.beforeChange(Math.floor(block / this.blocksPerChunk));
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

  /**
   * Bytes of blocks [first, end) of a chunk from its base object. The result
   * starts at block `first`; it may be shorter than the blocks at the end of
   * the volume. Concurrent callers covered by an in-flight GET share it.
   */
  private fetchBlocks(chunk: number, ref: ChunkRef, first: number, end: number): Promise<Buffer> {
    const list = this.fetches.get(chunk);
    const shared = list?.find((f) => f.first <= first && f.end >= end);
    if (shared) return shared.data.then((data) => data.subarray((first - shared.first) * BLOCK_SIZE));

    const chunkStart = chunk * this.objectSize;
    const chunkBytes = chunkLength(this.size, this.objectSize, chunk);
    const start = first * BLOCK_SIZE - chunkStart;
    const stop = Math.min(end * BLOCK_SIZE - chunkStart, chunkBytes);
    const name = dataObjectName(ref.generation, chunk);
    const whole = start === 0 && stop === chunkBytes;
    const entry: Fetch = {
      first,
      end,
      data: this.store.get(ref.container, name, whole ? undefined : { start, end: stop }).then((data) => {
        if (data.length !== stop - start) {
          throw new Error(`object ${ref.container}/${name} returned ${data.length} bytes for a ${stop - start}-byte range`);
        }
        if (this.cacheReads) this.installClean(first, data);
        return data;
      }),
    };
    const entries = list ?? [];
    entries.push(entry);
    this.fetches.set(chunk, entries);
    const forget = (): void => {
      const i = entries.indexOf(entry);
      if (i >= 0) entries.splice(i, 1);
      if (entries.length === 0) this.fetches.delete(chunk);
    };
    entry.data.then(forget, forget);
    return entry.data;
  }

  /**
   * Keeps fetched base blocks as clean cache, skipping any block written or
   * unmapped meanwhile. The file write runs in the background (readers have
   * the data already); the blocks become valid once it is done, except those
   * unmapped since (writes to them wait for it: see writeSegment).
   */
  private installClean(first: number, data: Buffer): void {
    const blocks = Math.ceil(data.length / BLOCK_SIZE);
    let i = 0;
    while (i < blocks) {
      if (this.source(first + i) !== 'base' || this.installing(first + i, first + i + 1)) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < blocks && this.source(first + j) === 'base' && !this.installing(first + j, first + j + 1)) j++;
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
            for (let b = runFirst; b < runEnd; b++) if (this.source(b) === 'base') this.overlay.markValid(b, b + 1, false);
          })
          .catch(() => undefined) // a cache that could not be written is no cache: reads fetch again
          .finally(() => this.installs.delete(entry)),
      };
      this.installs.add(entry);
      i = j;
    }
  }

  /** The install covering all of blocks [first, end), if any. */
  private installing(first: number, end: number): Install | undefined {
    for (const i of this.installs) if (i.first <= first && end <= i.end) return i;
    return undefined;
  }
}

/** Copies length bytes of source from sourceOffset into target, zero-filling what source lacks. */
function copyPadded(source: Buffer, sourceOffset: number, length: number, target: Buffer, targetOffset: number): void {
  const copied = Math.max(0, Math.min(length, source.length - sourceOffset));
  if (copied > 0) source.copy(target, targetOffset, sourceOffset, sourceOffset + copied);
  if (copied < length) target.fill(0, targetOffset + copied, targetOffset + length);
}

const ZEROS = Buffer.alloc(1024 * 1024);

/** Whether every byte is zero (compared a megabyte at a time with memcmp). */
export function isAllZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const piece = data.subarray(at, Math.min(at + ZEROS.length, data.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}
