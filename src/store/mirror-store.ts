// A store made of stores (doc/mirroring.md): every container lives on a set
// of member stores (Swift clusters), named in the container itself
// (`mirror/set/<n>.json`, written by this layer; the layers above never see
// `mirror/` objects). As hydra does for its backends:
// - writes go to every member of the set at once; a member that fails or
//   does not answer within the deadline is marked behind for that container
//   (durably: `mirror/behind/<member>` on the others) and left out of its
//   writes until a resync brings it level;
// - reads go to one member, the first of the set that is in sync, and move on
//   to the next on an error, on not-found, or when it has not answered within
//   the read deadline (a hedge: both run, the first answer wins);
// - a member that keeps timing out (koCount in a row) is routed around for
//   every container and probed in the background until it answers again.
// Objects are write-once, so a member that is behind lacks names: catching
// up copies the names it lacks (src/store/mirror-resync.ts), never diffs data.
// A container's commit objects (`commitPrefix`, the version tables) are what
// says how far a member is: a member whose latest commit is older than the
// newest is behind; two members holding different objects under one commit
// name are in split brain, which is reported and never merged.
import { StoreError, isNotFound, type ReadRange, type ObjectInfo, type ObjectStore, type PutOptions, type StoreConsistency } from './object-store.js';
import { checkContainerName, checkObjectName, compareNames } from './names.js';

export const MIRROR_PREFIX = 'mirror/';
const SET_PREFIX = 'mirror/set/';
const BEHIND_PREFIX = 'mirror/behind/';
/** A name no container has: a probe asks for it and expects 'absent'. */
const PROBE_CONTAINER = 'swiftvol-mirror-probe';

export const DEFAULT_DEADLINE_MS = 30_000;
export const DEFAULT_READ_DEADLINE_MS = 2_000;
export const DEFAULT_KO_COUNT = 3;
export const DEFAULT_PROBE_MS = 2_000;

/** A member's name, as a config section names it. */
export const MEMBER_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

export interface MirrorMember {
  readonly name: string;
  readonly store: ObjectStore;
}

export interface MirrorOptions {
  /** A write that has not answered within this long leaves its member out (ms; default 30 s). */
  deadlineMs?: number;
  /** A read that has not answered within this long is also sent to the next copy (ms; default 2 s). */
  readDeadlineMs?: number;
  /** Timeouts in a row after which a member is routed around and probed (default 3). */
  koCount?: number;
  /** How often a routed-around member is probed (ms; default 2 s). */
  probeMs?: number;
  /** Names under this prefix are a container's commits: written last, in order (default 'versions/'). */
  commitPrefix?: string;
  /** Where a new container lives when nothing else was asked for (default: every member). */
  defaultSet?: readonly string[];
  /**
   * Where the mirror says what it does: 'info' for a store's comings and
   * goings (serve logs them), 'warn' for what an operator must know of (a
   * store left out of writes, a copy repaired), which a CLI command shows.
   */
  log?: (message: string, level: 'info' | 'warn') => void;
}

export type MemberState = 'in-sync' | 'behind' | 'unreachable' | 'split-brain';

export interface MemberStatus {
  name: string;
  state: MemberState;
  /** Its newest commit object, if it has any (null: none; undefined: not known). */
  latest?: string | null;
  /** Why it is in this state, for messages. */
  reason?: string;
}

export interface MirrorStatus {
  container: string;
  /** The container's mirror set, in order of preference. */
  set: string[];
  stores: MemberStatus[];
}

/** What one member holds of a container, as its listings say. */
interface Survey {
  member: string;
  /** false: it has no such container. */
  present: boolean;
  /** Set records: name -> etag. */
  sets: string[];
  /** Members it records as behind. */
  behindMarks: string[];
  /** Commit objects: name -> etag. */
  commits: Map<string, string>;
}

interface ContainerState {
  set: string[];
  /** Left out of writes (and read last) until resynced. */
  behind: Map<string, string>;
  /** Members in split brain with another: their commits are refused. */
  split: Map<string, string>;
  /** Commits and a resync's last pass run one at a time. */
  lock: Promise<void>;
  /** Writes in flight (a member that rejoins waits for those that left it out). */
  pending: Set<Promise<unknown>>;
}

interface Health {
  down: boolean;
  timeouts: number;
  probe: NodeJS.Timeout | null;
}

class Timeout extends StoreError {
  constructor(member: string, what: string, ms: number) {
    super('unreachable', `store '${member}' did not answer ${what} within ${ms} ms`);
  }
}

