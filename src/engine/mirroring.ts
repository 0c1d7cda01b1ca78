// What the engine asks of a mirror (doc/mirroring.md), in one place: which
// version an attach may open (a majority of the volume's stores must answer,
// and none may be in split brain), each store's state for `volume info`,
// resync of a volume with the volumes its tables read from, and changes of
// its set. A volume on a single store has no mirror: every function here is
// then a no-op or says so.
import { containerName, seqOfVersionObject } from '../format/volume-format.js';
import { StoreError, type ObjectStore } from '../store/object-store.js';
import { mirrorOf, type MemberStatus, type MirrorStore } from '../store/mirror-store.js';
import { countLacking, resyncContainer, type ResyncOptions } from '../store/mirror-resync.js';
import { EngineError } from './engine-error.js';
import { VolumeCatalog } from './volume-catalog.js';

export interface StoreState {
  name: string;
  state: MemberStatus['state'];
  /** Objects it lacks, when behind and counted. */
  lacking?: number;
  /** Its latest version, when known. */
  latestVersion?: number | null;
  reason?: string;
}

function requireMirror(store: ObjectStore, what: string): MirrorStore {
  const mirror = mirrorOf(store);
  if (!mirror) throw new EngineError(`${what} needs several stores: a config file with [STORE] sections (--config or SWIFTVOL_CONFIG)`);
  return mirror;
}

function versionOf(latest: string | null | undefined): number | null | undefined {
  if (latest === undefined) return undefined;
  return latest === null ? null : seqOfVersionObject(latest);
}

/** Where a volume created next lives; refuses unknown stores. */
export function placeVolume(store: ObjectStore, name: string, stores: readonly string[]): void {
  try {
    requireMirror(store, '--stores').place(containerName(name), stores);
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'invalid') throw new EngineError(`--stores: ${err.message}`);
    throw err;
  }
}

/** Each store of the volume with its state (null for a volume on a single store). */
export async function storeStates(store: ObjectStore, name: string, options: { count?: boolean } = {}): Promise<StoreState[] | null> {
  const mirror = mirrorOf(store);
  if (!mirror) return null;
  const status = await mirror.status(containerName(name));
  if (!status) throw new EngineError(`volume '${name}' does not exist`);
  const states: StoreState[] = status.stores.map((s) => ({ name: s.name, state: s.state, latestVersion: versionOf(s.latest), ...(s.reason ? { reason: s.reason } : {}) }));
  if (options.count) {
    const source = status.stores.find((s) => s.state === 'in-sync');
    for (const s of source ? states.filter((x) => x.state === 'behind') : []) {
      s.lacking = await countLacking(mirror, containerName(name), source!.name, s.name).catch(() => undefined);
    }
  }
  return states;
}

/**
 * Whether the volume may be attached at the version its stores show: a
 * majority of its set must answer and none be in split brain; with less,
 * only with `force`. Returns nothing for a volume on a single store.
 */
export async function checkAttach(store: ObjectStore, name: string, latest: number | null, force: boolean): Promise<void> {
  const states = await storeStates(store, name);
  if (!states) return;
  const split = states.filter((s) => s.state === 'split-brain');
  if (split.length > 0) {
    throw new EngineError(
      `volume '${name}' is in split brain: ${split[0]!.reason}; nothing is merged: keep one copy with 'swiftvol volume resync ${name} --discard STORE' (one of ${split.map((s) => s.name).join(', ')})`,
    );
  }
  const answering = states.filter((s) => s.state !== 'unreachable');
  if (answering.length * 2 > states.length || force) return;
  const away = states.filter((s) => s.state === 'unreachable').map((s) => `'${s.name}'`);
  throw new EngineError(
    `volume '${name}': only ${answering.length} of its ${states.length} stores answer (${away.join(', ')} do not): it would open at version ${latest ?? 'none'}, which is stale if those hold a newer one; attach it anyway with 'swiftvol volume attach ${name} --force'`,
  );
}

