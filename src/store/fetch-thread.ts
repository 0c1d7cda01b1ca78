// The worker side of FetchThreads (src/store/threaded-store.ts): builds the
// stores it is told of and runs their GETs, handing each body back by
// transfer, not copy.
import { parentPort } from 'node:worker_threads';
import { StoreError, type ReadRange, type StoreErrorKind } from './object-store.js';
import { swiftStoreFromEnv, type SwiftStore } from './swift-store.js';
import type { StoreSpec } from './threaded-store.js';

export type FetchRequest =
  | { op: 'open'; store: number; spec: StoreSpec }
  | { op: 'close'; store: number }
  | { op: 'get'; id: number; store: number; container: string; name: string; range: ReadRange | undefined };

export type FetchReply =
  | { id: number; ok: true; buffer: ArrayBuffer; offset: number; length: number }
  | { id: number; ok: false; kind: StoreErrorKind; message: string };

const stores = new Map<number, SwiftStore>();
const port = parentPort;

async function get(req: Extract<FetchRequest, { op: 'get' }>): Promise<void> {
  const store = stores.get(req.store);
  try {
    if (!store) throw new StoreError('other', `fetch thread: store ${req.store} is not open`);
    const data = await store.get(req.container, req.name, req.range);
    // Only a buffer that does not sit in Node's shared pool (a small one may) has its memory transferred:
    // the whole of it (a page-aligned body is a view of a slightly larger one, alignedBuffer).
    const owns = data.byteLength > Buffer.poolSize >>> 1;
    const out = owns ? data : new Uint8Array(data);
    const buffer = out.buffer as ArrayBuffer;
    port!.postMessage({ id: req.id, ok: true, buffer, offset: out.byteOffset, length: out.byteLength } satisfies FetchReply, [buffer]);
  } catch (err) {
    const e = err instanceof StoreError ? err : new StoreError('other', (err as Error).message ?? String(err));
    port!.postMessage({ id: req.id, ok: false, kind: e.kind, message: e.message } satisfies FetchReply);
  }
}

port?.on('message', (req: FetchRequest) => {
  switch (req.op) {
    case 'open': {
      // The calling thread built the same store from these settings, so they are valid; a
      // store that still fails to build leaves its GETs failing with 'not open'.
      try {
        const store = swiftStoreFromEnv(req.spec.settings, req.spec.options);
        if (store) stores.set(req.store, store);
      } catch {
        // see above
      }
      break;
    }
    case 'close':
      void stores.get(req.store)?.close();
      stores.delete(req.store);
      break;
    case 'get':
      void get(req);
      break;
  }
});
