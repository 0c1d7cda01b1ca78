// Data objects as stored, in their layout (doc/format.md, "Data objects"):
// 'plain' objects (formats 1 and 2) are the chunk's bytes, checked only as a
// whole by MD5; 'crc32c' objects (format 3) are the bytes followed by a
// CRC32C of each 4 KiB block, so that every range read is checked, whatever
// its size or offset; 'aes-256-gcm' objects (format 3, encrypted volumes)
// are the sealed blocks followed by their tags (VolumeKey). Every read of a
// data object goes through here, so no byte reaches a reader or the cache
// unchecked.
//
// A range is fetched with the sums of its blocks: in the same GET when it
// runs to the end of the chunk (the sums follow it), else from a small cache
// of sums by object (objects are write-once, so cached sums never go stale),
// fetched in the same GET on a miss (a request for two ranges). A block that
// fails its check is fetched again once, sums included; a second failure is
// an IntegrityError naming the object, the block and the store.
import { crc32c } from '../native/addons.js';
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { mirrorOf, type MirrorStore } from '../store/mirror-store.js';
import { BLOCK_SIZE, blockSumsLength, dataObjectName, type ChunkRef } from '../format/volume-format.js';
import { EngineError } from './engine-error.js';
import type { VolumeKey } from './volume-key.js';

/** Bytes of trailers kept (an 8 MiB object's: 8 KiB of sums, or 32 KiB of tags). */
const TRAILER_CACHE_BYTES = 8 * 1024 * 1024;

/** A data object whose bytes do not match their checksum: never served, never cached. */
export class IntegrityError extends StoreError {
  constructor(
    readonly container: string,
    readonly object: string,
    /** Index of the first bad 4 KiB block in the chunk. */
    readonly block: number,
    readonly store: string,
    /** What failed: 'CRC32C check' or 'AES-GCM authentication'. */
    what = 'CRC32C check',
    /** The second read found the object gone rather than bad again. */
    gone = false,
  ) {
    super(
      'checksum',
      gone
        ? `object ${container}/${object}: block ${block} failed its ${what}, then the object was gone (${store}; Swift quarantines an object whose whole read does not match its ETag)`
        : `object ${container}/${object}: block ${block} failed its ${what} twice (${store})`,
    );
    this.name = 'IntegrityError';
  }

  /** The volume byte offset of the bad block, for the reader's sense data (set by the reader that knows the volume). */
  volumeOffset: number | undefined;
}

/** Bytes read from a data object, checked, with the CRC32C of each of their 4 KiB blocks if the object carries them. */
export interface Checked {
  data: Buffer;
  sums: Buffer | null;
}

/** A check's outcome: bad is -1, or the first bad block; sums are the checked block sums ('crc32c' objects). */
interface CheckResult {
  data: Buffer;
  bad: number;
  sums?: Buffer;
}

function checked(result: CheckResult): Checked {
  return { data: result.data, sums: result.sums ?? null };
}

export class ChunkObjects {
  /** Block sums or tags by "container/object", least recently used first. */
  private readonly sums = new Map<string, Buffer>();
  private sumsBytes = 0;
  /** Trailer GETs in flight, by "container/object". */
  private readonly trailerGets = new Map<string, Promise<Buffer>>();

  constructor(private readonly store: ObjectStore) {}

  /**
   * The object to store for a chunk's bytes: with a key, sealed in the
   * 'aes-256-gcm' layout; else in the 'crc32c' layout, the bytes and their
   * block sums. With room (a buffer `data` is a view of the start of, long
   * enough for the trailer too), in place; else into a new buffer.
   */
  static async encode(data: Uint8Array, room?: Buffer, seal?: { key: VolumeKey; generation: string; chunk: number }): Promise<Buffer> {
    const total = data.length + blockSumsLength(data.length, seal ? 'aes-256-gcm' : 'crc32c');
    const inPlace = room !== undefined && room.buffer === data.buffer && room.byteOffset === data.byteOffset && room.length >= total;
    const out = inPlace ? room.subarray(0, total) : Buffer.allocUnsafe(total);
    if (seal) {
      await seal.key.seal(data, out, seal.generation, seal.chunk);
      return out;
    }
    if (!inPlace) out.set(data, 0);
    crc32c().blockSums(data, BLOCK_SIZE).copy(out, data.length);
    return out;
  }

