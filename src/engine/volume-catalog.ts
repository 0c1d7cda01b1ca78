// Volumes as they are stored: the metadata object, the version tables and the
// data objects of each volume's container (doc/format.md). Knows the store,
// not the local overlay.
import { randomUUID } from 'node:crypto';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { putIfAbsent } from '../store/conditional-put.js';
import {
  FORMAT_VERSION,
  METADATA_OBJECT,
  VERSIONS_PREFIX,
  CONTAINER_PREFIX,
  VersionTable,
  containerName,
  decodeMetadata,
  encodeMetadata,
  seqOfVersionObject,
  versionObjectName,
  volumeNameOfContainer,
  type ChunkRef,
  type VersionKind,
  type VolumeMetadata,
  type ParentRef,
  type VolumeEncryption,
  DELETED_PREFIX,
  DATA_PREFIX,
  parseDataObjectName,
  dataObjectName,
  deletedMarkerName,
  seqOfDeletedMarker,
  CHILDREN_PREFIX,
  LINEAGE_FORMAT_VERSION,
  childMarkerName,
  parseChildMarker,
  FormatError,
} from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import { runPool } from '../store/run-pool.js';
import { CatalogIndex } from './catalog-index.js';

/** Volumes summarised at once by list(). */
const LIST_CONCURRENCY = 32;

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
  /** Its data objects are sealed with a key (VolumeKey). */
  encrypted: boolean;
  parent?: ParentRef;
}

export interface SnapshotEntry {
  name: string;
  seq: number;
  createdAt: string;
  size: number;
  changedBytes: number;
  storedBytes: number;
}

/** A volume's versions split by what garbage collection does with them. */
export interface VersionSets {
  latest: VersionTable | null;
  /** The latest, and every snapshot not deleted. */
  kept: VersionTable[];
  /** Superseded tables that are no named snapshot, or whose snapshot was deleted. */
  garbage: number[];
  deletedMarkers: number[];
}

/** What a volume's metadata and its latest table (null: none yet) say of it. */
export function summaryOf(meta: VolumeMetadata, latest: VersionTable | null): VolumeSummary {
  return {
    name: meta.name,
    uuid: meta.uuid,
    size: meta.size,
    objectSize: meta.objectSize,
    createdAt: meta.createdAt,
    state: latest ? 'ready' : 'incomplete',
    latestVersion: latest?.seq ?? null,
    storedBytes: latest?.storedBytes() ?? 0,
    encrypted: meta.encryption !== undefined,
    ...(meta.parent ? { parent: meta.parent } : {}),
  };
}

export class VolumeCatalog {
  /** What `list` reads first (catalog-index.ts); kept after every commit. */
  private readonly index: CatalogIndex;

  constructor(readonly store: ObjectStore) {
    this.index = new CatalogIndex(store);
  }

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
   * with If-None-Match, so of two creators of one name only one proceeds
   * (read back where the store's conditional put is not atomic: putIfAbsent).
   */
  async begin(name: string, size: number, objectSize: number, parent?: ParentRef, encryption?: VolumeEncryption): Promise<VolumeMetadata> {
    if (await this.readMetadata(name)) throw new EngineError(`volume '${name}' already exists`);
    const uuid = randomUUID();
    // a clone is recorded in its parent's container before it exists (never a clone without its record)
    if (parent) await this.store.put(containerName(parent.volume), childMarkerName(name, uuid), Buffer.alloc(0));
    const meta: VolumeMetadata = {
      format: 'swiftvol-volume',
      formatVersion: FORMAT_VERSION,
      name,
      uuid,
      size,
      objectSize,
      createdAt: new Date().toISOString(),
    };
    if (parent) meta.parent = parent;
    if (encryption) meta.encryption = encryption;
    const container = containerName(name);
    await this.store.createContainer(container);
    try {
      await putIfAbsent(this.store, container, METADATA_OBJECT, encodeMetadata(meta), { contentType: 'application/json' });
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'conflict') throw new EngineError(`volume '${name}' already exists`);
      throw err;
    }
    // No entry until its first version: a volume without one is read directly (and shows as
    // incomplete). Entries an earlier volume of the name left (a delete that failed) go now,
    // or they would be taken for this one's.
    await this.index.forget(name);
    return meta;
  }

  /**
   * Writes a version table: the commit point of everything it names. Write-once
   * (a conditional put): of two writers of one seq only one may succeed. The
   * put alone is not relied on as the lock where the store's conditional put
   * is not atomic (Swift): a volume's versions are written by the holder of
   * its lease (Lease), or, for a new volume's first, by the creator that won
   * begin()'s read-back; so no read-back here, which would cost every
   * snapshot and clone a round trip and a pause.
   */
  async commit(
    meta: VolumeMetadata,
    seq: number,
    kind: VersionKind,
    generation: string,
    chunks: Map<number, ChunkRef>,
    extra: { snapshot?: string; changedBytes?: number } = {},
  ): Promise<VersionTable> {
    const table = new VersionTable(
      {
        volume: meta.name,
        volumeUuid: meta.uuid,
        seq,
        generation,
        kind,
        snapshot: extra.snapshot ?? null,
        changedBytes: extra.changedBytes ?? 0,
        createdAt: new Date().toISOString(),
        size: meta.size,
        objectSize: meta.objectSize,
      },
      chunks,
    );
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
    // after the commit point, best effort: an entry that could not be written leaves the volume to be read directly
    await this.index.record(summaryOf(meta, table));
    return table;
  }

