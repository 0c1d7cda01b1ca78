// The overlay's shared map: the file bs_swift maps to serve reads and writes
// of local blocks itself, with pread/pwrite on the overlay file, instead of
// sending them to the daemon (layout and rules: doc/protocol.md, "Direct
// I/O"). The daemon owns the valid bits and the per-chunk write permission;
// bs_swift owns the dirty bits of its direct writes, which the daemon takes
// (atomically) into the overlay's own bitmaps before it flushes or freezes.
import fs from 'node:fs';
import { overlayIo } from '../native/addons.js';
import { BLOCK_SIZE } from '../format/volume-format.js';

// The header's layout is bs_swift's too: bs_swift/swift_protocol.h (SWM_*) is
// its one source, and test/wire-constants.test.ts checks that these equal it.
export const MAP_MAGIC = 0x4d565753; // "SWVM" on disk
export const MAP_VERSION = 1;
export const MAP_HEADER_LENGTH = 80;
/** Offsets of the header's fields (doc/protocol.md, "Direct I/O"). */
export const MapField = {
  MAGIC: 0,
  VERSION: 4,
  SIZE: 8,
  BLOCK_SIZE: 16,
  OBJECT_SIZE: 20,
  CHUNKS: 24,
  /** u32: direct writes in progress (atomic counter) */
  INFLIGHT: 32,
  ALLOW: 40,
  TOUCHED: 48,
  VALID: 56,
  DIRTY: 64,
  LENGTH: 72,
  /** u64 counters of bs_swift's direct I/O, beyond the header (for serve's metrics) */
  READ_OPS: 80,
  READ_BYTES: 88,
  WRITE_OPS: 96,
  WRITE_BYTES: 104,
} as const;
const PAGE = 4096;

/** What bs_swift read and wrote in the overlay file by itself. */
export interface DirectIoCounters {
  readOps: number;
  readBytes: number;
  writeOps: number;
  writeBytes: number;
}
/** How long a freeze waits for direct writes in progress (they are pwrites into the page cache). */
const QUIESCE_TIMEOUT_MS = 5000;

interface Layout {
  chunks: number;
  bytesPerChunk: number;
  allow: number;
  touched: number;
  valid: number;
  dirty: number;
  length: number;
}

function layoutOf(size: number, objectSize: number): Layout {
  const chunks = Math.ceil(size / objectSize);
  const bytesPerChunk = objectSize / BLOCK_SIZE / 8;
  const pages = (n: number): number => Math.ceil(n / PAGE) * PAGE;
  const allow = PAGE;
  const touched = allow + pages(chunks);
  const valid = touched + pages(chunks);
  const dirty = valid + pages(chunks * bytesPerChunk);
  return { chunks, bytesPerChunk, allow, touched, valid, dirty, length: dirty + pages(chunks * bytesPerChunk) };
}

/** The map's header (doc/protocol.md, "Direct I/O"), with the in-progress counter at 0. */
function encodeHeader(size: number, objectSize: number, layout: Layout): Buffer {
  const header = Buffer.alloc(MAP_HEADER_LENGTH);
  header.writeUInt32LE(MAP_MAGIC, MapField.MAGIC);
  header.writeUInt32LE(MAP_VERSION, MapField.VERSION);
  header.writeBigUInt64LE(BigInt(size), MapField.SIZE);
  header.writeUInt32LE(BLOCK_SIZE, MapField.BLOCK_SIZE);
  header.writeUInt32LE(objectSize, MapField.OBJECT_SIZE);
  header.writeBigUInt64LE(BigInt(layout.chunks), MapField.CHUNKS);
  header.writeBigUInt64LE(BigInt(layout.allow), MapField.ALLOW);
  header.writeBigUInt64LE(BigInt(layout.touched), MapField.TOUCHED);
  header.writeBigUInt64LE(BigInt(layout.valid), MapField.VALID);
  header.writeBigUInt64LE(BigInt(layout.dirty), MapField.DIRTY);
  header.writeBigUInt64LE(BigInt(layout.length), MapField.LENGTH);
  return header;
}

export class DirectMap {
  readonly path: string;
  private readonly layout: Layout;
  private readonly map: Buffer;
  /** Open DIRECT sessions (bs_swift LUs); writers can only be in progress while there are some. */
  private sessions = 0;

  private constructor(path: string, layout: Layout, map: Buffer) {
    this.path = path;
    this.layout = layout;
    this.map = map;
  }

