// The engine: volumes as the user sees them, made of what is in the store
// (VolumeCatalog) and what is attached here (StateDir, Overlay).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isNotFound, type ObjectStore } from '../store/object-store.js';
import { Overlay } from '../overlay/overlay.js';
import {
  DEFAULT_OBJECT_SIZE,
  chunkCount,
  chunkLength,
  containerName,
  HEARTBEAT_FORMAT_VERSION,
  validateObjectSize,
  validateVolumeName,
  validateSnapshotName,
  validateVolumeSize,
  type VersionTable,
  type VolumeMetadata,
  type VolumeEncryption,
  type ParentRef,
} from '../format/volume-format.js';
import { SnapshotJob, type SnapshotOptions } from './snapshot.js';
import { DEFAULT_LEASE_MS, Lease, holderName } from './lease.js';
import { HolderHeartbeat } from './holder-heartbeat.js';
import type { SnapshotEntry } from './volume-catalog.js';
import { EngineError, volumesMessage } from './engine-error.js';
import { StateDir } from './state-dir.js';
import { Volume } from './volume.js';
import { VolumeCatalog, summaryOf, type VolumeSummary } from './volume-catalog.js';
import { runPool } from '../store/run-pool.js';
import { VersionWriter } from './version-writer.js';
import { chunkObjectsOf } from './chunk-objects.js';
import { scrubVersion, type ScrubOptions, type ScrubReport } from './scrub.js';
import type { VolumeKey } from './volume-key.js';
import { RawImageFile, SparseImageWriter, type ImageSource } from './image-file.js';
import { isAllZero } from './all-zero.js';
import { BLOCK_SIZE } from '../format/volume-format.js';
import { mirrorOf } from '../store/mirror-store.js';
import { GatewayCache, objectKey } from './gateway-cache.js';
import type { ResyncOptions } from '../store/mirror-resync.js';
import { addMirror, checkAttach, collectionStores, placeVolume, removeMirror, resyncVolume, storeStates, type StoreState, type VolumeResync } from './mirroring.js';

export type Progress = (doneBytes: number, totalBytes: number) => void;

/** How long a snapshot's start waits for the store to answer its name check before it freezes anyway. */
const NAME_CHECK_MS = 3000;

export interface OpenOptions {
  /** Keep fetched blocks as clean cache in the overlay (default true). */
  cacheReads?: boolean;
  /** Take the volume's lease in the store (default true; a one-pass reader needs none). */
  lease?: boolean;
  /** Told when the lease could not be renewed or was taken over. */
  onLeaseLost?: (message: string) => void;
  /** Attach even though fewer than a majority of a mirrored volume's stores answer. */
  force?: boolean;
}

export interface ImportOptions {
  objectSize?: number;
  /** Parallel uploads (default 4). */
  concurrency?: number;
  /** Volume size when larger than the image. */
  size?: number;
  onProgress?: Progress;
  signal?: AbortSignal;
  /** Encrypt the volume with the engine's key. */
  encrypt?: boolean;
  /** The stores of the mirror it lives on (default: every store configured). */
  stores?: string[];
  /** Called with the bytes of each piece read from the image (pieces that hold no data are not read). */
  onRead?: (bytes: number) => void;
}

export interface ExportOptions {
  /** Export this snapshot instead of the current content. */
  snapshot?: string;
  /** Replace FILE if it exists. */
  force?: boolean;
  /** Parallel chunk reads (default 4). */
  concurrency?: number;
  onProgress?: Progress;
  signal?: AbortSignal;
  /** The image errors name: the file asked for, where FILE is a temporary beside it (another format, converted after). */
  shownAs?: string;
}

export interface VolumeInfo extends Omit<VolumeSummary, 'parent'> {
  /** The snapshot this volume was cloned from. */
  parent: ParentRef | null;
  /** Volumes cloned from this one's snapshots. */
  children: string[];
  attached: boolean;
  /** Each store of a mirrored volume and its state (info only; absent on a single store). */
  stores?: StoreState[];
  /** Base version of the local overlay, when attached. */
  baseVersion: number | null;
  dirtyBytes: number | null;
  /** Bytes fetched from the store and kept here as clean cache (as of the last flush). */
  cachedBytes: number | null;
}

