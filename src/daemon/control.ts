// The control channel between the CLI and a running `swiftvol serve`: a Unix
// socket in the state directory, one JSON request per connection and one
// JSON reply.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EngineError } from '../engine/engine-error.js';
import { makeDirs } from '../os/make-dirs.js';

export type ControlRequest =
  | { op: 'target.add'; volume: string; allow: string[]; chap?: { user: string; secret: string }; iqnPrefix: string }
  | { op: 'target.remove'; volume: string }
  /** Several at once: every name checked first (nothing changes if one is wrong), the volumes opened in parallel. */
  | { op: 'targets.add'; volumes: string[]; allow: string[]; chap?: { user: string; secret: string }; iqnPrefix: string }
  | { op: 'targets.remove'; volumes: string[] }
  | { op: 'target.list' }
  | { op: 'snapshot.create'; volume: string; name: string }
  | { op: 'snapshot.jobs'; volume: string }
  /** Replies once the job started at `startedAt` has settled, or after `ms` (at most 5 s) with its progress. */
  | { op: 'snapshot.wait'; volume: string; name: string; startedAt: string; ms: number }
  | { op: 'snapshot.delete'; volume: string; name: string }
  /** Resyncs a served mirrored volume in serve (whose view of its stores it updates). */
  | { op: 'volume.resync'; volume: string; discard?: string }
  | { op: 'status' };

/** The error a serve answers to an op it does not know (one from an older version). */
export const UNKNOWN_CONTROL_REQUEST = 'unknown control request';

export type ControlReply = { ok: true; result: unknown } | { ok: false; error: string };

const MAX_MESSAGE = 1024 * 1024;

export function controlSocketPath(stateDir: string): string {
  return path.join(stateDir, 'run', 'control.sock');
}

export function blockSocketPath(stateDir: string): string {
  return path.join(stateDir, 'run', 'bs.sock');
}

/** Sends a request; null when no daemon listens on this state directory. */
export function sendControl(stateDir: string, request: ControlRequest, timeoutMs = 120_000): Promise<ControlReply | null> {
  const socketPath = controlSocketPath(stateDir);
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new EngineError(`swiftvol serve (${socketPath}) did not answer within ${timeoutMs / 1000} s: it is busy or stuck; see its log`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.end(JSON.stringify(request) + '\n'));
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data) as ControlReply);
      } catch {
        reject(new Error('swiftvol serve sent an unreadable reply'));
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(null);
      else reject(err);
    });
  });
}

/** Serves control requests; handler errors become { ok: false, error }. */
export async function listenControl(stateDir: string, handler: (request: ControlRequest) => Promise<unknown>): Promise<net.Server> {
  const socketPath = controlSocketPath(stateDir);
  makeDirs(path.dirname(socketPath), 0o700);
  // allowHalfOpen: the client ends its side after the request and still awaits the reply.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    let data = '';
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      data += chunk;
      if (data.length > MAX_MESSAGE) socket.destroy();
      else if (data.includes('\n')) void answer(data.slice(0, data.indexOf('\n')));
    });
    const answer = async (line: string): Promise<void> => {
      let reply: ControlReply;
      try {
        reply = { ok: true, result: await handler(JSON.parse(line) as ControlRequest) };
      } catch (err) {
        reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
      }
      if (!socket.destroyed) socket.end(JSON.stringify(reply));
    };
  });
  if (fs.existsSync(socketPath)) {
    if ((await sendControl(stateDir, { op: 'status' }, 5000).catch(() => null)) !== null) {
      throw new EngineError(`swiftvol serve is already running on ${stateDir}`);
    }
    fs.rmSync(socketPath, { force: true });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  fs.chmodSync(socketPath, 0o600);
  return server;
}
