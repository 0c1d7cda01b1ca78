// The engine: volumes as the user sees them, made of what is in the store
// (VolumeCatalog) and what is attached here (StateDir, Overlay).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { ObjectStore } from '../store/object-store.js';
import { Overlay } from '../overlay/overlay.js';
import {
  BLOCK_SIZE,
  DEFAULT_OBJECT_SIZE,
  VersionTable,
  chunkCount,
  chunkLength,
  containerName,
  dataObjectName,
  newGeneration,
  validateObjectSize,
  validateVolumeName,
  validateVolumeSize,
  type ChunkRef,
} from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import { StateDir } from './state-dir.js';
import { Volume } from './volume.js';
import { VolumeCatalog, type VolumeSummary } from './volume-catalog.js';
import { runPool } from './run-pool.js';

export type Progress = (doneBytes: number, totalBytes: number) => void;

export interface ImportOptions {
  objectSize?: number;
  /** Parallel uploads (default 4). */
  concurrency?: number;
  /** Volume size when larger than the image. */
  size?: number;
  onProgress?: Progress;
  signal?: AbortSignal;
}

export interface ExportOptions {
  /** Replace FILE if it exists. */
  force?: boolean;
  /** Parallel chunk reads (default 4). */
  concurrency?: number;
  onProgress?: Progress;
  signal?: AbortSignal;
}

export interface VolumeInfo extends VolumeSummary {
  attached: boolean;
  /** Base version of the local overlay, when attached. */
  baseVersion: number | null;
  dirtyBytes: number | null;
}

/** Granularity at which export leaves holes in the output file. */
const SPARSE_GRANULE = 64 * 1024;

export class Engine {
  readonly catalog: VolumeCatalog;
  readonly state: StateDir;

  constructor(readonly store: ObjectStore, stateDir: string) {
    this.catalog = new VolumeCatalog(store);
    this.state = new StateDir(stateDir);
  }

  async createVolume(name: string, size: number, objectSize = DEFAULT_OBJECT_SIZE): Promise<VolumeInfo> {
    validateVolumeName(name);
    validateVolumeSize(size);
    validateObjectSize(objectSize);
    const release = this.state.lock(name, 'volume create');
    try {
      await this.refuseExisting(name);
      const { meta, table } = await this.catalog.create(name, size, objectSize);
      this.attachAt(meta.uuid, table).abandon();
      return await this.info(name);
    } finally {
      release();
    }
  }

  /**
   * Imports a raw image as a new volume. Chunks upload in parallel under a
   * fresh generation; all-zero chunks are skipped; the version table is
   * written last. On failure or abort, what was uploaded is deleted again, and
   * if even that is cut short the volume has no table: it shows as incomplete.
   */
  async importImage(file: string, name: string, options: ImportOptions = {}): Promise<VolumeInfo> {
    validateVolumeName(name);
    const objectSize = options.objectSize ?? DEFAULT_OBJECT_SIZE;
    validateObjectSize(objectSize);
    const imageSize = imageFileSize(file);
    if (imageSize === 0) throw new EngineError(`image file '${file}' is empty`);
    if (imageSize % 512 !== 0) throw new EngineError(`image file '${file}' is ${imageSize} bytes, not a multiple of 512`);
    const size = options.size ?? imageSize;
    validateVolumeSize(size);
    if (size < imageSize) throw new EngineError(`volume size ${size} is smaller than the image (${imageSize} bytes)`);

    const release = this.state.lock(name, 'import');
    let fd: number | null = null;
    let begun = false;
    try {
      await this.refuseExisting(name);
      fd = fs.openSync(file, 'r');
      const meta = await this.catalog.begin(name, size, objectSize);
      begun = true;
      const generation = newGeneration();
      const container = containerName(name);
      const count = chunkCount(imageSize, objectSize);
      const refs = new Map<number, ChunkRef>();
      let done = 0;
      options.onProgress?.(0, imageSize);
      const imageFd = fd;
      await runPool(
        Array.from({ length: count }, (_, i) => i),
        options.concurrency ?? 4,
        async (chunk) => {
          const length = chunkLength(imageSize, objectSize, chunk);
          const buffer = Buffer.allocUnsafe(length);
          readFully(imageFd, buffer, chunk * objectSize);
          if (!isAllZero(buffer)) {
            const md5 = createHash('md5').update(buffer).digest('hex');
            await this.store.put(container, dataObjectName(generation, chunk), buffer, { md5 });
            refs.set(chunk, { container, generation, md5 });
          }
          done += length;
          options.onProgress?.(done, imageSize);
        },
        options.signal,
      );
      if (options.signal?.aborted) throw options.signal.reason;
      const table = await this.catalog.commit(meta, 1, 'import', generation, refs);
      this.attachAt(meta.uuid, table).abandon();
      return await this.info(name);
    } catch (err) {
      if (begun) await this.catalog.delete(name).catch(() => undefined);
      throw err;
    } finally {
      if (fd !== null) fs.closeSync(fd);
      release();
    }
  }

