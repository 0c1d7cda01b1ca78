// Which store the CLI and daemon use: Swift credentials from the environment
// (python-swiftclient's ST_* or OS_* variables), else from a config file of
// the same variables (KEY=VALUE lines, `export` allowed, as an openrc file or
// the output of scripts/swift-dev), else the embedded FileStore. That is the
// leaf of the store stack; the layers above it (STORE_LAYERS) wrap it in turn.
import fs from 'node:fs';
import path from 'node:path';
import type { ObjectStore } from '../store/object-store.js';
import { FileStore } from '../store/file-store.js';

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
): Promise<StoreChoice> {
  const leaf = await openLeaf(env, stateDir, configFile);
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
): Promise<{ store: ObjectStore; source: string; settings: NodeJS.ProcessEnv }> {
  const fromEnv = await swiftFrom(env, 'environment');
  if (fromEnv) return { store: fromEnv, source: 'environment', settings: env };
  const file = configFile ?? env.SWIFTVOL_CONFIG ?? (fs.existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file) {
    const vars = readEnvFile(file);
    const fromFile = await swiftFrom(vars, file);
    if (!fromFile) throw new ConfigError(`config file ${file} sets neither ST_AUTH nor OS_AUTH_URL`);
    return { store: fromFile, source: file, settings: vars };
  }
  return { store: new FileStore(path.join(stateDir, 'store')), source: 'embedded file store', settings: env };
}

async function swiftFrom(vars: NodeJS.ProcessEnv, source: string): Promise<ObjectStore | null> {
  // Loaded on demand: the HTTP client is most of the CLI's start-up time, and
  // commands answered by a running serve do not need it.
  const { swiftStoreFromEnv } = await import('../store/swift-store.js');
  try {
    return swiftStoreFromEnv(vars);
  } catch (err) {
    throw new ConfigError(`${source}: ${(err as Error).message}`);
  }
}

export function readEnvFile(file: string): NodeJS.ProcessEnv {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const vars: NodeJS.ProcessEnv = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${file}:${i + 1}: expected KEY=VALUE`);
    vars[m[1]!] = unquote(m[2]!);
  });
  return vars;
}

function unquote(value: string): string {
  const v = value.trim();
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.at(-1) === v[0]) return v.slice(1, -1);
  return v;
}
