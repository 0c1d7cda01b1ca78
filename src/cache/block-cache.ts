// The gateway's clean cache (issue 14): blocks of data objects fetched from
// the store, shared by every volume one serve has open, keyed by object
// ("container/name"). Data objects are write-once and uniquely named, so a
// cached block is valid for every volume whose table names its object: a
// clone's, a snapshot's, its parent's. Dirty data never comes here; it stays
// in each volume's overlay.
//
// Bounded: the blocks it holds never exceed its budget; when a write would
// pass it, the objects used least recently are evicted and their files
// deleted. Crash-safe: every block has a CRC32C beside it, checked on every
// read, so a block whose write did not land (a crash, a torn write) reads as
// absent, never as wrong bytes; on open, what the database does not vouch
// for is punched out of the files, so the bound holds after a crash too.
//
// Layout under dir: cache.db (SQLite, WAL): one row per object (its file,
// a bitmap of the 4 KiB blocks present, their CRC32Cs, bytes, last use);
// objects/<sha1 of the key>: the object's bytes at their offsets, sparse.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { promisify } from 'node:util';
import { DIRECT_IO_MIN, crc32c, overlayIo } from '../native/addons.js';
import { OpenFiles } from './open-files.js';
import { makeDirs } from '../os/make-dirs.js';

const fsRead = promisify(fs.read);
const fsWrite = promisify(fs.write);
/**
 * Descriptors of object files kept open at most (a file open to read and to
 * write holds two). 64 made cold random reads over more objects than that
 * open and close a file for most fills.
 */
export const CACHE_OPEN_FILES = 256;
/**
 * Fills at least this large are written with O_DIRECT (a stream's: through
 * the page cache they would cost serve's CPU twice and crowd out what the
 * page cache is for); smaller ones, a random read's few blocks, through the
 * page cache, where a 4 KiB O_DIRECT write cost more than its read
 * (measured: about a tenth of serve's CPU per cold 4 KiB read, a disk
 * request and a virtio notification each). A fetched body that large is
 * page-aligned (alignedBuffer), so the write needs no bounce copy.
 */
const DIRECT_WRITE_MIN = DIRECT_IO_MIN;

export const CACHE_BLOCK = 4096;
/** How often the in-memory state is committed (what a crash can lose is cache, never correctness). */
const COMMIT_MS = 1000;

interface Entry {
  key: string;
  file: string;
  /** One bit per block present. */
  bits: Uint8Array;
  /** CRC32C of each present block (4 bytes, little-endian). */
  sums: Buffer;
  blocks: number;
  used: number;
  dirty: boolean;
}

function hasBit(bits: Uint8Array, i: number): boolean {
  return (bits[i >> 3]! & (1 << (i & 7))) !== 0;
}

function setBit(bits: Uint8Array, i: number): void {
  bits[i >> 3]! |= 1 << (i & 7);
}

export interface CacheStats {
  bytes: number;
  budget: number;
  objects: number;
  evicted: number;
}

export class BlockCache {
  private readonly db: Database.Database;
  private readonly entries = new Map<string, Entry>();
  private blocksHeld = 0;
  private tick = 0;
  private evicted = 0;
  private closed = false;
  /** Whether O_DIRECT writes work here (they do not on tmpfs). */
  private direct = true;
  private readonly writing = new Set<Promise<void>>();
  /** Descriptors of the object files, kept open between reads and writes. */
  private readonly openFiles = new OpenFiles(CACHE_OPEN_FILES);
  private readonly timer: NodeJS.Timeout;
  private readonly objectsDir: string;