export class Engine {
  readonly catalog: VolumeCatalog;
  readonly state: StateDir;

  /** The metadata of each volume opened here (write-once in the store: it cannot change while open). */
  private readonly metadataOf = new WeakMap<Volume, VolumeMetadata>();
  /** Generations being uploaded, per volume: garbage collection leaves their objects alone. */
  private readonly uploading = new Map<string, Set<string>>();
  /** How long a lease lasts unless renewed (SWIFTVOL_LEASE_SECONDS). */
  readonly leaseMs: number;
  private holderHeartbeat: HolderHeartbeat | null = null;

  /** The key of encrypted volumes, if one was given (--key-file, SWIFTVOL_KEY_FILE). */
  private readonly key: VolumeKey | undefined;

  /** The gateway's cache, when this engine serves (shared by the volumes it opens). */
  private readonly cache: GatewayCache | undefined;

  constructor(readonly store: ObjectStore, stateDir: string, options: { leaseMs?: number; key?: VolumeKey; cache?: GatewayCache } = {}) {
    this.catalog = new VolumeCatalog(store);
    this.state = new StateDir(stateDir);
    this.cache = options.cache;
    // A lease renewal may wait a mirror's deadline for a store that stalls: it must outlast that.
    this.leaseMs = options.leaseMs ?? Math.max(DEFAULT_LEASE_MS, 3 * (mirrorOf(store)?.deadlineMs ?? 0));
    this.key = options.key;
  }

  /** The key to read and write a volume with: none for a volume that is not encrypted; else the given one, if it is the volume's. */
  private keyFor(meta: VolumeMetadata): VolumeKey | undefined {
    if (!meta.encryption) return undefined;
    if (!this.key) throw new EngineError(`volume '${meta.name}' is encrypted: give its key with --key-file FILE or SWIFTVOL_KEY_FILE`);
    this.key.verify(meta.encryption, meta.name);
    return this.key;
  }

  /** What a new volume's metadata records of its encryption, if asked for. */
  private newEncryption(encrypt: boolean | undefined): VolumeEncryption | undefined {
    if (!encrypt) return undefined;
    if (!this.key) throw new EngineError('--encrypt needs a key: --key-file FILE or SWIFTVOL_KEY_FILE (32 bytes, or 64 hex digits)');
    return this.key.encryption();
  }

  async createVolume(name: string, size: number, objectSize = DEFAULT_OBJECT_SIZE, options: { encrypt?: boolean; stores?: string[] } = {}): Promise<VolumeInfo> {
    validateVolumeName(name);
    validateVolumeSize(size);
    validateObjectSize(objectSize);
    const encryption = this.newEncryption(options.encrypt);
    if (options.stores) placeVolume(this.store, name, options.stores);
    await this.refuseExisting(name);
    const release = this.state.lock(name, 'volume create');
    try {
      await this.refuseExisting(name);
      this.state.checkRoomFor(size);
      const meta = await this.catalog.begin(name, size, objectSize, undefined, encryption);
      const table = await new VersionWriter(this.store, this.catalog, meta, this.keyFor(meta)).write({ kind: 'create', from: new Map() });
      await this.createLocalState(meta.uuid, table);
      return await this.newInfo(meta, table);
    } finally {
      release();
    }
  }

  /** The info of a volume just written here, from what was written (not read back: a new volume has no clones). */
  private newInfo(meta: VolumeMetadata, table: VersionTable): Promise<VolumeInfo> {
    return this.infoOf(summaryOf(meta, table), []);
  }

