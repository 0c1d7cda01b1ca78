// The catalog index (doc/format.md, "The catalog index"): one empty object
// per volume in the container swiftvol_catalog, whose name carries what
// `volume list` shows of the volume, so that a listing of that one container
// (10,000 names a request) replaces three reads per volume.
//
//   NAME/UUID/SEQ/SIZE/OBJECT_SIZE/STORED/CREATED_MS/FLAGS[/PARENT/PARENT_SEQ/PARENT_SNAPSHOT]
//
// SEQ is the latest version (10 digits; 0: none yet, the volume is
// incomplete), FLAGS is `e` (encrypted) or `-`. Volume and snapshot names
// have no `/`. An entry is written after each version is committed and the
// volume's older entries are deleted (a new volume's creation deletes any an
// earlier volume of its name left); the index is a cache of the volumes'
// own objects, never a commit point: a reader trusts an entry only where it
// is unambiguous and says the volume is ready, and reads the volume itself
// otherwise (and for volumes with no entry: made before the index, or whose
// entry could not be written).
import { isNotFound, putCreatingContainer, type ObjectStore } from '../store/object-store.js';
import { isVolumeName } from '../format/volume-format.js';
import type { VolumeSummary } from './volume-catalog.js';

/** Beside the volumes' containers, not among them (not CONTAINER_PREFIX + a name). */
export const CATALOG_CONTAINER = 'swiftvol_catalog';

const SEQ_DIGITS = 10;

export function entryName(s: VolumeSummary): string {
  const fields = [
    s.name,
    s.uuid,
    String(s.latestVersion ?? 0).padStart(SEQ_DIGITS, '0'),
    String(s.size),
    String(s.objectSize),
    String(s.storedBytes),
    String(Date.parse(s.createdAt)),
    s.encrypted ? 'e' : '-',
  ];
  if (s.parent) fields.push(s.parent.volume, String(s.parent.seq), s.parent.snapshot);
  return fields.join('/');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const COUNT = /^(0|[1-9]\d{0,15})$/;

/** The summary an entry's name carries, or null if the name is not an entry. */
export function parseEntry(name: string): VolumeSummary | null {
  const f = name.split('/');
  if (f.length !== 8 && f.length !== 11) return null;
  const [volume, uuid, seq, size, objectSize, stored, created, flags] = f as [string, string, string, string, string, string, string, string];
  if (!isVolumeName(volume) || !UUID.test(uuid) || !/^\d{10}$/.test(seq) || (flags !== 'e' && flags !== '-')) return null;
  if (![size, objectSize, stored, created].every((n) => COUNT.test(n))) return null;
  const latest = Number(seq);
  const summary: VolumeSummary = {
    name: volume,
    uuid,
    size: Number(size),
    objectSize: Number(objectSize),
    createdAt: new Date(Number(created)).toISOString(),
    state: latest > 0 ? 'ready' : 'incomplete',
    latestVersion: latest > 0 ? latest : null,
    storedBytes: Number(stored),
    encrypted: flags === 'e',
  };
  if (f.length === 11) {
    const [parent, parentSeq, snapshot] = f.slice(8) as [string, string, string];
    if (!isVolumeName(parent) || !isVolumeName(snapshot) || !COUNT.test(parentSeq)) return null;
    summary.parent = { volume: parent, seq: Number(parentSeq), snapshot };
  }
  return summary;
}

export class CatalogIndex {
  constructor(private readonly store: ObjectStore) {}

  /**
   * Records a volume's summary and drops its older entries. Best effort: the
   * volume's own objects are the truth, and a volume whose entry is missing
   * is read directly; so a failure is reported to the caller to log, never
   * thrown into the commit it follows.
   */
  async record(summary: VolumeSummary): Promise<Error | null> {
    const name = entryName(summary);
    try {
      await putCreatingContainer(this.store, CATALOG_CONTAINER, name, Buffer.alloc(0));
      await this.dropOthers(summary.name, name);
      return null;
    } catch (err) {
      return err as Error;
    }
  }

  /** Deletes every entry of the volume (before the volume itself goes). */
  async forget(volume: string): Promise<void> {
    await this.dropOthers(volume, null);
  }

  /**
   * What the index says of each volume: its summary where one entry (or
   * entries of one uuid: the newest) says it is ready; null where it is
   * ambiguous or incomplete (read the volume itself). Volumes with no entry
   * are absent.
   */
  async read(): Promise<Map<string, VolumeSummary | null>> {
    const byVolume = new Map<string, VolumeSummary[]>();
    try {
      for await (const obj of this.store.list(CATALOG_CONTAINER)) {
        const s = parseEntry(obj.name);
        if (s) byVolume.set(s.name, [...(byVolume.get(s.name) ?? []), s]);
      }
    } catch (err) {
      if (isNotFound(err)) return new Map();
      throw err;
    }
    const out = new Map<string, VolumeSummary | null>();
    for (const [volume, entries] of byVolume) {
      const newest = entries.reduce((a, b) => ((b.latestVersion ?? 0) > (a.latestVersion ?? 0) ? b : a));
      const oneUuid = entries.every((e) => e.uuid === newest.uuid);
      out.set(volume, oneUuid && newest.state === 'ready' ? newest : null);
    }
    return out;
  }

  /** Deletes the volume's entries but keep (all of them when keep is null). */
  private async dropOthers(volume: string, keep: string | null): Promise<void> {
    const doomed: string[] = [];
    try {
      for await (const obj of this.store.list(CATALOG_CONTAINER, `${volume}/`)) if (obj.name !== keep) doomed.push(obj.name);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const name of doomed) {
      await this.store.delete(CATALOG_CONTAINER, name).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }
}
