// A guest boot under QEMU (TCG) for the boot rows (issue 14): the guest of
// test/fixtures/guest.ts from an iSCSI URL, with a QMP socket and
// -no-shutdown, so that QEMU stays once the guest has powered off and says
// how many bytes the guest read from its disk (query-blockstats) before it
// is told to quit. QEMU is tracked by its PID, killed by it at a deadline or
// at the bench's cleanup.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BenchError, isAlive, killPid, waitExit, type Cleanup } from './procs.js';

export interface Guest {
  kernel: string;
  initrd: string;
  /** The line prefix the guest prints on ttyS0 once multi-user.target is reached, followed by a sha256. */
  marker: string;
  /** The sha256 the marker should carry (what the guest read of its check file). */
  checkSha256: string;
}

export interface BootResult {
  /** From QEMU's spawn to the marker on the serial console, ms. */
  markerMs: number;
  /** From QEMU's spawn to the guest's power-off, ms. */
  stoppedMs: number;
  /** What the guest read from and wrote to its virtio disk (QEMU's block stats). */
  rdBytes: number;
  wrBytes: number;
  rdOps: number;
  /** The serial console and QEMU's messages. */
  consoleLog: string;
}

interface QmpMessage {
  QMP?: unknown;
  event?: string;
  id?: number;
  return?: unknown;
  error?: { class: string; desc: string };
}

