// Data objects as stored, in their layout (doc/format.md, "Data objects"):
// 'plain' objects (formats 1 and 2) are the chunk's bytes, checked only as a
// whole by MD5; 'crc32c' objects (format 3) are the bytes followed by a
// CRC32C of each 4 KiB block, so that every range read is checked, whatever
// its size or offset. Every read of a data object goes through here, so no
// byte reaches a reader or the cache unchecked.
//
// A range is fetched with the sums of its blocks: in the same GET when it
// runs to the end of the chunk (the sums follow it), else from a small cache
// of sums by object (objects are write-once, so cached sums never go stale),
// fetched alongside on a miss. A block that fails its check is fetched again
// once, sums included; a second failure is an IntegrityError naming the
// object, the block and the store.
import { crc32c } from '../native/addons.js';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { BLOCK_SIZE, blockSumsLength, dataObjectName, type ChunkRef } from '../format/volume-format.js';

/** Sums of this many objects are kept (8 KiB each for 8 MiB objects). */
const SUMS_CACHE_OBJECTS = 1024;

/** A data object whose bytes do not match their checksum: never served, never cached. */
export class IntegrityError extends StoreError {
  constructor(
    readonly container: string,
    readonly object: string,
    /** Index of the first bad 4 KiB block in the chunk. */
    readonly block: number,
    readonly store: string,
    /** The second read found the object gone rather than bad again. */
    gone = false,
  ) {
    super(
      'checksum',
      gone
        ? `object ${container}/${object}: block ${block} failed its CRC32C check, then the object was gone (${store}; Swift quarantines an object whose whole read does not match its ETag)`
        : `object ${container}/${object}: block ${block} failed its CRC32C check twice (${store})`,
    );
    this.name = 'IntegrityError';
  }

  /** The volume byte offset of the bad block, for the reader's sense data (set by the reader that knows the volume). */
  volumeOffset: number | undefined;
}

export class ChunkObjects {
  /** Block sums by "container/object", least recently used first. */
  private readonly sums = new Map<string, Buffer>();

  constructor(private readonly store: ObjectStore) {}

  /**
   * The object to store for a chunk's bytes in the 'crc32c' layout: the
   * bytes and their block sums. With room (a buffer `data` is a view of, at
   * least blockSumsLength(data.length) bytes longer), the sums are written
   * after the data in place; else into a new buffer.
   */
  static encode(data: Uint8Array, room?: Buffer): Buffer {
    const sums = crc32c().blockSums(data, BLOCK_SIZE);
    const total = data.length + sums.length;
    const fits = room !== undefined && room.buffer === data.buffer && room.byteOffset === data.byteOffset && room.length >= total;
    const out = fits ? room.subarray(0, total) : Buffer.allocUnsafe(total);
    if (!fits) out.set(data, 0);
    sums.copy(out, data.length);
    return out;
  }

  /**
   * Bytes [start, end) of chunk `chunk`'s object, which holds `chunkBytes`
   * bytes of chunk, checked: by their block sums for a 'crc32c' object (whole
   * blocks: start on a block boundary, end on one or at the chunk's end), or, for a 'plain' one, by MD5 when the read is the
   * whole object (the store checks an ETag) and not at all for a range, as
   * formats 1 and 2 allow.
   */
  async read(ref: ChunkRef, chunk: number, chunkBytes: number, start: number, end: number): Promise<Buffer> {
    const name = dataObjectName(ref.generation, chunk);
    if (ref.layout !== 'crc32c') {
      const whole = start === 0 && end === chunkBytes;
      return this.store.get(ref.container, name, whole ? undefined : { start, end });
    }
    if (start % BLOCK_SIZE !== 0 || (end % BLOCK_SIZE !== 0 && end !== chunkBytes)) {
      throw new Error(`read of ${ref.container}/${name} [${start}, ${end}): not whole blocks`);
    }
    const first = await this.readChecked(ref.container, name, chunkBytes, start, end, false);
    if (first.bad < 0) return first.data;
    let again: { data: Buffer; bad: number };
    try {
      again = await this.readChecked(ref.container, name, chunkBytes, start, end, true);
    } catch (err) {
      if (isNotFound(err)) throw new IntegrityError(ref.container, name, start / BLOCK_SIZE + first.bad, this.store.description, true);
      throw err;
    }
    if (again.bad < 0) return again.data;
    throw new IntegrityError(ref.container, name, start / BLOCK_SIZE + again.bad, this.store.description);
  }

  /** Fetches the range and its sums (fresh ones if `refetch`) and checks them: bad is -1 or the first bad block of the range. */
  private async readChecked(container: string, name: string, chunkBytes: number, start: number, end: number, refetch: boolean): Promise<{ data: Buffer; bad: number }> {
    const key = `${container}/${name}`;
    const sumsBytes = blockSumsLength(chunkBytes);
    const firstSum = (start / BLOCK_SIZE) * 4;
    const endSum = Math.ceil(end / BLOCK_SIZE) * 4;
    let data: Buffer;
    let sums: Buffer;
    const cached = refetch ? undefined : this.sums.get(key);
    if (end === chunkBytes) {
      // to the chunk's end: the sums follow in the same GET
      const got = await this.store.get(container, name, { start, end: chunkBytes + sumsBytes });
      if (got.length !== chunkBytes + sumsBytes - start) throw new StoreError('checksum', `object ${key} returned ${got.length} bytes for a ${chunkBytes + sumsBytes - start}-byte range (${this.store.description})`);
      data = got.subarray(0, end - start);
      sums = got.subarray(end - start + firstSum);
      if (start === 0 && !cached) this.remember(key, got.subarray(chunkBytes));
    } else {
      const [got, all] = await Promise.all([
        this.store.get(container, name, { start, end }),
        cached ?? this.store.get(container, name, { start: chunkBytes, end: chunkBytes + sumsBytes }),
      ]);
      if (all.length !== sumsBytes) throw new StoreError('checksum', `object ${key} returned ${all.length} bytes of block sums, not ${sumsBytes} (${this.store.description})`);
      data = got;
      sums = all.subarray(firstSum, endSum);
      if (!cached) this.remember(key, all);
    }
    if (data.length !== end - start) throw new StoreError('checksum', `object ${key} returned ${data.length} bytes for a ${end - start}-byte range (${this.store.description})`);
    const bad = crc32c().verifyBlocks(data, BLOCK_SIZE, sums);
    if (bad >= 0) this.sums.delete(key); // the sums may be what is bad: fetch them again
    else if (this.sums.has(key)) this.touch(key);
    return { data, bad };
  }

  private remember(key: string, sums: Buffer): void {
    this.sums.set(key, Buffer.from(sums)); // a copy: the GET's buffer may be a larger one's view
    while (this.sums.size > SUMS_CACHE_OBJECTS) this.sums.delete(this.sums.keys().next().value!);
  }

  private touch(key: string): void {
    const value = this.sums.get(key)!;
    this.sums.delete(key);
    this.sums.set(key, value);
  }
}

const shared = new WeakMap<ObjectStore, ChunkObjects>();

/** The ChunkObjects of a store, shared by every volume reading from it (so are its cached sums). */
export function chunkObjectsOf(store: ObjectStore): ChunkObjects {
  let objects = shared.get(store);
  if (!objects) {
    objects = new ChunkObjects(store);
    shared.set(store, objects);
  }
  return objects;
}