  private constructor(
    readonly dir: string,
    /** Bytes of blocks it may hold. */
    readonly budget: number,
  ) {
    this.objectsDir = path.join(dir, 'objects');
    makeDirs(this.objectsDir);
    this.db = new Database(path.join(dir, 'cache.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.exec('CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, file TEXT NOT NULL, bits BLOB NOT NULL, sums BLOB NOT NULL, used INTEGER NOT NULL)');
    this.load();
    this.timer = setInterval(() => this.commit(), COMMIT_MS);
    this.timer.unref();
  }

  /** Opens (or creates) the cache in dir with a budget in bytes. */
  static open(dir: string, budget: number): BlockCache {
    return new BlockCache(dir, budget);
  }

  /** Reads what the database holds; drops files it does not know and punches out blocks it does not vouch for. */
  private load(): void {
    const rows = this.db.prepare('SELECT key, file, bits, sums, used FROM entries').all() as Array<{ key: string; file: string; bits: Buffer; sums: Buffer; used: number }>;
    const known = new Set<string>();
    for (const row of rows) {
      const file = path.join(this.objectsDir, row.file);
      if (!fs.existsSync(file)) {
        this.db.prepare('DELETE FROM entries WHERE key = ?').run(row.key);
        continue;
      }
      const bits = new Uint8Array(row.bits);
      let blocks = 0;
      for (let i = 0; i < bits.length * 8; i++) if (hasBit(bits, i)) blocks++;
      const entry: Entry = { key: row.key, file: row.file, bits, sums: Buffer.from(row.sums), blocks, used: row.used, dirty: false };
      this.punchAbsent(entry);
      this.entries.set(row.key, entry);
      this.blocksHeld += blocks;
      this.tick = Math.max(this.tick, row.used);
      known.add(row.file);
    }
    for (const f of fs.readdirSync(this.objectsDir)) if (!known.has(f)) fs.rmSync(path.join(this.objectsDir, f), { force: true });
    this.evictOver(0);
  }

  /** Frees the space of blocks written but not vouched for (a crash between the write and the commit). */
  private punchAbsent(entry: Entry): void {
    const file = path.join(this.objectsDir, entry.file);
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r+');
    try {
      const blocks = Math.ceil(size / CACHE_BLOCK);
      for (let i = 0; i < blocks; ) {
        if (hasBit(entry.bits, i)) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < blocks && !hasBit(entry.bits, j)) j++;
        overlayIo().punchHole(fd, i * CACHE_BLOCK, (j - i) * CACHE_BLOCK);
        i = j;
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Blocks held of each object as of the last commit, read without opening
   * the cache (a serve may have it open): for `volume info` and `volume
   * list`, read once for all the volumes they show. Empty without a cache.
   */
  static committedBlocks(dir: string): Map<string, number> {
    const held = new Map<string, number>();
    const file = path.join(dir, 'cache.db');
    if (!fs.existsSync(file)) return held;
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      for (const row of db.prepare('SELECT key, bits FROM entries').iterate() as Iterable<{ key: string; bits: Buffer }>) {
        let blocks = 0;
        for (const byte of row.bits) for (let x = byte; x; x &= x - 1) blocks++;
        held.set(row.key, blocks);
      }
    } finally {
      db.close();
    }
    return held;
  }

  /** Bytes held, the budget, objects, evictions so far. */
  stats(): CacheStats {
    return { bytes: this.blocksHeld * CACHE_BLOCK, budget: this.budget, objects: this.entries.size, evicted: this.evicted };
  }

  /** Bytes held of these objects (a volume's, for `volume info`). */
  bytesOf(keys: Iterable<string>): number {
    let blocks = 0;
    for (const k of keys) blocks += this.entries.get(k)?.blocks ?? 0;
    return blocks * CACHE_BLOCK;
  }

  /** Whether every block of [first, end) of the object is held. */
  has(key: string, first: number, end: number): boolean {
    const e = this.entries.get(key);
    if (!e) return false;
    for (let b = first; b < end; b++) if (!hasBit(e.bits, b)) return false;
    return true;
  }

  /**
   * Blocks [first, end) of the object, `length` bytes from block first (the
   * last block of an object may be short), checked; null if any of them is
   * not held or fails its check (it is then dropped: a miss, fetched again).
   * The file is read on libuv's pool.
   */
  async read(key: string, first: number, end: number, length: number): Promise<Buffer | null> {
    const e = this.entries.get(key);
    if (!e || !this.has(key, first, end)) return null;
    const out = Buffer.allocUnsafe(length);
    let got: number;
    try {
      got = await this.openFiles.use(path.join(this.objectsDir, e.file), fs.constants.O_RDONLY, (fd) => fsRead(fd, out, 0, length, first * CACHE_BLOCK).then((r) => r.bytesRead));
    } catch {
      got = -1;
    }
    if (this.entries.get(key) !== e) return null; // evicted meanwhile
    if (got !== length || crc32c().verifyBlocks(out, CACHE_BLOCK, e.sums.subarray(first * 4, end * 4)) >= 0) {
      this.drop(e); // a block that did not land as it was written: the object is fetched again
      return null;
    }
    e.used = ++this.tick;
    e.dirty = true;
    return out;
  }

  /**
   * Keeps bytes of an object from block `first` on (data.length bytes; the
   * object's last block may be short), `blocksInObject` its block count.
   * Evicts the least recently used objects first if the budget needs it;
   * keeps nothing if the data alone is over budget. The file write runs on
   * libuv's pool; the blocks count as held once it is done (data before
   * bits), and `data` must not change until then. It starts after the work
   * already queued: the reader that fetched the data sends its reply first
   * (the cache's bookkeeping would otherwise add ~0.2 ms to a cold read).
   * `sums`, if given, are the CRC32C of each block of data, already checked
   * against it (a data object's trailer): they are kept instead of computed.
   */
  write(key: string, blocksInObject: number, first: number, data: Uint8Array, sums?: Uint8Array): Promise<void> {
    const run = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.store(key, blocksInObject, first, data, sums));
    this.writing.add(run);
    const done = (): void => void this.writing.delete(run);
    run.then(done, done);
    return run;
  }

  /** Waits for the writes under way, then commits: what is held is then in the database (for `volume info`, tests). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.writing]);
    this.commit();
  }

  private async store(key: string, blocksInObject: number, first: number, data: Uint8Array, given?: Uint8Array): Promise<void> {
    if (this.closed) return;
    const blocks = Math.ceil(data.length / CACHE_BLOCK);
    if (blocks * CACHE_BLOCK > this.budget) return;
    if (given && given.length !== blocks * 4) throw new Error(`cache write of ${key}: ${given.length} bytes of sums for ${blocks} blocks`);
    const sums = given ? Buffer.from(given.buffer, given.byteOffset, given.length) : crc32c().blockSums(data, CACHE_BLOCK);
    const file = path.join(this.objectsDir, this.entries.get(key)?.file ?? createHash('sha1').update(key).digest('hex'));
    await this.writeFile(file, data, first * CACHE_BLOCK);
    if (this.closed) return;
    let e = this.entries.get(key);
    const adding = e ? [...Array(blocks).keys()].filter((i) => !hasBit(e!.bits, first + i)).length : blocks;
    this.evictOver(adding * CACHE_BLOCK, key);
    e = this.entries.get(key);
    if (!e) {
      if (!fs.existsSync(file)) return; // evicted (its file deleted) while this write ran: keep nothing
      e = { key, file: path.basename(file), bits: new Uint8Array(Math.ceil(blocksInObject / 8)), sums: Buffer.alloc(blocksInObject * 4), blocks: 0, used: 0, dirty: true };
      this.entries.set(key, e);
    }
    sums.copy(e.sums, first * 4); // the blocks are contiguous: their sums too
    for (let i = 0; i < blocks; i++) {
      const b = first + i;
      if (!hasBit(e.bits, b)) {
        setBit(e.bits, b);
        e.blocks++;
        this.blocksHeld++;
      }
    }
    e.used = ++this.tick;
    e.dirty = true;
  }

  /**
   * Writes data at position, on libuv's pool: with O_DIRECT when it is
   * whole blocks and at least DIRECT_WRITE_MIN, else buffered.
   */
  private async writeFile(file: string, data: Uint8Array, position: number): Promise<void> {
    if (this.direct && data.length >= DIRECT_WRITE_MIN && data.length % CACHE_BLOCK === 0) {
      const written = await this.openFiles
        .use(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT, async (fd) => {
          const buffer = Buffer.from(data.buffer, data.byteOffset, data.length);
          const failed = await new Promise<Error | null>((resolve) => overlayIo().writeAligned(fd, buffer, position, resolve));
          if (!failed) return true;
          if ((failed as Error & { errno?: number }).errno !== 22) throw failed;
          return false; // EINVAL: no O_DIRECT here (a larger alignment)
        })
        .catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EINVAL') throw err;
          return false; // no O_DIRECT on this filesystem (tmpfs)
        });
      if (written) return;
      this.direct = false; // buffered from now on
    }
    await this.openFiles.use(file, fs.constants.O_RDWR | fs.constants.O_CREAT, async (fd) => {
      let done = 0;
      while (done < data.length) done += (await fsWrite(fd, data, done, data.length - done, position + done)).bytesWritten;
    });
  }

  /** Evicts least recently used objects (not `keep`) until `more` bytes fit in the budget. */
  private evictOver(more: number, keep?: string): void {
    if ((this.blocksHeld * CACHE_BLOCK) + more <= this.budget) return;
    const byUse = [...this.entries.values()].filter((e) => e.key !== keep).sort((a, b) => a.used - b.used);
    for (const e of byUse) {
      if (this.blocksHeld * CACHE_BLOCK + more <= this.budget) break;
      this.drop(e);
      this.evicted++;
    }
  }

  private drop(e: Entry): void {
    this.entries.delete(e.key);
    this.blocksHeld -= e.blocks;
    const file = path.join(this.objectsDir, e.file);
    fs.rmSync(file, { force: true });
    this.openFiles.forget(file);
    this.db.prepare('DELETE FROM entries WHERE key = ?').run(e.key);
  }

  /** Commits what changed since the last commit. */
  commit(): void {
    const changed = [...this.entries.values()].filter((e) => e.dirty);
    if (changed.length === 0) return;
    const put = this.db.prepare('INSERT INTO entries (key, file, bits, sums, used) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET bits = excluded.bits, sums = excluded.sums, used = excluded.used');
    this.db.transaction(() => {
      for (const e of changed) {
        put.run(e.key, e.file, Buffer.from(e.bits), e.sums, e.used);
        e.dirty = false;
      }
    })();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.commit();
    this.db.close();
    this.openFiles.closeAll();
  }
}