/** A QMP connection: commands answered by id, events recorded by name. */
class Qmp {
  private buffered = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly events: string[] = [];
  private greeted: Promise<void>;
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    let greet: () => void = () => undefined;
    this.greeted = new Promise<void>((resolve) => (greet = resolve));
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buffered += d;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl).trim();
        this.buffered = this.buffered.slice(nl + 1);
        if (line === '') continue;
        let msg: QmpMessage;
        try {
          msg = JSON.parse(line) as QmpMessage;
        } catch {
          continue;
        }
        if (msg.QMP !== undefined) greet();
        else if (msg.event !== undefined) this.events.push(msg.event);
        else if (msg.id !== undefined) {
          const p = this.pending.get(msg.id);
          this.pending.delete(msg.id);
          if (!p) continue;
          if (msg.error) p.reject(new BenchError(`QMP: ${msg.error.class}: ${msg.error.desc}`));
          else p.resolve(msg.return);
        }
      }
    });
    const gone = (): void => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new BenchError('QMP connection closed'));
      this.pending.clear();
    };
    sock.on('close', gone);
    sock.on('error', gone);
  }

  /** Connects to a QMP socket QEMU is about to create (retrying while alive() and within timeoutMs), and negotiates capabilities. */
  static async connect(socketPath: string, alive: () => boolean, timeoutMs: number): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const sock = await new Promise<net.Socket | null>((resolve) => {
        const s = net.createConnection(socketPath);
        s.once('connect', () => resolve(s));
        s.once('error', () => {
          s.destroy();
          resolve(null);
        });
      });
      if (sock) {
        const qmp = new Qmp(sock);
        const greeted = await Promise.race([qmp.greeted.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
        if (!greeted) {
          qmp.close();
          throw new BenchError(`no QMP greeting on ${socketPath}`);
        }
        await qmp.command('qmp_capabilities');
        return qmp;
      }
      if (!alive()) throw new BenchError('QEMU exited before its QMP socket accepted a connection');
      if (Date.now() > deadline) throw new BenchError(`QMP socket ${socketPath} did not accept a connection within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed) return Promise.reject(new BenchError('QMP connection closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(JSON.stringify(args ? { execute, arguments: args, id } : { execute, id }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

interface BlockStats {
  device?: string;
  qdev?: string;
  stats: { rd_bytes: number; wr_bytes: number; rd_operations: number };
}

/**
 * Boots guest from an iSCSI URL (its disk is /dev/vda, id disk0) and
 * resolves once it has printed its marker, with the right sum, and powered
 * off: times and block stats. Rejects (with the console's tail) if the
 * marker is missing or wrong, the guest does not power off, or deadlineMs
 * passes (QEMU is then killed by its PID). files: where the QMP socket and
 * the console log (qemu-LABEL.log) go.
 */
export async function bootGuest(guest: Guest, url: string, options: { dir: string; label: string; deadlineMs: number; cleanup: Cleanup; memoryMiB?: number }): Promise<BootResult> {
  const socketPath = path.join(options.dir, `qmp-${options.label}.sock`);
  const logFile = path.join(options.dir, `qemu-${options.label}.log`);
  fs.rmSync(socketPath, { force: true });
  const args = [
    '-nographic', '-no-reboot', '-no-shutdown', '-m', String(options.memoryMiB ?? 512), '-smp', '1', '-nic', 'none',
    '-kernel', guest.kernel, '-initrd', guest.initrd,
    // panic=-1 with -no-reboot: a guest that cannot mount its root stops at once (and -no-shutdown keeps QEMU for the stats)
    '-append', 'root=/dev/vda rw console=ttyS0 panic=-1',
    '-drive', `file=${url},format=raw,if=virtio,id=disk0`,
    '-qmp', `unix:${socketPath},server=on,wait=off`,
  ];
  const started = performance.now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = qemu.pid;
  let output = '';
  let exited = false;
  let markerAt: number | null = null;
  let onMarker: () => void = () => undefined;
  const marker = new Promise<void>((resolve) => (onMarker = resolve));
  const collect = (d: Buffer): void => {
    output += d.toString('utf8');
    if (markerAt === null && output.includes(guest.marker)) {
      markerAt = performance.now();
      onMarker();
    }
  };
  qemu.stdout.on('data', collect);
  qemu.stderr.on('data', collect);
  const exit = new Promise<string>((resolve) => {
    qemu.once('error', (err) => {
      exited = true;
      resolve(`cannot run qemu-system-x86_64: ${err.message}`);
    });
    qemu.once('exit', () => (exited = true));
    // 'close': once its output is read to the end too (for the console's tail)
    qemu.once('close', (code, signal) => {
      exited = true;
      resolve(`QEMU exited (${code ?? signal})`);
    });
  });
  const kill = async (): Promise<void> => {
    if (pid !== undefined && !exited && isAlive(pid)) {
      killPid(pid, 'SIGKILL');
      await waitExit(pid, 5000);
    }
  };
  const untrack = options.cleanup.add(`qemu ${options.label} (pid ${pid})`, kill);
  let timedOut = false;
  let onDeadline: () => void = () => undefined;
  const deadline = new Promise<void>((resolve) => (onDeadline = resolve));
  const timer = setTimeout(() => {
    timedOut = true;
    onDeadline();
    void kill();
  }, options.deadlineMs);
  const tail = (): string => output.slice(-3000);
  const failWith = (why: string): BenchError => new BenchError(`boot ${options.label}: ${why}; console in ${path.basename(logFile)}, its tail:\n${tail()}`);
  let qmp: Qmp | null = null;
  try {
    if (pid === undefined) throw failWith(await exit);
    qmp = await Qmp.connect(socketPath, () => !exited, 20_000).catch((err: Error) => {
      throw failWith(err.message);
    });
    const first = await Promise.race([marker.then(() => 'marker'), exit, deadline.then(() => 'deadline')]);
    if (first !== 'marker') throw failWith(first === 'deadline' ? `no ${guest.marker} within ${options.deadlineMs / 1000} s (killed)` : `${first} before ${guest.marker}`);
    // The sum follows the marker on the same line: wait for the end of the line.
    for (let i = 0; i < 100 && !new RegExp(`${guest.marker} \\S+\\r?\\n`).test(output); i++) await new Promise((r) => setTimeout(r, 50));
    const sum = new RegExp(`${guest.marker} (\\S+)`).exec(output)?.[1];
    if (sum !== guest.checkSha256) throw failWith(`the guest read its check file wrong: sum ${sum}, expected ${guest.checkSha256}`);
    // Then the power-off: QEMU stays (-no-shutdown) in status "shutdown".
    let stoppedAt: number | null = null;
    while (stoppedAt === null) {
      if (exited) throw failWith(`${await exit} after the marker, before the stats were read`);
      if (timedOut) throw failWith(`the guest did not power off within ${options.deadlineMs / 1000} s (killed)`);
      const status = (await qmp.command('query-status')) as { status: string; running: boolean };
      if (qmp.events.includes('SHUTDOWN') || status.status === 'shutdown') stoppedAt = performance.now();
      else await new Promise((r) => setTimeout(r, 250));
    }
    const stats = (await qmp.command('query-blockstats')) as BlockStats[];
    const disk = stats.find((s) => s.device === 'disk0') ?? stats.find((s) => s.qdev?.includes('virtio'));
    if (!disk) throw failWith(`query-blockstats has no disk0: ${JSON.stringify(stats).slice(0, 500)}`);
    await qmp.command('quit').catch(() => undefined); // QEMU may close the socket before answering
    if (!(await Promise.race([exit.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]))) await kill();
    return {
      markerMs: markerAt! - started,
      stoppedMs: stoppedAt - started,
      rdBytes: disk.stats.rd_bytes,
      wrBytes: disk.stats.wr_bytes,
      rdOps: disk.stats.rd_operations,
      consoleLog: logFile,
    };
  } finally {
    clearTimeout(timer);
    qmp?.close();
    await kill();
    await untrack();
    await Promise.race([exit, new Promise((r) => setTimeout(r, 10_000))]);
    fs.writeFileSync(logFile, `$ qemu-system-x86_64 ${args.join(' ')}\n${output}`);
    fs.rmSync(socketPath, { force: true });
  }
}