  /**
   * Imports an image as a new volume: a raw file by its path, or any
   * ImageSource (src/image/: other formats through QEMU, objects in Swift).
   * Chunks upload in parallel under a fresh generation; chunks the source
   * says hold no data are not read, all-zero chunks are not stored; the
   * version table is written last. The volume's size is the image's, rounded
   * up to a multiple of 512. On failure or abort, what was uploaded is deleted
   * again, and if even that is cut short the volume has no table: it shows as
   * incomplete.
   */
  async importImage(image: string | ImageSource, name: string, options: ImportOptions = {}): Promise<VolumeInfo> {
    const source = typeof image === 'string' ? new RawImageFile(image) : image;
    let begun = false;
    let release: (() => void) | undefined;
    try {
      validateVolumeName(name);
      const objectSize = options.objectSize ?? DEFAULT_OBJECT_SIZE;
      validateObjectSize(objectSize);
      const imageSize = source.size;
      if (imageSize === 0) throw new EngineError(`image '${source.name}' is empty`);
      const size = options.size ?? Math.ceil(imageSize / 512) * 512;
      validateVolumeSize(size);
      const encryption = this.newEncryption(options.encrypt);
      if (size < imageSize) throw new EngineError(`volume size ${size} is smaller than the image (${imageSize} bytes)`);
      if (options.stores) placeVolume(this.store, name, options.stores);
      await this.refuseExisting(name);
      release = this.state.lock(name, 'import');
      await this.refuseExisting(name);
      this.state.checkRoomFor(size);
      const meta = await this.catalog.begin(name, size, objectSize, undefined, encryption);
      begun = true;
      let done = 0;
      options.onProgress?.(0, imageSize);
      const table = await new VersionWriter(this.store, this.catalog, meta, this.keyFor(meta)).write({
        kind: 'import',
        from: new Map(),
        chunks: Array.from({ length: chunkCount(imageSize, objectSize) }, (_, i) => i),
        read: async (chunk, buffer) => {
          const start = chunk * objectSize;
          // an object holds the chunk of the volume (the image's last bytes padded with zeros to 512)
          const data = buffer.subarray(0, chunkLength(size, objectSize, chunk));
          const parts = source.dataIn(start, Math.min(start + data.length, imageSize));
          if (parts.length === 0) return null;
          data.fill(0);
          for (const part of parts) {
            await source.readFully(data.subarray(part.start - start, part.end - start), part.start);
            options.onRead?.(part.end - part.start);
          }
          return isAllZero(data) ? null : { data };
        },
        concurrency: options.concurrency,
        onChunk: (chunk) => {
          done += chunkLength(imageSize, objectSize, chunk);
          options.onProgress?.(done, imageSize);
        },
        signal: options.signal,
      });
      await this.createLocalState(meta.uuid, table);
      return await this.newInfo(meta, table);
    } catch (err) {
      if (begun) await this.catalog.delete(name).catch(() => undefined);
      throw err;
    } finally {
      await source.close();
      release?.();
    }
  }

  /** This holder's heartbeat, made at the first lease that follows it. */
  private heartbeat(): HolderHeartbeat {
    this.holderHeartbeat ??= new HolderHeartbeat(this.store, holderName(this.state.root), this.leaseMs);
    return this.holderHeartbeat;
  }

  /**
   * Opens a volume for I/O, attaching it here at its latest version if it has
   * no local state yet. The volume holds the lock until closed.
   */
  async open(name: string, purpose: string, options: OpenOptions = {}): Promise<Volume> {
    validateVolumeName(name);
    const release = this.state.lock(name, purpose);
    let lease: Lease | null = null;
    const done = async (): Promise<void> => {
      try {
        await lease?.release();
      } finally {
        release();
      }
    };
    const onAbandon = (): void => {
      lease?.abandon();
      release();
    };
    try {
      const meta = await this.catalog.requireMetadata(name);
      const key = this.keyFor(meta);
      if (options.lease !== false) {
        // a format 5 volume's lease follows this holder's one heartbeat; an older volume's renews itself (older code reads it)
        const heartbeat = meta.formatVersion >= HEARTBEAT_FORMAT_VERSION ? this.heartbeat() : undefined;
        lease = await Lease.acquire(this.store, name, this.state.root, purpose, { ttlMs: this.leaseMs, onLost: options.onLeaseLost, heartbeat });
      }
      if (!this.state.hasVolume(name)) {
        const latest = await this.catalog.latestVersion(name);
        await checkAttach(this.store, name, latest?.seq ?? null, options.force ?? false);
        if (!latest) throw new EngineError(`volume '${name}' is incomplete (an interrupted import?); delete it and import again`);
        this.state.checkRoomFor(meta.size);
        await this.createLocalState(meta.uuid, latest);
      }
      const overlay = Overlay.open(this.state.volumeDir(name), meta);
      try {
        const base = this.localBase(overlay, meta.uuid, name);
        const volume = new Volume(name, this.store, overlay, base, { cacheReads: options.cacheReads, onClose: done, onAbandon, key, cache: this.cache });
        this.metadataOf.set(volume, meta);
        return volume;
      } catch (err) {
        overlay.abandon(); // an error path: nothing was written
        throw err;
      }
    } catch (err) {
      await done();
      throw err;
    }
  }

