// ObjectStore in a local directory: the embedded default when no Swift is
// configured. root/<container>/<object>, one file per object, no nested
// directories. Each file starts with a small header holding the MD5 and the
// length of the data, so head/list cost one small read and never rehash, and
// one rename makes data and checksum appear together.

import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { link, mkdir, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StoreError, rangeLength, rangesOf, type ObjectInfo, type ObjectStore, type PutOptions, type ReadRange, type StoreConsistency } from './object-store.js';
import { checkContainerName, checkObjectName, checkRange, compareNames, isHexMd5 } from './names.js';
import { makeDirs } from '../os/make-dirs.js';

const MAGIC = Buffer.from('SWVOBJ1\n', 'latin1'); // 8 bytes
/** magic (8) | MD5 (16) | data length, u64 LE (8) */
const HEADER_SIZE = 32;
const NAME_MAX = 255;
const TMP_PREFIX = '.tmp-';

/**
 * A name as one safe file name: percent-encoded (so '/' never makes a
 * directory) and never starting with '.' (so no '.', '..', and no clash with
 * our temp files). Injective, and undone by decodeURIComponent.
 */
function encodeName(name: string): string {
  const enc = encodeURIComponent(name);
  return enc.startsWith('.') ? `%2E${enc.slice(1)}` : enc;
}

function decodeName(file: string): string | undefined {
  if (file.startsWith('.')) return undefined;
  try {
    const name = decodeURIComponent(file);
    return encodeName(name) === file ? name : undefined; // ignore files we did not write
  } catch {
    return undefined;
  }
}

function errno(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function fsError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StoreError('other', `${what}: ${message}`, { cause: err });
}

interface Header {
  md5: string;
  size: number;
}

function makeHeader(md5: string, size: number): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(h, 0);
  h.write(md5, 8, 16, 'hex');
  h.writeBigUInt64LE(BigInt(size), 24);
  return h;
}

