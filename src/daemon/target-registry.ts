// The exports `swiftvol serve` restores at start: one entry per volume,
// kept in the state directory as JSON (written atomically).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { makeDirs } from '../os/make-dirs.js';

export const DEFAULT_IQN_PREFIX = 'iqn.2026-11.org.swiftvol';

export interface TargetSpec {
  volume: string;
  iqn: string;
  /** Initiator addresses, CIDRs, or IQNs allowed to log in. */
  allow: string[];
  chap?: { user: string; secret: string };
  /** The volume's size in bytes when it was exported (sizes never change): serve answers bs_swift with it before the volume is open. */
  size?: number;
  /**
   * The root of the volume's lineage, as a serve with engine threads found it
   * (it picks the volume's thread; a later serve need not look it up again).
   * Absent: looked up when needed. Older serves ignore it.
   */
  root?: string;
}


export class TargetSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetSpecError';
  }
}

/** Checks one --allow value: an IPv4/IPv6 address, a CIDR, or an initiator IQN/EUI name. */
export function validateAllow(value: string): void {
  if (/^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[^\s,;]+)?|eui\.[0-9a-fA-F]{16})$/.test(value)) return;
  const [addr, bits, extra] = value.split('/');
  const family = net.isIP(addr ?? '');
  if (family !== 0 && extra === undefined) {
    if (bits === undefined) return;
    const n = Number(bits);
    if (/^\d+$/.test(bits) && n >= 0 && n <= (family === 4 ? 32 : 128)) return;
  }
  throw new TargetSpecError(`'${value}' is not an initiator address, CIDR (10.0.0.0/24) or initiator name (iqn.…)`);
}

/** Checks --chap USER:SECRET; iSCSI CHAP secrets are 12 to 16 characters for most initiators. */
export function parseChap(value: string): { user: string; secret: string } {
  const i = value.indexOf(':');
  const user = i > 0 ? value.slice(0, i) : '';
  const secret = i > 0 ? value.slice(i + 1) : '';
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(user) || !/^[\x21-\x7e]{12,64}$/.test(secret) || /[,;:]/.test(secret)) {
    throw new TargetSpecError('--chap takes USER:SECRET, a user of letters, digits and ._@- and a secret of 12 to 64 printable characters without , ; :');
  }
  return { user, secret };
}

export function targetName(prefix: string, volume: string): string {
  return `${prefix}:${volume}`;
}

export class TargetRegistry {
  private readonly file: string;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'targets.json');
  }

  list(): TargetSpec[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const doc = JSON.parse(text) as { targets?: TargetSpec[] };
    return doc.targets ?? [];
  }

  get(volume: string): TargetSpec | undefined {
    return this.list().find((t) => t.volume === volume);
  }

  put(...specs: TargetSpec[]): void {
    const names = new Set(specs.map((t) => t.volume));
    this.save([...this.list().filter((t) => !names.has(t.volume)), ...specs]);
  }

  /** Removes the entries of these volumes; how many there were. */
  remove(...volumes: string[]): number {
    const names = new Set(volumes);
    const before = this.list();
    const after = before.filter((t) => !names.has(t.volume));
    if (after.length !== before.length) this.save(after);
    return before.length - after.length;
  }

  private save(targets: TargetSpec[]): void {
    makeDirs(path.dirname(this.file), 0o700);
    const temp = `${this.file}.${process.pid}.tmp`;
    const sorted = [...targets].sort((a, b) => a.volume.localeCompare(b.volume));
    fs.writeFileSync(temp, JSON.stringify({ version: 1, targets: sorted }, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(temp, this.file);
  }
}

/** What the CLI shows of a target. */
export interface TargetView {
  volume: string;
  iqn: string;
  allow: string[];
  chapUser: string | null;
  tid: number | null;
  state: 'served' | 'failed' | 'stopped';
  error?: string;
}

export function viewOf(t: TargetSpec & { tid?: number; state?: 'served' | 'failed'; error?: string }): TargetView {
  const view: TargetView = { volume: t.volume, iqn: t.iqn, allow: t.allow, chapUser: t.chap?.user ?? null, tid: t.tid || null, state: t.state ?? 'stopped' };
  if (t.error) view.error = t.error;
  return view;
}
