// Which store the CLI and daemon use: Swift credentials from the environment
// (python-swiftclient's ST_* or OS_* variables), else from a config file of
// the same variables (KEY=VALUE lines, `export` allowed, as an openrc file or
// the output of scripts/swift-dev), else the embedded FileStore.
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
  store: ObjectStore;
  /** Where the settings came from, for messages. */
  source: string;
}

export async function openStore(env: NodeJS.ProcessEnv, stateDir: string, configFile?: string): Promise<StoreChoice> {
  const fromEnv = await swiftFrom(env, 'environment');
  if (fromEnv) return { store: fromEnv, source: 'environment' };
  const file = configFile ?? env.SWIFTVOL_CONFIG ?? (fs.existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file) {
    const fromFile = await swiftFrom(readEnvFile(file), file);
    if (!fromFile) throw new ConfigError(`config file ${file} sets neither ST_AUTH nor OS_AUTH_URL`);
    return { store: fromFile, source: file };
  }
  return { store: new FileStore(path.join(stateDir, 'store')), source: 'embedded file store' };
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