async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class FileStore implements ObjectStore {
  readonly root: string;
  readonly description: string;
  /**
   * Atomic. A conditional put links its complete temporary file to the name
   * with link(2), which fails with EEXIST instead of replacing: the kernel
   * decides, at one instant, which of any number of racing puts creates the
   * name, for every process of the host using the directory. That holds on a
   * local filesystem; a directory shared by several hosts over a network
   * filesystem is outside what FileStore is for.
   */
  readonly consistency: StoreConsistency = Object.freeze({ atomicConditionalPut: true });

  constructor(root: string) {
    this.root = root;
    this.description = `file ${root}`;
  }

  private containerDir(container: string): string {
    checkContainerName(container);
    const enc = encodeName(container);
    if (Buffer.byteLength(enc) > NAME_MAX) {
      throw new StoreError('invalid', `container name ${JSON.stringify(container)} is too long for a file store`);
    }
    return join(this.root, enc);
  }

  private objectFile(container: string, name: string): string {
    const dir = this.containerDir(container);
    checkObjectName(name);
    const enc = encodeName(name);
    if (Buffer.byteLength(enc) > NAME_MAX) {
      // Percent-encoding can triple a name; Linux file names stop at 255 bytes.
      throw new StoreError('invalid', `object name ${JSON.stringify(name)} is too long for a file store (${enc.length} bytes encoded, max ${NAME_MAX})`);
    }
    return join(dir, enc);
  }

  /** Reads and checks the header of an open object file. */
  private async readHeader(fh: FileHandle, what: string): Promise<Header> {
    const h = Buffer.alloc(HEADER_SIZE);
    const n = await readFully(fh, h, 0);
    const { size: fileSize } = await fh.stat();
    if (n < HEADER_SIZE || !h.subarray(0, 8).equals(MAGIC)) {
      throw new StoreError('checksum', `${what}: object file has no valid header`);
    }
    const size = Number(h.readBigUInt64LE(24));
    if (fileSize - HEADER_SIZE !== size) {
      throw new StoreError('checksum', `${what}: object file holds ${fileSize - HEADER_SIZE} bytes, header says ${size}`);
    }
    return { md5: h.toString('hex', 8, 24), size };
  }

  // ---- containers ------------------------------------------------------------

  async createContainer(container: string): Promise<void> {
    const dir = this.containerDir(container);
    try {
      makeDirs(this.root);
      await mkdir(dir);
      await fsyncDir(this.root);
    } catch (err) {
      if (errno(err) === 'EEXIST') return;
      throw fsError(err, `creating container ${container}`);
    }
  }

  async deleteContainer(container: string): Promise<void> {
    const dir = this.containerDir(container);
    try {
      const entries = await readdir(dir);
      if (entries.some((e) => !e.startsWith('.'))) {
        throw new StoreError('conflict', `container ${container} is not empty`);
      }
      // Only leftovers of interrupted puts remain.
      for (const e of entries) {
        if (e.startsWith(TMP_PREFIX)) await unlink(join(dir, e)).catch(() => undefined);
      }
      await rmdir(dir);
      await fsyncDir(this.root);
    } catch (err) {
      const code = errno(err);
      if (code === 'ENOENT') return;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        throw new StoreError('conflict', `container ${container} is not empty`, { cause: err });
      }
      throw fsError(err, `deleting container ${container}`);
    }
  }

  async listContainers(prefix: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.root, { withFileTypes: true });
    } catch (err) {
      if (errno(err) === 'ENOENT') return [];
      throw fsError(err, 'listing containers');
    }
    const names: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const name = decodeName(e.name);
      if (name !== undefined && name.startsWith(prefix)) names.push(name);
    }
    return names.sort(compareNames);
  }

  // ---- objects ---------------------------------------------------------------

  async put(container: string, name: string, data: Uint8Array, options: PutOptions = {}): Promise<{ etag: string }> {
    const file = this.objectFile(container, name);
    const dir = this.containerDir(container);
    const what = `${container}/${name}`;
    const given = await options.md5;
    if (given !== undefined && !isHexMd5(given)) {
      throw new StoreError('invalid', `md5 ${JSON.stringify(given)} is not a hex MD5`);
    }
    const md5 = createHash('md5').update(data).digest('hex');
    if (given !== undefined && given.toLowerCase() !== md5) {
      throw new StoreError('checksum', `${what}: data MD5 ${md5} does not match the given ${given.toLowerCase()}`);
    }

    const tmp = join(dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'wx', 0o644);
    } catch (err) {
      if (errno(err) === 'ENOENT') {
        throw new StoreError('not-found', `container ${container} does not exist (putting ${name})`, { cause: err });
      }
      throw fsError(err, `putting ${what}`);
    }
    let renamed = false;
    try {
      try {
        const { bytesWritten } = await fh.writev([makeHeader(md5, data.byteLength), data]);
        if (bytesWritten !== HEADER_SIZE + data.byteLength) {
          throw new Error(`short write: ${bytesWritten} of ${HEADER_SIZE + data.byteLength} bytes`);
        }
        await fh.sync(); // data durable before the name points at it
      } finally {
        await fh.close();
      }
      if (options.ifNoneMatch) {
        // link() fails with EEXIST instead of replacing: an atomic create-if-absent.
        try {
          await link(tmp, file);
        } catch (err) {
          if (errno(err) === 'EEXIST') throw new StoreError('conflict', `object ${what} already exists`, { cause: err });
          throw err;
        }
        await unlink(tmp);
      } else {
        await rename(tmp, file);
        renamed = true;
      }
      await fsyncDir(dir);
    } catch (err) {
      if (!renamed) await unlink(tmp).catch(() => undefined);
      throw fsError(err, `putting ${what}`);
    }
    return { etag: md5 };
  }

  async get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    const file = this.objectFile(container, name);
    const what = `${container}/${name}`;
    if (range) checkRange(range);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT') throw new StoreError('not-found', `object ${what} does not exist`, { cause: err });
      throw fsError(err, `getting ${what}`);
    }
    try {
      const header = await this.readHeader(fh, what);
      if (range) {
        const past = rangesOf(range).find((r) => r.end > header.size);
        if (past) throw new StoreError('invalid', `range [${past.start}, ${past.end}) is past the end of ${what} (${header.size} bytes)`);
        const buf = Buffer.allocUnsafe(rangeLength(range));
        let at = 0;
        for (const r of rangesOf(range)) {
          const part = buf.subarray(at, at + r.end - r.start);
          const n = await readFully(fh, part, HEADER_SIZE + r.start);
          if (n !== part.length) throw new StoreError('checksum', `${what}: object file is shorter than its header says`);
          at += part.length;
        }
        return buf;
      }
      const buf = Buffer.allocUnsafe(header.size);
      const n = await readFully(fh, buf, HEADER_SIZE);
      if (n !== buf.length) throw new StoreError('checksum', `${what}: object file is shorter than its header says`);
      const actual = createHash('md5').update(buf).digest('hex');
      if (actual !== header.md5) {
        throw new StoreError('checksum', `${what}: data MD5 ${actual} does not match stored ${header.md5}`);
      }
      return buf;
    } catch (err) {
      throw fsError(err, `getting ${what}`);
    } finally {
      await fh.close();
    }
  }

  async head(container: string, name: string): Promise<ObjectInfo | null> {
    const file = this.objectFile(container, name);
    const what = `${container}/${name}`;
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT') return null;
      throw fsError(err, `HEAD ${what}`);
    }
    try {
      const { md5, size } = await this.readHeader(fh, what);
      return { name, size, etag: md5 };
    } catch (err) {
      throw fsError(err, `HEAD ${what}`);
    } finally {
      await fh.close();
    }
  }

  async delete(container: string, name: string): Promise<void> {
    const file = this.objectFile(container, name);
    try {
      // No directory fsync: with write-once names, a delete undone by a crash
      // only leaves garbage that the next collection removes again.
      await unlink(file);
    } catch (err) {
      if (errno(err) === 'ENOENT') return;
      throw fsError(err, `deleting ${container}/${name}`);
    }
  }

  async *list(container: string, prefix = ''): AsyncIterable<ObjectInfo> {
    const dir = this.containerDir(container);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (err) {
      if (errno(err) === 'ENOENT') {
        throw new StoreError('not-found', `listing container ${container}: container does not exist`, { cause: err });
      }
      throw fsError(err, `listing container ${container}`);
    }
    const names: string[] = [];
    for (const e of entries) {
      const name = decodeName(e);
      if (name !== undefined && name.startsWith(prefix)) names.push(name);
    }
    names.sort(compareNames);
    // Headers are read a window at a time: a volume has thousands of objects.
    const WINDOW = 64;
    for (let i = 0; i < names.length; i += WINDOW) {
      const infos = await Promise.all(names.slice(i, i + WINDOW).map((name) => this.head(container, name)));
      for (const info of infos) {
        if (info) yield info; // deleted since readdir: skip it, as a later listing would
      }
    }
  }

  async close(): Promise<void> {
    // Nothing held open between calls.
  }
}
