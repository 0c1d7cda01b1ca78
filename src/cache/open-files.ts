// Open descriptors of the gateway cache's files, kept between reads and
// writes: opening and closing a file for every 4 KiB a cold random read
// keeps cost serve more of its one thread than the I/O itself (measured:
// 0.15 ms of the event loop per open). At most `limit` stay open; one in use
// is never closed under its user (a closed number can be reused by the next
// open, and an I/O in flight would then reach another file).
import fs from 'node:fs';
import { promisify } from 'node:util';

const fsOpen = promisify(fs.open);

interface OpenFile {
  fd: number;
  users: number;
  /** Out of the table (evicted, its file deleted, or over the limit): closed when its last user is done. */
  doomed: boolean;
}

export class OpenFiles {
  private readonly files = new Map<string, OpenFile>();

  constructor(private readonly limit: number) {}

  /** Runs fn with a descriptor of file opened with flags (mode 0600 when created). */
  async use<T>(file: string, flags: number, fn: (fd: number) => Promise<T>): Promise<T> {
    const key = `${flags}:${file}`;
    let f = this.files.get(key);
    if (f) {
      this.files.delete(key); // least recently used first
      this.files.set(key, f);
    } else {
      const fd = await fsOpen(file, flags, 0o600);
      const raced = this.files.get(key); // another user opened it meanwhile: one is enough
      if (raced) {
        fs.closeSync(fd);
        f = raced;
      } else {
        f = { fd, users: 0, doomed: false };
        this.files.set(key, f);
        this.trim();
      }
    }
    f.users++;
    try {
      return await fn(f.fd);
    } finally {
      f.users--;
      if (f.doomed && f.users === 0) fs.closeSync(f.fd);
    }
  }

  /** The file is deleted: its descriptors close once nobody uses them. */
  forget(file: string): void {
    for (const [key, f] of this.files) if (key.endsWith(`:${file}`)) this.retire(key, f);
  }

  closeAll(): void {
    for (const [key, f] of this.files) this.retire(key, f);
  }

  private trim(): void {
    for (const [key, f] of this.files) {
      if (this.files.size <= this.limit) break;
      this.retire(key, f);
    }
  }

  private retire(key: string, f: OpenFile): void {
    this.files.delete(key);
    f.doomed = true;
    if (f.users === 0) fs.closeSync(f.fd);
  }
}