  /**
   * Bytes [start, end) of chunk `chunk`, whose object holds `chunkBytes`
   * bytes of chunk, checked: by their block sums for a 'crc32c' object, by
   * their tags (and decrypted with `key`) for an 'aes-256-gcm' one, both in
   * whole blocks (start on a block boundary, end on one or at the chunk's
   * end); for a 'plain' one, by MD5 when the read is the whole object (the
   * store checks an ETag) and not at all for a range, as formats 1 and 2 allow.
   */
  async read(ref: ChunkRef, chunk: number, chunkBytes: number, start: number, end: number, key?: VolumeKey): Promise<Buffer> {
    return (await this.readWithSums(ref, chunk, chunkBytes, start, end, key)).data;
  }

  /**
   * read(), and the CRC32C of each 4 KiB block of the bytes read when the
   * object carries them ('crc32c' objects: the sums just checked, so a
   * cache keeping the bytes need not compute them again); null otherwise.
   */
  async readWithSums(ref: ChunkRef, chunk: number, chunkBytes: number, start: number, end: number, key?: VolumeKey): Promise<Checked> {
    try {
      return await this.readCopy(ref, chunk, chunkBytes, start, end, key);
    } catch (err) {
      const mirror = err instanceof IntegrityError ? mirrorOf(this.store) : null;
      if (!mirror) throw err;
      return this.readOtherCopies(mirror, err as IntegrityError, ref, chunk, chunkBytes, start, end, key);
    }
  }

  /**
   * A mirror's copy failed its check twice: each copy is read in turn (the
   * one that failed too: the mirror chose it without saying), the first good
   * one is served, and the bad ones are repaired from it in the background.
   */
  private async readOtherCopies(
    mirror: MirrorStore,
    first: IntegrityError,
    ref: ChunkRef,
    chunk: number,
    chunkBytes: number,
    start: number,
    end: number,
    key?: VolumeKey,
  ): Promise<Checked> {
    const name = dataObjectName(ref.generation, chunk);
    const bad: string[] = [];
    for (const copy of await mirror.copies(ref.container)) {
      try {
        const data = await chunkObjectsOf(copy.store).readCopy(ref, chunk, chunkBytes, start, end, key);
        if (bad.length > 0) {
          mirror.report(`${first.message}: the copy on ${bad.map((b) => `'${b}'`).join(', ')} is bad, served from store '${copy.name}' instead`);
          void mirror.repair(ref.container, name, copy.name, bad).catch((err: Error) => mirror.report(`could not repair ${ref.container}/${name}: ${err.message}`));
        }
        return data;
      } catch (err) {
        // a copy that fails its check, or is gone (Swift quarantines an object whose whole read does not match its ETag), is repaired;
        // one that does not answer is only passed over
        if (err instanceof IntegrityError || isNotFound(err)) bad.push(copy.name);
      }
    }
    throw first;
  }

  /** read() from this store alone. */
  private async readCopy(ref: ChunkRef, chunk: number, chunkBytes: number, start: number, end: number, key?: VolumeKey): Promise<Checked> {
    const name = dataObjectName(ref.generation, chunk);
    const layout = ref.layout ?? 'plain';
    if (layout === 'plain') {
      const whole = start === 0 && end === chunkBytes;
      return { data: await this.store.get(ref.container, name, whole ? undefined : { start, end }), sums: null };
    }
    if (start % BLOCK_SIZE !== 0 || (end % BLOCK_SIZE !== 0 && end !== chunkBytes)) {
      throw new Error(`read of ${ref.container}/${name} [${start}, ${end}): not whole blocks`);
    }
    let check: (data: Buffer, trailer: Buffer) => CheckResult | Promise<CheckResult>;
    if (layout === 'crc32c') {
      check = (data, sums) => ({ data, sums, bad: crc32c().verifyBlocks(data, BLOCK_SIZE, sums) });
    } else {
      if (!key) throw new EngineError(`object ${ref.container}/${name} is encrypted: give the volume's key (--key-file or SWIFTVOL_KEY_FILE)`);
      check = (sealed, tags) => key.open(sealed, tags, ref.generation, chunk, start / BLOCK_SIZE);
    }
    const what = layout === 'crc32c' ? 'CRC32C check' : 'AES-GCM authentication';
    const first = await this.readChecked(ref.container, name, layout, chunkBytes, start, end, false, check);
    if (first.bad < 0) return checked(first);
    let again: CheckResult;
    try {
      again = await this.readChecked(ref.container, name, layout, chunkBytes, start, end, true, check);
    } catch (err) {
      if (isNotFound(err)) throw new IntegrityError(ref.container, name, start / BLOCK_SIZE + first.bad, this.store.description, what, true);
      throw err;
    }
    if (again.bad < 0) {
      mirrorOf(this.store)?.report(`${ref.container}/${name}: block ${start / BLOCK_SIZE + first.bad} failed its ${what} (${this.store.description}); read again, it passed`);
      return checked(again);
    }
    throw new IntegrityError(ref.container, name, start / BLOCK_SIZE + again.bad, this.store.description, what);
  }