  /**
   * Opens the map at path, creating it if it is missing or was made for
   * another geometry. An existing map is reused in place (never truncated:
   * a bs_swift of an earlier daemon may still have it mapped); its dirty
   * bits are what direct writes left behind, for takeDirty() to collect.
   */
  static open(path: string, size: number, objectSize: number): DirectMap {
    const layout = layoutOf(size, objectSize);
    const header = encodeHeader(size, objectSize, layout);
    if (!DirectMap.matches(path, header, layout)) {
      const tmp = `${path}.new`;
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.ftruncateSync(fd, layout.length);
        fs.writeSync(fd, header, 0, header.length, 0);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, path);
    }
    const fd = fs.openSync(path, 'r+');
    try {
      return new DirectMap(path, layout, overlayIo().mapShared(fd, layout.length));
    } finally {
      fs.closeSync(fd); // the mapping stays valid
    }
  }

  /** Whether the file at path is a map of this geometry (the in-progress counter may hold anything). */
  private static matches(path: string, header: Buffer, layout: Layout): boolean {
    const found = Buffer.alloc(header.length);
    try {
      const fd = fs.openSync(path, 'r');
      try {
        if (fs.fstatSync(fd).size !== layout.length || fs.readSync(fd, found, 0, found.length, 0) !== found.length) return false;
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return false;
    }
    const same = (from: number, to: number): boolean => found.subarray(from, to).equals(header.subarray(from, to));
    return same(0, MapField.INFLIGHT) && same(MapField.INFLIGHT + 4, header.length);
  }

  /** bs_swift's counters of its direct I/O (it adds to them; they live as long as the map file). */
  directIo(): DirectIoCounters {
    const at = (field: number): number => Number(this.map.readBigUInt64LE(field));
    return { readOps: at(MapField.READ_OPS), readBytes: at(MapField.READ_BYTES), writeOps: at(MapField.WRITE_OPS), writeBytes: at(MapField.WRITE_BYTES) };
  }

  /** Replaces chunk's valid bits (at start-up, from the overlay's bitmaps). */
  setChunkValid(chunk: number, valid: Uint8Array): void {
    this.map.set(valid.subarray(0, this.layout.bytesPerChunk), this.layout.valid + chunk * this.layout.bytesPerChunk);
  }

  /** Sets or clears the valid bits of blocks [first, end). Set them only once the blocks' data is in the file. */
  setValid(first: number, end: number, valid: boolean): void {
    const base = this.layout.valid;
    for (let block = first; block < end; block++) {
      const at = base + (block >> 3);
      const mask = 1 << (block & 7);
      this.map[at] = valid ? this.map[at]! | mask : this.map[at]! & ~mask;
    }
  }

  /** Clears every valid bit (the overlay dropped all its blocks). */
  clearValid(): void {
    this.map.fill(0, this.layout.valid, this.layout.valid + this.layout.chunks * this.layout.bytesPerChunk);
  }

  /** Lets bs_swift write directly to every chunk except those in `except`. */
  allowWrites(except?: ReadonlySet<number>): void {
    const { allow, chunks } = this.layout;
    if (!except || except.size === 0) {
      this.map.fill(1, allow, allow + chunks);
      return;
    }
    for (let c = 0; c < chunks; c++) this.map[allow + c] = except.has(c) ? 0 : 1;
  }

  /**
   * Stops direct writes to every chunk and waits until those in progress
   * have finished (bs_swift counts itself in before it checks the permission,
   * so after this no direct write can change the overlay until allowWrites()).
   */
  stopWrites(): void {
    const { allow, chunks } = this.layout;
    this.map.fill(0, allow, allow + chunks);
    if (this.sessions === 0) return;
    if (!overlayIo().waitZero(this.map, MapField.INFLIGHT, QUIESCE_TIMEOUT_MS)) {
      this.allowWrites();
      throw new Error(`direct writes to the overlay did not finish within ${QUIESCE_TIMEOUT_MS / 1000} s`);
    }
  }

  /**
   * Takes the dirty bits direct writes have set since the last call, per
   * chunk, clearing them in the map. A chunk's touched flag is cleared before
   * its bits are read, and bs_swift sets it after its bits: a write that
   * races with this call is taken now or at the next call, never lost.
   */
  takeDirty(): Map<number, Uint8Array> {
    const { touched, chunks, dirty, bytesPerChunk } = this.layout;
    const flags = Buffer.allocUnsafe(chunks);
    const out = new Map<number, Uint8Array>();
    if (!overlayIo().takeBytes(this.map, touched, chunks, flags)) return out;
    for (let c = 0; c < chunks; c++) {
      if (flags[c] === 0) continue;
      const bits = new Uint8Array(bytesPerChunk);
      if (overlayIo().takeBytes(this.map, dirty + c * bytesPerChunk, bytesPerChunk, bits)) out.set(c, bits);
    }
    return out;
  }

  /** A bs_swift LU started direct I/O; call the result when its session ends. */
  openSession(): () => void {
    this.sessions++;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      // With no session left nobody can be inside a direct write: a count
      // left by a tgtd that died in one is reset.
      if (--this.sessions === 0) this.map.writeUInt32LE(0, MapField.INFLIGHT);
    };
  }
}
