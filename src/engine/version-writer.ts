// How a new version of a volume is written, in one place: the chunks that
// change are uploaded as write-once objects of one fresh generation,
// concurrently, and then the version table naming them is committed under
// the next sequence number. The table is the commit point: until it exists
// the objects are invisible, and if the version fails they are deleted again
// (garbage collection would find them too). Import, snapshot, flatten,
// rollback, clone and create all write their versions here. Objects are
// written in the current layout ('crc32c': the chunk, then its block sums),
// whatever the layout of the objects the version replaces.
import { md5OnPool } from '../store/md5.js';
import type { ObjectStore } from '../store/object-store.js';
import { blockSumsLength, containerName, dataObjectName, newGeneration, type ChunkRef, type VersionKind, type VersionTable, type VolumeMetadata } from '../format/volume-format.js';
import { ChunkObjects } from './chunk-objects.js';
import { EngineError } from './engine-error.js';
import type { VolumeKey } from './volume-key.js';
import { BufferPool } from './buffer-pool.js';
import { runPool } from '../store/run-pool.js';
import type { VolumeCatalog } from './volume-catalog.js';

/** A chunk's new content: bytes (with the MD5 of the object they make, if known), or null for all zeros, which is stored as nothing. */
export type ChunkContent = { data: Uint8Array; md5?: string } | null;

export interface VersionChanges {
  /** The version's kind, as its table records it. */
  kind: VersionKind;
  /** The chunk map of the version this one changes (empty for a volume's first). */
  from: ReadonlyMap<number, ChunkRef>;
  /** Chunks to upload (the others keep their entry in `from`). */
  chunks?: number[];
  /**
   * Produces a chunk's content. With `buffered` (the default), `buffer` is
   * one of a fixed set of reused buffers, at least objectSize bytes, to fill
   * from its start; the content may be a view of it (the block sums are then
   * written after it in place), valid until the upload is done.
   */
  read?: (chunk: number, buffer: Buffer) => Promise<ChunkContent>;
  /** Pass read() a pooled buffer (off when the content comes from elsewhere, as a copied object). */
  buffered?: boolean;
  /** Parallel uploads (default 4). */
  concurrency?: number;
  /** Called after each chunk is done (uploaded, or found all zeros). */
  onChunk?: (chunk: number) => void;
  signal?: AbortSignal;
  /**
   * The sequence number the new one must follow at least: the base the
   * volume sits on, which a listing that is behind may not show yet.
   */
  after?: number;
  /** Recorded in the table: the snapshot's name and the bytes changed since the previous version. */
  snapshot?: string;
  changedBytes?: number;
}

export class VersionWriter {
  /** The generation of the objects this writer uploads (garbage collection must spare it while it works). */
  readonly generation = newGeneration();

  constructor(
    private readonly store: ObjectStore,
    private readonly catalog: VolumeCatalog,
    private readonly meta: VolumeMetadata,
    /** The key, for an encrypted volume (its objects are sealed). */
    private readonly key?: VolumeKey,
  ) {
    if (meta.encryption && !key) throw new EngineError(`volume '${meta.name}' is encrypted: give its key (--key-file or SWIFTVOL_KEY_FILE)`);
  }

  /** Uploads the changed chunks, then commits the table; on failure, deletes what it uploaded. */
  async write(changes: VersionChanges): Promise<VersionTable> {
    const container = containerName(this.meta.name);
    const refs = new Map(changes.from);
    const uploaded: string[] = [];
    try {
      const chunks = changes.chunks ?? [];
      const concurrency = changes.concurrency ?? 4;
      const layout = this.key && this.meta.encryption ? 'aes-256-gcm' : 'crc32c';
      const objectBytes = this.meta.objectSize + blockSumsLength(this.meta.objectSize, layout);
      const buffers = changes.read && changes.buffered !== false && chunks.length > 0 ? new BufferPool(Math.min(concurrency, chunks.length), objectBytes) : null;
      await runPool(
        chunks,
        concurrency,
        async (chunk) => {
          const buffer = buffers ? await buffers.take(objectBytes) : Buffer.alloc(0);
          try {
            const content = changes.read ? await changes.read(chunk, buffer) : null;
            if (content === null) {
              refs.delete(chunk); // all zeros: stored as nothing
            } else {
              const object = await ChunkObjects.encode(content.data, buffer, layout === 'aes-256-gcm' ? { key: this.key!, generation: this.generation, chunk } : undefined);
              // hashed on the pool while it uploads, unless known; the store checks the two agree
              const md5 = content.md5 ?? md5OnPool(object);
              const name = dataObjectName(this.generation, chunk);
              await this.store.put(container, name, object, { md5 });
              uploaded.push(name);
              refs.set(chunk, { container, generation: this.generation, md5: await md5, layout });
            }
          } finally {
            if (buffers) buffers.give(buffer);
          }
          changes.onChunk?.(chunk);
        },
        changes.signal,
      );
      if (changes.signal?.aborted) throw changes.signal.reason;
      return await this.commit(await this.nextSeq(changes.after ?? 0), changes, refs);
    } catch (err) {
      await runPool(uploaded, 8, (name) => this.store.delete(container, name)).catch(() => undefined);
      throw err;
    }
  }

  /** The one place that numbers versions: past the latest listed and past `after`. */
  private async nextSeq(after: number): Promise<number> {
    const latest = (await this.catalog.versionSeqs(this.meta.name)).at(-1) ?? 0;
    return Math.max(after, latest) + 1;
  }

  /** Writes the table; a write whose reply was lost but that landed counts as done. */
  private async commit(seq: number, changes: VersionChanges, refs: Map<number, ChunkRef>): Promise<VersionTable> {
    try {
      return await this.catalog.commit(this.meta, seq, changes.kind, this.generation, refs, {
        snapshot: changes.snapshot,
        changedBytes: changes.changedBytes,
      });
    } catch (err) {
      const landed = await this.catalog.readVersion(this.meta.name, seq).catch(() => null);
      if (landed && landed.generation === this.generation) return landed;
      throw err;
    }
  }
}
