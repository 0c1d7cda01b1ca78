// Which store the CLI and daemon use: Swift credentials from the environment
// (python-swiftclient's ST_* or OS_* variables), else from a config file of
// the same variables (KEY=VALUE lines, `export` allowed, as an openrc file or
// the output of scripts/swift-dev), else the embedded FileStore. That is the
// leaf of the store stack; the layers above it (STORE_LAYERS) wrap it in turn.
// A config file with sections `[NAME]` names several Swift clusters, one per
// section: the leaf is then a MirrorStore over them (doc/mirroring.md); the
// lines before the first section hold settings for all of them.
import fs from 'node:fs';
import path from 'node:path';
import type { ObjectStore } from '../store/object-store.js';
import { FileStore } from '../store/file-store.js';
import { MEMBER_NAME, MirrorStore, type MirrorOptions } from '../store/mirror-store.js';
import type { FetchThreads } from '../store/threaded-store.js';
import { MeteredStore, type StoreMeter } from '../store/metered-store.js';

export const DEFAULT_CONFIG_FILE = '/etc/swiftvol/swift.env';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface StoreChoice {
  /** The top of the stack: what the engine uses. */
  store: ObjectStore;
  /** Where the settings came from, for messages. */
  source: string;
}

/** What a layer may read when openStore builds the stack. */
export interface StoreContext {
  /** The settings in effect: the environment, or the config file's variables when they came from one. */
  settings: NodeJS.ProcessEnv;
  stateDir: string;
  /** As StoreChoice.source. */
  source: string;
}

/**
 * One layer of the store stack, as s3backer's `X_create(conf, inner)`: wraps
 * the store below (usually as a PassThroughStore) or, when the settings do
 * not ask for it, returns `inner` itself.
 */
export type StoreLayer = (inner: ObjectStore, context: StoreContext) => ObjectStore | Promise<ObjectStore>;

/**
 * The layers openStore puts on the leaf store, innermost first. None in
 * production yet; mirroring (a store of several leaves), checksums and
 * caching slot in here.
 */
export const STORE_LAYERS: readonly StoreLayer[] = [];

/** What serve adds to each leaf store (a Swift cluster, a mirror's member, the file store). */
export interface LeafOptions {
  /** Run each Swift leaf's GETs on these threads; none: on the calling thread. */
  threads?: FetchThreads;
  /** Count each leaf's requests (named by its config section, 'swift' or 'file'). */
  meter?: (store: string) => StoreMeter;
}

/**
 * The store the configuration names: first the leaf (SwiftStore from the
 * environment or a config file, else the embedded FileStore), then each of
 * `layers` around it in order; returns the top of the stack.
 */
export async function openStore(
  env: NodeJS.ProcessEnv,
  stateDir: string,
  configFile?: string,
  layers: readonly StoreLayer[] = STORE_LAYERS,
  mirror: Pick<MirrorOptions, 'log'> = {},
  leafOptions: LeafOptions = {},
): Promise<StoreChoice> {
  const leaf = await openLeaf(env, stateDir, configFile, mirror, leafOptions);
  const context: StoreContext = { settings: leaf.settings, stateDir, source: leaf.source };
  return { store: await stackStores(leaf.store, layers, context), source: leaf.source };
}

/** Applies `layers` to `bottom` in order; if one fails, closes what was built and rethrows. */
export async function stackStores(bottom: ObjectStore, layers: readonly StoreLayer[], context: StoreContext): Promise<ObjectStore> {
  let top = bottom;
  for (const layer of layers) {
    try {
      top = await layer(top, context);
    } catch (err) {
      await top.close().catch(() => undefined);
      throw err;
    }
  }
  return top;
}

async function openLeaf(
  env: NodeJS.ProcessEnv,
  stateDir: string,
  configFile: string | undefined,
  mirror: Pick<MirrorOptions, 'log'>,
  leafOptions: LeafOptions,
): Promise<{ store: ObjectStore; source: string; settings: NodeJS.ProcessEnv }> {
  const fromEnv = await swiftFrom(env, 'environment', leafOptions, 'swift');
  const named = configFile ?? env.SWIFTVOL_CONFIG;
  if (fromEnv) {
    // the environment wins (README); a file asked for by name is said to be left unread, as it may name other stores (a mirror)
    if (named) mirror.log?.(`config file ${named} is not read: the environment sets Swift credentials (${env.ST_AUTH !== undefined ? 'ST_AUTH' : 'OS_AUTH_URL'}), which win`, 'warn');
    return { store: fromEnv, source: 'environment', settings: env };
  }
  const file = named ?? (fs.existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file) {
    const config = readConfigFile(file);
    if (config.sections.size > 0) return { store: await mirrorFrom(config, file, env, mirror, leafOptions), source: file, settings: config.global };
    const vars = config.global;
    const fromFile = await swiftFrom(vars, file, leafOptions, 'swift');
    if (!fromFile) throw new ConfigError(`config file ${file} sets neither ST_AUTH nor OS_AUTH_URL`);
    return { store: fromFile, source: file, settings: vars };
  }
  return { store: metered(new FileStore(path.join(stateDir, 'store')), leafOptions, 'file'), source: 'embedded file store', settings: env };
}

