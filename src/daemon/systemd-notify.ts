// Readiness for systemd (Type=notify, systemd/swiftvol.service): when systemd
// started serve it sets NOTIFY_SOCKET, and serve tells it READY=1 once its
// targets are served and STOPPING=1 when it begins to stop, through sd-notify
// (libsystemd's sd_notify). Without NOTIFY_SOCKET nothing is loaded or sent.
import { createRequire } from 'node:module';
import { EngineError } from '../engine/engine-error.js';

export interface SystemdNotifier {
  ready(status: string): void;
  stopping(): void;
}

interface SdNotify {
  ready(): void;
  stopping(pid: number): void;
  sendStatus(text: string): void;
}

/** The notifier when systemd asked for one (NOTIFY_SOCKET), else null. */
export function systemdNotifier(env: NodeJS.ProcessEnv = process.env): SystemdNotifier | null {
  if (!env.NOTIFY_SOCKET) return null;
  let sd: SdNotify;
  try {
    sd = createRequire(import.meta.url)('sd-notify') as SdNotify;
  } catch (err) {
    throw new EngineError(`NOTIFY_SOCKET is set (systemd Type=notify) but sd-notify cannot be loaded (${(err as Error).message.split('\n')[0]}): run scripts/setup`);
  }
  return {
    ready: (status) => {
      sd.sendStatus(status);
      sd.ready();
    },
    stopping: () => sd.stopping(process.pid),
  };
}