  /** Writes a sparse raw image of the volume's current content (local overlay over the store). */
  async exportVolume(name: string, file: string, options: ExportOptions = {}): Promise<void> {
    validateVolumeName(name);
    if (!options.force && fs.existsSync(file)) throw new EngineError(`'${file}' exists; use --force to replace it`);
    const volume = await this.openForReading(name, options.snapshot);
    try {
      const output = new SparseImageWriter(file, options.shownAs);
      try {
        let done = 0;
        options.onProgress?.(0, volume.size);
        await runPool(
          Array.from({ length: chunkCount(volume.size, volume.objectSize) }, (_, i) => i),
          options.concurrency ?? 4,
          async (chunk) => {
            const start = chunk * volume.objectSize;
            const data = await volume.read(start, chunkLength(volume.size, volume.objectSize, chunk));
            output.write(data, start);
            done += data.length;
            options.onProgress?.(done, volume.size);
          },
          options.signal,
        );
        if (options.signal?.aborted) throw options.signal.reason;
        output.finish(volume.size);
      } catch (err) {
        output.discard();
        throw err;
      }
    } finally {
      await volume.close();
    }
  }

  async list(): Promise<VolumeInfo[]> {
    const summaries = await this.catalog.list();
    const held = GatewayCache.committedBlocks(this.state.root);
    const children = new Map<string, string[]>();
    for (const c of summaries) if (c.parent) children.set(c.parent.volume, [...(children.get(c.parent.volume) ?? []), c.name]);
    return summaries.map((s) => this.withLocal(s, children.get(s.name) ?? [], held));
  }

  /** Of these names, those that are no volume in the store (one metadata read each, in parallel). */
  /** The sizes of the volumes that exist, of these names. */
  async sizesOf(names: string[]): Promise<Map<string, number>> {
    for (const n of names) validateVolumeName(n);
    const found = await runPool(names, 16, async (n) => [n, (await this.catalog.readMetadata(n))?.size] as const);
    return new Map(found.filter((f): f is readonly [string, number] => f[1] !== undefined));
  }

  /**
   * The volume a volume's clone chain starts from: itself when it is no
   * clone (or no longer exists; the open says so). Clones of one snapshot
   * share theirs, and with it the objects they read.
   */
  async lineageRoot(name: string): Promise<string> {
    validateVolumeName(name);
    const seen = new Set([name]);
    let at = name;
    let meta = await this.catalog.readMetadata(at);
    while (meta?.parent && !seen.has(meta.parent.volume)) {
      const up = await this.catalog.readMetadata(meta.parent.volume);
      if (!up) break;
      at = meta.parent.volume;
      seen.add(at);
      meta = up;
    }
    return at;
  }

  /**
   * What exporting these volumes here needs, checked without opening them:
   * they exist (their sizes are returned) and no other live holder has
   * their lease. Fails naming the volumes that do not exist, or the holder.
   */
  async servable(names: string[]): Promise<Map<string, number>> {
    // both looks at once: a round trip less for each volume
    const [sizes, held] = await Promise.all([
      this.sizesOf(names),
      runPool(names, 16, (n) => Lease.heldElsewhere(this.store, n, this.state.root).catch((err: unknown) => (isNotFound(err) ? null : Promise.reject(err)))),
    ]);
    const missing = names.filter((n) => !sizes.has(n));
    if (missing.length > 0) throw new EngineError(volumesMessage(missing, 'does not exist', 'do not exist'));
    const first = held.find((h) => h !== null);
    if (first) throw new EngineError(first);
    return sizes;
  }

