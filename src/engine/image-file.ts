// Raw image files on the local disk: the source of an import (an
// ImageSource; src/image/ has the others) and the output of an export.
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { EngineError } from './engine-error.js';
import { isAllZero } from './all-zero.js';

const fsRead = promisify(fs.read);

/** Granularity at which an exported image leaves holes. */
const SPARSE_GRANULE = 64 * 1024;

/** The size of an image file, or an EngineError saying why it is no image. */
export function imageFileSize(file: string): number {
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

/**
 * What an import reads: the bytes of an image, whatever holds it (a raw file
 * here; an image of another format, or an object in Swift, through
 * src/image/). The engine asks only for ranges and which ones hold data.
 */
export interface ImageSource {
  /** The file or URL, for messages. */
  readonly name: string;
  /** Bytes of content; the volume is this rounded up to a multiple of 512. */
  readonly size: number;
  /**
   * The parts of [start, end) that may hold data, in order; the rest surely
   * reads as zeros and need not be read.
   */
  dataIn(start: number, end: number): Array<{ start: number; end: number }>;
  /** Fills buffer with the bytes from position (the caller keeps within size); may run concurrently. */
  readFully(buffer: Buffer, position: number): Promise<void>;
  close(): Promise<void>;
}

/** A raw image file open for reading. */
export class RawImageFile implements ImageSource {
  private readonly fd: number;
  readonly size: number;

  constructor(readonly name: string) {
    this.size = imageFileSize(name);
    this.fd = fs.openSync(name, 'r');
  }

  /** Raw files are read whole (all-zero chunks are found as they are read). */
  dataIn(start: number, end: number): Array<{ start: number; end: number }> {
    return [{ start, end }];
  }

  /** Fills buffer from position, on libuv's pool: the uploads in flight go on meanwhile. */
  async readFully(buffer: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < buffer.length) {
      const { bytesRead: n } = await fsRead(this.fd, buffer, done, buffer.length - done, position + done);
      if (n === 0) throw new EngineError(`image file ended early at byte ${position + done}`);
      done += n;
    }
  }

  async close(): Promise<void> {
    fs.closeSync(this.fd);
  }
}

/**
 * A sparse raw image being written: into a temporary file next to the
 * target, which replaces the target only once complete (finish), so an
 * interrupted export leaves no partial image under the name.
 */
export class SparseImageWriter {
  private readonly temp: string;
  private fd: number | null;

  constructor(
    private readonly file: string,
    /** The name its errors give it (the file asked for, when `file` is a temporary in the same directory). */
    private readonly shownAs = file,
  ) {
    this.temp = `${file}.swiftvol-${process.pid}.tmp`;
    try {
      this.fd = fs.openSync(this.temp, 'w', 0o644);
    } catch (err) {
      throw cannotWrite(shownAs, err);
    }
  }

  /** Writes data at position, leaving all-zero granules as holes. */
  write(data: Buffer, position: number): void {
    const fd = this.openFd();
    for (let at = 0; at < data.length; at += SPARSE_GRANULE) {
      const piece = data.subarray(at, Math.min(at + SPARSE_GRANULE, data.length));
      if (isAllZero(piece)) continue;
      let done = 0;
      while (done < piece.length) done += fs.writeSync(fd, piece, done, piece.length - done, position + at + done);
    }
  }

  /** Sets the size, syncs, and puts the image in place of the target. */
  finish(size: number): void {
    const fd = this.openFd();
    fs.ftruncateSync(fd, size);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    this.fd = null;
    try {
      fs.renameSync(this.temp, this.file);
    } catch (err) {
      fs.rmSync(this.temp, { force: true });
      throw cannotWrite(this.shownAs, err);
    }
  }

  /** Removes the temporary file (after a failure); the target is untouched. */
  discard(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.temp, { force: true });
  }

  private openFd(): number {
    if (this.fd === null) throw new Error(`image ${this.file} is already finished`);
    return this.fd;
  }
}

/** Why an output image cannot be written, in the user's terms (its directory, its permissions). */
function cannotWrite(file: string, err: unknown): EngineError {
  const code = (err as NodeJS.ErrnoException).code;
  const dir = path.dirname(path.resolve(file));
  const reason =
    code === 'ENOENT' ? (fs.existsSync(dir) ? `no file can be made in ${dir}` : `no directory ${dir}`)
    : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
    : code === 'EISDIR' ? 'it is a directory'
    : code === 'EROFS' ? 'read-only file system'
    : code === 'ENOSPC' ? 'no space left on the device'
    : (err as Error).message;
  return new EngineError(`cannot write image '${file}': ${reason}`);
}