async function swiftFrom(vars: NodeJS.ProcessEnv, source: string, leafOptions: LeafOptions = {}, name = 'swift'): Promise<ObjectStore | null> {
  // Loaded on demand: the HTTP client is most of the CLI's start-up time, and
  // commands answered by a running serve do not need it.
  const { swiftStoreFromEnv } = await import('../store/swift-store.js');
  let store;
  try {
    store = swiftStoreFromEnv(vars);
  } catch (err) {
    throw new ConfigError(`${source}: ${(err as Error).message}`);
  }
  if (!store) return null;
  const { threads } = leafOptions;
  if (!threads) return metered(store, leafOptions, name);
  const { ThreadedStore } = await import('../store/threaded-store.js');
  // the threads build their copies from the credentials alone
  const settings = Object.fromEntries(Object.entries(vars).filter((e): e is [string, string] => /^(ST|OS)_/.test(e[0]) && e[1] !== undefined));
  return metered(new ThreadedStore(store, { settings, options: {} }, threads), leafOptions, name);
}

function metered(store: ObjectStore, leafOptions: LeafOptions, name: string): ObjectStore {
  return leafOptions.meter ? new MeteredStore(store, leafOptions.meter(name)) : store;
}

/** A config file: the settings before any section, and each section's. */
export interface ConfigFile {
  global: NodeJS.ProcessEnv;
  /** Section name -> its variables, in the order of the file. */
  sections: Map<string, NodeJS.ProcessEnv>;
}

/** Settings of the mirror, in the environment or before the first section (seconds). */
const MIRROR_SETTINGS: Record<string, keyof MirrorOptions> = {
  SWIFTVOL_MIRROR_DEADLINE: 'deadlineMs',
  SWIFTVOL_MIRROR_READ_DEADLINE: 'readDeadlineMs',
  SWIFTVOL_MIRROR_PROBE: 'probeMs',
};

export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const config: ConfigFile = { global: {}, sections: new Map() };
  let vars = config.global;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const section = /^\[(.*)\]$/.exec(line);
    if (section) {
      const name = section[1]!.trim();
      if (!MEMBER_NAME.test(name)) throw new ConfigError(`${file}:${i + 1}: store name '${name}' is not 1 to 32 of a-z 0-9 _ - (starting with a letter or digit)`);
      if (config.sections.has(name)) throw new ConfigError(`${file}:${i + 1}: store [${name}] is named twice`);
      vars = {};
      config.sections.set(name, vars);
      return;
    }
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${file}:${i + 1}: expected KEY=VALUE or [STORE]`);
    vars[m[1]!] = unquote(m[2]!);
  });
  return config;
}

/** The mirror of the file's sections, each a Swift; settings from the environment, else the file's global lines. */
async function mirrorFrom(config: ConfigFile, file: string, env: NodeJS.ProcessEnv, extra: Pick<MirrorOptions, 'log'>, leafOptions: LeafOptions): Promise<MirrorStore> {
  const options: MirrorOptions = { ...extra };
  for (const [key, option] of Object.entries(MIRROR_SETTINGS)) {
    const text = env[key] ?? config.global[key];
    if (text === undefined) continue;
    const seconds = Number(text);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) throw new ConfigError(`${key}=${text}: expected seconds, more than 0 and at most 3600`);
    (options as Record<string, unknown>)[option] = Math.round(seconds * 1000);
  }
  const members = [];
  try {
    for (const [name, vars] of config.sections) {
      const store = await swiftFrom(vars, `${file} [${name}]`, leafOptions, name);
      if (!store) throw new ConfigError(`${file} [${name}] sets neither ST_AUTH nor OS_AUTH_URL`);
      members.push({ name, store });
    }
  } catch (err) {
    await Promise.all(members.map((m) => m.store.close().catch(() => undefined)));
    throw err;
  }
  return new MirrorStore(members, options);
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.at(-1) === v[0]) return v.slice(1, -1);
  return v;
}