/** The containers a volume's data may live in: its own and its ancestors' (a clone's tables name them). */
async function lineage(catalog: VolumeCatalog, name: string): Promise<string[]> {
  const out = [containerName(name)];
  let meta = await catalog.requireMetadata(name);
  while (meta.parent && out.length < 64) {
    out.push(containerName(meta.parent.volume));
    const parent = await catalog.readMetadata(meta.parent.volume);
    if (!parent) break;
    meta = parent;
  }
  return out;
}

export interface VolumeResync {
  volume: string;
  copied: number;
  deleted: number;
  stores: StoreState[];
}

/** Brings every reachable store of the volume (and of the volumes it reads from) up to date. */
export async function resyncVolume(store: ObjectStore, catalog: VolumeCatalog, name: string, options: ResyncOptions = {}): Promise<VolumeResync> {
  const mirror = requireMirror(store, 'volume resync');
  const containers = await lineage(catalog, name);
  let copied = 0;
  let deleted = 0;
  try {
    // ancestors first: a clone's tables name their objects
    for (const container of containers.reverse()) {
      const own = container === containerName(name);
      const report = await resyncContainer(mirror, container, own ? options : { ...options, discard: undefined });
      copied += report.copied;
      deleted += report.deleted;
    }
  } catch (err) {
    if (err instanceof StoreError && (err.kind === 'conflict' || err.kind === 'invalid')) throw new EngineError(`volume '${name}': ${err.message}`);
    throw err;
  }
  return { volume: name, copied, deleted, stores: (await storeStates(store, name))! };
}

/** Adds a store to the volume's set and fills it from a good copy. */
export async function addMirror(store: ObjectStore, catalog: VolumeCatalog, name: string, member: string, options: ResyncOptions = {}): Promise<VolumeResync> {
  const mirror = requireMirror(store, 'volume mirror add');
  await catalog.requireMetadata(name);
  const status = (await mirror.status(containerName(name)))!;
  if (status.set.includes(member)) throw new EngineError(`volume '${name}' already lives on store '${member}'`);
  try {
    mirror.member(member);
  } catch (err) {
    throw new EngineError((err as Error).message);
  }
  await mirror.changeSet(containerName(name), [...status.set, member]);
  return resyncVolume(store, catalog, name, options);
}

/** Drops a store from the volume's set and deletes its copy there; never the last in-sync copy. */
export async function removeMirror(store: ObjectStore, name: string, member: string): Promise<{ deleted: number; stores: StoreState[] }> {
  const mirror = requireMirror(store, 'volume mirror remove');
  const container = containerName(name);
  const status = await mirror.status(container);
  if (!status) throw new EngineError(`volume '${name}' does not exist`);
  if (!status.set.includes(member)) throw new EngineError(`volume '${name}' does not live on store '${member}' (its stores: ${status.set.join(', ')})`);
  const rest = status.stores.filter((s) => s.name !== member);
  if (!rest.some((s) => s.state === 'in-sync')) {
    throw new EngineError(`volume '${name}': '${member}' holds its only in-sync copy; resync the others first`);
  }
  await mirror.changeSet(container, rest.map((s) => s.name));
  // the copy on the store dropped: everything of the container, as a volume delete does it
  let deleted = 0;
  try {
    deleted = await new VolumeCatalog(mirror.storeOf(member)).delete(name);
  } catch (err) {
    if (!(err instanceof StoreError && err.kind === 'not-found')) {
      throw new EngineError(`volume '${name}' no longer lives on '${member}', but its copy there could not be deleted: ${(err as Error).message}`);
    }
  }
  return { deleted, stores: (await storeStates(store, name))! };
}

/** The stores garbage collection of a volume runs on, one at a time: each in-sync member (a behind one is collected once level). */
export async function collectionStores(store: ObjectStore, name: string): Promise<ObjectStore[]> {
  const mirror = mirrorOf(store);
  if (!mirror) return [store];
  return (await mirror.inSync(containerName(name))).map((n) => mirror.storeOf(n));
}
