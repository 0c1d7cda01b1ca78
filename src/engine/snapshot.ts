// A snapshot in progress: the dirty set is frozen at once (start() is
// synchronous), then the changed chunks are composed (frozen overlay blocks
// over the base object) and written as a new version (VersionWriter: objects
// of a fresh generation, then the table). Writes that arrive meanwhile go on
// (the freeze copies a frozen chunk before it changes) and are not part of
// the snapshot.
import { StoreError, type ObjectStore } from '../store/object-store.js';
import { chunkLength, type VersionTable, type VolumeMetadata } from '../format/volume-format.js';
import type { VolumeCatalog } from './volume-catalog.js';
import type { Volume } from './volume.js';
import type { SnapshotFreeze } from './snapshot-freeze.js';
import { VersionWriter } from './version-writer.js';
import type { VolumeKey } from './volume-key.js';

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
  /** The store this job waits for, while it does (it goes on when the store answers). */
  waitingFor?: string;
}

export interface SnapshotOptions {
  concurrency?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** The key of an encrypted volume. */
  key?: VolumeKey;
  /**
   * A check the store could not answer before the freeze (the snapshot's
   * name is free): run before the upload, again while the store is
   * unreachable, until it answers.
   */
  nameCheck?: (() => Promise<void>) | null;
}

/** Pause between attempts while the store is unreachable. */
const STORE_RETRY_MS = 1000;

export class SnapshotJob {
  readonly startedAt = new Date().toISOString();
  private readonly writer: VersionWriter;
  state: SnapshotState = 'uploading';
  changedBytes = 0;
  totalBytes = 0;
  doneBytes = 0;
  error: string | undefined;
  table: VersionTable | null = null;
  /** Settles when the snapshot is committed (or has failed and been undone); set by start(). */
  done!: Promise<VersionTable>;
  private waitingFor: string | undefined;

  constructor(
    private readonly store: ObjectStore,
    catalog: VolumeCatalog,
    private readonly volume: Volume,
    private readonly meta: VolumeMetadata,
    readonly name: string,
    private readonly options: SnapshotOptions = {},
  ) {
    this.writer = new VersionWriter(store, catalog, meta, options.key);
    if (options.nameCheck) this.waitingFor = store.description;
  }

  /** The generation of the objects it uploads. */
  get generation(): string {
    return this.writer.generation;
  }

  /** Freezes now; the upload runs in the background (see `done`). */
  start(): void {
    const freeze = this.volume.freeze();
    this.changedBytes = freeze.frozenBytes();
    this.totalBytes = freeze.chunks.reduce((sum, c) => sum + this.chunkLength(c), 0);
    this.done = this.upload(freeze);
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
    if (this.waitingFor) status.waitingFor = this.waitingFor;
    return status;
  }

  /** Runs fn until it gets past the store being unreachable (its other failures are the job's). */
  private async untilStoreAnswers(fn: () => Promise<void>): Promise<void> {
    for (;;) {
      try {
        await fn();
        this.waitingFor = undefined;
        return;
      } catch (err) {
        if (!(err instanceof StoreError && err.kind === 'unreachable')) throw err;
        this.waitingFor = this.store.description;
        await new Promise((resolve) => setTimeout(resolve, STORE_RETRY_MS));
      }
    }
  }

  private chunkLength(chunk: number): number {
    return chunkLength(this.meta.size, this.meta.objectSize, chunk);
  }

  private async upload(freeze: SnapshotFreeze): Promise<VersionTable> {
    const base = this.volume.baseVersion();
    let table: VersionTable;
    try {
      if (this.options.nameCheck) await this.untilStoreAnswers(this.options.nameCheck);
      this.options.onProgress?.(0, this.totalBytes);
      table = await this.writer.write({
        kind: 'snapshot',
        from: base?.chunks ?? new Map(),
        after: base?.seq,
        chunks: freeze.chunks,
        read: async (chunk, buffer) => {
          const data = await freeze.compose(chunk, buffer);
          return data === null ? null : { data };
        },
        concurrency: this.options.concurrency,
        onChunk: (chunk) => {
          this.doneBytes += this.chunkLength(chunk);
          this.options.onProgress?.(this.doneBytes, this.totalBytes);
        },
        snapshot: this.name,
        changedBytes: this.changedBytes,
      });
    } catch (err) {
      this.volume.settleSnapshot(null);
      this.state = 'failed';
      this.error = err instanceof Error ? err.message : String(err);
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
}
