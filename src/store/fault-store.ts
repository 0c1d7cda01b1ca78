// A store that wraps another and misbehaves on request, for tests of the
// layers above: fail the next N calls, delay calls, corrupt what get returns.
// A PassThroughStore: its faults and delays live in the one hook every
// operation passes through (a listing meets them when it starts, as a first
// page request would); get adds the corruption. Its consistency is the inner
// store's: a fault makes a call fail, never lets two conditional puts win.

import { setTimeout as sleep } from 'node:timers/promises';
import { StoreError, rangesOf, type ReadRange, type StoreErrorKind } from './object-store.js';
import { PassThroughStore, type StoreOp } from './pass-through-store.js';

export type { StoreOp } from './pass-through-store.js';

export interface FailOptions {
  /** Which operations the rule applies to; all when absent. */
  ops?: StoreOp[];
  /**
   * Let the call reach the inner store, then fail: the operation happened but
   * its reply was lost (a PUT that landed, a DELETE that took effect).
   */
  after?: boolean;
  message?: string;
}

interface FailRule {
  remaining: number;
  kind: StoreErrorKind;
  ops: Set<StoreOp> | null;
  after: boolean;
  message: string | undefined;
}

export class FaultStore extends PassThroughStore {
  private rules: FailRule[] = [];
  private delays = new Map<StoreOp | '*', number>();
  private corruptGets = 0;
  private corruptNames: RegExp | null = null;
  private readonly counts = new Map<StoreOp, number>();

  override get description(): string {
    return `faulty ${this.inner.description}`;
  }

  /** The next `count` calls (of `options.ops`) fail with StoreError(kind). Rules queue up. */
  failNext(count: number, kind: StoreErrorKind = 'unreachable', options: FailOptions = {}): void {
    this.rules.push({
      remaining: count,
      kind,
      ops: options.ops ? new Set(options.ops) : null,
      after: options.after ?? false,
      message: options.message,
    });
  }

  /** Delays every call of `ops` (all when absent) by `ms`; 0 removes the delay. */
  setDelay(ms: number, ops?: StoreOp[]): void {
    for (const op of ops ?? ['*' as const]) {
      if (ms > 0) this.delays.set(op, ms);
      else this.delays.delete(op);
    }
  }

  /**
   * The next `count` successful gets (of objects whose names match `names`,
   * all when absent) return data with one byte flipped (in each range, of a
   * get of several): corruption in transit, above the store's own checks.
   */
  corruptNextGets(count: number, names?: RegExp): void {
    this.corruptGets += count;
    this.corruptNames = names ?? null;
  }

  /** Drops all rules, delays and pending corruption. */
  reset(): void {
    this.rules = [];
    this.delays.clear();
    this.corruptGets = 0;
    this.corruptNames = null;
  }

  /** How many times `op` was called (including failed calls). */
  calls(op: StoreOp): number {
    return this.counts.get(op) ?? 0;
  }

  private takeRule(op: StoreOp): FailRule | undefined {
    const rule = this.rules.find((r) => r.remaining > 0 && (r.ops === null || r.ops.has(op)));
    if (rule) {
      rule.remaining--;
      this.rules = this.rules.filter((r) => r.remaining > 0);
    }
    return rule;
  }

  /** Every operation (close aside) counts, waits out its delay, then meets the first rule that applies. */
  protected override async call<T>(op: StoreOp, next: () => Promise<T>): Promise<T> {
    this.counts.set(op, this.calls(op) + 1);
    const delay = this.delays.get(op) ?? this.delays.get('*');
    if (delay) await sleep(delay);
    const rule = this.takeRule(op);
    const fail = (): StoreError =>
      new StoreError(rule!.kind, rule!.message ?? `injected ${rule!.kind} fault in ${op} (${this.inner.description})`);
    if (rule && !rule.after) throw fail();
    const result = await next();
    if (rule) throw fail();
    return result;
  }

  override async get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    const data = await super.get(container, name, range);
    if (this.corruptGets > 0 && (this.corruptNames === null || this.corruptNames.test(name))) {
      this.corruptGets--;
      // A copy: the inner store may hand out a buffer it keeps.
      if (data.length === 0) return Buffer.from([0]);
      const bad = Buffer.from(data);
      // the middle byte of each range asked for (of several: the data, and what checks it)
      let at = 0;
      for (const r of range ? rangesOf(range) : [{ start: 0, end: data.length }]) {
        bad[at + ((r.end - r.start) >> 1)] ^= 0xff;
        at += r.end - r.start;
      }
      return bad;
    }
    return data;
  }
}
