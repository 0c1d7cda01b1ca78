// tgtd, Debian's iSCSI target: starting one of our own, and driving it (ours
// or an existing one) through its control socket, as tgtadm does. Requests
// are always asynchronous: when a LUN with bstype swift is created, tgtd's
// main loop calls bs_swift, which connects back to the daemon; a synchronous
// request from the daemon's own event loop would deadlock.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { isProcessAlive, waitForExit } from '../engine/processes.js';
import { MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD } from '../os/malloc-tuning.js';
import { TgtIpcError, tgtRequest, type TgtRequest } from './tgt-ipc.js';

export class TgtError extends Error {
  constructor(
    message: string,
    /** tgtd's tgtadm_errno when it refused a request (TgtErrno), else null. */
    readonly tgtErrno: number | null = null,
  ) {
    super(message);
    this.name = 'TgtError';
  }
}

/** Negotiation limits raised from tgt's small defaults, for throughput. */
export const THROUGHPUT_PARAMS: ReadonlyArray<readonly [string, number]> = [
  ['MaxRecvDataSegmentLength', 262144],
  ['MaxXmitDataSegmentLength', 262144],
  ['MaxBurstLength', 16776192],
  ['FirstBurstLength', 262144],
];

export interface TargetShow {
  tid: number;
  iqn: string;
  luns: Array<{ lun: number; bstype: string; path: string }>;
  /** CHAP accounts bound to the target. */
  accounts: string[];
}

export interface LunOptions {
  bstype: string;
  bsopts?: string;
  /** UNMAP and WRITE SAME with UNMAP are only offered with thin provisioning. */
  thinProvisioning?: boolean;
  /** Logical block size in bytes (tgtadm --blocksize); tgt's default is 512. */
  blockSize?: number;
}

/** The lowest tid (from 1) not in used. */
export function lowestFreeTid(used: { has(tid: number): boolean }): number {
  let tid = 1;
  while (used.has(tid)) tid++;
  return tid;
}

/**
 * tgtd's management, as tgtadm offers it, spoken over tgtd's control socket
 * (tgt-ipc.ts) rather than by running tgtadm: one process per step made
 * serving hundreds of volumes slow.
 */
export class TgtAdmin {
  constructor(readonly control: number, private readonly timeoutMs = 30_000) {}

  request(req: TgtRequest, timeoutMs = this.timeoutMs): Promise<string> {
    return tgtRequest(this.control, req, timeoutMs).catch((err: Error) => {
      throw new TgtError(err.message, err instanceof TgtIpcError ? err.tgtErrno : null);
    });
  }

  /** Answers once tgtd runs (tgtadm --mode system --op show). */
  async ping(timeoutMs = this.timeoutMs): Promise<void> {
    await this.request({ mode: 'system', op: 'show' }, timeoutMs);
  }

  async addTarget(tid: number, iqn: string): Promise<void> {
    await this.request({ mode: 'target', op: 'new', lld: 'iscsi', tid, params: [['targetname', iqn]] });
    for (const [name, value] of THROUGHPUT_PARAMS) {
      await this.request({ mode: 'target', op: 'update', lld: 'iscsi', tid, params: [[name, value]] });
    }
  }

  async addLun(tid: number, lun: number, backingStore: string, options: LunOptions): Promise<void> {
    // tgtadm's order: path, bstype, bsopts, blocksize
    const params: Array<[string, string | number]> = [['path', backingStore], ['bstype', options.bstype]];
    if (options.bsopts !== undefined) params.push(['bsopts', options.bsopts]);
    if (options.blockSize !== undefined) params.push(['blocksize', options.blockSize]);
    await this.request({ mode: 'device', op: 'new', lld: 'iscsi', tid, lun, params });
    if (options.thinProvisioning) {
      await this.request({ mode: 'device', op: 'update', lld: 'iscsi', tid, lun, params: [['thin_provisioning', 1]] });
    }
  }