  /** One volume: what it costs grows with its clones, not with the number of volumes (VolumeCatalog.children). */
  async info(name: string): Promise<VolumeInfo> {
    validateVolumeName(name);
    const [summary, children] = await Promise.all([this.catalog.summary(name), this.catalog.children(name)]);
    if (!summary) throw new EngineError(`volume '${name}' does not exist`);
    return this.infoOf(summary, children);
  }

  /** A volume's info from its summary and clones: the state of its stores and what is local added. */
  private async infoOf(summary: VolumeSummary, children: string[]): Promise<VolumeInfo> {
    const stores = await storeStates(this.store, summary.name, { count: true });
    const held = GatewayCache.committedBlocks(this.state.root);
    return { ...this.withLocal(summary, children, held), ...(stores ? { stores } : {}) };
  }

  /**
   * Starts a snapshot of an open volume: checks the name, freezes at once,
   * uploads in the background (job.done). A snapshot is of the moment it is
   * asked for: if the store does not answer the name check within
   * NAME_CHECK_MS, the volume is frozen anyway and the job checks the name,
   * waiting for the store, before it uploads (its status says so).
   */
  async startSnapshot(volume: Volume, snapshot: string, options: SnapshotOptions = {}): Promise<SnapshotJob> {
    validateSnapshotName(snapshot);
    const name = volume.name;
    const meta = this.metadataOf.get(volume) ?? (await this.catalog.requireMetadata(name));
    const taken = (list: SnapshotEntry[]): void => {
      if (list.some((s) => s.name === snapshot)) throw new EngineError(`volume '${name}' already has a snapshot '${snapshot}'`);
    };
    const listing = this.catalog.snapshots(name);
    let timer: NodeJS.Timeout | undefined;
    const answered = await Promise.race([listing, new Promise<null>((resolve) => (timer = setTimeout(resolve, NAME_CHECK_MS, null)))]).finally(() => clearTimeout(timer));
    if (answered) taken(answered);
    else listing.catch(() => undefined); // the job asks again
    const nameCheck = answered ? null : async (): Promise<void> => taken(await this.catalog.snapshots(name));
    const job = new SnapshotJob(this.store, this.catalog, volume, meta, snapshot, { ...options, nameCheck, key: this.keyFor(meta) });
    const uploaded = this.markUploading(name, job.generation);
    job.start();
    // Once committed, superseded tables and orphans of interrupted uploads go.
    job.done
      .finally(uploaded)
      .then(() => this.collect(name))
      .catch(() => undefined);
    return job;
  }

  /** Registers a generation being uploaded, so collection spares it; returns the function that ends that. */
  private markUploading(name: string, generation: string): () => void {
    const active = this.uploading.get(name) ?? new Set<string>();
    this.uploading.set(name, active);
    active.add(generation);
    return () => active.delete(generation);
  }

  /** Garbage collection of one volume (see VolumeCatalog.collect). */
  async collect(name: string): Promise<{ tables: number; objects: number }> {
    const isActive = (generation: string): boolean => this.uploading.get(name)?.has(generation) ?? false;
    // per store: each deletes only what none of its own kept tables names
    const total = { tables: 0, objects: 0 };
    for (const store of await collectionStores(this.store, name)) {
      const r = await (store === this.store ? this.catalog : new VolumeCatalog(store)).collect(name, isActive);
      total.tables = Math.max(total.tables, r.tables);
      total.objects = Math.max(total.objects, r.objects);
    }
    return total;
  }

  /** Each store of a mirrored volume with its state (null on a single store); `count` counts what the behind ones lack. */
  storeStates(name: string, options: { count?: boolean } = {}): Promise<StoreState[] | null> {
    validateVolumeName(name);
    return storeStates(this.store, name, options);
  }