  /**
   * Fetches the range and the trailer entries of its blocks (fresh ones if
   * `refetch`) and checks them: bad is -1, or the first bad block of the range.
   */
  private async readChecked(
    container: string,
    name: string,
    layout: 'crc32c' | 'aes-256-gcm',
    chunkBytes: number,
    start: number,
    end: number,
    refetch: boolean,
    check: (data: Buffer, trailer: Buffer) => CheckResult | Promise<CheckResult>,
  ): Promise<CheckResult> {
    const key = `${container}/${name}`;
    const trailerBytes = blockSumsLength(chunkBytes, layout);
    const each = trailerBytes / Math.ceil(chunkBytes / BLOCK_SIZE);
    const firstEntry = (start / BLOCK_SIZE) * each;
    const endEntry = Math.ceil(end / BLOCK_SIZE) * each;
    let data: Buffer;
    let entries: Buffer;
    const cached = refetch ? undefined : this.sums.get(key);
    if (end === chunkBytes) {
      // to the chunk's end: the trailer follows in the same GET
      const got = await this.store.get(container, name, { start, end: chunkBytes + trailerBytes });
      if (got.length !== chunkBytes + trailerBytes - start) throw new StoreError('checksum', `object ${key} returned ${got.length} bytes for a ${chunkBytes + trailerBytes - start}-byte range (${this.store.description})`);
      data = got.subarray(0, end - start);
      entries = got.subarray(end - start + firstEntry);
      if (start === 0 && !cached) this.remember(key, got.subarray(chunkBytes));
    } else {
      const shared = cached ?? (refetch ? undefined : this.trailerGets.get(key));
      let got: Buffer;
      let all: Buffer;
      if (shared) [got, all] = await Promise.all([this.store.get(container, name, { start, end }), shared]);
      else [got, all] = await this.withTrailer(container, name, start, end, chunkBytes, trailerBytes, refetch);
      if (all.length !== trailerBytes) throw new StoreError('checksum', `object ${key} returned ${all.length} bytes of its block trailer, not ${trailerBytes} (${this.store.description})`);
      data = got;
      entries = all.subarray(firstEntry, endEntry);
      if (!cached) this.remember(key, all);
    }
    if (data.length !== end - start) throw new StoreError('checksum', `object ${key} returned ${data.length} bytes for a ${end - start}-byte range (${this.store.description})`);
    const result = await check(data, entries);
    if (result.bad >= 0) this.forget(key); // the trailer may be what is bad: fetch it again
    else if (this.sums.has(key)) this.touch(key);
    return result;
  }

  /**
   * Bytes [start, end) and the object's whole trailer, in one GET of two
   * ranges (a second, parallel GET of the trailer would cost the store a
   * request as dear as the read's). The trailer is shared with the readers
   * of that object that miss the cache meanwhile (not when `refetch`: a
   * read again after a bad check wants fresh sums for itself).
   */
  private async withTrailer(container: string, name: string, start: number, end: number, chunkBytes: number, trailerBytes: number, refetch: boolean): Promise<[Buffer, Buffer]> {
    const key = `${container}/${name}`;
    const both = this.store.get(container, name, [
      { start, end },
      { start: chunkBytes, end: chunkBytes + trailerBytes },
    ]);
    if (!refetch) {
      const trailer = both.then((got) => got.subarray(end - start));
      this.trailerGets.set(key, trailer);
      const done = (): void => {
        if (this.trailerGets.get(key) === trailer) this.trailerGets.delete(key);
      };
      trailer.then(done, done);
    }
    const got = await both;
    if (got.length !== end - start + trailerBytes) throw new StoreError('checksum', `object ${key} returned ${got.length} bytes for ranges of ${end - start} and ${trailerBytes} bytes (${this.store.description})`);
    return [got.subarray(0, end - start), got.subarray(end - start)];
  }

  private remember(key: string, sums: Buffer): void {
    this.forget(key);
    this.sums.set(key, Buffer.from(sums)); // a copy: the GET's buffer may be a larger one's view
    this.sumsBytes += sums.length;
    while (this.sumsBytes > TRAILER_CACHE_BYTES) this.forget(this.sums.keys().next().value!);
  }

  private forget(key: string): void {
    const old = this.sums.get(key);
    if (old) this.sumsBytes -= old.length;
    this.sums.delete(key);
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
