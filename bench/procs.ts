// Processes the benchmark starts: each one is tracked by its PID and stopped
// by that PID (never by name), in reverse order of start, whatever happens.
import { waitForExit } from '../src/engine/processes.js';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

export class BenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchError';
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, seconds. */
  seconds: number;
  /** CPU time of the process (sampled every 50 ms while it ran, so a lower bound), seconds. */
  cpuSeconds: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a command to completion, capturing its output and wall time. Never rejects on a non-zero exit. */
export function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let cpu = 0;
    const sampler = setInterval(() => {
      if (child.pid) cpu = cpuSeconds(child.pid) ?? cpu;
    }, 50);
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs) {
      timer = setTimeout(() => {
        stderr += `\n[bench: killed ${cmd} (pid ${child.pid}) after ${options.timeoutMs} ms]`;
        if (child.pid) killPid(child.pid, 'SIGKILL');
      }, options.timeoutMs);
    }
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      clearInterval(sampler);
      reject(new BenchError(err.code === 'ENOENT' ? `${cmd} not found` : `cannot run ${cmd}: ${err.message}`));
    });
    child.once('exit', () => clearInterval(sampler));
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(sampler);
      resolve({ code, signal, stdout, stderr, seconds: Number(process.hrtime.bigint() - started) / 1e9, cpuSeconds: cpu });
    });
  });
}

/** Like run, but a non-zero exit is an error carrying the command's stderr. */
export async function runOk(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) {
    const tail = (t: string): string => t.trim().split('\n').slice(-4).join(' | ');
    const why = [tail(r.stderr), r.stdout.trim() ? `its stdout: ${tail(r.stdout)}` : ''].filter(Boolean).join('; ');
    throw new BenchError(`${cmd} ${args.join(' ')} failed (exit ${r.code ?? r.signal}): ${why}`);
  }
  return r;
}

export function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export { isProcessAlive as isAlive, waitForExit as waitExit } from '../src/engine/processes.js';

/** SIGTERM, then SIGKILL after graceMs; waits for the process to go. */
export async function stopPid(pid: number, graceMs: number): Promise<'exited' | 'killed'> {
  killPid(pid, 'SIGTERM');
  if (await waitForExit(pid, graceMs)) return 'exited';
  killPid(pid, 'SIGKILL');
  await waitForExit(pid, 5000);
  return 'killed';
}

/** Peak resident set (VmHWM) of a process, MiB; null if it cannot be read. */
export function peakRssMiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system) a process has used so far, seconds; null if it cannot be read. */
export function cpuSeconds(pid: number): number | null {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

function statCpuSeconds(file: string): number | null {
  try {
    const stat = fs.readFileSync(file, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return null;
  }
}
const CLOCK_TICKS = 100;

/** What a cpuMeter group counts: a process (all its threads), or only the main thread of one (its JavaScript thread, for Node). */
export type CpuSource = number | { mainThreadOf: number };

function sourceCpuSeconds(source: CpuSource): number | null {
  return typeof source === 'number' ? cpuSeconds(source) : statCpuSeconds(`/proc/${source.mainThreadOf}/task/${source.mainThreadOf}/stat`);
}

/**
 * CPU use of groups of processes over a stretch of time: call it at the
 * start, call what it returns at the end, and get each group's CPU as a
 * percentage of one core.
 */
export function cpuMeter(groups: Record<string, CpuSource[]>): () => Record<string, number> {
  const t = process.hrtime.bigint();
  const sum = (sources: CpuSource[]): number => sources.reduce((n: number, source) => n + (sourceCpuSeconds(source) ?? 0), 0);
  const before = Object.fromEntries(Object.entries(groups).map(([k, sources]) => [k, sum(sources)]));
  return () => {
    const seconds = Number(process.hrtime.bigint() - t) / 1e9;
    const out: Record<string, number> = {};
    for (const [k, sources] of Object.entries(groups)) out[k] = (100 * (sum(sources) - before[k]!)) / seconds;
    return out;
  };
}

/** Processes whose session id is one of sids (a daemon and the workers it forked). */
export function sessionMembers(sids: number[]): number[] {
  const want = new Set(sids);
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (want.has(Number(fields[3]))) found.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export { canConnect } from '../src/daemon/tgtd.js';

/**
 * Cleanup steps, run last-in first-out exactly once, on success, failure or
 * a signal. A failing step is reported and the others still run.
 */
export class Cleanup {
  private readonly steps: Array<{ what: string; fn: () => Promise<void> | void }> = [];
  private running: Promise<void> | null = null;

  add(what: string, fn: () => Promise<void> | void): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    // Runs one step early (and only once).
    return async () => {
      const i = this.steps.indexOf(step);
      if (i < 0) return;
      this.steps.splice(i, 1);
      await step.fn();
    };
  }

  runAll(log: (line: string) => void): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) {
        const step = this.steps.pop()!;
        try {
          await step.fn();
        } catch (err) {
          log(`cleanup: ${step.what}: ${(err as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}

/** A long-running child whose output goes to a log file; lines of stdout can be watched. */
export interface Daemonized {
  child: ChildProcess;
  pid: number;
  /** Resolves with the first stdout line (printed so far, or later) that contains text; rejects if the process exits first or on timeout. */
  waitFor(text: string, timeoutMs: number): Promise<string>;
  exited(): boolean;
}

export function startDaemon(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv): Daemonized {
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let buffered = '';
  const printed: string[] = [];
  let exitedFlag = false;
  const watchers: Array<{ text: string; resolve: (line: string) => void; reject: (err: Error) => void }> = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    log.write(d);
    buffered += d;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      printed.push(line);
      for (const w of [...watchers]) {
        if (line.includes(w.text)) {
          watchers.splice(watchers.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => log.write(d));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  child.once('exit', (code, signal) => {
    exitedFlag = true;
    for (const w of watchers.splice(0)) w.reject(new BenchError(`${cmd} exited (${code ?? signal}) before printing '${w.text}'; see ${logFile}`));
  });
  child.once('close', () => log.end());
  void spawnError.then((err) => {
    exitedFlag = true;
    for (const w of watchers.splice(0)) w.reject(new BenchError(`cannot run ${cmd}: ${err.message}`));
  });
  if (child.pid === undefined) {
    // spawn failed synchronously-ish; the error event follows
  }
  return {
    child,
    get pid() {
      return child.pid ?? -1;
    },
    exited: () => exitedFlag,
    waitFor(text: string, timeoutMs: number): Promise<string> {
      const already = printed.find((l) => l.includes(text));
      if (already !== undefined) return Promise.resolve(already);
      if (exitedFlag) return Promise.reject(new BenchError(`${cmd} is not running; see ${logFile}`));
      return new Promise((resolve, reject) => {
        const w = {
          text,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
          reject: (err: Error) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        const timer = setTimeout(() => {
          watchers.splice(watchers.indexOf(w), 1);
          reject(new BenchError(`${cmd} did not print '${text}' within ${timeoutMs / 1000} s; see ${logFile}`));
        }, timeoutMs);
        watchers.push(w);
      });
    },
  };
}