  /** Brings every reachable store of a mirrored volume up to date (see mirroring.ts). */
  async resync(name: string, options: ResyncOptions = {}): Promise<VolumeResync> {
    validateVolumeName(name);
    const result = await resyncVolume(this.store, this.catalog, name, options);
    // a store that was away also missed the collections since: it is collected now that it is level
    if (result.copied > 0 || result.deleted > 0) await this.collect(name);
    return result;
  }

  mirrorAdd(name: string, store: string, options: ResyncOptions = {}): Promise<VolumeResync> {
    validateVolumeName(name);
    return addMirror(this.store, this.catalog, name, store, options);
  }

  mirrorRemove(name: string, store: string): Promise<{ deleted: number; stores: StoreState[] }> {
    validateVolumeName(name);
    return removeMirror(this.store, name, store);
  }

  /** A snapshot of a volume that is not served: opens it here, snapshots, closes. */
  async snapshot(name: string, snapshot: string, options: SnapshotOptions = {}): Promise<SnapshotEntry> {
    const volume = await this.open(name, 'snapshot create');
    try {
      const job = await this.startSnapshot(volume, snapshot, options);
      await job.done;
      return (await this.catalog.snapshots(name)).find((s) => s.name === snapshot)!;
    } finally {
      await volume.close();
    }
  }

  async listSnapshots(name: string): Promise<SnapshotEntry[]> {
    validateVolumeName(name);
    await this.catalog.requireMetadata(name);
    return this.catalog.snapshots(name);
  }

  /** Deletes a snapshot and collects the objects nothing references any more. */
  async deleteSnapshot(name: string, snapshot: string): Promise<{ objects: number }> {
    validateVolumeName(name);
    validateSnapshotName(snapshot);
    await this.catalog.deleteSnapshot(name, snapshot);
    return this.collect(name);
  }

  /**
   * Rolls a volume that is not served back to a snapshot: a new version with
   * the snapshot's content, and the local changes discarded.
   */
  async rollback(name: string, snapshot: string, options: { force?: boolean } = {}): Promise<VersionTable> {
    validateVolumeName(name);
    const volume = await this.open(name, 'snapshot rollback');
    try {
      const target = await this.catalog.findSnapshot(name, snapshot);
      const dirty = volume.dirtyBytes();
      if (dirty > 0 && !options.force) {
        throw new EngineError(`volume '${name}' has ${dirty} bytes written since its last snapshot; --force discards them`);
      }
      const meta = await this.catalog.requireMetadata(name);
      const table = await new VersionWriter(this.store, this.catalog, meta, this.keyFor(meta)).write({ kind: 'rollback', from: target.chunks, after: volume.baseVersion()?.seq });
      await volume.rebase(table, true);
      return table;
    } finally {
      await volume.close();
    }
  }

  /**
   * A new volume whose first version points at the snapshot's objects: no
   * data is copied, so the time does not depend on the size.
   */
  async clone(source: string, snapshot: string, name: string): Promise<VolumeInfo> {
    validateVolumeName(source);
    validateVolumeName(name);
    const from = await this.catalog.findSnapshot(source, snapshot);
    await this.refuseExisting(name);
    const release = this.state.lock(name, 'clone');
    try {
      await this.refuseExisting(name);
      // a clone reads its parent's objects: it has the parent's encryption (and key), checked before anything is written
      const parent = await this.catalog.requireMetadata(source);
      this.keyFor(parent);
      this.state.checkRoomFor(from.size);
      const meta = await this.catalog.begin(name, from.size, from.objectSize, { volume: source, snapshot, seq: from.seq }, parent.encryption);
      let table: VersionTable;
      try {
        table = await new VersionWriter(this.store, this.catalog, meta, this.keyFor(meta)).write({ kind: 'clone', from: from.chunks });
      } catch (err) {
        await this.catalog.delete(name).catch(() => undefined);
        await this.catalog.forgetChild(meta).catch(() => undefined);
        throw err;
      }
      await this.createLocalState(meta.uuid, table);
      return await this.newInfo(meta, table);
    } finally {
      release();
    }
  }

