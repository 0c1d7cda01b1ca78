// The local copy-on-write overlay of one volume: a sparse file the size of
// the volume, plus per-chunk bitmaps of 4 KiB blocks kept in SQLite.
//   valid: the overlay file holds the block's current content
//   dirty: that content differs from the base version (to upload at snapshot)
//   zero:  the block was unmapped: it reads as zeros whatever the base holds
//          (not valid, dirty); its space in the file is freed
// The bitmaps live in memory; flush() fdatasyncs the file and only then
// commits the changed bitmaps, so the database never points at data that is
// not on disk. Unflushed writes may be lost on a crash, never torn: a block
// that was not valid at the last commit reads from the base again, and so
// does every clean block after a shutdown that did not close the overlay
// (the info key 'state' says 'open' until close()).
// The valid bits are mirrored in a shared map (direct-map.ts) through which
// bs_swift reads and overwrites valid blocks itself; the dirty bits of those
// direct writes are taken into the bitmaps here before every flush and freeze.
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { overlayIo } from '../native/addons.js';
import Database from 'better-sqlite3';
import { BLOCK_SIZE, VersionTable } from '../format/volume-format.js';
import { countAndNot, countBits, popcount8, testBit } from './bitmap.js';
import { DirectMap, type DirectIoCounters } from './direct-map.js';
import { makeDirs } from '../os/make-dirs.js';

const fdatasync = promisify(fs.fdatasync);
const fsWrite = promisify(fs.write);
const fsRead = promisify(fs.read);
// 1: valid and dirty bitmaps; 2: adds the zero bitmap (unmapped blocks).
const SCHEMA_VERSION = '2';
// Keys of the info table that record the base (the names are on disk: keep them).
const INFO_BASE_TABLE = 'baseTable';
const INFO_BASE_SEQ = 'baseSeq';
const INFO_VOLUME_UUID = 'volumeUuid';

export interface OverlayGeometry {
  size: number;
  objectSize: number;
}

interface ChunkBits {
  valid: Uint8Array;
  dirty: Uint8Array;
  zero: Uint8Array;
}

/** A chunk's bitmaps as they were when a snapshot froze them. */
export interface FrozenChunk {
  valid: Uint8Array;
  dirty: Uint8Array;
  zero: Uint8Array;
}

/** Where a block's content is: the overlay file, nowhere (zeros), or the base version in the store. */
export type BlockSource = 'overlay' | 'zero' | 'base';

/** What the committed local state says, read without opening it for I/O. */
export interface OverlaySummary {
  /** Sequence number of the base version, if one is recorded. */
  baseSeq: number | null;
  /** The base version's table, if one is recorded and was asked for. */
  base: VersionTable | null;
  dirtyBlocks: number;
  /** Blocks fetched from the base and kept (valid, not dirty): clean cache, as of the last commit. */
  cachedBlocks: number;
}

/** O_DIRECT writes must start and end on this boundary. */
const DIRECT_ALIGN = 4096;

export class Overlay {
  readonly size: number;
  readonly objectSize: number;
  readonly blocksPerChunk: number;
  private readonly db: Database.Database;
  private readonly fd: number;
  /**
   * The same file opened with O_DIRECT, for fetched data written as cache:
   * such a write costs a tenth of the CPU of one through the page cache.
   * Null where the file system refuses O_DIRECT (tmpfs before Linux 6.6, some network file systems).
   */
  private unbufferedFd: number | null = null;
  /** The overlay file's path (bs_swift opens it for direct I/O). */
  readonly dataPath: string;
  private readonly direct: DirectMap;
  private readonly bits = new Map<number, ChunkBits>();
  /** Chunks whose bitmaps changed since the last commit. */
  private pending = new Set<number>();
  /** Dirty bits moved out by freeze() while a snapshot uploads them; still dirty as far as the database knows. */
  private frozenDirty: Map<number, Uint8Array> | null = null;
  /** Block ranges unmapped since the last commit, to free in the file once the commit says they are zero. */
  private toFree: Array<[number, number]> = [];
  /** File writes since the last fdatasync. */
  private unsyncedWrites = 0;
  private flushChain: Promise<void> = Promise.resolve();
  private queuedFlush: Promise<void> | null = null;
  private closed = false;
  /** writeInBackground() calls in progress: close() waits for them, abandon() does not. */
  private readonly backgroundWrites = new Set<Promise<void>>();

