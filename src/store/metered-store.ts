// A store layer that tells a meter of every request: its operation, how it
// ended (ok, or the StoreError kind), how long it took and the bytes it moved.
// It knows nothing of Prometheus: serve's metrics (src/daemon/metrics.ts)
// are one meter. serve puts one around each leaf store, so a mirror's
// members are counted apart.
import { StoreError, type ReadRange, type ObjectStore, type PutOptions } from './object-store.js';
import { PassThroughStore, type StoreOp } from './pass-through-store.js';

export interface StoreRequest {
  op: StoreOp;
  /** 'ok', or the kind of the StoreError it failed with ('other' for any other error). */
  outcome: string;
  seconds: number;
  /** Bytes sent (a put's data) and received (a get's), of requests that succeeded. */
  sent: number;
  received: number;
}

export type StoreMeter = (request: StoreRequest) => void;

export class MeteredStore extends PassThroughStore {
  constructor(
    inner: ObjectStore,
    private readonly meter: StoreMeter,
  ) {
    super(inner);
  }

  protected override call<T>(op: StoreOp, next: () => Promise<T>): Promise<T> {
    return this.measure(op, next, 0, () => 0);
  }

  // put and get go to the inner store themselves (not through call), to count their bytes
  override put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    return this.measure('put', () => this.inner.put(container, name, data, options), data.length, () => 0);
  }

  override get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    return this.measure('get', () => this.inner.get(container, name, range), 0, (data) => data.length);
  }

  private async measure<T>(op: StoreOp, next: () => Promise<T>, sent: number, received: (result: T) => number): Promise<T> {
    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const result = await next();
      this.meter({ op, outcome: 'ok', seconds: seconds(), sent, received: received(result) });
      return result;
    } catch (err) {
      this.meter({ op, outcome: err instanceof StoreError ? err.kind : 'other', seconds: seconds(), sent: 0, received: 0 });
      throw err;
    }
  }
}
