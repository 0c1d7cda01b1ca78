// The local state directory: one overlay directory per volume attached here,
// and one lock file per volume so that two processes never write one
// volume's local state at once.
import fs from 'node:fs';
import path from 'node:path';
import { EngineError } from './engine-error.js';
import { isProcessAlive } from './processes.js';
import { makeDirs } from '../os/make-dirs.js';

export class StateDir {
  constructor(readonly root: string) {}

  volumeDir(name: string): string {
    return path.join(this.root, 'volumes', name);
  }

  hasVolume(name: string): boolean {
    return fs.existsSync(path.join(this.volumeDir(name), 'state.db'));
  }

  removeVolume(name: string): void {
    fs.rmSync(this.volumeDir(name), { recursive: true, force: true });
  }

  /**
   * Throws an EngineError if a file of `size` bytes cannot be made here: a
   * volume's overlay is a sparse file of its size, and file systems bound a
   * file's size (ext4 at 16 TiB). Checked before a volume is written to the
   * store, so that a size this gateway cannot hold changes nothing.
   */
  checkRoomFor(size: number): void {
    makeDirs(this.root, 0o700);
    const probe = path.join(this.root, `.size-probe-${process.pid}`);
    const fd = fs.openSync(probe, 'w', 0o600);
    try {
      fs.ftruncateSync(fd, Math.ceil(size / 4096) * 4096);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EFBIG') throw err;
      throw new EngineError(
        `a volume of ${size} bytes (${(size / 2 ** 40).toFixed(1)} TiB) is larger than a file can be on the file system of ${this.root}, ` +
          "where its overlay is a sparse file of the volume's size: use a smaller size, or a state dir on a file system that allows it (ext4 stops at 16 TiB, xfs at 8 EiB)",
      );
    } finally {
      fs.closeSync(fd);
      fs.rmSync(probe, { force: true });
    }
  }

  /**
   * Takes the volume's lock, or fails naming the process that holds it. A
   * lock whose process is gone is taken over. Returns the release function.
   */
  lock(name: string, purpose: string): () => void {
    const dir = path.join(this.root, 'locks');
    makeDirs(dir, 0o700);
    const file = path.join(dir, `${name}.lock`);
    const content = JSON.stringify({ pid: process.pid, purpose, since: new Date().toISOString() });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(file, content, { flag: 'wx', mode: 0o600 });
        return () => {
          try {
            const held = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid?: number };
            if (held.pid === process.pid) fs.unlinkSync(file);
          } catch {
            // Already gone: nothing to release.
          }
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readHolder(file);
      if (holder && holder.pid !== process.pid && isProcessAlive(holder.pid)) {
        throw new EngineError(`volume '${name}' is in use by process ${holder.pid} (${holder.purpose})`);
      }
      if (holder && holder.pid === process.pid) {
        throw new EngineError(`volume '${name}' is already open in this process (${holder.purpose})`);
      }
      fs.rmSync(file, { force: true }); // stale: its process is gone
    }
    throw new EngineError(`could not take the lock of volume '${name}'`);
  }
}

function readHolder(file: string): { pid: number; purpose: string } | null {
  try {
    const held = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid?: unknown; purpose?: unknown };
    if (typeof held.pid !== 'number') return null;
    return { pid: held.pid, purpose: typeof held.purpose === 'string' ? held.purpose : 'unknown' };
  } catch {
    return null;
  }
}