/** Errors that say the request was wrong, not the member: the same on every copy. */
function callerFault(err: unknown): boolean {
  return err instanceof StoreError && (err.kind === 'invalid' || err.kind === 'checksum' || err.kind === 'conflict');
}

function setRecordName(n: number): string {
  return `${SET_PREFIX}${String(n).padStart(10, '0')}.json`;
}

export class MirrorStore implements ObjectStore {
  readonly description: string;
  readonly consistency: StoreConsistency = {
    // Of two conditional puts racing across several stores, each may win on
    // some: success needs no member to refuse, but the members checked differ
    // as their states do. Callers read back (as on Swift).
    atomicConditionalPut: false,
  };
  readonly deadlineMs: number;
  readonly readDeadlineMs: number;
  private readonly koCount: number;
  private readonly probeMs: number;
  readonly commitPrefix: string;
  private readonly byName: Map<string, MirrorMember>;
  private readonly health = new Map<string, Health>();
  private readonly states = new Map<string, Promise<ContainerState | null>>();
  private readonly placements = new Map<string, string[]>();
  private readonly log: (message: string, level?: 'info' | 'warn') => void;
  private readonly repairs = new Set<Promise<void>>();
  private closed = false;

  constructor(
    readonly members: readonly MirrorMember[],
    private readonly options: MirrorOptions = {},
  ) {
    if (members.length === 0) throw new StoreError('invalid', 'a mirror needs at least one store');
    this.byName = new Map(members.map((m) => [m.name, m]));
    if (this.byName.size !== members.length) throw new StoreError('invalid', 'two stores of the mirror have one name');
    for (const m of members) this.health.set(m.name, { down: false, timeouts: 0, probe: null });
    this.deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.readDeadlineMs = options.readDeadlineMs ?? DEFAULT_READ_DEADLINE_MS;
    this.koCount = options.koCount ?? DEFAULT_KO_COUNT;
    this.probeMs = options.probeMs ?? DEFAULT_PROBE_MS;
    this.commitPrefix = options.commitPrefix ?? 'versions/';
    this.log = (message, level = 'warn') => options.log?.(message, level);
    this.description = `mirror of ${members.map((m) => `${m.name} (${m.store.description})`).join(', ')}`;
    for (const name of options.defaultSet ?? []) this.member(name);
  }

  /** The member of this name, or a clear error naming the configured ones. */
  member(name: string): MirrorMember {
    const m = this.byName.get(name);
    if (!m) throw new StoreError('invalid', `no store '${name}' in the configuration (stores: ${[...this.byName.keys()].join(', ')})`);
    return m;
  }

  /** Whether a member is being routed around (it kept timing out). */
  isDown(name: string): boolean {
    return this.health.get(name)?.down ?? true;
  }

  /**
   * Chooses the set a container created next will live on (the default is
   * `defaultSet`, else every member). Checked here: unknown names fail.
   */
  place(container: string, set: readonly string[]): void {
    if (set.length === 0) throw new StoreError('invalid', 'a volume needs at least one store');
    if (new Set(set).size !== set.length) throw new StoreError('invalid', `store list ${set.join(',')} names a store twice`);
    for (const name of set) this.member(name);
    this.placements.set(container, [...set]);
  }

  // ---- per-member calls: deadlines and health ----

