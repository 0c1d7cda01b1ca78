// The object layer: the one interface every store (Swift, a local directory,
// a mirror of several, a fault injector for tests) implements. It knows
// nothing of volumes, chunks or SCSI.

/** A half-open byte range [start, end). */
export interface ByteRange {
  start: number;
  end: number;
}

export interface ObjectInfo {
  name: string;
  size: number;
  /** Hex MD5 of the content, as Swift reports it. */
  etag: string;
}

export interface PutOptions {
  /**
   * Hex MD5 of the data; computed when absent. The store verifies it. A
   * promise lets the upload start while the hash is still being computed:
   * the store then compares it with what it stored once both are known.
   */
  md5?: string | Promise<string>;
  /** Fail with StoreError('conflict') if the object already exists. */
  ifNoneMatch?: boolean;
  contentType?: string;
}

export type StoreErrorKind =
  | 'not-found' // the object or container does not exist
  | 'conflict' // ifNoneMatch and it exists; or a container that is not empty
  | 'auth' // credentials rejected
  | 'unreachable' // connection errors, timeouts, 5xx after the retry budget
  | 'checksum' // data did not match its MD5
  | 'invalid' // a request the store refuses (bad name, bad range)
  | 'other';

export class StoreError extends Error {
  readonly kind: StoreErrorKind;
  constructor(kind: StoreErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
    this.kind = kind;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StoreError && err.kind === 'not-found';
}

export interface ObjectStore {
  /** Human-readable location, for messages ("swift http://127.0.0.1:8080/v1/AUTH_test"). */
  readonly description: string;

  /** Creates the container; succeeds if it already exists. */
  createContainer(container: string): Promise<void>;
  /** Deletes an empty container; 'not-found' is not an error; 'conflict' if not empty. */
  deleteContainer(container: string): Promise<void>;
  /** Lists containers whose names start with prefix, in name order, all pages. */
  listContainers(prefix: string): Promise<string[]>;

  /** Stores data under name; returns the store's ETag (hex MD5). */
  put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }>;
  /**
   * Reads the whole object, or the given range of it. A whole read is
   * verified against the ETag. Throws StoreError('not-found') if absent.
   */
  get(container: string, name: string, range?: ByteRange): Promise<Buffer>;
  /** Object metadata, or null if absent. */
  head(container: string, name: string): Promise<ObjectInfo | null>;
  /** Deletes the object; an absent object is not an error. */
  delete(container: string, name: string): Promise<void>;
  /** Objects whose names start with prefix, in name order, across all pages. */
  list(container: string, prefix?: string): AsyncIterable<ObjectInfo>;

  /** Releases connections. */
  close(): Promise<void>;
}
