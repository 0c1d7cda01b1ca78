// A snapshot between freeze and commit, on the volume's side: which chunks
// were dirty at the freeze, and what each of them held then.
//
// "Copy before change" lives here: a write or unmap to a frozen chunk that
// has not been composed for upload yet first copies that chunk's frozen
// overlay blocks (beforeChange), so the snapshot uploads what the freeze
// saw while the volume keeps being written.
import type { FrozenChunk, Overlay } from '../overlay/overlay.js';
import { countBits, testBit } from '../overlay/bitmap.js';
import { BLOCK_SIZE, chunkLength, type VersionTable } from '../format/volume-format.js';
import type { BaseFetcher } from './base-fetcher.js';
import { isAllZero } from './all-zero.js';

export class SnapshotFreeze {
  /** The frozen chunks, ascending. */
  readonly chunks: number[];
  private readonly frozen: Map<number, FrozenChunk>;
  /** Frozen overlay blocks of chunks modified after the freeze, copied before the change. */
  private readonly preserved = new Map<number, Buffer>();
  /** Chunks already read for upload: later changes need no copy. */
  private readonly composed = new Set<number>();

  /** Freezes the overlay's dirty set now (synchronous: I/O pauses only for the copy of the dirty chunks' bitmaps). */
  constructor(
    private readonly overlay: Overlay,
    private readonly fetcher: BaseFetcher,
    /** The base at the freeze: it stays the base until the snapshot settles. */
    private readonly base: VersionTable | null,
  ) {
    this.frozen = overlay.freeze();
    this.chunks = [...this.frozen.keys()].sort((a, b) => a - b);
  }

  /** Bytes dirty at the freeze. */
  frozenBytes(): number {
    let blocks = 0;
    for (const f of this.frozen.values()) blocks += countBits(f.dirty);
    return blocks * BLOCK_SIZE;
  }

  /** Copy before change: called before every write or unmap to the chunk, while the freeze lasts. */
  beforeChange(chunk: number): void {
    if (this.composed.has(chunk) || this.preserved.has(chunk)) return;
    const frozen = this.frozen.get(chunk);
    if (!frozen) return;
    const length = this.chunkLength(chunk);
    const copy = Buffer.alloc(length);
    const chunkStart = chunk * this.overlay.objectSize;
    for (let i = 0; i * BLOCK_SIZE < length; i++) {
      if (!testBit(frozen.valid, i)) continue;
      let j = i + 1;
      while (j * BLOCK_SIZE < length && testBit(frozen.valid, j)) j++;
      const start = i * BLOCK_SIZE;
      const stop = Math.min(j * BLOCK_SIZE, length);
      this.overlay.read(copy, start, stop - start, chunkStart + start);
      i = j;
    }
    this.preserved.set(chunk, copy);
  }

  /**
   * The content a frozen chunk had at the freeze, composed into `into` (at
   * least a chunk long): frozen overlay blocks (or their preserved copies)
   * over the base object; null if it is all zeros.
   */
  async compose(chunk: number, into: Buffer): Promise<Buffer | null> {
    const frozen = this.frozen.get(chunk);
    if (!frozen) throw new Error(`chunk ${chunk} is not part of the snapshot in progress`);
    const length = this.chunkLength(chunk);
    const blocks = Math.ceil(length / BLOCK_SIZE);
    const ref = this.base?.lookup(chunk);
    let needBase = false;
    for (let i = 0; i < blocks && !needBase; i++) needBase = !testBit(frozen.valid, i) && !testBit(frozen.zero, i);
    const out = into.subarray(0, length);
    const chunkStart = chunk * this.overlay.objectSize;
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
    const reads = this.preserved.has(chunk)
      ? []
      : runs.filter((r) => r.kind === 'local').map((r) => this.overlay.readInBackground(out, r.start, r.stop - r.start, chunkStart + r.start));
    const settled = await Promise.allSettled([needBase && ref ? this.fetcher.readObject(chunk, ref) : null, ...reads]);
    // all settled first: no read may still land in `into` once the caller has it back
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const base = (settled[0] as PromiseFulfilledResult<Buffer | null>).value;
    // From here on synchronous: no write can slip in between the check for a preserved copy and its use.
    const preserved = this.preserved.get(chunk);
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
    this.composed.add(chunk);
    this.preserved.delete(chunk);
    return isAllZero(out) ? null : out;
  }

  private chunkLength(chunk: number): number {
    return chunkLength(this.overlay.size, this.overlay.objectSize, chunk);
  }
}