  /** Allows an initiator address (or CIDR, or ALL). */
  async bindAddress(tid: number, address: string): Promise<void> {
    await this.request({ mode: 'target', op: 'bind', lld: 'iscsi', tid, params: [['initiator-address', address]] });
  }

  /** Allows an initiator by its IQN. */
  async bindName(tid: number, iqn: string): Promise<void> {
    await this.request({ mode: 'target', op: 'bind', lld: 'iscsi', tid, params: [['initiator-name', iqn]] });
  }

  async addChap(tid: number, user: string, secret: string): Promise<void> {
    await this.request({ mode: 'account', op: 'new', lld: 'iscsi', params: [['user', user], ['password', secret]] });
    await this.request({ mode: 'account', op: 'bind', lld: 'iscsi', tid, params: [['user', user]] });
  }

  async deleteAccount(user: string): Promise<void> {
    await this.request({ mode: 'account', op: 'delete', lld: 'iscsi', params: [['user', user]] });
  }

  async deleteTarget(tid: number): Promise<void> {
    await this.request({ mode: 'target', op: 'delete', lld: 'iscsi', tid, force: true });
  }

  /** Every target with its LUNs and bound accounts, as `tgtadm --op show` tells. */
  async show(): Promise<TargetShow[]> {
    const out = await this.request({ mode: 'target', op: 'show', lld: 'iscsi' });
    const targets: TargetShow[] = [];
    let section = '';
    let lun: { lun: number; bstype: string; path: string } | null = null;
    for (const line of out.split('\n')) {
      const target = /^Target (\d+): (\S+)$/.exec(line);
      if (target) {
        targets.push({ tid: Number(target[1]), iqn: target[2]!, luns: [], accounts: [] });
        section = '';
        continue;
      }
      const current = targets.at(-1);
      if (!current) continue;
      const heading = /^    (\S.*):$/.exec(line);
      if (heading) {
        section = heading[1]!;
        continue;
      }
      const text = line.trim();
      if (section === 'LUN information') {
        const m = /^LUN: (\d+)$/.exec(text);
        if (m) current.luns.push((lun = { lun: Number(m[1]), bstype: '', path: '' }));
        else if (lun && text.startsWith('Backing store type: ')) lun.bstype = text.slice('Backing store type: '.length);
        else if (lun && text.startsWith('Backing store path: ')) lun.path = text.slice('Backing store path: '.length);
      } else if (section === 'Account information' && text !== '') {
        current.accounts.push(text.replace(/ \(outgoing\)$/, ''));
      }
    }
    return targets;
  }

  /** Targets tgtd has, by tid. */
  async targets(): Promise<Map<number, string>> {
    const out = await this.request({ mode: 'target', op: 'show', lld: 'iscsi' });
    const found = new Map<number, string>();
    for (const m of out.matchAll(/^Target (\d+): (\S+)$/gm)) found.set(Number(m[1]), m[2]!);
    return found;
  }

  /** The lowest tid no target of this tgtd uses (whoever created it). */
  async freeTid(): Promise<number> {
    return lowestFreeTid(await this.targets());
  }

  /** Makes tgtd exit (it does once no target is left). */
  async shutdown(): Promise<void> {
    await this.request({ mode: 'system', op: 'delete' }, 10_000);
  }
}

export interface TgtdOptions {
  host: string;
  port: number;
  /** tgtd's output goes here (a file, not a pipe: tgtd must outlive a crashed daemon). */
  logFile: string;
  /** Control port N (socket /var/run/tgtd/socket.N); a free one is picked when absent. */
  control?: number;
}

/** What identifies a tgtd we started, so a restarted daemon can find it again. */
export interface TgtdRecord {
  pid: number;
  control: number;
  host: string;
  port: number;
}

