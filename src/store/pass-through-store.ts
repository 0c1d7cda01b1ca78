// The base of every store that wraps one other store (a fault injector, and
// later checksums, caching, ...): it forwards everything to `inner`, so a
// wrapper writes only what it changes, as an nbdkit filter implements only the
// callbacks it changes and the rest go to `next`. Every operation but close
// passes through one hook, `call`: a wrapper that acts on all of them (faults,
// delays, metrics, retries) overrides that alone.
//
// `description` and `consistency` are the inner store's: a wrapper that
// changes what a conditional put promises (one that retries puts, say) must
// override `consistency` and say why.

import type { ReadRange, ObjectInfo, ObjectStore, PutOptions, StoreConsistency } from './object-store.js';

/** The operations that pass through PassThroughStore.call. */
export type StoreOp =
  | 'createContainer'
  | 'deleteContainer'
  | 'listContainers'
  | 'put'
  | 'get'
  | 'head'
  | 'delete'
  | 'list';

export class PassThroughStore implements ObjectStore {
  readonly inner: ObjectStore;

  constructor(inner: ObjectStore) {
    this.inner = inner;
  }

  get description(): string {
    return this.inner.description;
  }

  get consistency(): StoreConsistency {
    return this.inner.consistency;
  }

  /**
   * Every operation but close runs through here: `next` performs `op` on the
   * inner store, and what it returns or throws is the operation's result. An
   * override may run code before and after it, skip it (throw instead) or
   * change its result. A listing passes through once, for its first page (a
   * request for a first page is where a store's listing starts); the
   * following pages come straight from the inner store.
   */
  protected call<T>(_op: StoreOp, next: () => Promise<T>): Promise<T> {
    return next();
  }

  createContainer(container: string): Promise<void> {
    return this.call('createContainer', () => this.inner.createContainer(container));
  }

  deleteContainer(container: string): Promise<void> {
    return this.call('deleteContainer', () => this.inner.deleteContainer(container));
  }

  listContainers(prefix: string): Promise<string[]> {
    return this.call('listContainers', () => this.inner.listContainers(prefix));
  }

  put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    return this.call('put', () => this.inner.put(container, name, data, options));
  }

  get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    return this.call('get', () => this.inner.get(container, name, range));
  }

  head(container: string, name: string): Promise<ObjectInfo | null> {
    return this.call('head', () => this.inner.head(container, name));
  }

  delete(container: string, name: string): Promise<void> {
    return this.call('delete', () => this.inner.delete(container, name));
  }

  async *list(container: string, prefix?: string): AsyncIterable<ObjectInfo> {
    const pages = this.inner.list(container, prefix)[Symbol.asyncIterator]();
    let finished = false;
    try {
      let step = await this.call('list', () => pages.next());
      while (!step.done) {
        yield step.value;
        step = await pages.next();
      }
      finished = true;
    } finally {
      // A consumer that stops early, or a hook that threw: let the inner listing go.
      if (!finished) await pages.return?.();
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