  private constructor(
    private readonly dir: string,
    geometry: OverlayGeometry,
    db: Database.Database,
  ) {
    this.size = geometry.size;
    this.objectSize = geometry.objectSize;
    this.blocksPerChunk = geometry.objectSize / BLOCK_SIZE;
    this.db = db;
    const file = path.join(dir, 'overlay');
    this.dataPath = file;
    this.fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const wanted = Math.ceil(this.size / BLOCK_SIZE) * BLOCK_SIZE;
    if (fs.fstatSync(this.fd).size !== wanted) fs.ftruncateSync(this.fd, wanted);
    try {
      this.unbufferedFd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    } catch {
      this.unbufferedFd = null;
    }
    const rows = db.prepare('SELECT idx, valid, dirty, zero FROM chunks').all() as Array<{ idx: number; valid: Buffer; dirty: Buffer; zero: Buffer }>;
    for (const row of rows) {
      this.bits.set(row.idx, { valid: new Uint8Array(row.valid), dirty: new Uint8Array(row.dirty), zero: new Uint8Array(row.zero) });
    }
    try {
      this.direct = DirectMap.open(path.join(dir, 'overlay.map'), this.size, this.objectSize);
      // Direct writes a crashed daemon had not collected are dirty; then the map starts from the committed bits.
      this.collectDirect();
      if (this.getInfo('state') !== 'closed') this.dropCleanCache();
      this.setInfo('state', 'open');
      this.direct.clearValid();
      for (const [chunk, entry] of this.bits) this.direct.setChunkValid(chunk, entry.valid);
      this.direct.allowWrites();
    } catch (err) {
      this.closeFiles();
      throw err;
    }
  }

  /**
   * After a crash, a block the database calls valid and clean may hold an
   * overwrite that was never flushed: the file was written in place, the
   * dirty bit not yet committed. Read as is, it would differ from what a
   * snapshot uploads (nothing, for a clean block). Clean blocks are only a
   * cache of the base, so after an unclean shutdown they are all dropped:
   * they read from the base again, as a lost unflushed write should.
   */
  private dropCleanCache(): void {
    const changed: number[] = [];
    for (const [chunk, entry] of this.bits) {
      let dropped = false;
      for (let i = 0; i < entry.valid.length; i++) {
        const kept = entry.valid[i]! & entry.dirty[i]!;
        if (kept !== entry.valid[i]) dropped = true;
        entry.valid[i] = kept;
      }
      if (dropped) changed.push(chunk);
    }
    if (changed.length === 0) return;
    // Committed without a file sync: fewer valid bits never point at missing data.
    const update = this.db.prepare('UPDATE chunks SET valid = ?, dirty = ? WHERE idx = ?');
    this.db.transaction(() => {
      for (const chunk of changed) {
        const entry = this.bits.get(chunk)!;
        update.run(Buffer.from(entry.valid), Buffer.from(entry.dirty), chunk);
      }
    })();
  }

