// One engine thread of serve (engine-threads.ts has the why): its own store,
// engine, gateway cache and block server, a LocalVolumeHost answering the
// main thread's calls, and the bs_swift connections the main thread hands it.
import { parentPort, workerData } from 'node:worker_threads';
import { openStore } from '../config/store-config.js';
import { GatewayCache } from '../engine/gateway-cache.js';
import { newEngine } from '../engine/new-engine.js';
import { BlockServer, type RequestEvent } from './block-server.js';
import { LocalVolumeHost } from './volume-host.js';
import { serializeError, type EngineThreadData, type FromThread, type ToThread } from './engine-threads.js';
import type { Log } from './serve-log.js';
import type { StoreRequest } from '../store/metered-store.js';

/** Metric events are sent in batches, at most this long after they happen (and before every reply to view). */
const METRICS_FLUSH_MS = 250;

const data = workerData as EngineThreadData;
const port = parentPort!;
const send = (msg: FromThread): void => port.postMessage(msg);
const log: Log = (message, fields) => send({ op: 'log', message, ...(fields ? { fields } : {}) });

let requests: RequestEvent[] = [];
let storeRequests: Array<[string, StoreRequest]> = [];
function flushMetrics(): void {
  if (requests.length === 0 && storeRequests.length === 0) return;
  send({ op: 'metrics', requests, store: storeRequests });
  requests = [];
  storeRequests = [];
}
const metricsTimer = data.metrics ? setInterval(flushMetrics, METRICS_FLUSH_MS) : null;
metricsTimer?.unref();

async function main(): Promise<void> {
  const cache = GatewayCache.open(data.stateDir, data.cacheBudget, data.index);
  const meter = data.metrics ? (store: string) => (r: StoreRequest) => void storeRequests.push([store, r]) : undefined;
  let store;
  try {
    ({ store } = await openStore(process.env, data.stateDir, data.config, undefined, { log: (m, level) => log(m, { level }) }, meter ? { meter } : {}));
  } catch (err) {
    cache.close();
    throw err;
  }
  const engine = await newEngine(store, data, cache);
  const host = new LocalVolumeHost({ engine, log, cache, thread: data.index });
  const hints = new Map<string, number>();
  const blocks = new BlockServer({
    openDevice: (volume) => host.device(volume),
    describeDevice: (volume) => host.describe(volume, hints.get(volume)),
    log: (m) => log(m),
    onRequest: data.metrics ? (e) => void requests.push(e) : undefined,
  });

  const call = async (method: string, args: unknown[]): Promise<unknown> => {
    switch (method) {
      case 'describe':
        return host.describe(args[0] as string, args[1] as number | undefined);
      case 'open':
        return host.open(args[0] as string);
      case 'close':
        hints.delete(args[0] as string);
        return host.close(args[0] as string);
      case 'startSnapshot':
        return host.startSnapshot(args[0] as string, args[1] as string);
      case 'snapshotJobs':
        return host.snapshotJobs(args[0] as string);
      case 'waitSnapshot':
        return host.waitSnapshot(args[0] as string, args[1] as string, args[2] as string, args[3] as number);
      case 'deleteSnapshot':
        return host.deleteSnapshot(args[0] as string, args[1] as string);
      case 'resync':
        return host.resync(args[0] as string, args[1] as string | undefined);
      case 'view':
        flushMetrics();
        return host.view();
      case 'drain':
        return host.drain();
      case 'stop':
        await blocks.close();
        await host.stop();
        await store.close();
        cache.close();
        if (metricsTimer) clearInterval(metricsTimer);
        flushMetrics();
        return undefined;
      default:
        throw new Error(`engine thread: unknown call '${method}'`);
    }
  };

  port.on('message', (msg: ToThread) => {
    if (msg.op === 'connection') {
      if (msg.sizeHint !== undefined) hints.set(msg.volume, msg.sizeHint);
      blocks.adopt(msg.fd, Buffer.from(msg.received.buffer, msg.received.byteOffset, msg.received.byteLength));
      return;
    }
    call(msg.method, msg.args).then(
      (value) => send({ op: 'reply', id: msg.id, value }),
      (err: unknown) => send({ op: 'error', id: msg.id, error: serializeError(err) }),
    );
  });
  send({ op: 'ready', description: store.description });
}

main().catch((err: unknown) => send({ op: 'failed', error: serializeError(err) }));
