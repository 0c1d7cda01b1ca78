// Scrub: reads every data object a version table names and checks every
// block (format 3: the block sums; formats 1 and 2: the whole object's MD5),
// in parallel with bounded memory (one object per worker), and reports each
// object that is corrupt, missing or unreadable. The table itself was
// checked when it was read (its MD5 as a whole object, then its format).
import { StoreError, isNotFound, type ObjectStore } from '../store/object-store.js';
import { chunkLength, dataObjectName, type VersionTable } from '../format/volume-format.js';
import { chunkObjectsOf } from './chunk-objects.js';
import { runPool } from '../store/run-pool.js';
import type { VolumeKey } from './volume-key.js';

export type ObjectProblem = 'corrupt' | 'missing' | 'unreadable';

export interface ScrubFinding {
  chunk: number;
  /** container/object */
  object: string;
  problem: ObjectProblem;
  message: string;
}

export interface ScrubReport {
  volume: string;
  seq: number;
  snapshot: string | null;
  objects: number;
  bytes: number;
  findings: ScrubFinding[];
}

export interface ScrubOptions {
  /** Parallel object reads (default 4): memory is about this many objects. */
  concurrency?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
  /** The key of an encrypted volume (its tags are what is checked). */
  key?: VolumeKey;
}

/** Checks every object `table` names; the report lists what is wrong, in chunk order. */
export async function scrubVersion(store: ObjectStore, table: VersionTable, options: ScrubOptions = {}): Promise<ScrubReport> {
  const objects = chunkObjectsOf(store);
  const entries = [...table.chunks].sort((a, b) => a[0] - b[0]);
  const total = entries.reduce((sum, [chunk]) => sum + chunkLength(table.size, table.objectSize, chunk), 0);
  const findings: ScrubFinding[] = [];
  let done = 0;
  options.onProgress?.(0, total);
  await runPool(
    entries,
    options.concurrency ?? 4,
    async ([chunk, ref]) => {
      const length = chunkLength(table.size, table.objectSize, chunk);
      const object = `${ref.container}/${dataObjectName(ref.generation, chunk)}`;
      try {
        const data = await objects.read(ref, chunk, length, 0, length, options.key);
        if (data.length !== length) findings.push({ chunk, object, problem: 'corrupt', message: `object ${object} holds ${data.length} bytes of chunk, not ${length}` });
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (isNotFound(err)) findings.push({ chunk, object, problem: 'missing', message: `object ${object} is missing` });
        else if (err instanceof StoreError && err.kind === 'checksum') findings.push({ chunk, object, problem: 'corrupt', message }); // an IntegrityError too
        else if (err instanceof StoreError) findings.push({ chunk, object, problem: 'unreadable', message });
        else throw err;
      }
      done += length;
      options.onProgress?.(done, total);
    },
    options.signal,
  );
  if (options.signal?.aborted) throw options.signal.reason;
  findings.sort((a, b) => a.chunk - b.chunk);
  return { volume: table.volume, seq: table.seq, snapshot: table.snapshot, objects: entries.length, bytes: total, findings };
}
