// The on-store format (doc/format.md, version 1): names of containers and
// objects, and the two JSON documents a volume is made of. Parsing is strict:
// a document we cannot fully validate is refused rather than half-understood.
import { randomBytes } from 'node:crypto';

// 1: volumes and versions; 2: snapshots, clones, leases; 3: data objects with
// per-block CRC32C sums; 4: a volume's clones are recorded in its container
// (children/NAME/UUID), which readers of its children and garbage collection
// rely on; an older swiftvol refuses a version 4 volume rather than clone it
// without recording the clone (doc/format.md); 5: every version committed is
// also recorded in the catalog index (swiftvol_catalog), which `volume list`
// trusts; a version 5 volume's leases follow their holder's heartbeat
// (swiftvol_holders), which an older swiftvol would not read; so it refuses a
// version 5 volume or table.
export const FORMAT_VERSION = 5;
/** The first format whose leases follow their holder's heartbeat (holder-heartbeat.ts). */
export const HEARTBEAT_FORMAT_VERSION = 5;
/** The first format whose volumes record their clones (CHILDREN_PREFIX). */
export const LINEAGE_FORMAT_VERSION = 4;
export const CONTAINER_PREFIX = 'swiftvol-';
export const METADATA_OBJECT = 'volume.json';
export const VERSIONS_PREFIX = 'versions/';
export const DATA_PREFIX = 'data/';
export const DELETED_PREFIX = 'deleted/';
export const LEASE_PREFIX = 'lease/';
/** children/NAME/UUID in a volume's container: the volume NAME (of that uuid) was cloned from it. Empty objects. */
export const CHILDREN_PREFIX = 'children/';

export function childMarkerName(child: string, uuid: string): string {
  return `${CHILDREN_PREFIX}${child}/${uuid}`;
}

/** The child volume and its uuid of a children/ marker, or null for another name. */
export function parseChildMarker(object: string): { child: string; uuid: string } | null {
  const m = /^children\/([^/]+)\/([0-9a-f-]{36})$/.exec(object);
  return m ? { child: m[1]!, uuid: m[2]! } : null;
}
export const SECTOR_SIZE = 512;
export const BLOCK_SIZE = 4096;
export const DEFAULT_OBJECT_SIZE = 8 * 1024 * 1024;
export const MIN_OBJECT_SIZE = 1024 * 1024;
export const MAX_OBJECT_SIZE = 64 * 1024 * 1024;

/** A problem with a name, size or document: the user's input or the store's content. */
export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FormatError';
  }
}

const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Whether s is a valid volume (or snapshot) name, without throwing. */
export function isVolumeName(s: string): boolean {
  return VOLUME_NAME.test(s);
}

export function validateVolumeName(name: string): void {
  if (!VOLUME_NAME.test(name)) {
    throw new FormatError(
      `invalid volume name '${name}': use 1 to 63 characters of a-z 0-9 . _ -, starting with a letter or digit`,
    );
  }
}

/** Snapshot names follow the rules of volume names. */
export function validateSnapshotName(name: string): void {
  if (!VOLUME_NAME.test(name)) {
    throw new FormatError(
      `invalid snapshot name '${name}': use 1 to 63 characters of a-z 0-9 . _ -, starting with a letter or digit`,
    );
  }
}

export function validateObjectSize(objectSize: number): void {
  const isPowerOfTwo = Number.isSafeInteger(objectSize) && objectSize > 0 && (objectSize & (objectSize - 1)) === 0;
  if (!isPowerOfTwo || objectSize < MIN_OBJECT_SIZE || objectSize > MAX_OBJECT_SIZE) {
    throw new FormatError(`invalid object size ${objectSize}: must be a power of two from 1M to 64M`);
  }
}

export function validateVolumeSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) {
    throw new FormatError(`invalid volume size ${size}: must be a positive multiple of ${SECTOR_SIZE} bytes`);
  }
}

export function containerName(volume: string): string {
  return CONTAINER_PREFIX + volume;
}

/** The volume whose container this is; null for any other container (the catalog index's among them). */
export function volumeNameOfContainer(container: string): string | null {
  const name = container.startsWith(CONTAINER_PREFIX) ? container.slice(CONTAINER_PREFIX.length) : null;
  return name !== null && VOLUME_NAME.test(name) ? name : null;
}

export function newGeneration(): string {
  return randomBytes(8).toString('hex');
}

