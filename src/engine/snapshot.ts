// A snapshot in progress: the dirty set is frozen at once (start() is
// synchronous), then the changed chunks are composed (frozen overlay blocks
// over the base object) and uploaded as write-once objects of a fresh
// generation, concurrently; the version table is written last, as the commit
// point. Writes that arrive meanwhile go on (the volume copies a frozen chunk
// before changing it) and are not part of the snapshot.
import { md5OnPool } from '../store/md5.js';
import { BufferPool } from './buffer-pool.js';
import type { ObjectStore } from '../store/object-store.js';
import { chunkLength, containerName, dataObjectName, newGeneration, type ChunkRef, type VersionTable, type VolumeMetadata } from '../format/volume-format.js';
import type { VolumeCatalog } from './volume-catalog.js';
import type { Volume } from './volume.js';
import { runPool } from './run-pool.js';

export type SnapshotState = 'uploading' | 'complete' | 'failed';

export interface SnapshotStatus {
  volume: string;
  name: string;
  state: SnapshotState;
  startedAt: string;
  /** Bytes written since the previous version (4 KiB granularity). */
  changedBytes: number;
  /** Bytes of the chunks to compose and upload, and how many are done. */
  totalBytes: number;
  doneBytes: number;
  seq: number | null;
  error?: string;
}

export interface SnapshotOptions {
  concurrency?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export class SnapshotJob {
  readonly startedAt = new Date().toISOString();
  readonly generation = newGeneration();
  state: SnapshotState = 'uploading';
  changedBytes = 0;
  totalBytes = 0;
  doneBytes = 0;
  error: string | undefined;
  table: VersionTable | null = null;
  /** Settles when the snapshot is committed (or has failed and been undone); set by start(). */
  done!: Promise<VersionTable>;

  constructor(
    private readonly store: ObjectStore,
    private readonly catalog: VolumeCatalog,
    private readonly volume: Volume,
    private readonly meta: VolumeMetadata,
    readonly name: string,
    private readonly options: SnapshotOptions = {},
  ) {}

  /** Freezes now; the upload runs in the background (see `done`). */
  start(): void {
    const chunks = this.volume.freeze();
    this.changedBytes = this.volume.frozenBytes();
    this.totalBytes = chunks.reduce((sum, c) => sum + chunkLength(this.meta.size, this.meta.objectSize, c), 0);
    this.done = this.upload(chunks);
    this.done.catch(() => undefined); // observed through state/error too
  }

  status(): SnapshotStatus {
    const status: SnapshotStatus = {
      volume: this.meta.name,
      name: this.name,
      state: this.state,
      startedAt: this.startedAt,
      changedBytes: this.changedBytes,
      totalBytes: this.totalBytes,
      doneBytes: this.doneBytes,
      seq: this.table?.seq ?? null,
    };
    if (this.error) status.error = this.error;
    return status;
  }

  private async upload(chunks: number[]): Promise<VersionTable> {
    const container = containerName(this.meta.name);
    const uploaded: string[] = [];
    const base = this.volume.baseVersion();
    const refs = new Map<number, ChunkRef>(base?.chunks ?? []);
    let seq = 0;
    let table: VersionTable;
    try {
      this.options.onProgress?.(0, this.totalBytes);
      const concurrency = this.options.concurrency ?? 4;
      const buffers = new BufferPool(Math.min(concurrency, chunks.length), this.meta.objectSize);
      await runPool(chunks, concurrency, async (chunk) => {
        const buffer = await buffers.take(this.meta.objectSize);
        try {
          const data = await this.volume.frozenChunk(chunk, buffer);
          if (data === null) {
            refs.delete(chunk); // all zeros now: stored as nothing
          } else {
            // hashed on the pool while it uploads; the store checks the two agree
            const md5 = md5OnPool(data);
            const name = dataObjectName(this.generation, chunk);
            await this.store.put(container, name, data, { md5 });
            uploaded.push(name);
            refs.set(chunk, { container, generation: this.generation, md5: await md5 });
          }
        } finally {
          buffers.give(buffer);
        }
        this.doneBytes += chunkLength(this.meta.size, this.meta.objectSize, chunk);
        this.options.onProgress?.(this.doneBytes, this.totalBytes);
      });
      const seqs = await this.catalog.versionSeqs(this.meta.name);
      seq = Math.max(base?.seq ?? 0, seqs.at(-1) ?? 0) + 1;
      table = await this.commit(seq, refs);
    } catch (err) {
      this.volume.settleSnapshot(null);
      this.state = 'failed';
      this.error = err instanceof Error ? err.message : String(err);
      // Referenced by no table: delete now (garbage collection would find them too).
      await runPool(uploaded, 8, (name) => this.store.delete(container, name)).catch(() => undefined);
      throw err;
    }
    this.table = table;
    this.volume.settleSnapshot(table);
    this.state = 'complete';
    // The snapshot is whole in the store now. Persisting the overlay's clean
    // bits is the next flush's work, not the caller's wait: that fdatasync may
    // have to write back everything written before the freeze. Until then a
    // crash only leaves those blocks marked dirty: uploaded again next time.
    void this.volume.flush().catch(() => undefined); // a failing disk shows at the next flush too
    return table;
  }

  /** Writes the table; a write whose reply was lost but that landed counts as done. */
  private async commit(seq: number, refs: Map<number, ChunkRef>): Promise<VersionTable> {
    try {
      return await this.catalog.commit(this.meta, seq, 'snapshot', this.generation, refs, {
        snapshot: this.name,
        changedBytes: this.changedBytes,
      });
    } catch (err) {
      const landed = await this.catalog.readVersion(this.meta.name, seq).catch(() => null);
      if (landed && landed.generation === this.generation) return landed;
      throw err;
    }
  }
}
