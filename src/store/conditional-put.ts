// Create-if-absent for the callers that take a lock with it (volume creation,
// version commits): on a store whose conditional put is atomic, the put
// itself; on one whose is not (Swift: StoreConsistency), the put and then a
// read-back, so that a racing put that replaced ours is noticed.

import { setTimeout as sleep } from 'node:timers/promises';
import { StoreError, type ObjectStore, type PutOptions } from './object-store.js';

/** How long after its put the object is read back: a racing put started at the same instant has landed by then. */
export const READ_BACK_DELAY_MS = 50;

/**
 * Puts data under name only if no object has that name. Success means this
 * call won, as far as the store can tell: on a store whose conditional put is
 * not atomic, the object is read back a moment later and must still be ours
 * (its ETag is ours), else StoreError('conflict'). That narrows the window in
 * which two callers both win to a racing put that lands after the read-back,
 * but does not close it (Swift has no compare-and-swap). Errors as put's; an
 * object gone by the read-back is a 'conflict' too (someone else is acting
 * on the name), and a read-back that fails otherwise leaves it unknown
 * whether this call won, as an 'unreachable' put does.
 */
export async function putIfAbsent(
  store: ObjectStore,
  container: string,
  name: string,
  data: Uint8Array,
  options: Omit<PutOptions, 'ifNoneMatch'> = {},
): Promise<{ etag: string }> {
  const put = await store.put(container, name, data, { ...options, ifNoneMatch: true });
  if (store.consistency.atomicConditionalPut) return put;
  await sleep(READ_BACK_DELAY_MS);
  const now = await store.head(container, name);
  if (now?.etag !== put.etag) {
    throw new StoreError(
      'conflict',
      `object ${container}/${name} was ${now ? 'replaced by a concurrent put' : 'deleted'} right after it was written (${store.description})`,
    );
  }
  return put;
}
