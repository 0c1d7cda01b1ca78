// The object layer: the one interface every store (Swift, a local directory,
// a mirror of several, a fault injector for tests) implements. It knows
// nothing of volumes, chunks or SCSI.

/** A half-open byte range [start, end). */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * What a get reads: one range, or several of one object (ascending, not
 * overlapping, none empty), which a store fetches in one request where it can
 * (Swift: one GET with a multi-range header); their bytes come back
 * concatenated, in order.
 */
export type ReadRange = ByteRange | readonly ByteRange[];

/** The ranges of a ReadRange, as a list. */
export function rangesOf(range: ReadRange): readonly ByteRange[] {
  return 'start' in range ? [range] : range;
}

/** How many bytes a ReadRange reads. */
export function rangeLength(range: ReadRange): number {
  let n = 0;
  for (const r of rangesOf(range)) n += r.end - r.start;
  return n;
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
  /**
   * Fail with StoreError('conflict') if the object already exists. Whether
   * two such puts racing for one name can both succeed is the store's
   * `consistency.atomicConditionalPut`.
   */
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

/**
 * Puts an object into a container of swiftvol's own that is made on first
 * use (the catalog index, the holders' heartbeats): a put into a missing
 * container creates it and puts again.
 */
export async function putCreatingContainer(store: ObjectStore, container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
  try {
    await store.put(container, name, data, options);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await store.createContainer(container);
    await store.put(container, name, data, options);
  }
}

/**
 * What a store promises beyond the operations' own contracts: the properties
 * the layers above build their locking on. A wrapper that does not change a
 * property passes it through; one made of several stores (a mirror) declares
 * only what all of them give.
 */
export interface StoreConsistency {
  /**
   * Whether a conditional put (`ifNoneMatch`) is an atomic create-if-absent:
   * of any number of concurrent conditional puts of one name, at most one
   * returns success (the others fail with 'conflict', or another error), and
   * the object it stored is not replaced by another conditional put: a
   * conditional put that returned success is a won race, with nothing more to
   * check. Leases (src/engine/lease.ts), volume creation and version commits
   * (VolumeCatalog.begin, VolumeCatalog.commit) take their locks this way.
   *
   * false: the condition is checked but not atomically with the write. Swift
   * checks If-None-Match when a PUT starts, before its body arrives; two PUTs
   * of one name in flight at once can both succeed, the later overwriting the
   * earlier. A caller that must know it won reads the object back and compares
   * (which narrows the window to the time of that read, but does not close it).
   */
  readonly atomicConditionalPut: boolean;
}

/**
 * The object layer's operations. Contract shared by all of them (each store
 * maps its own failures onto these kinds; test/fixtures/store-contract.ts
 * checks it on every store):
 * - Names are checked first (src/store/names.ts): an empty container name or
 *   one with '/', NUL, '.', '..', more than 256 bytes; an empty object name or
 *   one with NUL, more than 1024 bytes; or badly formed Unicode: 'invalid',
 *   and nothing is sent or changed.
 * - Any operation may fail with 'unreachable' (the store did not answer within
 *   its timeouts and retries: the operation may or may not have happened),
 *   'auth' (credentials rejected or access denied) or 'other' (an answer the
 *   store cannot map); an operation that changes something and fails this
 *   way may have taken effect.
 * - Every error is a StoreError, with a message that says what failed
 *   (container/name) and can be shown as it is.
 * - Calls may run concurrently; a store serialises nothing but what its own
 *   contract says (see StoreConsistency).
 */
export interface ObjectStore {
  /** Human-readable location, for messages ("swift http://127.0.0.1:8080/v1/AUTH_test"). Never empty. */
  readonly description: string;
  /** What its conditional put promises; see StoreConsistency. Constant for the life of the store. */
  readonly consistency: StoreConsistency;

  /** Creates the container; succeeds if it already exists (its objects stay). */
  createContainer(container: string): Promise<void>;
  /**
   * Deletes an empty container. An absent container is not an error; one that
   * still holds objects fails with 'conflict' and is left as it is.
   */
  deleteContainer(container: string): Promise<void>;
  /**
   * Lists the names of containers that start with prefix ('' for all), in
   * byte order of their UTF-8 names, all pages. An account or root that was
   * never written to has no containers: [] rather than 'not-found'.
   */
  listContainers(prefix: string): Promise<string[]>;

  /**
   * Stores data under name, replacing an object of that name unless
   * `ifNoneMatch`. Returns the store's ETag (hex MD5 of data, lower case).
   * On success the object is complete: a later get returns exactly these
   * bytes (or a newer object's), never a mix, and a failed put never leaves a
   * partial object under the name. Errors: 'not-found' if the container does
   * not exist; 'conflict' if `ifNoneMatch` and the object exists (see
   * StoreConsistency for concurrent puts); 'checksum' if data does not match
   * a given md5 (a string md5 is checked before anything is stored; one that
   * arrives as a promise may be checked only after the object was stored,
   * which then stays: callers use write-once names that nothing refers to
   * yet); 'invalid' for an md5 that is not 32 hex digits.
   */
  put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }>;
  /**
   * Reads the whole object, or the bytes [start, end) of it (an empty range
   * reads nothing but still checks that the object exists and that start is
   * not past its end), or those of several ranges of it (ReadRange), in one
   * request where the store can. Returns exactly the bytes asked for. A whole read is
   * verified against the ETag: 'checksum' when the stored bytes do not match
   * it (a ranged read is not: callers check ranges with their own sums), or
   * when the store hands back other bytes than were asked for. Errors besides:
   * 'not-found' if the object or its container
   * is absent; 'invalid' for a range with start > end, a negative or
   * non-integer bound, or end past the end of the object, and for a list of
   * ranges that is empty, holds an empty range, or is not ascending and
   * disjoint.
   */
  get(container: string, name: string, range?: ReadRange): Promise<Buffer>;
  /** The object's name, size and ETag, or null if it (or its container) is absent. Reads no data. */
  head(container: string, name: string): Promise<ObjectInfo | null>;
  /** Deletes the object; an absent object (or container) is not an error. */
  delete(container: string, name: string): Promise<void>;
  /**
   * The objects whose names start with prefix (all when absent), in byte
   * order of their UTF-8 names, across all pages, each with its size and
   * ETag. An object deleted while the listing runs may be left out; one put
   * meanwhile may or may not appear. 'not-found' if the container does not
   * exist (raised when iteration starts, or at the latest on the first page).
   */
  list(container: string, prefix?: string): AsyncIterable<ObjectInfo>;

  /** Releases connections; calls in flight may fail, and none may be made after. */
  close(): Promise<void>;
}
