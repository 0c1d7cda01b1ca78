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