/** glibc's tunables that tgtd runs with (see tgtdEnvironment): src/os/malloc-tuning.ts's thresholds, as serve sets its own. */
const TGTD_MALLOC_TUNABLES: ReadonlyArray<readonly [string, number]> = [
  ['glibc.malloc.mmap_threshold', MALLOC_MMAP_THRESHOLD],
  ['glibc.malloc.trim_threshold', MALLOC_TRIM_THRESHOLD],
];

/**
 * The environment tgtd runs with: env, with glibc's malloc told to serve
 * blocks up to 32 MiB from its heap and to keep 64 MiB of free memory for
 * reuse. tgtd allocates each command's data buffer (valloc) and frees it at
 * the end; over glibc's default threshold (128 KiB) every 1 MiB read was an
 * mmap, page faults on the whole buffer and a munmap: a third of tgtd's CPU
 * per cold MB (1.05-1.16 ms per MB by hand, 0.68-0.70 with the threshold).
 * With the threshold alone the top of the heap was still given back as it
 * emptied: 14-17 page faults per MB read, none with the trim threshold
 * (tgtd 0.61-0.68 -> 0.57-0.63 ms per MB, 3 alternating pairs). An
 * operator's own GLIBC_TUNABLES are kept, and win for a tunable they set.
 * (glibc 2.36 leaves only the first tunable in the running tgtd's environment,
 * /proc/PID/environ, and applies them all.)
 */
export function tgtdEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const own = env.GLIBC_TUNABLES ?? '';
  const given = new Set(own.split(':').map((setting) => setting.split('=')[0]));
  const ours = TGTD_MALLOC_TUNABLES.filter(([name]) => !given.has(name)).map(([name, value]) => `${name}=${value}`);
  if (ours.length === 0) return env;
  return { ...env, GLIBC_TUNABLES: [...(own === '' ? [] : [own]), ...ours].join(':') };
}

/**
 * A tgtd of our own. It runs detached, with its output in a log file, so that
 * it keeps serving (and bs_swift keeps reconnecting) while the daemon is
 * restarted after a crash; the next daemon adopts it.
 */
export class Tgtd {
  readonly admin: TgtAdmin;
  private stopping: Promise<void> | null = null;

  private constructor(readonly record: TgtdRecord) {
    this.admin = new TgtAdmin(record.control);
  }

  get pid(): number {
    return this.record.pid;
  }

  static async start(options: TgtdOptions): Promise<Tgtd> {
    // tgtd that cannot bind its portal only logs it and runs on, unreachable, while
    // whatever holds the port answers in its place: so the port is tried first,
    // and tgtd's log is read for the failed bind (the port taken meanwhile).
    await checkPortalFree(options.host, options.port);
    const control = options.control ?? freeControlPort();
    const args = ['-f', '-C', String(control), '--iscsi', `portal=${options.host}:${options.port}`];
    const logFd = fs.openSync(options.logFile, 'a', 0o600);
    const logStart = fs.fstatSync(logFd).size;
    let child: ChildProcess;
    try {
      child = spawn('tgtd', args, { stdio: ['ignore', logFd, logFd], detached: true, env: tgtdEnvironment() });
    } finally {
      fs.closeSync(logFd);
    }
    const spawned = await new Promise<Error | null>((resolve) => {
      child.once('spawn', () => resolve(null));
      child.once('error', (err) => resolve(err));
    });
    if (spawned) {
      const missing = (spawned as NodeJS.ErrnoException).code === 'ENOENT';
      throw new TgtError(missing ? 'tgtd not found: install the Debian package tgt (scripts/setup does)' : `cannot start tgtd: ${spawned.message}`);
    }
    child.unref();
    const tgtd = new Tgtd({ pid: child.pid!, control, host: options.host, port: options.port });
    const tail = (): string => readTail(options.logFile);
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (!isProcessAlive(tgtd.pid)) {
        throw new TgtError(`tgtd exited at start (is ${options.host}:${options.port} in use?): ${tail()}`);
      }
      let up = false;
      try {
        await tgtd.admin.ping(5000);
        up = await canConnect(options.host, options.port);
      } catch {
        // not up yet
      }
      if (up) {
        if (!logSince(options.logFile, logStart).includes('failed to create/bind to portal')) return tgtd;
        await tgtd.stop();
        throw new TgtError(portalInUse(options.host, options.port));
      }
      if (Date.now() > deadline) {
        await tgtd.stop();
        throw new TgtError(`tgtd did not come up on ${options.host}:${options.port}: ${tail()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The tgtd of a record, if that process is still the tgtd we started (checked by its command line). */
  static async adopt(record: TgtdRecord): Promise<Tgtd | null> {
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${record.pid}/cmdline`, 'utf8');
    } catch {
      return null;
    }
    const args = cmdline.split('\0');
    if (!args[0]?.endsWith('tgtd') || !cmdline.includes(`-C\0${record.control}\0`) || !args.includes(`portal=${record.host}:${record.port}`)) return null;
    const tgtd = new Tgtd(record);
    try {
      await tgtd.admin.ping(5000);
    } catch {
      return null;
    }
    return tgtd;
  }