export function dataObjectName(generation: string, chunk: number): string {
  return `${DATA_PREFIX}${generation}/${chunk.toString(16).padStart(12, '0')}`;
}

export function versionObjectName(seq: number): string {
  return `${VERSIONS_PREFIX}${String(seq).padStart(10, '0')}.json`;
}

/** Marks the snapshot of a version that must stay (it is the latest) as deleted. */
export function deletedMarkerName(seq: number): string {
  return `${DELETED_PREFIX}${String(seq).padStart(10, '0')}`;
}

export function seqOfDeletedMarker(name: string): number | null {
  const m = /^deleted\/(\d{10})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** The generation and chunk of a data object's name, or null for any other name. */
export function parseDataObjectName(name: string): { generation: string; chunk: number } | null {
  const m = /^data\/([0-9a-f]{16})\/([0-9a-f]{12})$/.exec(name);
  return m ? { generation: m[1]!, chunk: parseInt(m[2]!, 16) } : null;
}

/** The seq of a version table's object name, or null for any other name. */
export function seqOfVersionObject(name: string): number | null {
  const m = /^versions\/(\d{10})\.json$/.exec(name);
  return m ? Number(m[1]) : null;
}

export function chunkCount(size: number, objectSize: number): number {
  return Math.ceil(size / objectSize);
}

/** Bytes of chunk `chunk` (the last one may be shorter). */
export function chunkLength(size: number, objectSize: number, chunk: number): number {
  return Math.min(objectSize, size - chunk * objectSize);
}

/** The snapshot a clone was made from. */
export interface ParentRef {
  volume: string;
  snapshot: string;
  seq: number;
}

/** How a volume's data objects are encrypted (format 3): the cipher and a check of the key, never the key. */
export interface VolumeEncryption {
  cipher: 'aes-256-gcm';
  /** Hex HMAC-SHA256 of a fixed text under the key, cut to 16 bytes: tells a wrong key from the right one. */
  keyCheck: string;
}

export interface VolumeMetadata {
  format: 'swiftvol-volume';
  formatVersion: number;
  name: string;
  uuid: string;
  size: number;
  objectSize: number;
  createdAt: string;
  parent?: ParentRef;
  /** Absent: not encrypted. A clone has its parent's. */
  encryption?: VolumeEncryption;
}

export const VERSION_KINDS = ['create', 'import', 'snapshot', 'clone', 'rollback', 'flatten'] as const;
export type VersionKind = (typeof VERSION_KINDS)[number];

/**
 * How a data object holds its chunk: 'plain' (format 1 and 2: the chunk's
 * bytes, checked only as a whole, by MD5), 'crc32c' (format 3: the bytes,
 * then a CRC32C of each 4 KiB block, so that any range can be checked), or
 * 'aes-256-gcm' (format 3, encrypted volumes: each 4 KiB block encrypted,
 * then the blocks' 16-byte authentication tags).
 */
export type ObjectLayout = 'plain' | 'crc32c' | 'aes-256-gcm';

/** Bytes of the block sums of a 'crc32c' object: one little-endian uint32 per block. */
export const BLOCK_SUM_SIZE = 4;
/** Bytes of a block's tag in an 'aes-256-gcm' object. */
export const BLOCK_TAG_SIZE = 16;

/** Bytes of what follows `dataLength` bytes of chunk in an object of the layout: its block sums or tags. */
export function blockSumsLength(dataLength: number, layout: ObjectLayout = 'crc32c'): number {
  const each = layout === 'aes-256-gcm' ? BLOCK_TAG_SIZE : layout === 'crc32c' ? BLOCK_SUM_SIZE : 0;
  return Math.ceil(dataLength / BLOCK_SIZE) * each;
}

/** The layout marks of table entries (the fifth element; absent: 'plain'). */
const LAYOUT_MARK: Record<Exclude<ObjectLayout, 'plain'>, number> = { crc32c: 1, 'aes-256-gcm': 2 };

/** Where one chunk of a version lives. */
export interface ChunkRef {
  /** Container holding the object. */
  container: string;
  generation: string;
  /** MD5 of the whole object as stored (Swift's ETag). */
  md5: string;
  /** Absent: 'plain' (what formats 1 and 2 wrote). */
  layout?: ObjectLayout;
}

/** A chunk entry of a stored table: [chunk, source, generation, md5], and the layout's mark after them unless 'plain'. */
type ChunkEntry = [number, number, string, string] | [number, number, string, string, number];

/** Everything about a version but its chunk map. */
export interface VersionInfo {
  volume: string;
  volumeUuid: string;
  seq: number;
  generation: string;
  kind: VersionKind;
  snapshot: string | null;
  changedBytes: number;
  createdAt: string;
  size: number;
  objectSize: number;
}

/** A version table as stored (versions/<seq>.json). */
export interface VersionTableDocument extends VersionInfo {
  format: 'swiftvol-version';
  formatVersion: number;
  sources: string[];
  /** [chunk index, source index, generation, md5 hex(, 1 for a 'crc32c' object)] per non-zero chunk. */
  chunks: ChunkEntry[];
}

/** A version table in memory: chunk index -> where its object is. */
export class VersionTable implements VersionInfo {
  readonly volume: string;
  readonly volumeUuid: string;
  readonly seq: number;
  readonly generation: string;
  readonly kind: VersionKind;
  readonly snapshot: string | null;
  readonly changedBytes: number;
  readonly createdAt: string;
  readonly size: number;
  readonly objectSize: number;
  readonly chunks: Map<number, ChunkRef>;

  constructor(info: VersionInfo, chunks: Map<number, ChunkRef>) {
    this.volume = info.volume;
    this.volumeUuid = info.volumeUuid;
    this.seq = info.seq;
    this.generation = info.generation;
    this.kind = info.kind;
    this.snapshot = info.snapshot;
    this.changedBytes = info.changedBytes;
    this.createdAt = info.createdAt;
    this.size = info.size;
    this.objectSize = info.objectSize;
    this.chunks = chunks;
  }

  lookup(chunk: number): ChunkRef | undefined {
    return this.chunks.get(chunk);
  }

  /** Bytes of stored (non-zero) chunks. */
  storedBytes(): number {
    let total = 0;
    for (const index of this.chunks.keys()) total += chunkLength(this.size, this.objectSize, index);
    return total;
  }

  toDocument(): VersionTableDocument {
    const sources: string[] = [];
    const sourceIndex = new Map<string, number>();
    const entries = [...this.chunks.entries()].sort((a, b) => a[0] - b[0]);
    const chunks: ChunkEntry[] = entries.map(([index, ref]) => {
      let source = sourceIndex.get(ref.container);
      if (source === undefined) {
        source = sources.length;
        sources.push(ref.container);
        sourceIndex.set(ref.container, source);
      }
      return ref.layout === undefined || ref.layout === 'plain' ? [index, source, ref.generation, ref.md5] : [index, source, ref.generation, ref.md5, LAYOUT_MARK[ref.layout]];
    });
    return {
      format: 'swiftvol-version',
      formatVersion: FORMAT_VERSION,
      volume: this.volume,
      volumeUuid: this.volumeUuid,
      seq: this.seq,
      generation: this.generation,
      kind: this.kind,
      snapshot: this.snapshot,
      changedBytes: this.changedBytes,
      createdAt: this.createdAt,
      size: this.size,
      objectSize: this.objectSize,
      sources,
      chunks,
    };
  }

  encode(): Buffer {
    return Buffer.from(JSON.stringify(this.toDocument()));
  }

  static decode(data: Uint8Array, where: string): VersionTable {
    const doc = parseJsonObject(data, where);
    expect(doc.format === 'swiftvol-version', where, 'not a swiftvol version table');
    checkFormatVersion(doc.formatVersion, where);
    const volume = str(doc.volume, where, 'volume');
    const size = int(doc.size, where, 'size');
    const objectSize = int(doc.objectSize, where, 'objectSize');
    const seq = int(doc.seq, where, 'seq');
    const kind = str(doc.kind, where, 'kind') as VersionKind;
    expect(VERSION_KINDS.includes(kind), where, `unknown version kind '${kind}'`);
    // Version 1 tables have neither field.
    const snapshot = doc.snapshot === undefined || doc.snapshot === null ? null : str(doc.snapshot, where, 'snapshot');
    const changedBytes = doc.changedBytes === undefined ? 0 : int(doc.changedBytes, where, 'changedBytes');
    expect(Array.isArray(doc.sources) && doc.sources.every((s) => typeof s === 'string'), where, 'bad sources');
    const sources = doc.sources as string[];
    expect(Array.isArray(doc.chunks), where, 'bad chunks');
    const count = chunkCount(size, objectSize);
    const chunks = new Map<number, ChunkRef>();
    for (const entry of doc.chunks as unknown[]) {
      expect(Array.isArray(entry) && (entry.length === 4 || entry.length === 5), where, 'bad chunk entry');
      const [index, source, generation, md5, layout] = entry as unknown[];
      const marked = (Object.entries(LAYOUT_MARK) as Array<[ObjectLayout, number]>).find(([, mark]) => mark === layout);
      expect(layout === undefined || marked !== undefined, where, 'unknown object layout');
      expect(Number.isSafeInteger(index) && (index as number) >= 0 && (index as number) < count, where, 'chunk index out of range');
      expect(Number.isSafeInteger(source) && (source as number) >= 0 && (source as number) < sources.length, where, 'bad source index');
      expect(typeof generation === 'string' && /^[0-9a-f]{16}$/.test(generation), where, 'bad generation');
      expect(typeof md5 === 'string' && /^[0-9a-f]{32}$/.test(md5), where, 'bad md5');
      const ref: ChunkRef = { container: sources[source as number]!, generation: generation as string, md5: md5 as string };
      if (marked) ref.layout = marked[0];
      chunks.set(index as number, ref);
    }
    return new VersionTable(
      {
        volume,
        volumeUuid: str(doc.volumeUuid, where, 'volumeUuid'),
        seq,
        generation: str(doc.generation, where, 'generation'),
        kind,
        snapshot,
        changedBytes,
        createdAt: str(doc.createdAt, where, 'createdAt'),
        size,
        objectSize,
      },
      chunks,
    );
  }
}

export function encodeMetadata(meta: VolumeMetadata): Buffer {
  return Buffer.from(JSON.stringify(meta, null, 2) + '\n');
}

export function decodeMetadata(data: Uint8Array, where: string): VolumeMetadata {
  const doc = parseJsonObject(data, where);
  expect(doc.format === 'swiftvol-volume', where, 'not a swiftvol volume');
  checkFormatVersion(doc.formatVersion, where);
  const meta: VolumeMetadata = {
    format: 'swiftvol-volume',
    formatVersion: doc.formatVersion as number,
    name: str(doc.name, where, 'name'),
    uuid: str(doc.uuid, where, 'uuid'),
    size: int(doc.size, where, 'size'),
    objectSize: int(doc.objectSize, where, 'objectSize'),
    createdAt: str(doc.createdAt, where, 'createdAt'),
  };
  if (doc.encryption !== undefined && doc.encryption !== null) {
    expect(typeof doc.encryption === 'object', where, 'bad encryption');
    const e = doc.encryption as Record<string, unknown>;
    expect(e.cipher === 'aes-256-gcm', where, `unknown cipher ${String(e.cipher)}`);
    expect(typeof e.keyCheck === 'string' && /^[0-9a-f]{32}$/.test(e.keyCheck), where, 'bad encryption.keyCheck');
    meta.encryption = { cipher: 'aes-256-gcm', keyCheck: e.keyCheck };
  }
  if (doc.parent !== undefined && doc.parent !== null) {
    expect(typeof doc.parent === 'object', where, 'bad parent');
    const parent = doc.parent as Record<string, unknown>;
    meta.parent = { volume: str(parent.volume, where, 'parent.volume'), snapshot: str(parent.snapshot, where, 'parent.snapshot'), seq: int(parent.seq, where, 'parent.seq') };
  }
  try {
    validateVolumeSize(meta.size);
    validateObjectSize(meta.objectSize);
  } catch (err) {
    throw new FormatError(`${where}: ${(err as Error).message}`);
  }
  return meta;
}

function parseJsonObject(data: Uint8Array, where: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    throw new FormatError(`${where}: not valid JSON`);
  }
  expect(typeof doc === 'object' && doc !== null && !Array.isArray(doc), where, 'not a JSON object');
  return doc as Record<string, unknown>;
}

function checkFormatVersion(version: unknown, where: string): void {
  expect(Number.isInteger(version), where, 'missing formatVersion');
  if ((version as number) > FORMAT_VERSION || (version as number) < 1) {
    throw new FormatError(`${where}: format version ${String(version)} is not supported (this swiftvol reads version ${FORMAT_VERSION})`);
  }
}

function expect(ok: boolean, where: string, what: string): asserts ok {
  if (!ok) throw new FormatError(`${where}: ${what}`);
}

function str(value: unknown, where: string, field: string): string {
  expect(typeof value === 'string', where, `missing ${field}`);
  return value;
}

function int(value: unknown, where: string, field: string): number {
  expect(Number.isSafeInteger(value) && (value as number) >= 0, where, `missing or bad ${field}`);
  return value as number;
}
