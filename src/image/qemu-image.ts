// QEMU's own tools as the reader and writer of image formats (issue 15):
// qemu-img info says what an image is, qemu-img map which extents hold data,
// qemu-nbd exports it as raw bytes, qemu-img convert writes other formats.
// swiftvol parses none of these formats itself.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EngineError } from '../engine/engine-error.js';

export interface ImageInfo {
  format: string;
  virtualSize: number;
  backingFile?: string;
}

/** An extent of qemu-img map: data (may hold nonzero bytes) or not (reads as zeros). */
export interface Extent {
  start: number;
  length: number;
  data: boolean;
}

/** A QEMU tool that is not installed. */
export class ToolMissingError extends EngineError {}

function notInstalled(tool: string): ToolMissingError {
  return new ToolMissingError(`${tool} is not installed (Debian: apt-get install qemu-utils; scripts/setup installs it)`);
}

/** Runs a QEMU tool; an EngineError with its message (first line) when it fails, or when it is not installed. */
function runTool(tool: string, args: string[], maxBuffer = 256 * 1024 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { maxBuffer, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(notInstalled(tool));
      }
      const line = stderr.split('\n').find((l) => l.trim() !== '') ?? err.message;
      reject(new EngineError(line.replace(new RegExp(`^${tool}: `), '')));
    });
  });
}

/** What qemu-img makes of an image: its format (probed unless given) and virtual size. */
export async function imageInfo(source: string, format?: string): Promise<ImageInfo> {
  const out = await runTool('qemu-img', ['info', '--output=json', ...(format ? ['-f', format] : []), source]);
  let j: { format?: unknown; 'virtual-size'?: unknown; 'backing-filename'?: unknown };
  try {
    j = JSON.parse(out) as typeof j;
  } catch {
    throw new EngineError(`qemu-img info gave no JSON for ${source}`);
  }
  if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number') throw new EngineError(`qemu-img info of ${source}: no format or virtual size`);
  return { format: j.format, virtualSize: j['virtual-size'], ...(typeof j['backing-filename'] === 'string' ? { backingFile: j['backing-filename'] } : {}) };
}

/** The extents of an image (through its backing chain) and whether each holds data. */
export async function imageMap(source: string, format: string): Promise<Extent[]> {
  const out = await runTool('qemu-img', ['map', '--output=json', '-f', format, source]);
  let j: Array<{ start?: unknown; length?: unknown; data?: unknown; zero?: unknown }>;
  try {
    j = JSON.parse(out) as typeof j;
  } catch {
    throw new EngineError(`qemu-img map gave no JSON for ${source}`);
  }
  // what is not known to read as zeros is read (data false and zero false: a driver that cannot tell)
  return j.map((e) => ({ start: Number(e.start), length: Number(e.length), data: e.zero !== true }));
}

/** Converts a raw image file into another format (sparse: what reads as zeros is left unallocated). */
export async function convertImage(rawFile: string, target: string, format: string): Promise<void> {
  await runTool('qemu-img', ['convert', '-f', 'raw', '-O', format, rawFile, target]);
}

/** An image exported by qemu-nbd on a Unix socket of its own, read-only, as raw bytes. */
export class QemuNbd {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly socket: string,
  ) {}

  static async start(source: string, format: string): Promise<QemuNbd> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swiftvol-nbd-'));
    const socket = path.join(dir, 'nbd.sock');
    // one client, not --persistent: qemu-nbd exits when the connection closes, also when swiftvol is killed
    const child = spawn('qemu-nbd', ['--read-only', `--format=${format}`, `--socket=${socket}`, source], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<Error>((resolve) => {
      child.once('error', (err) =>
        resolve((err as NodeJS.ErrnoException).code === 'ENOENT' ? notInstalled('qemu-nbd') : err),
      );
      child.once('exit', (code, signal) => {
        const line = stderr.split('\n').find((l) => l.trim() !== '');
        resolve(new EngineError(line ? line.replace(/^qemu-nbd: /, '') : `qemu-nbd exited (${signal ?? code})`));
      });
    });
    const nbd = new QemuNbd(child, dir, socket);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const failed = await Promise.race([exited, new Promise<null>((r) => setTimeout(r, 20, null))]);
      if (failed) {
        nbd.removeDir();
        throw failed;
      }
      if (fs.existsSync(socket)) return nbd;
      if (Date.now() > deadline) {
        await nbd.stop();
        throw new EngineError(`qemu-nbd did not export ${source} within 30 s`);
      }
    }
  }

  /** Stops qemu-nbd (by its PID) and removes its socket. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    this.removeDir();
  }

  private removeDir(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