  /** Opens (creating if needed) the overlay in dir. An existing one must have the same geometry. */
  static open(dir: string, geometry: OverlayGeometry): Overlay {
    makeDirs(dir, 0o700);
    const db = new Database(path.join(dir, 'state.db'));
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.exec(`CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
               CREATE TABLE IF NOT EXISTS chunks (idx INTEGER PRIMARY KEY, valid BLOB NOT NULL, dirty BLOB NOT NULL, zero BLOB NOT NULL);`);
      const get = (key: string): string | undefined =>
        (db.prepare('SELECT value FROM info WHERE key = ?').get(key) as { value: string } | undefined)?.value;
      const schema = get('schema');
      if (schema === undefined) {
        const put = db.prepare('INSERT INTO info (key, value) VALUES (?, ?)');
        db.transaction(() => {
          put.run('schema', SCHEMA_VERSION);
          put.run('size', String(geometry.size));
          put.run('objectSize', String(geometry.objectSize));
        })();
      } else if (schema === '1') {
        const bytes = Math.ceil(geometry.objectSize / BLOCK_SIZE / 8);
        db.transaction(() => {
          db.exec(`ALTER TABLE chunks ADD COLUMN zero BLOB NOT NULL DEFAULT X'${'00'.repeat(bytes)}'`);
          db.prepare("UPDATE info SET value = ? WHERE key = 'schema'").run(SCHEMA_VERSION);
        })();
      } else if (schema !== SCHEMA_VERSION) {
        throw new Error(`overlay state in ${dir} has schema ${schema}; this swiftvol knows ${SCHEMA_VERSION}`);
      } else if (get('size') !== String(geometry.size) || get('objectSize') !== String(geometry.objectSize)) {
        throw new Error(`overlay state in ${dir} does not match the volume's geometry`);
      }
      return new Overlay(dir, geometry, db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /**
   * Reads committed state without opening for I/O (safe while another
   * process has it open); the base table, which costs a decode, only `withBase`.
   */
  static inspect(dir: string, options: { withBase?: boolean } = {}): OverlaySummary {
    const db = new Database(path.join(dir, 'state.db'), { readonly: true, fileMustExist: true });
    try {
      const row = db.prepare(`SELECT value FROM info WHERE key = '${INFO_BASE_SEQ}'`).get() as { value: string } | undefined;
      const table = options.withBase ? (db.prepare(`SELECT value FROM info WHERE key = '${INFO_BASE_TABLE}'`).get() as { value: string } | undefined) : undefined;
      let dirtyBlocks = 0;
      let cachedBlocks = 0;
      for (const chunk of db.prepare('SELECT valid, dirty FROM chunks').iterate() as Iterable<{ valid: Buffer; dirty: Buffer }>) {
        dirtyBlocks += countBits(chunk.dirty);
        cachedBlocks += countAndNot(chunk.valid, chunk.dirty);
      }
      const base = table === undefined ? null : VersionTable.decode(Buffer.from(table.value), path.join(dir, 'state.db'));
      return { baseSeq: row === undefined ? null : Number(row.value), base, dirtyBlocks, cachedBlocks };
    } finally {
      db.close();
    }
  }

  /** The version the overlay sits on, as recorded with it; null before one is. */
  base(): VersionTable | null {
    const encoded = this.getInfo(INFO_BASE_TABLE);
    return encoded === undefined ? null : VersionTable.decode(Buffer.from(encoded), path.join(this.dir, 'state.db'));
  }

  /** Records the base version durably, at once. */
  setBase(table: VersionTable): void {
    this.db.transaction(() => {
      this.setInfo(INFO_BASE_TABLE, table.encode().toString('utf8'));
      this.setInfo(INFO_BASE_SEQ, String(table.seq));
    })();
  }

  /** The uuid of the volume this state belongs to (a volume made again under the same name has another). */
  volumeUuid(): string | undefined {
    return this.getInfo(INFO_VOLUME_UUID);
  }

  setVolumeUuid(uuid: string): void {
    this.setInfo(INFO_VOLUME_UUID, uuid);
  }

  private getInfo(key: string): string | undefined {
    const row = this.db.prepare('SELECT value FROM info WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  /** Stores a value durably at once (rare facts: the base version, the clean-close mark). */
  private setInfo(key: string, value: string): void {
    this.db.prepare('INSERT INTO info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** Where a block's content is: valid here, unmapped (zeros), or in the base. */
  blockSource(block: number): BlockSource {
    if (this.isValid(block)) return 'overlay';
    return this.isZero(block) ? 'zero' : 'base';
  }

  isValid(block: number): boolean {
    return this.test(block, 'valid');
  }

  isDirty(block: number): boolean {
    return this.test(block, 'dirty');
  }

  isZero(block: number): boolean {
    return this.test(block, 'zero');
  }

  private test(block: number, which: keyof ChunkBits): boolean {
    const entry = this.bits.get(Math.floor(block / this.blocksPerChunk));
    return entry !== undefined && testBit(entry[which], block % this.blocksPerChunk);
  }

  /** Marks blocks [first, end) valid (their data is in the file), and dirty or not. */
  markValid(first: number, end: number, dirty: boolean): void {
    for (let block = first; block < end; block++) {
      const { entry, byte, mask } = this.locate(block);
      entry.valid[byte]! |= mask;
      entry.zero[byte]! &= ~mask;
      if (dirty) entry.dirty[byte]! |= mask;
    }
    this.direct.setValid(first, end, true);
  }

  /** Marks blocks [first, end) unmapped: zeros, dirty; their file space is freed after the next commit. */
  markZero(first: number, end: number): void {
    if (first >= end) return;
    for (let block = first; block < end; block++) {
      const { entry, byte, mask } = this.locate(block);
      entry.valid[byte]! &= ~mask;
      entry.zero[byte]! |= mask;
      entry.dirty[byte]! |= mask;
    }
    this.direct.setValid(first, end, false);
    this.toFree.push([first, end]);
  }

  private locate(block: number): { entry: ChunkBits; byte: number; mask: number } {
    const chunk = Math.floor(block / this.blocksPerChunk);
    let entry = this.bits.get(chunk);
    if (!entry) {
      const bytes = Math.ceil(this.blocksPerChunk / 8);
      entry = { valid: new Uint8Array(bytes), dirty: new Uint8Array(bytes), zero: new Uint8Array(bytes) };
      this.bits.set(chunk, entry);
    }
    this.pending.add(chunk);
    const bit = block % this.blocksPerChunk;
    return { entry, byte: bit >> 3, mask: 1 << (bit & 7) };
  }

  /**
   * Freezes the dirty set for a snapshot: returns the bitmaps of every chunk
   * with dirty blocks and clears their dirty bits, so that dirty from now on
   * means "written after the freeze". Until settleFreeze(), the database keeps
   * recording the frozen bits as dirty, so a crash loses nothing to upload.
   */
  freeze(): Map<number, FrozenChunk> {
    if (this.frozenDirty) throw new Error('a snapshot of this volume is already in progress');
    // Direct writes stop (frozen chunks must not change under the snapshot) and what they wrote is taken.
    this.direct.stopWrites();
    this.collectDirect();
    const frozen = new Map<number, FrozenChunk>();
    this.frozenDirty = new Map();
    for (const [chunk, entry] of this.bits) {
      if (!entry.dirty.some((b) => b !== 0)) continue;
      frozen.set(chunk, { valid: Uint8Array.from(entry.valid), dirty: Uint8Array.from(entry.dirty), zero: Uint8Array.from(entry.zero) });
      this.frozenDirty.set(chunk, Uint8Array.from(entry.dirty));
      entry.dirty.fill(0);
    }
    this.direct.allowWrites(new Set(frozen.keys()));
    return frozen;
  }

  /**
   * Ends a freeze. If the snapshot was committed, the frozen blocks are clean
   * now (the next flush records that); if not, they are dirty again.
   */
  settleFreeze(committed: boolean): void {
    const frozen = this.frozenDirty;
    if (!frozen) return;
    this.frozenDirty = null;
    for (const [chunk, dirty] of frozen) {
      if (!committed) {
        const entry = this.bits.get(chunk)!;
        for (let i = 0; i < dirty.length; i++) entry.dirty[i]! |= dirty[i]!;
      }
      this.pending.add(chunk);
    }
    this.direct.allowWrites();
  }

  /**
   * Takes the dirty bits of bs_swift's direct writes into the bitmaps. Direct
   * writes only go to valid blocks; a bit for a block unmapped since stays
   * out (the block is dirty already, and zero).
   */
  private collectDirect(): void {
    for (const [chunk, bits] of this.direct.takeDirty()) {
      const entry = this.bits.get(chunk);
      if (!entry) continue;
      for (let i = 0; i < bits.length; i++) entry.dirty[i]! |= bits[i]! & entry.valid[i]!;
      this.pending.add(chunk);
      this.unsyncedWrites++;
    }
  }

  /** What bs_swift read and wrote in the overlay file by itself. */
  directIo(): DirectIoCounters {
    return this.direct.directIo();
  }

  /** Starts a direct I/O session for bs_swift: where the files are, and the call that ends it. */
  openDirect(): { dataPath: string; mapPath: string; close: () => void } {
    if (this.closed) throw new Error('overlay is closed');
    return { dataPath: this.dataPath, mapPath: this.direct.path, close: this.direct.openSession() };
  }

  /** Throws away every local block and bit (rollback): the volume reads as its base again. */
  async discardAll(): Promise<void> {
    await this.flush();
    if (this.frozenDirty) throw new Error('a snapshot of this volume is in progress');
    this.db.transaction(() => this.db.exec('DELETE FROM chunks'))();
    this.bits.clear();
    this.direct.clearValid();
    this.pending.clear();
    this.toFree = [];
    const size = fs.fstatSync(this.fd).size;
    fs.ftruncateSync(this.fd, 0);
    fs.ftruncateSync(this.fd, size);
    fs.fsyncSync(this.fd);
  }

  /** Bytes of file space in use (sparse files: what the overlay really holds). */
  allocatedBytes(): number {
    return fs.fstatSync(this.fd).blocks * 512;
  }

  /** Number of dirty blocks (what a snapshot would upload, at block granularity). */
  dirtyBlocks(): number {
    this.collectDirect();
    let count = 0;
    for (const [chunk, entry] of this.bits) {
      const frozen = this.frozenDirty?.get(chunk);
      entry.dirty.forEach((byte, i) => (count += popcount8(byte | (frozen?.[i] ?? 0))));
    }
    return count;
  }

  /** read() on the libuv pool: the event loop goes on while the disk answers. */
  async readInBackground(target: Uint8Array, targetOffset: number, length: number, position: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fsRead(this.fd, target, targetOffset + done, length - done, position + done);
      if (bytesRead === 0) throw new Error(`overlay read past end at ${position + done}`);
      done += bytesRead;
    }
  }

  read(target: Uint8Array, targetOffset: number, length: number, position: number): void {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, target, targetOffset + done, length - done, position + done);
      if (n === 0) throw new Error(`overlay read past end at ${position + done}`);
      done += n;
    }
  }

  write(data: Uint8Array, position: number): void {
    let done = 0;
    while (done < data.length) {
      done += fs.writeSync(this.fd, data, done, data.length - done, position + done);
    }
    this.unsyncedWrites++;
  }

  /**
   * Writes data at position on a thread of the pool, off the event loop: a
   * write of new pages may sleep in the kernel while dirty pages are written
   * back. The caller keeps other writes away from the range until it settles.
   */
  async writeInBackground(data: Uint8Array, position: number): Promise<void> {
    const write = (async () => {
      const unbufferedFd = this.unbufferedFd;
      if (unbufferedFd !== null && position % DIRECT_ALIGN === 0 && data.length % DIRECT_ALIGN === 0 && data.length > 0) {
        const buffer = Buffer.from(data.buffer, data.byteOffset, data.length);
        const failed = await new Promise<Error | null>((resolve) => overlayIo().writeAligned(unbufferedFd, buffer, position, resolve));
        if (!failed) {
          this.unsyncedWrites++;
          return;
        }
        // EINVAL: the device wants a larger alignment; then the page cache it is, from now on.
        if ((failed as Error & { errno?: number }).errno !== 22) throw failed;
        this.unbufferedFd = null;
        fs.closeSync(unbufferedFd);
      }
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fsWrite(this.fd, data, done, data.length - done, position + done);
        done += bytesWritten;
      }
      this.unsyncedWrites++;
    })();
    this.backgroundWrites.add(write);
    try {
      await write;
    } finally {
      this.backgroundWrites.delete(write);
    }
  }

  /**
   * Makes every write and bitmap change made before the call durable.
   * Concurrent callers share a flush that has not started yet.
   */
  flush(): Promise<void> {
    if (this.queuedFlush) return this.queuedFlush;
    const run = this.flushChain.then(() => {
      this.queuedFlush = null;
      return this.flushNow();
    });
    this.queuedFlush = run;
    this.flushChain = run.catch(() => undefined);
    return run;
  }

  private async flushNow(): Promise<void> {
    if (this.closed) throw new Error('overlay is closed');
    this.collectDirect();
    const captured = [...this.pending].map((chunk) => {
      const entry = this.bits.get(chunk)!;
      const dirty = Buffer.from(entry.dirty);
      const frozen = this.frozenDirty?.get(chunk);
      if (frozen) for (let i = 0; i < dirty.length; i++) dirty[i]! |= frozen[i]!;
      return { chunk, valid: Buffer.from(entry.valid), dirty, zero: Buffer.from(entry.zero) };
    });
    this.pending = new Set();
    const toFree = this.toFree;
    this.toFree = [];
    const writes = this.unsyncedWrites;
    try {
      if (writes > 0) await fdatasync(this.fd);
      this.unsyncedWrites -= writes;
      if (captured.length > 0) {
        const upsert = this.db.prepare(
          'INSERT INTO chunks (idx, valid, dirty, zero) VALUES (?, ?, ?, ?) ON CONFLICT(idx) DO UPDATE SET valid = excluded.valid, dirty = excluded.dirty, zero = excluded.zero',
        );
        this.db.transaction(() => {
          for (const row of captured) upsert.run(row.chunk, row.valid, row.dirty, row.zero);
        })();
      }
    } catch (err) {
      for (const row of captured) this.pending.add(row.chunk);
      this.toFree.push(...toFree);
      throw err;
    }
    this.freeUnmapped(toFree);
  }

  /**
   * Frees the file space of unmapped blocks, now that the committed state
   * says they are zero (freeing earlier could, after a crash, leave a block
   * the database calls valid reading as a hole). Blocks written since are kept.
   */
  private freeUnmapped(ranges: Array<[number, number]>): void {
    for (const [first, end] of ranges) {
      let block = first;
      while (block < end) {
        if (!this.isZero(block)) {
          block++;
          continue;
        }
        let next = block + 1;
        while (next < end && this.isZero(next)) next++;
        overlayIo().punchHole(this.fd, block * BLOCK_SIZE, (next - block) * BLOCK_SIZE);
        block = next;
      }
    }
  }

  /** Flushes, then releases the file and the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.backgroundWrites]);
    await this.flush();
    this.setInfo('state', 'closed');
    this.closed = true;
    this.closeFiles();
    this.db.close();
  }

  private closeFiles(): void {
    fs.closeSync(this.fd);
    if (this.unbufferedFd !== null) fs.closeSync(this.unbufferedFd);
    this.unbufferedFd = null;
  }

  /** Releases without flushing (what a crash would leave, for tests and error paths). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
    // A background write must not land in whatever file reuses the descriptor.
    if (this.backgroundWrites.size === 0) this.closeFiles();
    else void Promise.allSettled([...this.backgroundWrites]).then(() => this.closeFiles());
  }
}
