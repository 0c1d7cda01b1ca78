// What the daemon serves: a volume seen as a disk with a volatile write
// cache. Offsets and lengths are in bytes and multiples of 512; the caller
// (the protocol layer) has already checked they lie inside the device.

export interface BlockDevice {
  /** Size in bytes (a multiple of 512). */
  readonly size: number;
  /** Reads length bytes at offset. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Writes data at offset; with fua, durable before it resolves. */
  write(offset: number, data: Uint8Array, options?: { fua?: boolean }): Promise<void>;
  /** Makes every write that resolved before this call durable. */
  flush(): Promise<void>;
  /** Deallocates the range: it reads back as zeros afterwards. */
  unmap(offset: number, length: number): Promise<void>;
}

/** Where a device's local blocks are, for a client that reads and writes them itself (doc/protocol.md, "Direct I/O"). */
export interface DirectSession {
  /** The file holding the blocks, at their volume offsets. */
  dataPath: string;
  /** The shared map saying which blocks may be read or written there. */
  mapPath: string;
  /** Ends the session (the client's connection closed). */
  close(): void;
}

/** A device whose local blocks a client on the same host may access directly (optional). */
export interface DirectAccess {
  openDirect(): DirectSession;
}

export function canOpenDirect(d: BlockDevice): d is BlockDevice & DirectAccess {
  return typeof (d as Partial<DirectAccess>).openDirect === 'function';
}