  /** Runs fn on a member within ms; a timeout counts towards routing the member around. */
  private attempt<T>(name: string, what: string, ms: number, fn: (store: ObjectStore) => Promise<T>): Promise<T> {
    const m = this.member(name);
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        this.timedOut(name);
        reject(new Timeout(name, what, ms));
      }, ms);
      fn(m.store).then(
        (value) => {
          clearTimeout(timer);
          if (settled) return;
          settled = true;
          this.answered(name);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (settled) return;
          settled = true;
          if (err instanceof StoreError && err.kind === 'unreachable') this.timedOut(name);
          else this.answered(name);
          reject(err);
        },
      );
    });
  }

  private answered(name: string): void {
    const h = this.health.get(name)!;
    h.timeouts = 0;
  }

  private timedOut(name: string): void {
    const h = this.health.get(name)!;
    h.timeouts++;
    if (!h.down && h.timeouts >= this.koCount) {
      h.down = true;
      this.log(`store '${name}' did not answer ${h.timeouts} times in a row: routed around, probed every ${this.probeMs} ms`, 'info');
      this.startProbe(name);
    }
  }

  private startProbe(name: string): void {
    const h = this.health.get(name)!;
    if (h.probe || this.closed) return;
    let busy = false;
    h.probe = setInterval(() => {
      if (busy) return;
      busy = true;
      this.attempt(name, 'a probe', this.readDeadlineMs, (s) => s.head(PROBE_CONTAINER, 'probe'))
        .then(
          () => {
            if (h.probe) clearInterval(h.probe);
            h.probe = null;
            h.down = false;
            h.timeouts = 0;
            this.log(`store '${name}' answers again`, 'info');
          },
          () => undefined,
        )
        .finally(() => (busy = false));
    }, this.probeMs);
    h.probe.unref();
  }

  // ---- container states ----

  /** What one member holds of the container (its mirror records and commits). */
  private async survey(name: string, container: string): Promise<Survey> {
    return this.attempt(name, `a listing of ${container}`, this.readDeadlineMs * 5, async (store) => {
      const survey: Survey = { member: name, present: true, sets: [], behindMarks: [], commits: new Map() };
      try {
        for await (const o of store.list(container, MIRROR_PREFIX)) {
          if (o.name.startsWith(SET_PREFIX)) survey.sets.push(o.name);
          else if (o.name.startsWith(BEHIND_PREFIX)) survey.behindMarks.push(o.name.slice(BEHIND_PREFIX.length));
        }
        for await (const o of store.list(container, this.commitPrefix)) survey.commits.set(o.name, o.etag);
      } catch (err) {
        if (isNotFound(err)) return { ...survey, present: false };
        throw err;
      }
      return survey;
    });
  }

  /**
   * Asks every member (routed-around ones too, when `all`) what it holds of
   * the container and works out its set and each member's state; null when
   * no member that answered has the container.
   */
  private async load(container: string, all = false): Promise<{ state: ContainerState | null; status: MemberStatus[] }> {
    const names = [...this.byName.keys()];
    const asked = await Promise.all(
      names.map(async (name): Promise<Survey | StoreError> => {
        if (this.isDown(name) && !all) return new StoreError('unreachable', `store '${name}' is routed around (it kept timing out)`);
        try {
          return await this.survey(name, container);
        } catch (err) {
          return err instanceof StoreError ? err : new StoreError('other', (err as Error).message);
        }
      }),
    );
    const surveys = asked.filter((s): s is Survey => !(s instanceof StoreError) && s.present);
    const unreachable = new Map<string, string>();
    asked.forEach((s, i) => {
      if (s instanceof StoreError) unreachable.set(names[i]!, s.message);
    });
    if (surveys.length === 0) {
      if (unreachable.size === names.length) throw new StoreError('unreachable', `no store of the mirror answered: ${[...unreachable.values()].join('; ')}`);
      return { state: null, status: [] };
    }
    const set = await this.readSet(container, surveys);
    const state: ContainerState = { set, behind: new Map(), split: new Map(), lock: Promise.resolve(), pending: new Set() };
    const bySurvey = new Map(surveys.map((s) => [s.member, s]));
    const latestOf = (s: Survey): string | null => [...s.commits.keys()].sort(compareNames).at(-1) ?? null;
    const reachable = set.filter((n) => bySurvey.has(n));
    // split brain: one commit name, different objects
    for (let i = 0; i < reachable.length; i++) {
      for (let j = i + 1; j < reachable.length; j++) {
        const a = bySurvey.get(reachable[i]!)!;
        const b = bySurvey.get(reachable[j]!)!;
        for (const [name, etag] of a.commits) {
          const other = b.commits.get(name);
          if (other !== undefined && other !== etag) {
            const why = `'${a.member}' and '${b.member}' hold different ${name}`;
            if (!state.split.has(a.member)) state.split.set(a.member, why);
            if (!state.split.has(b.member)) state.split.set(b.member, why);
            break;
          }
        }
      }
    }
    const newest = reachable.map((n) => latestOf(bySurvey.get(n)!)).filter((l): l is string => l !== null).sort(compareNames).at(-1) ?? null;
    // who records whom as behind; two that record each other each went on without the other
    const markedBy = new Map<string, string[]>();
    for (const s of surveys) if (set.includes(s.member)) for (const m of s.behindMarks) markedBy.set(m, [...(markedBy.get(m) ?? []), s.member]);
    for (const [m, by] of markedBy) {
      for (const other of by) {
        if (markedBy.get(other)?.includes(m)) {
          const why = `'${m}' and '${other}' each took writes the other missed`;
          if (!state.split.has(m)) state.split.set(m, why);
          if (!state.split.has(other)) state.split.set(other, why);
        }
      }
    }
    const status: MemberStatus[] = [];
    for (const name of set) {
      const s = bySurvey.get(name);
      if (!s) {
        const why = unreachable.get(name) ?? (this.byName.has(name) ? undefined : 'the configuration here does not name it');
        if (why !== undefined) {
          status.push({ name, state: 'unreachable', reason: why });
          state.behind.set(name, `no answer: ${why}`);
        } else {
          status.push({ name, state: 'behind', latest: null, reason: 'it has no copy of the container' });
          state.behind.set(name, 'it has no copy of the container');
        }
        continue;
      }
      const latest = latestOf(s);
      if (state.split.has(name)) status.push({ name, state: 'split-brain', latest, reason: state.split.get(name)! });
      else if (newest !== null && (latest === null || compareNames(latest, newest) < 0)) {
        const why = `its newest commit is ${latest ?? 'none'}, not ${newest}`;
        state.behind.set(name, why);
        status.push({ name, state: 'behind', latest, reason: why });
      } else if (markedBy.has(name)) {
        const why = `${markedBy.get(name)!.map((m) => `'${m}'`).join(', ')} records that it missed writes`;
        state.behind.set(name, why);
        status.push({ name, state: 'behind', latest, reason: why });
      } else status.push({ name, state: 'in-sync', latest });
    }
    return { state, status };
  }

  /** The set the newest set record names; for a container without one (made by a single store), the members that have it. */
  private async readSet(container: string, surveys: Survey[]): Promise<string[]> {
    const newest = surveys.flatMap((s) => s.sets.map((name) => ({ name, member: s.member }))).sort((a, b) => compareNames(a.name, b.name)).at(-1);
    if (newest) {
      const data = await this.attempt(newest.member, `a read of ${container}/${newest.name}`, this.deadlineMs, (s) => s.get(container, newest.name));
      let stores: unknown;
      try {
        stores = (JSON.parse(data.toString('utf8')) as { stores?: unknown }).stores;
      } catch {
        stores = undefined;
      }
      if (!Array.isArray(stores) || stores.length === 0 || !stores.every((n) => typeof n === 'string' && MEMBER_NAME.test(n))) {
        throw new StoreError('other', `${container}/${newest.name} on store '${newest.member}' is not a mirror set record`);
      }
      // a store of the set that this configuration does not name counts as one that does not answer
      return stores as string[];
    }
    return surveys.map((s) => s.member).sort((a, b) => [...this.byName.keys()].indexOf(a) - [...this.byName.keys()].indexOf(b));
  }

  /** The container's state, surveyed once per process (and again after it was found absent). */
  private async stateOf(container: string): Promise<ContainerState | null> {
    let loading = this.states.get(container);
    if (!loading) {
      loading = this.load(container).then((r) => {
        if (r.state === null) this.states.delete(container);
        else this.noteBehind(container, r.state);
        return r.state;
      });
      this.states.set(container, loading);
      loading.catch(() => this.states.delete(container));
    }
    return loading;
  }

  private noteBehind(container: string, state: ContainerState): void {
    for (const [name, why] of state.behind) if (!this.isDown(name) && !why.startsWith('no answer:')) this.log(`${container}: store '${name}' is behind (${why}); it is resynced by 'swiftvol volume resync' or a serve holding the volume`, 'info');
    for (const [name, why] of state.split) this.log(`${container}: store '${name}' is in split brain (${why})`, 'info');
  }

  /** Fresh states of a container's members, for `volume info` and before a resync. */
  async status(container: string): Promise<MirrorStatus | null> {
    checkContainerName(container);
    const { state, status } = await this.load(container, true);
    if (!state) return null;
    // what was found replaces what was known, in the same object: writes and commits in flight keep their lock
    const known = await this.states.get(container)?.catch(() => null);
    if (known) {
      known.set = state.set;
      known.behind = state.behind;
      known.split = state.split;
    } else {
      this.states.set(container, Promise.resolve(state));
    }
    return { container, set: state.set, stores: status };
  }

  /** Members that take the container's writes: in its set, not behind, not routed around. */
  private writable(state: ContainerState): string[] {
    return state.set.filter((n) => !state.behind.has(n) && !this.isDown(n));
  }

  /** Members to read from, best first: in sync, then behind ones (they may hold the object); not routed-around ones. */
  private readable(state: ContainerState): string[] {
    const up = state.set.filter((n) => !this.isDown(n));
    return [...up.filter((n) => !state.behind.has(n)), ...up.filter((n) => state.behind.has(n))];
  }

  /** Leaves a member out of a container's writes, and records so on the members that stay. */
  private async markBehind(container: string, state: ContainerState, name: string, why: string): Promise<void> {
    if (state.behind.has(name)) return;
    state.behind.set(name, why);
    this.log(`${container}: store '${name}' left out of writes: ${why}`);
    const body = Buffer.from(JSON.stringify({ store: name, since: new Date().toISOString(), reason: why }));
    await Promise.all(
      this.writable(state).map((m) =>
        this.attempt(m, 'a mirror record', this.deadlineMs, (s) => s.put(container, `${BEHIND_PREFIX}${name}`, body, { contentType: 'application/json' })).catch(
          (err: Error) => this.log(`${container}: could not record on '${m}' that '${name}' is behind: ${err.message}`),
        ),
      ),
    );
  }

  /** Runs fn with the container's commits held off (commits, and a resync's last pass). */
  private async exclusive<T>(container: string, fn: () => Promise<T>): Promise<T> {
    const state = await this.stateOf(container);
    if (!state) return fn();
    const run = state.lock.then(fn);
    state.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Takes a member back into a container's writes, with its commits held
   * off: from now on writes include it; then the writes that started
   * without it settle, and `catchUp` copies what they (and anything else)
   * left it lacking. If that fails, the member stays behind.
   */
  async rejoin(container: string, name: string, catchUp: () => Promise<void>): Promise<void> {
    const state = await this.required(container);
    await this.exclusive(container, async () => {
      const why = state.behind.get(name);
      state.behind.delete(name);
      state.split.delete(name);
      try {
        await Promise.allSettled([...state.pending]);
        await catchUp();
      } catch (err) {
        state.behind.set(name, why ?? 'its resync failed');
        throw err;
      }
    });
    await Promise.all(
      state.set
        .filter((m) => !this.isDown(m))
        .map((m) => this.attempt(m, 'a mirror record', this.deadlineMs, (s) => s.delete(container, `${BEHIND_PREFIX}${name}`)).catch(() => undefined)),
    );
  }

  // ---- the ObjectStore operations ----

  async createContainer(container: string): Promise<void> {
    checkContainerName(container);
    const existing = await this.stateOf(container);
    if (existing) {
      await this.writeAll(container, existing, 'a container create', (s) => s.createContainer(container));
      return;
    }
    const set = this.placements.get(container) ?? [...(this.options.defaultSet ?? this.members.map((m) => m.name))];
    const state: ContainerState = { set, behind: new Map(), split: new Map(), lock: Promise.resolve(), pending: new Set() };
    await this.writeAll(container, state, 'a container create', (s) => s.createContainer(container));
    const record = Buffer.from(JSON.stringify({ format: 'swiftvol-mirror-set', formatVersion: 1, stores: set, createdAt: new Date().toISOString() }));
    await this.writeAll(container, state, 'the mirror set record', (s) => s.put(container, setRecordName(1), record, { contentType: 'application/json' }));
    this.states.set(container, Promise.resolve(state));
    this.placements.delete(container);
  }

  /**
   * Runs a write on every writable member at once; a member that fails
   * (other than by the caller's fault) or passes the deadline is marked
   * behind. Resolves with the first success; rejects with the caller's
   * fault, or when no member succeeded.
   */
  private async writeAll<T>(container: string, state: ContainerState, what: string, fn: (store: ObjectStore) => Promise<T>, options: { alsoBehind?: boolean } = {}): Promise<T> {
    // a delete reaches behind members too: what it removes must not come back from their copy
    const targets = options.alsoBehind ? state.set.filter((n) => !this.isDown(n) && this.byName.has(n)) : this.writable(state);
    if (targets.length === 0) {
      throw new StoreError('unreachable', `${container}: no store of its set (${state.set.join(', ')}) can take ${what}: ${[...state.behind].map(([n, w]) => `${n}: ${w}`).join('; ') || 'all routed around'}`);
    }
    const all = Promise.allSettled(targets.map((name) => this.attempt(name, `${what} of ${container}`, this.deadlineMs, fn)));
    state.pending.add(all);
    const results = await all.finally(() => state.pending.delete(all));
    const fault = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && callerFault(r.reason));
    if (fault) throw fault.reason;
    let first: T | undefined;
    let ok = false;
    const failures: string[] = [];
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') {
        if (!ok) first = r.value;
        ok = true;
      } else {
        failures.push(`${targets[i]}: ${(r.reason as Error).message}`);
      }
    }
    if (!ok) throw new StoreError('unreachable', `${container}: ${what} failed on every store of its set: ${failures.join('; ')}`);
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (r.status === 'rejected' && !state.behind.has(targets[i]!)) await this.markBehind(container, state, targets[i]!, `${what} failed: ${(r.reason as Error).message}`);
    }
    // members routed around missed it too
    for (const name of state.set) {
      if (!state.behind.has(name) && this.isDown(name)) await this.markBehind(container, state, name, `routed around when ${what} was written`);
    }
    return first as T;
  }

  private async required(container: string): Promise<ContainerState> {
    const state = await this.stateOf(container);
    if (!state) throw new StoreError('not-found', `container ${container} does not exist`);
    return state;
  }

  async deleteContainer(container: string): Promise<void> {
    checkContainerName(container);
    const state = await this.stateOf(container);
    if (!state) return;
    await this.writeAll(container, state, 'a container delete', async (s) => {
      const own: string[] = [];
      try {
        for await (const o of s.list(container, MIRROR_PREFIX)) own.push(o.name);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      // refuse before dropping the mirror's own records if anything else is there
      for await (const o of s.list(container)) {
        if (!o.name.startsWith(MIRROR_PREFIX)) throw new StoreError('conflict', `container ${container} is not empty`);
      }
      for (const name of own) await s.delete(container, name);
      await s.deleteContainer(container);
    }, { alsoBehind: true });
    this.states.delete(container);
  }

  async listContainers(prefix: string): Promise<string[]> {
    const up = this.members.map((m) => m.name).filter((n) => !this.isDown(n));
    const results = await Promise.allSettled(up.map((n) => this.attempt(n, 'a container listing', this.readDeadlineMs * 5, (s) => s.listContainers(prefix))));
    const ok = results.filter((r): r is PromiseFulfilledResult<string[]> => r.status === 'fulfilled');
    if (ok.length === 0) {
      const why = results.map((r, i) => `${up[i]}: ${r.status === 'rejected' ? (r.reason as Error).message : ''}`).join('; ');
      throw new StoreError('unreachable', `no store of the mirror lists containers: ${why || 'all routed around'}`);
    }
    return [...new Set(ok.flatMap((r) => r.value))].filter((c) => c !== PROBE_CONTAINER).sort(compareNames);
  }

  async put(container: string, name: string, data: Uint8Array, options?: PutOptions): Promise<{ etag: string }> {
    checkContainerName(container);
    checkObjectName(name);
    if (name.startsWith(MIRROR_PREFIX)) throw new StoreError('invalid', `object name ${name}: '${MIRROR_PREFIX}' is the mirror's own`);
    const state = await this.required(container);
    if (!name.startsWith(this.commitPrefix)) return this.writeAll(container, state, `a put of ${name}`, (s) => s.put(container, name, data, options));
    return this.exclusive(container, async () => {
      if (state.split.size > 0) {
        throw new StoreError('conflict', `${container} is in split brain (${[...state.split.values()][0]}): resolve it with 'swiftvol volume resync --discard STORE'`);
      }
      return this.writeAll(container, state, `a put of ${name}`, (s) => s.put(container, name, data, options));
    });
  }

  get(container: string, name: string, range?: ReadRange): Promise<Buffer> {
    return this.readAny(container, name, `a read of ${name}`, (s) => s.get(container, name, range));
  }

  async head(container: string, name: string): Promise<ObjectInfo | null> {
    try {
      return await this.readAny(container, name, `a head of ${name}`, async (s) => {
        const info = await s.head(container, name);
        if (!info) throw new StoreError('not-found', `object ${container}/${name} does not exist`);
        return info;
      });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /**
   * One read, from the best copy first: on an error or not-found it moves to
   * the next; a copy that has not answered within the read deadline gets
   * company (the next copy is asked too) and the first answer wins.
   */
  private async readAny<T>(container: string, name: string, what: string, fn: (store: ObjectStore) => Promise<T>): Promise<T> {
    checkContainerName(container);
    checkObjectName(name);
    const state = await this.required(container);
    const order = this.readable(state);
    if (order.length === 0) throw new StoreError('unreachable', `${container}/${name}: every store of its set (${state.set.join(', ')}) is routed around`);
    const missing: string[] = [];
    const value = await this.firstAnswer(order, what, fn, (member) => missing.push(member));
    // An in-sync copy that lost a write-once object another copy holds (Swift quarantines a
    // corrupt one) gets it back. Not commits: a table missing on one copy may be one being deleted.
    const lost = missing.filter((m) => !state.behind.has(m));
    if (lost.length > 0 && !name.startsWith(this.commitPrefix)) {
      const from = order.find((m) => !missing.includes(m) && !this.isDown(m));
      if (from) void this.repair(container, name, from, lost).catch((err: Error) => this.log(`could not restore ${container}/${name} on ${lost.join(', ')}: ${err.message}`));
    }
    return value;
  }

  /** Tries the members in order, hedging after the read deadline; the first success wins. */
  firstAnswer<T>(order: readonly string[], what: string, fn: (store: ObjectStore) => Promise<T>, onNotFound?: (member: string) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let next = 0;
      let pending = 0;
      let done = false;
      const errors: StoreError[] = [];
      const finish = (): void => {
        if (done || pending > 0 || next < order.length) return;
        done = true;
        // not-found only if no copy failed otherwise: a copy that did not answer might hold it
        const other = errors.find((e) => !isNotFound(e));
        reject(other ?? errors[0] ?? new StoreError('not-found', `${what}: no copy`));
      };
      const launch = (): void => {
        if (done) return;
        if (next >= order.length) return finish();
        const member = order[next++]!;
        pending++;
        let hedged = false;
        const hedge = setTimeout(() => {
          hedged = true;
          this.timedOut(member); // slow counts as not answering: a frozen store is routed around after koCount of these
          launch();
        }, this.readDeadlineMs);
        this.attempt(member, what, this.deadlineMs, fn).then(
          (value) => {
            clearTimeout(hedge);
            pending--;
            if (done) return;
            done = true;
            resolve(value);
          },
          (err: unknown) => {
            clearTimeout(hedge);
            pending--;
            if (done) return;
            if (callerFault(err) && !(err instanceof StoreError && err.kind === 'checksum')) {
              done = true;
              reject(err);
              return;
            }
            if (isNotFound(err)) onNotFound?.(member);
            errors.push(err instanceof StoreError ? err : new StoreError('other', (err as Error).message));
            if (!hedged) launch();
            else finish();
          },
        );
        if (this.isDown(member)) {
          // already known dead: do not wait the deadline for it
          clearTimeout(hedge);
          hedged = true;
          launch();
        }
      };
      launch();
    });
  }

  async delete(container: string, name: string): Promise<void> {
    checkContainerName(container);
    checkObjectName(name);
    const state = await this.stateOf(container);
    if (!state) return;
    await this.writeAll(container, state, `a delete of ${name}`, (s) => s.delete(container, name), { alsoBehind: true });
  }

  async *list(container: string, prefix?: string): AsyncIterable<ObjectInfo> {
    checkContainerName(container);
    const state = await this.required(container);
    const order = this.readable(state).filter((n) => !state.behind.has(n));
    const candidates = order.length > 0 ? order : this.readable(state);
    let lastError: unknown = new StoreError('unreachable', `${container}: every store of its set (${state.set.join(', ')}) is routed around`);
    for (const member of candidates) {
      const pages = this.member(member).store.list(container, prefix)[Symbol.asyncIterator]();
      let first: IteratorResult<ObjectInfo>;
      try {
        first = await this.attempt(member, `a listing of ${container}`, this.readDeadlineMs * 5, () => pages.next());
      } catch (err) {
        void pages.return?.();
        if (callerFault(err)) throw err;
        lastError = err;
        continue;
      }
      let step = first;
      while (!step.done) {
        if (!step.value.name.startsWith(MIRROR_PREFIX)) yield step.value;
        step = await pages.next();
      }
      return;
    }
    throw lastError;
  }

  /** One member's own store, for what runs per store (garbage collection, resync). */
  storeOf(name: string): ObjectStore {
    return this.member(name).store;
  }

  /** The members holding a container that answer, in sync first: each one's copy, for a caller that checks copies itself. */
  async copies(container: string): Promise<Array<{ name: string; store: ObjectStore }>> {
    const state = await this.required(container);
    return this.readable(state).map((name) => ({ name, store: this.member(name).store }));
  }

  /** Logs a message where the mirror logs (a layer above reporting what it did about a copy). */
  report(message: string): void {
    this.log(message);
  }

  /** Members in sync with the container, answering: where per-store work (garbage collection) may run. */
  async inSync(container: string): Promise<string[]> {
    const state = await this.required(container);
    return state.set.filter((n) => !state.behind.has(n) && !state.split.has(n) && !this.isDown(n));
  }

  /** Containers this process knows to have a member behind that answers: what a background resync should take up. */
  /**
   * What this process knows of each member's state in the containers it has
   * used, without asking the stores (for metrics): split-brain, behind,
   * unreachable (routed around) or in-sync.
   */
  async knownStates(): Promise<Array<{ container: string; store: string; state: MemberState }>> {
    const out: Array<{ container: string; store: string; state: MemberState }> = [];
    for (const [container, loading] of this.states) {
      const state = await loading.catch(() => null);
      if (!state) continue;
      for (const store of state.set) {
        const st: MemberState = state.split.has(store) ? 'split-brain' : state.behind.has(store) ? 'behind' : this.isDown(store) ? 'unreachable' : 'in-sync';
        out.push({ container, store, state: st });
      }
    }
    return out;
  }

  async lagging(): Promise<string[]> {
    const out: string[] = [];
    for (const [container, loading] of this.states) {
      const state = await loading.catch(() => null);
      if (state && [...state.behind.keys()].some((n) => !this.isDown(n))) out.push(container);
    }
    return out;
  }

  /**
   * Copies a whole object from a member whose copy is good over the members
   * whose copy is bad (a checksum mismatch): the read is checked against its
   * ETag, the put against the same MD5.
   */
  repair(container: string, name: string, from: string, to: readonly string[]): Promise<void> {
    // close() waits for repairs under way: a CLI command that read around a bad copy still fixes it
    const run = this.copyOver(container, name, from, to);
    this.repairs.add(run);
    void run.catch(() => undefined).finally(() => this.repairs.delete(run));
    return run;
  }

  private async copyOver(container: string, name: string, from: string, to: readonly string[]): Promise<void> {
    const data = await this.attempt(from, `a read of ${container}/${name}`, this.deadlineMs, (s) => s.get(container, name));
    const info = await this.attempt(from, `a head of ${container}/${name}`, this.deadlineMs, (s) => s.head(container, name));
    if (!info) throw new StoreError('not-found', `${container}/${name} is gone from store '${from}'`);
    for (const bad of to) {
      await this.attempt(bad, `a put of ${container}/${name}`, this.deadlineMs, (s) => s.put(container, name, data, { md5: info.etag }));
      this.log(`${container}/${name}: repaired the copy on store '${bad}' from '${from}'`);
    }
  }

  /**
   * Changes a container's set: writes the next set record on every member
   * of the old and the new set that answers (a member added has no copy: it
   * shows as behind until a resync fills it).
   */
  async changeSet(container: string, set: readonly string[]): Promise<void> {
    if (set.length === 0) throw new StoreError('invalid', 'a volume needs at least one store');
    for (const name of set) this.member(name);
    const { state } = await this.load(container, true);
    if (!state) throw new StoreError('not-found', `container ${container} does not exist`);
    const everyone = [...new Set([...state.set, ...set])].filter((n) => !this.isDown(n));
    let newest = 0;
    for (const name of everyone) {
      try {
        for await (const o of this.member(name).store.list(container, SET_PREFIX)) newest = Math.max(newest, Number(o.name.slice(SET_PREFIX.length, SET_PREFIX.length + 10)) || 0);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const record = Buffer.from(JSON.stringify({ format: 'swiftvol-mirror-set', formatVersion: 1, stores: set, createdAt: new Date().toISOString() }));
    const added = set.filter((n) => !state.set.includes(n));
    await Promise.all(added.map((n) => this.attempt(n, `a container create of ${container}`, this.deadlineMs, (s) => s.createContainer(container))));
    const results = await Promise.allSettled(
      everyone.map((n) => this.attempt(n, 'the mirror set record', this.deadlineMs, (s) => s.put(container, setRecordName(newest + 1), record, { contentType: 'application/json' }))),
    );
    if (!results.some((r, i) => r.status === 'fulfilled' && set.includes(everyone[i]!))) {
      throw new StoreError('unreachable', `${container}: no store of the new set took its record`);
    }
    await this.status(container);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.repairs]);
    this.closed = true;
    for (const h of this.health.values()) {
      if (h.probe) clearInterval(h.probe);
      h.probe = null;
    }
    await Promise.all(this.members.map((m) => m.store.close().catch(() => undefined)));
  }
}

/** The mirror in a store stack, if there is one: the store itself or a store it wraps. */
export function mirrorOf(store: ObjectStore): MirrorStore | null {
  let s: ObjectStore | undefined = store;
  while (s) {
    if (s instanceof MirrorStore) return s;
    s = (s as { inner?: ObjectStore }).inner;
  }
  return null;
}
