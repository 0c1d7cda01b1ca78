// Making a directory and its missing parents, as `mkdir -p`, with an error
// that says which part of the path is at fault. Node's own recursive mkdir
// loops forever where mkdir fails with ENOENT in a directory that exists
// (procfs: `--state-dir /proc/x` spun at 100% CPU), and reports a state
// dir under a file or in a read-only place as a bare errno.
import fs from 'node:fs';
import path from 'node:path';

/** A local path that cannot be made into a directory; the message names it and why. */
export class LocalPathError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'LocalPathError';
  }
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Makes dir and every missing parent (each with mode); nothing if it is a directory already. */
export function makeDirs(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; ) {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(at);
    } catch (err) {
      // (ENOTDIR: a file further up, found as the walk goes on)
      if (errnoOf(err) !== 'ENOENT' && errnoOf(err) !== 'ENOTDIR') throw refused(dir, at, err);
      missing.push(at);
      const up = path.dirname(at);
      if (up === at) break;
      at = up;
      continue;
    }
    if (!stat.isDirectory()) throw new LocalPathError(`cannot make directory ${dir}: ${at} is not a directory`, 'ENOTDIR');
    break;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d, { mode });
    } catch (err) {
      if (errnoOf(err) === 'EEXIST' && fs.statSync(d).isDirectory()) continue; // made meanwhile
      throw refused(dir, path.dirname(d), err);
    }
  }
}

function refused(dir: string, where: string, err: unknown): LocalPathError {
  const code = errnoOf(err);
  const why =
    code === 'ENOENT' ? `${where} takes no new directories`
    : code === 'EACCES' || code === 'EPERM' ? `permission denied in ${where}`
    : code === 'EROFS' ? `${where} is on a read-only file system`
    : code === 'ENOTDIR' ? `${where} is not a directory`
    : code === 'ENOSPC' ? `no space left on the device of ${where}`
    : (err as Error).message;
  return new LocalPathError(`cannot make directory ${dir}: ${why}`, code);
}