  /** Deletes every target, asks tgtd to exit, and kills it (by PID) if it does not. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (isProcessAlive(this.pid)) {
        try {
          for (const tid of (await this.admin.targets()).keys()) await this.admin.deleteTarget(tid);
          await this.admin.shutdown();
        } catch {
          // killed below
        }
        if (!(await waitForExit(this.pid, 5000))) {
          try {
            process.kill(this.pid, 'SIGKILL');
          } catch {
            // already gone
          }
          await waitForExit(this.pid, 5000);
        }
      }
      for (const f of [`/var/run/tgtd/socket.${this.record.control}`, `/var/run/tgtd/socket.${this.record.control}.lock`]) fs.rmSync(f, { force: true });
    })();
    return this.stopping;
  }
}

function portalInUse(host: string, port: number): string {
  return `portal ${host}:${port} is in use by another process: choose another --portal, or stop what listens there`;
}

/** Throws a TgtError if host:port cannot be listened on (taken, or not an address of this host). */
async function checkPortalFree(host: string, port: number): Promise<void> {
  const server = net.createServer();
  const failed = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    server.once('error', resolve);
    server.listen({ host, port, exclusive: true }, () => resolve(null));
  });
  if (!failed) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return;
  }
  if (failed.code === 'EADDRINUSE') throw new TgtError(portalInUse(host, port));
  if (failed.code === 'EADDRNOTAVAIL') throw new TgtError(`portal ${host}:${port}: ${host} is not an address of this host`);
  throw new TgtError(`cannot listen on portal ${host}:${port}: ${failed.message}`);
}

/** What a log file gained after byte `start`. */
function logSince(file: string, start: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const length = Math.max(0, fs.fstatSync(fd).size - start);
      const buffer = Buffer.alloc(Math.min(length, 1 << 20));
      return buffer.subarray(0, fs.readSync(fd, buffer, 0, buffer.length, start)).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

function readTail(file: string): string {
  try {
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n').filter((l) => !isStartupNoise(l));
    return lines.slice(-3).join(' | ');
  } catch {
    return '(no output)';
  }
}


function isStartupNoise(line: string): boolean {
  return /iser|rdma|oom_adjust|oom_score_adj|nr_open|libibverbs|ibv_/i.test(line);
}

function freeControlPort(): number {
  for (let i = 0; i < 1000; i++) {
    // tgtd keeps the control port in a short int.
    const n = 1000 + Math.floor(Math.random() * 31000);
    if (!fs.existsSync(`/var/run/tgtd/socket.${n}`) && !fs.existsSync(`/var/run/tgtd/socket.${n}.lock`)) return n;
  }
  throw new TgtError('no free tgtd control port');
}

/** Whether a TCP connection to host:port is accepted (a portal is up). */
export function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

