// The engine of a state dir as every command builds it: the lease length
// from SWIFTVOL_LEASE_SECONDS, the volume key from --key-file, and serve's
// gateway cache. serve's engine threads (src/daemon/engine-thread.ts) build
// theirs the same way.
import type { ObjectStore } from '../store/object-store.js';
import type { GatewayCache } from './gateway-cache.js';
import type { Engine } from './engine.js';

export interface EngineSettings {
  stateDir: string;
  keyFile?: string;
}

export async function newEngine(store: ObjectStore, settings: EngineSettings, cache?: GatewayCache, env: NodeJS.ProcessEnv = process.env): Promise<Engine> {
  const [{ Engine }, { VolumeKey }] = await Promise.all([import('./engine.js'), import('./volume-key.js')]);
  const seconds = Number(env.SWIFTVOL_LEASE_SECONDS);
  return new Engine(store, settings.stateDir, {
    ...(Number.isFinite(seconds) && seconds > 0 ? { leaseMs: seconds * 1000 } : {}),
    ...(settings.keyFile ? { key: VolumeKey.fromFile(settings.keyFile) } : {}),
    ...(cache ? { cache } : {}),
  });
}