  /**
   * Opens a volume for I/O, attaching it here at its latest version if it has
   * no local state yet. The volume holds the lock until closed.
   */
  async open(name: string, purpose: string, options: { cacheReads?: boolean } = {}): Promise<Volume> {
    validateVolumeName(name);
    const release = this.state.lock(name, purpose);
    try {
      const meta = await this.catalog.requireMetadata(name);
      if (this.state.hasVolume(name)) {
        const overlay = Overlay.open(this.state.volumeDir(name), meta);
        try {
          const base = this.localBase(overlay, meta.uuid, name);
          return new Volume(this.store, overlay, base, { ...options, onClose: release });
        } catch (err) {
          overlay.abandon();
          throw err;
        }
      }
      const latest = await this.catalog.latestVersion(name);
      if (!latest) throw new EngineError(`volume '${name}' is incomplete (an interrupted import?); delete it and import again`);
      const overlay = this.attachAt(meta.uuid, latest);
      return new Volume(this.store, overlay, latest, { ...options, onClose: release });
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Writes a sparse raw image of the volume's current content (local overlay over the store). */
  async exportVolume(name: string, file: string, options: ExportOptions = {}): Promise<void> {
    validateVolumeName(name);
    if (!options.force && fs.existsSync(file)) throw new EngineError(`'${file}' exists; use --force to replace it`);
    const volume = await this.openForReading(name);
    const temp = `${file}.swiftvol-${process.pid}.tmp`;
    let fd: number | null = null;
    try {
      fd = fs.openSync(temp, 'w', 0o644);
      const outFd = fd;
      const count = chunkCount(volume.size, volume.objectSize);
      let done = 0;
      options.onProgress?.(0, volume.size);
      await runPool(
        Array.from({ length: count }, (_, i) => i),
        options.concurrency ?? 4,
        async (chunk) => {
          const start = chunk * volume.objectSize;
          const data = await volume.read(start, chunkLength(volume.size, volume.objectSize, chunk));
          for (let at = 0; at < data.length; at += SPARSE_GRANULE) {
            const piece = data.subarray(at, Math.min(at + SPARSE_GRANULE, data.length));
            if (!isAllZero(piece)) writeFully(outFd, piece, start + at);
          }
          done += data.length;
          options.onProgress?.(done, volume.size);
        },
        options.signal,
      );
      if (options.signal?.aborted) throw options.signal.reason;
      fs.ftruncateSync(fd, volume.size);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fd = null;
      fs.renameSync(temp, file);
    } catch (err) {
      if (fd !== null) fs.closeSync(fd);
      fs.rmSync(temp, { force: true });
      throw err;
    } finally {
      await volume.close();
    }
  }

  async list(): Promise<VolumeInfo[]> {
    const summaries = await this.catalog.list();
    return summaries.map((s) => this.withLocal(s));
  }

  async info(name: string): Promise<VolumeInfo> {
    validateVolumeName(name);
    const summary = await this.catalog.summary(name);
    if (!summary) throw new EngineError(`volume '${name}' does not exist`);
    return this.withLocal(summary);
  }

  /** Deletes the volume from the store and its local state. */
  async deleteVolume(name: string): Promise<void> {
    validateVolumeName(name);
    const release = this.state.lock(name, 'volume delete');
    try {
      const exists = (await this.catalog.readMetadata(name)) !== null;
      const containerLeft = (await this.store.listContainers(containerName(name))).includes(containerName(name));
      if (!exists && !containerLeft && !this.state.hasVolume(name)) throw new EngineError(`volume '${name}' does not exist`);
      await this.catalog.delete(name);
      this.state.removeVolume(name);
    } finally {
      release();
    }
  }

  /** A read-only view for one pass: local state if attached, else the latest version, caching nothing. */
  private async openForReading(name: string): Promise<Volume> {
    if (this.state.hasVolume(name)) return this.open(name, 'export');
    const meta = await this.catalog.requireMetadata(name);
    const latest = await this.catalog.latestVersion(name);
    if (!latest) throw new EngineError(`volume '${name}' is incomplete (an interrupted import?); delete it and import again`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swiftvol-export-'));
    const overlay = Overlay.open(dir, meta);
    return new Volume(this.store, overlay, latest, {
      cacheReads: false,
      onClose: () => fs.rmSync(dir, { recursive: true, force: true }),
    });
  }

  /** Creates local state for the volume with `table` as its base. */
  private attachAt(uuid: string, table: VersionTable): Overlay {
    const dir = this.state.volumeDir(table.volume);
    const overlay = Overlay.open(dir, table);
    overlay.setInfo('volumeUuid', uuid);
    overlay.setInfo('baseSeq', String(table.seq));
    overlay.setInfo('baseTable', table.encode().toString('utf8'));
    return overlay;
  }

  private localBase(overlay: Overlay, uuid: string, name: string): VersionTable {
    if (overlay.getInfo('volumeUuid') !== uuid) {
      throw new EngineError(`the local state of volume '${name}' belongs to an older volume of that name; remove ${this.state.volumeDir(name)}`);
    }
    const encoded = overlay.getInfo('baseTable');
    if (!encoded) throw new EngineError(`the local state of volume '${name}' has no base version`);
    return VersionTable.decode(Buffer.from(encoded), `${this.state.volumeDir(name)}/state.db`);
  }

  /** Refuses a name in use; local state left by an earlier volume of that name must not be mistaken for the new one's. */
  private async refuseExisting(name: string): Promise<void> {
    if (await this.catalog.readMetadata(name)) throw new EngineError(`volume '${name}' already exists`);
    if (this.state.hasVolume(name)) {
      throw new EngineError(`local state for a volume '${name}' exists in ${this.state.volumeDir(name)}; delete the volume first`);
    }
  }

  /** Adds what the local state says (as last committed), without taking the volume's lock. */
  private withLocal(summary: VolumeSummary): VolumeInfo {
    if (!this.state.hasVolume(summary.name)) return { ...summary, attached: false, baseVersion: null, dirtyBytes: null };
    const local = Overlay.inspect(this.state.volumeDir(summary.name));
    const baseSeq = local.info.get('baseSeq');
    return {
      ...summary,
      attached: true,
      baseVersion: baseSeq === undefined ? null : Number(baseSeq),
      dirtyBytes: local.dirtyBlocks * BLOCK_SIZE,
    };
  }
}

function imageFileSize(file: string): number {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new EngineError(`image file '${file}' does not exist`);
    throw new EngineError(`cannot read image file '${file}': ${(err as Error).message}`);
  }
  if (stat.isFile()) return stat.size;
  if (stat.isBlockDevice()) throw new EngineError(`'${file}' is a block device; image files only`);
  throw new EngineError(`'${file}' is not a regular file`);
}

function readFully(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    const n = fs.readSync(fd, buffer, done, buffer.length - done, position + done);
    if (n === 0) throw new EngineError(`image file ended early at byte ${position + done}`);
    done += n;
  }
}

function writeFully(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position + done);
}

const ZEROS = Buffer.alloc(1024 * 1024);

function isAllZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const piece = data.subarray(at, Math.min(at + ZEROS.length, data.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}
