// Volumes as they are stored: the metadata object, the version tables and the
// data objects of each volume's container (doc/format.md). Knows the store,
// not the local overlay.
import { randomUUID } from 'node:crypto';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import {
  FORMAT_VERSION,
  METADATA_OBJECT,
  VERSIONS_PREFIX,
  CONTAINER_PREFIX,
  VersionTable,
  containerName,
  decodeMetadata,
  encodeMetadata,
  newGeneration,
  seqOfVersionObject,
  versionObjectName,
  volumeNameOfContainer,
  type ChunkRef,
  type VersionKind,
  type VolumeMetadata,
} from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import { runPool } from './run-pool.js';

export type VolumeState = 'ready' | 'incomplete';

export interface VolumeSummary {
  name: string;
  uuid: string;
  size: number;
  objectSize: number;
  createdAt: string;
  state: VolumeState;
  /** Latest version's seq, or null when incomplete. */
  latestVersion: number | null;
  /** Bytes held in stored (non-zero) chunks of the latest version. */
  storedBytes: number;
}

export class VolumeCatalog {
  constructor(readonly store: ObjectStore) {}

  async readMetadata(name: string): Promise<VolumeMetadata | null> {
    const container = containerName(name);
    let data: Buffer;
    try {
      data = await this.store.get(container, METADATA_OBJECT);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    return decodeMetadata(data, `${container}/${METADATA_OBJECT}`);
  }

  async requireMetadata(name: string): Promise<VolumeMetadata> {
    const meta = await this.readMetadata(name);
    if (!meta) throw new EngineError(`volume '${name}' does not exist`);
    return meta;
  }

  /** Seqs of the volume's version tables, ascending. */
  async versionSeqs(name: string): Promise<number[]> {
    const seqs: number[] = [];
    try {
      for await (const obj of this.store.list(containerName(name), VERSIONS_PREFIX)) {
        const seq = seqOfVersionObject(obj.name);
        if (seq !== null) seqs.push(seq);
      }
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    return seqs.sort((a, b) => a - b);
  }

  async readVersion(name: string, seq: number): Promise<VersionTable> {
    const container = containerName(name);
    const object = versionObjectName(seq);
    return VersionTable.decode(await this.store.get(container, object), `${container}/${object}`);
  }

  async latestVersion(name: string): Promise<VersionTable | null> {
    const seqs = await this.versionSeqs(name);
    const last = seqs.at(-1);
    return last === undefined ? null : this.readVersion(name, last);
  }

  /**
   * Creates the container and the metadata object. The metadata is written
   * with If-None-Match, so of two creators of one name only one proceeds.
   */
  async begin(name: string, size: number, objectSize: number): Promise<VolumeMetadata> {
    if (await this.readMetadata(name)) throw new EngineError(`volume '${name}' already exists`);
    const meta: VolumeMetadata = {
      format: 'swiftvol-volume',
      formatVersion: FORMAT_VERSION,
      name,
      uuid: randomUUID(),
      size,
      objectSize,
      createdAt: new Date().toISOString(),
    };
    const container = containerName(name);
    await this.store.createContainer(container);
    try {
      await this.store.put(container, METADATA_OBJECT, encodeMetadata(meta), { ifNoneMatch: true, contentType: 'application/json' });
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'conflict') throw new EngineError(`volume '${name}' already exists`);
      throw err;
    }
    return meta;
  }

  /** Writes a version table: the commit point of everything it names. */
  async commit(
    meta: VolumeMetadata,
    seq: number,
    kind: VersionKind,
    generation: string,
    chunks: Map<number, ChunkRef>,
  ): Promise<VersionTable> {
    const table = new VersionTable(meta.name, meta.uuid, seq, generation, kind, new Date().toISOString(), meta.size, meta.objectSize, chunks);
    try {
      await this.store.put(containerName(meta.name), versionObjectName(seq), table.encode(), {
        ifNoneMatch: true,
        contentType: 'application/json',
      });
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'conflict') {
        throw new EngineError(`version ${seq} of volume '${meta.name}' was written by someone else`);
      }
      throw err;
    }
    return table;
  }

  /** An empty volume: metadata, then an empty first version. */
  async create(name: string, size: number, objectSize: number): Promise<{ meta: VolumeMetadata; table: VersionTable }> {
    const meta = await this.begin(name, size, objectSize);
    const table = await this.commit(meta, 1, 'create', newGeneration(), new Map());
    return { meta, table };
  }

  async summary(name: string): Promise<VolumeSummary | null> {
    const meta = await this.readMetadata(name);
    if (!meta) return null;
    const latest = await this.latestVersion(name);
    return {
      name,
      uuid: meta.uuid,
      size: meta.size,
      objectSize: meta.objectSize,
      createdAt: meta.createdAt,
      state: latest ? 'ready' : 'incomplete',
      latestVersion: latest?.seq ?? null,
      storedBytes: latest?.storedBytes() ?? 0,
    };
  }

  async list(): Promise<VolumeSummary[]> {
    const names = (await this.store.listContainers(CONTAINER_PREFIX))
      .map(volumeNameOfContainer)
      .filter((n): n is string => n !== null);
    const summaries = await runPool(names, 8, (name) => this.summary(name));
    return summaries.filter((s): s is VolumeSummary => s !== null);
  }

  /**
   * Deletes everything in the volume's container: version tables first, so an
   * interrupted delete leaves a volume that shows as incomplete, never one
   * that looks whole with data missing; the metadata last.
   */
  async delete(name: string, concurrency = 8): Promise<void> {
    const container = containerName(name);
    const names: string[] = [];
    try {
      for await (const obj of this.store.list(container)) names.push(obj.name);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    const rank = (n: string): number => (n.startsWith(VERSIONS_PREFIX) ? 0 : n === METADATA_OBJECT ? 2 : 1);
    for (const stage of [0, 1, 2]) {
      await runPool(names.filter((n) => rank(n) === stage), concurrency, (n) => this.store.delete(container, n));
    }
    await this.store.deleteContainer(container);
  }
}