  /** Every version table of the volume, ascending, with the seqs whose snapshot was deleted. */
  async versions(name: string): Promise<{ tables: VersionTable[]; deleted: Set<number> }> {
    const seqs = await this.versionSeqs(name);
    // A table listed a moment ago may have been collected since: it was garbage, skip it.
    const read = await runPool(seqs, 8, (seq) =>
      this.readVersion(name, seq).catch((err: unknown) => {
        if (isNotFound(err)) return null;
        throw err;
      }),
    );
    const tables = read.filter((t): t is VersionTable => t !== null);
    const deleted = new Set<number>();
    try {
      for await (const obj of this.store.list(containerName(name), DELETED_PREFIX)) {
        const seq = seqOfDeletedMarker(obj.name);
        if (seq !== null) deleted.add(seq);
      }
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return { tables, deleted };
  }

  async versionSets(name: string): Promise<VersionSets> {
    const { tables, deleted } = await this.versions(name);
    const latest = tables.at(-1) ?? null;
    const kept: VersionTable[] = [];
    const garbage: number[] = [];
    for (const t of tables) {
      if (t === latest || (t.snapshot !== null && !deleted.has(t.seq))) kept.push(t);
      else garbage.push(t.seq);
    }
    return { latest, kept, garbage, deletedMarkers: [...deleted] };
  }

  async snapshots(name: string): Promise<SnapshotEntry[]> {
    const { tables, deleted } = await this.versions(name);
    return tables
      .filter((t) => t.snapshot !== null && !deleted.has(t.seq))
      .map((t) => ({ name: t.snapshot!, seq: t.seq, createdAt: t.createdAt, size: t.size, changedBytes: t.changedBytes, storedBytes: t.storedBytes() }));
  }

  async findSnapshot(volume: string, snapshot: string): Promise<VersionTable> {
    const entry = (await this.snapshots(volume)).find((s) => s.name === snapshot);
    if (!entry) {
      await this.requireMetadata(volume);
      throw new EngineError(`volume '${volume}' has no snapshot '${snapshot}'`);
    }
    return this.readVersion(volume, entry.seq);
  }

  /**
   * Deletes a snapshot: its table, or, if it is the latest version (the base
   * of the volume's current state, which must stay), a marker saying its
   * name is gone.
   */
  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    const table = await this.findSnapshot(volume, snapshot);
    const latest = (await this.versionSeqs(volume)).at(-1);
    if (table.seq === latest) {
      await this.store.put(containerName(volume), deletedMarkerName(table.seq), Buffer.from(`${snapshot}\n`));
    } else {
      await this.store.delete(containerName(volume), versionObjectName(table.seq));
    }
  }

  /**
   * The volumes cloned from `name`, as its children markers record them
   * (each checked against the clone's metadata: a marker left by a clone that
   * failed, or by a deleted one, is passed over); by reading every volume's
   * metadata for a volume of a format that does not record them.
   */
  async children(name: string): Promise<string[]> {
    const meta = await this.readMetadata(name);
    if (!meta) return [];
    if (meta.formatVersion < LINEAGE_FORMAT_VERSION) {
      const all = await this.list();
      return all.filter((s) => s.parent?.volume === name).map((s) => s.name);
    }
    return this.recordedChildren(name);
  }

  /** The clones the records of a volume of format 4 or later name, each checked against its metadata. */
  private async recordedChildren(name: string): Promise<string[]> {
    const markers: Array<{ child: string; uuid: string }> = [];
    for await (const obj of this.store.list(containerName(name), CHILDREN_PREFIX)) {
      const m = parseChildMarker(obj.name);
      if (m) markers.push(m);
    }
    const found = await runPool(markers, 8, async (m) => {
      const child = await this.readMetadata(m.child).catch((err: unknown) => {
        if (err instanceof FormatError) return null; // not a volume we can read: not one of ours
        throw err;
      });
      return child && child.uuid === m.uuid && child.parent?.volume === name ? m.child : null;
    });
    return [...new Set(found.filter((c): c is string => c !== null))].sort();
  }