  /**
   * Copies into the volume's own container every object its latest version
   * borrows from other volumes, and makes that the new version. Snapshots
   * of the volume taken before still borrow: they are named in the error.
   */
  async flatten(name: string): Promise<{ copied: number }> {
    validateVolumeName(name);
    const volume = await this.open(name, 'volume flatten');
    try {
      const own = containerName(name);
      // Snapshot tables are write-once: one that borrows keeps borrowing after the flatten.
      const { kept, deletedMarkers } = await this.catalog.versionSets(name);
      const named = kept.filter((t) => t.snapshot !== null && !deletedMarkers.includes(t.seq));
      const borrowing = named.filter((t) => [...t.chunks.values()].some((r) => r.container !== own));
      if (borrowing.length > 0) {
        throw new EngineError(`snapshots ${borrowing.map((t) => `'${t.snapshot}'`).join(', ')} of volume '${name}' borrow objects from other volumes; delete them before flattening`);
      }
      const base = volume.baseVersion();
      if (!base) throw new EngineError(`volume '${name}' has no version`);
      const borrowed = [...base.chunks].filter(([, ref]) => ref.container !== own).map(([chunk]) => chunk);
      const meta = await this.catalog.requireMetadata(name);
      const key = this.keyFor(meta);
      const writer = new VersionWriter(this.store, this.catalog, meta, key);
      const uploaded = this.markUploading(name, writer.generation);
      try {
        const table = await writer.write({
          kind: 'flatten',
          from: base.chunks,
          after: base.seq,
          chunks: borrowed,
          buffered: false,
          read: async (chunk) => {
            const ref = base.chunks.get(chunk)!;
            const length = chunkLength(base.size, base.objectSize, chunk);
            const data = await chunkObjectsOf(this.store).read(ref, chunk, length, 0, length, key);
            // the copy is the same object if the original has the current, unencrypted layout (sealing is under a new generation)
            return { data, md5: ref.layout === 'crc32c' && !key ? ref.md5 : undefined };
          },
        });
        await volume.rebase(table, false);
      } finally {
        uploaded();
      }
      return { copied: borrowed.length };
    } finally {
      await volume.close();
    }
  }

  /** Scrub: checks every object of the volume's latest version (or of a snapshot) in the store. */
  async verifyVolume(name: string, options: ScrubOptions & { snapshot?: string } = {}): Promise<ScrubReport> {
    validateVolumeName(name);
    const key = this.keyFor(await this.catalog.requireMetadata(name));
    const table = options.snapshot ? await this.catalog.findSnapshot(name, options.snapshot) : await this.catalog.latestVersion(name);
    if (!table) throw new EngineError(`volume '${name}' is incomplete (an interrupted import?); delete it and import again`);
    return scrubVersion(this.store, table, { ...options, key });
  }

  /** Attaches a volume found in the store to this state directory, at its latest version. */
  async attach(name: string, options: { force?: boolean } = {}): Promise<VolumeInfo> {
    validateVolumeName(name);
    if (this.state.hasVolume(name)) throw new EngineError(`volume '${name}' is already attached here`);
    const volume = await this.open(name, 'volume attach', { force: options.force });
    await volume.close();
    return this.info(name);
  }

  /** Deletes the volume from the store and its local state. */
  async deleteVolume(name: string): Promise<void> {
    validateVolumeName(name);
    const release = this.state.lock(name, 'volume delete');
    try {
      const meta = await this.catalog.readMetadata(name);
      const exists = meta !== null;
      const containerLeft = (await this.store.listContainers(containerName(name))).includes(containerName(name));
      if (!exists && !containerLeft && !this.state.hasVolume(name)) throw new EngineError(`volume '${name}' does not exist`);
      // a copy left on a store that does not answer would bring the volume back
      const away = (await storeStates(this.store, name).catch(() => null))?.filter((s) => s.state === 'unreachable') ?? [];
      if (away.length > 0) {
        throw new EngineError(`volume '${name}' cannot be deleted while ${away.map((s) => `'${s.name}'`).join(', ')} of its stores do not answer: their copy would bring it back`);
      }
      const borrowers = await this.catalog.borrowers(name);
      if (borrowers.length > 0) {
        throw new EngineError(`volume '${name}' cannot be deleted: clones ${borrowers.map((b) => `'${b}'`).join(', ')} still use its data (flatten or delete them first)`);
      }
      await this.catalog.delete(name);
      if (meta) await this.catalog.forgetChild(meta).catch(() => undefined); // a marker left is passed over by readers
      this.state.removeVolume(name);
    } finally {
      release();
    }
  }

