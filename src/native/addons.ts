// The native addons built from native/ by scripts/setup (make -C native), with
// their TypeScript signatures. Each is loaded on first use, so that commands
// that never need one run without it, and a missing one says how to build it.
import { createRequire } from 'node:module';

export class NativeAddonError extends Error {
  override readonly name = 'NativeAddonError';
}

/** native/overlay_io.cc: file operations of the overlay that Node's fs lacks. */
export interface OverlayIo {
  punchHole(fd: number, offset: number, length: number): void;
  writeAligned(fd: number, data: Buffer, position: number, callback: (err: Error | null) => void): void;
  mapShared(fd: number, length: number): Buffer;
  takeBytes(map: Buffer, offset: number, length: number, out: Uint8Array): boolean;
  waitZero(map: Buffer, offset: number, timeoutMs: number): boolean;
  /** Where the buffer's memory starts within its 4 KiB page. */
  pageOffset(buffer: Buffer): number;
}

/** native/md5_digest.cc: MD5 fed a piece at a time on libuv's pool. */
export interface Md5Digest {
  md5Begin(): object;
  md5Update(context: object, bytes: Uint8Array, callback: (err: Error | null) => void): void;
  md5End(context: object): string;
}

/** native/crc32c.cc: CRC32C (Castagnoli), whole or per block (little-endian uint32 each). */
export interface Crc32c {
  crc32c(data: Uint8Array): number;
  blockSums(data: Uint8Array, blockSize: number): Buffer;
  /** -1 when every block matches sums (as blockSums gives them), else the first block that does not. */
  verifyBlocks(data: Uint8Array, blockSize: number, sums: Uint8Array): number;
}

/**
 * native/aes_gcm.cc: AES-256-GCM of 4 KiB blocks on libuv's pool, in the format
 * of src/engine/volume-key.ts (block i: nonce of 8 zero bytes then i big-endian,
 * no AAD, 16-byte tag; the last block may be short). The buffers must be left
 * alone until the callback.
 */
export interface AesGcm {
  /** Seals each block of data into out (data itself, or memory apart from it) and its tag into tags (16 per block). */
  sealBlocks(key: Uint8Array, data: Uint8Array, out: Uint8Array, tags: Uint8Array, firstBlock: number, callback: (err: Error | null) => void): void;
  /** Opens each block of sealed into out; bad is -1 when every tag verifies, else the first block (in the range) that fails, where it stopped. */
  openBlocks(key: Uint8Array, sealed: Uint8Array, tags: Uint8Array, out: Uint8Array, firstBlock: number, callback: (err: Error | null, bad: number) => void): void;
}

/** native/malloc_tuning.cc: glibc malloc's thresholds, set in the running process. */
export interface MallocTuning {
  /** mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD; false when glibc refused either. */
  setThresholds(mmapThreshold: number, trimThreshold: number): boolean;
  /** malloc_trim(0): gives every whole free page of the heap back to the kernel; true if there were some. */
  trim(): boolean;
}

/** native/socket_handoff.cc: a socket given from one thread to another. */
export interface SocketHandoff {
  /** A new descriptor (close-on-exec) for the same open socket. */
  dupFd(fd: number): number;
}

const loaded = new Map<string, unknown>();

function load<T>(name: string): T {
  let addon = loaded.get(name);
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)(`../../../native/${name}.node`);
    } catch (err) {
      throw new NativeAddonError(`the native addon native/${name}.node cannot be loaded (${(err as Error).message.split('\n')[0]}): run scripts/setup`);
    }
    loaded.set(name, addon);
  }
  return addon as T;
}

export function overlayIo(): OverlayIo {
  return load<OverlayIo>('overlay_io');
}

export function md5Digest(): Md5Digest {
  return load<Md5Digest>('md5_digest');
}

export function crc32c(): Crc32c {
  return load<Crc32c>('crc32c');
}

export function aesGcm(): AesGcm {
  return load<AesGcm>('aes_gcm');
}

export function mallocTuning(): MallocTuning {
  return load<MallocTuning>('malloc_tuning');
}

export function socketHandoff(): SocketHandoff {
  return load<SocketHandoff>('socket_handoff');
}

/** The alignment of alignedBuffer's memory: a page, which O_DIRECT asks of the memory it writes from. */
export const PAGE_ALIGN = 4096;
/**
 * Writes at least this large go through O_DIRECT (the gateway cache's fills),
 * so buffers this large that may be written so are made page-aligned (a
 * fetched body); smaller ones stay in Node's pool.
 */
export const DIRECT_IO_MIN = 64 * 1024;

/**
 * length bytes (uninitialized) that start on a page boundary, so that a
 * write of them through O_DIRECT needs no bounce copy (writeAligned): a view
 * of a buffer one page larger. It owns its memory (never Node's shared pool),
 * so it can be transferred to another thread.
 */
export function alignedBuffer(length: number): Buffer {
  const room = Buffer.allocUnsafeSlow(length + PAGE_ALIGN);
  const skip = (PAGE_ALIGN - overlayIo().pageOffset(room)) % PAGE_ALIGN;
  return room.subarray(skip, skip + length);
}

/** length bytes (uninitialized) for data that may be written with O_DIRECT: page-aligned from DIRECT_IO_MIN on, else from Node's pool. */
export function ioBuffer(length: number): Buffer {
  return length >= DIRECT_IO_MIN ? alignedBuffer(length) : Buffer.allocUnsafe(length);
}