  /**
   * The volumes whose tables may name objects of `name`'s container: its
   * clones, theirs, and so on (a clone's table points at the same objects
   * its parent's did); every other volume when `name` predates recorded
   * clones (format 4) or one of its clones does.
   */
  async mayReference(name: string): Promise<string[]> {
    const seen = new Set<string>();
    let level = [name];
    while (level.length > 0) {
      const next: string[] = [];
      for (const v of level) {
        const meta = await this.readMetadata(v);
        if (!meta) continue;
        if (meta.formatVersion < LINEAGE_FORMAT_VERSION) return (await this.names()).filter((n) => n !== name);
        for (const c of await this.recordedChildren(v)) {
          if (c !== name && !seen.has(c)) {
            seen.add(c);
            next.push(c);
          }
        }
      }
      level = next;
    }
    return [...seen];
  }

  /** Forgets a deleted clone in its parent's container (its marker; the parent may be gone already). */
  async forgetChild(child: VolumeMetadata): Promise<void> {
    if (!child.parent) return;
    await this.store.delete(containerName(child.parent.volume), childMarkerName(child.name, child.uuid)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** Names of the volumes (other than `name`) whose kept versions use objects of `name`'s container. */
  async borrowers(name: string): Promise<string[]> {
    const container = containerName(name);
    const names = await this.mayReference(name);
    const users = await runPool(names, 4, async (other) => {
      const { kept } = await this.versionSets(other);
      return kept.some((t) => [...t.chunks.values()].some((ref) => ref.container === container)) ? other : null;
    });
    return users.filter((u): u is string => u !== null);
  }

  /**
   * Garbage collection of one volume's container: deletes superseded tables
   * that hold no live snapshot, then every data object that no kept table of
   * any volume references (orphans of interrupted uploads included), except
   * objects whose generation `isActive` (an upload in progress; asked at the
   * last moment, so an upload that started meanwhile is spared). Returns how
   * many tables and objects it deleted.
   */
  async collect(name: string, isActive: (generation: string) => boolean = () => false): Promise<{ tables: number; objects: number }> {
    const container = containerName(name);
    const own = await this.versionSets(name);
    const garbageTables = new Set(own.garbage);
    await runPool(own.garbage, 8, (seq) => this.store.delete(container, versionObjectName(seq)));
    await runPool(own.deletedMarkers.filter((seq) => garbageTables.has(seq)), 8, (seq) => this.store.delete(container, deletedMarkerName(seq)));

    // References into this container, from this volume and from every other (clones).
    const referenced = new Set<string>();
    const note = (t: VersionTable): void => {
      for (const [chunk, ref] of t.chunks) if (ref.container === container) referenced.add(dataObjectName(ref.generation, chunk));
    };
    own.kept.forEach(note);
    for (const other of await this.mayReference(name)) (await this.versionSets(other)).kept.forEach(note);

    const unreferenced: string[] = [];
    for await (const obj of this.store.list(container, DATA_PREFIX)) if (!referenced.has(obj.name)) unreferenced.push(obj.name);
    const doomed = unreferenced.filter((n) => !isActive(parseDataObjectName(n)?.generation ?? ''));
    await runPool(doomed, 8, (n) => this.store.delete(container, n));
    return { tables: own.garbage.length, objects: doomed.length };
  }

  async summary(name: string): Promise<VolumeSummary | null> {
    const meta = await this.readMetadata(name);
    if (!meta) return null;
    return summaryOf(meta, await this.latestVersion(name));
  }

  /** The names of every volume's container in the store. */
  private async names(): Promise<string[]> {
    return (await this.store.listContainers(CONTAINER_PREFIX)).map(volumeNameOfContainer).filter((n): n is string => n !== null);
  }

  /**
   * Every volume: from the catalog index where it has a trusted entry, else
   * read from the volume itself (three small reads: metadata, version
   * listing, latest table; many at once).
   */
  async list(): Promise<VolumeSummary[]> {
    // an index that cannot be read leaves every volume to be read directly
    const [names, indexed] = await Promise.all([this.names(), this.index.read().catch(() => new Map<string, VolumeSummary | null>())]);
    const summaries = await runPool(names, LIST_CONCURRENCY, async (name) => indexed.get(name) ?? this.summary(name));
    return summaries.filter((s): s is VolumeSummary => s !== null);
  }

  /**
   * Deletes everything in the volume's container: version tables first, so an
   * interrupted delete leaves a volume that shows as incomplete, never one
   * that looks whole with data missing; the metadata last. Returns how many
   * objects it deleted.
   */
  async delete(name: string, concurrency = 8): Promise<number> {
    const container = containerName(name);
    // first: a volume half deleted has no entry, and is read (as incomplete) rather than listed as it was
    await this.index.forget(name);
    const names: string[] = [];
    try {
      for await (const obj of this.store.list(container)) names.push(obj.name);
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
    const rank = (n: string): number => (n.startsWith(VERSIONS_PREFIX) ? 0 : n === METADATA_OBJECT ? 2 : 1);
    for (const stage of [0, 1, 2]) {
      await runPool(names.filter((n) => rank(n) === stage), concurrency, (n) => this.store.delete(container, n));
    }
    await this.store.deleteContainer(container);
    return names.length;
  }
}