  /**
   * A read-only view for one pass, caching nothing: a snapshot, or the
   * current content (local state if attached here, else the latest version).
   */
  private async openForReading(name: string, snapshot?: string): Promise<Volume> {
    if (!snapshot && this.state.hasVolume(name)) return this.open(name, 'export', { cacheReads: false, lease: false });
    const meta = await this.catalog.requireMetadata(name);
    const latest = snapshot ? await this.catalog.findSnapshot(name, snapshot) : await this.catalog.latestVersion(name);
    if (!latest) throw new EngineError(`volume '${name}' is incomplete (an interrupted import?); delete it and import again`);
    const key = this.keyFor(meta);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swiftvol-export-'));
    const overlay = Overlay.open(dir, meta);
    return new Volume(name, this.store, overlay, latest, {
      key,
      cacheReads: false,
      onClose: () => fs.rmSync(dir, { recursive: true, force: true }),
    });
  }

  /** Creates local state for the volume, with `table` as its base, and closes it again (it is opened by open()). */
  private async createLocalState(uuid: string, table: VersionTable): Promise<void> {
    const dir = this.state.volumeDir(table.volume);
    const fresh = !fs.existsSync(dir);
    try {
      const overlay = Overlay.open(dir, table);
      try {
        overlay.setVolumeUuid(uuid);
        overlay.setBase(table);
      } catch (err) {
        overlay.abandon(); // an error path: the state is removed below
        throw err;
      }
      await overlay.close();
    } catch (err) {
      // Half-made local state would make the volume's name unusable here ("local state exists").
      if (fresh) fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private localBase(overlay: Overlay, uuid: string, name: string): VersionTable {
    if (overlay.volumeUuid() !== uuid) {
      throw new EngineError(`the local state of volume '${name}' belongs to an older volume of that name; remove ${this.state.volumeDir(name)}`);
    }
    const base = overlay.base();
    if (!base) throw new EngineError(`the local state of volume '${name}' has no base version`);
    return base;
  }

  /** Refuses a name in use; local state left by an earlier volume of that name must not be mistaken for the new one's. */
  private async refuseExisting(name: string): Promise<void> {
    if (await this.catalog.readMetadata(name)) throw new EngineError(`volume '${name}' already exists`);
    if (this.state.hasVolume(name)) {
      throw new EngineError(`local state for a volume '${name}' exists in ${this.state.volumeDir(name)}; delete the volume first`);
    }
  }

  /** Adds what the local state says (as last committed), without taking the volume's lock. */
  /** `held`: blocks the gateway cache of this state dir holds, by object (GatewayCache.committedBlocks: every cache of serve's threads). */
  private withLocal(summary: VolumeSummary, children: string[], held: ReadonlyMap<string, number>): VolumeInfo {
    const lineage = { parent: summary.parent ?? null, children: [...children].sort() };
    if (!this.state.hasVolume(summary.name)) return { ...summary, ...lineage, attached: false, baseVersion: null, dirtyBytes: null, cachedBytes: null };
    // clean cache: in the overlay (an engine without a gateway cache), and in the gateway's cache of this state dir
    const local = Overlay.inspect(this.state.volumeDir(summary.name), { withBase: held.size > 0 });
    let gatewayBlocks = 0;
    for (const [chunk, ref] of local.base?.chunks ?? []) gatewayBlocks += held.get(objectKey(ref, chunk)) ?? 0;
    return { ...summary, ...lineage, attached: true, baseVersion: local.baseSeq, dirtyBytes: local.dirtyBlocks * BLOCK_SIZE, cachedBytes: (local.cachedBlocks + gatewayBlocks) * BLOCK_SIZE };
  }
}
