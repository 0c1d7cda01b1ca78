#!/usr/bin/env node
// swiftvol: the command line. Usage errors exit 2, failures exit 1, both with
// one line on stderr; a stack trace only with SWIFTVOL_DEBUG=1.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import type { Engine, Progress, VolumeInfo } from '../engine/engine.js';
import type { GatewayCache } from '../engine/gateway-cache.js';
import type { ObjectStore } from '../store/object-store.js';
import type { SnapshotStatus } from '../engine/snapshot.js';
import type { ScrubReport } from '../engine/scrub.js';
import type { StoreState, VolumeResync } from '../engine/mirroring.js';
import type { SnapshotEntry } from '../engine/volume-catalog.js';
import { EngineError, volumesMessage } from '../engine/engine-error.js';
import { FormatError, validateObjectSize, validateSnapshotName, validateVolumeName, validateVolumeSize } from '../format/volume-format.js';
import { StoreError } from '../store/object-store.js';
import { formatSize, parseSize } from './sizes.js';
import { UNKNOWN_CONTROL_REQUEST, sendControl } from '../daemon/control.js';
import { DEFAULT_IQN_PREFIX, TargetRegistry, TargetSpecError, parseChap, targetName, validateAllow, viewOf, type TargetView } from '../daemon/target-registry.js';
import { EXPORT_FORMATS, IMAGE_FORMATS } from '../image/formats.js';
import { widenSmallHeapGrowth } from './heap-growth.js';
import { reuseFreedBuffers } from '../os/malloc-tuning.js';
import { LOG_FORMATS, serveLog, type LogFormat } from '../daemon/serve-log.js';
import { LocalPathError, makeDirs } from '../os/make-dirs.js';

const DEFAULT_STATE_DIR = '/var/lib/swiftvol';

// The store, tgtd and native addon modules are imported by the commands that
// use them: a control command (target add, ...) starts without loading them.
const openStore: typeof import('../config/store-config.js').openStore = async (...args) =>
  (await import('../config/store-config.js')).openStore(...args);

interface GlobalOptions {
  stateDir: string;
  config?: string;
  iqnPrefix: string;
  keyFile?: string;
}

/** A commander argument parser from a function that throws on bad input: its message becomes the usage error. */
function argument<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw err instanceof InvalidArgumentError ? err : new InvalidArgumentError((err as Error).message);
    }
  };
}

/** Turns a validator into a parser that returns what it checked. */
function checked<T>(validate: (value: T) => void): (value: T) => T {
  return (value) => {
    validate(value);
    return value;
  };
}

const volumeSizeArg = argument((text) => checked(validateVolumeSize)(parseSize(text)));
const objectSizeArg = argument((text) => checked(validateObjectSize)(parseSize(text)));
const volumeArg = argument(checked(validateVolumeName));
const snapshotNameArg = argument(checked(validateSnapshotName));
const chapArg = argument(parseChap);
const allowArg = (text: string, previous: string[] = []): string[] => [...previous, argument(checked(validateAllow))(text)];

function portalArg(text: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new InvalidArgumentError(`'${text}' is not ADDR:PORT (e.g. 127.0.0.1:3260)`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function iqnPrefixArg(text: string): string {
  if (!/^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$/.test(text)) throw new InvalidArgumentError(`'${text}' is not an IQN prefix (e.g. iqn.2026-11.org.example)`);
  return text;
}

function controlPortArg(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 32767) throw new InvalidArgumentError(`'${text}' is not a tgtd control port (0 to 32767)`);
  return n;
}

/** ADDR:PORT of the metrics endpoint (port 0: any free one). */
function metricsArg(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new InvalidArgumentError(`'${text}' is not ADDR:PORT (e.g. 127.0.0.1:9110)`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/** One of the image formats listed. */
function formatArg(formats: readonly string[]): (text: string) => string {
  return (text) => {
    if (!formats.includes(text)) throw new InvalidArgumentError(`'${text}' is not an image format swiftvol reads or writes (${formats.join(', ')})`);
    return text;
  };
}

/** serve's worker threads (for GETs, or engines): 0 (all on the main thread) to 64. */
function threadsArg(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 64) throw new InvalidArgumentError(`'${text}' is not a number of threads (0 to 64)`);
  return n;
}

/**
 * Serve's threads (engine threads, else fetch threads): half the CPUs, at
 * most 4, on a machine of 4 CPUs or more; none on a smaller one. Measured on
 * 2 CPUs (with Swift on the same machine): a fetch thread halves the main
 * thread's CPU per cold MB (1.14 -> 0.59 ms) but adds 0.02-0.3 ms in all and
 * about 50 MiB of RSS, on cores tgtd and serve already fill.
 */
function defaultThreads(): number {
  const cpus = os.availableParallelism();
  return cpus >= 4 ? Math.min(4, Math.floor(cpus / 2)) : 0;
}

/** Volume names of a variadic argument, each checked, none twice. */
function volumesArg(text: string, previous: string[] = []): string[] {
  const name = volumeArg(text);
  if (previous.includes(name)) throw new InvalidArgumentError(`volume '${name}' is named twice`);
  return [...previous, name];
}

/** a,b,c: store names of the config file's sections (checked against the file when the store opens). */
function storesArg(text: string): string[] {
  const names = text.split(',').map((n) => n.trim());
  for (const n of names) if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(n)) throw new InvalidArgumentError(`'${n}' is not a store name (the [NAME] of a config file section)`);
  if (new Set(names).size !== names.length) throw new InvalidArgumentError(`'${text}' names a store twice`);
  return names;
}

const cacheSizeArg = argument((text) => {
  const n = parseSize(text);
  if (n < 0 || n % 4096 !== 0) throw new Error(`cache size '${text}' is not a multiple of 4K`);
  return n;
});

function countArg(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new InvalidArgumentError(`'${text}' is not a number from 1 to 64`);
  return n;
}

// The engine, the daemon and the HTTP client are loaded by the commands that
// use them: a command answered by a running serve starts in a third of the time.
async function newEngine(store: ObjectStore, opts: GlobalOptions, cache?: GatewayCache): Promise<Engine> {
  return (await import('../engine/new-engine.js')).newEngine(store, opts, cache);
}

/** The clean cache's budget when --cache-size is not given: a tenth of the state dir's filesystem. */
function defaultCacheSize(stateDir: string): number {
  makeDirs(stateDir);
  const st = fs.statfsSync(stateDir);
  return Math.floor((st.bsize * st.blocks) / 10 / 4096) * 4096;
}

/** VOLUME@SNAPSHOT. */
function snapshotRefArg(text: string): { volume: string; snapshot: string } {
  const at = text.indexOf('@');
  if (at < 0) throw new InvalidArgumentError(`'${text}' is not VOLUME@SNAPSHOT`);
  return { volume: volumeArg(text.slice(0, at)), snapshot: snapshotNameArg(text.slice(at + 1)) };
}

/** VOLUME or VOLUME@SNAPSHOT. */
function volumeOrSnapshotArg(text: string): { volume: string; snapshot?: string } {
  return text.includes('@') ? snapshotRefArg(text) : { volume: volumeArg(text) };
}

/** The served targets of a running serve on this state dir, or null when none runs. */
async function servedVolumes(stateDir: string): Promise<Set<string> | null> {
  const reply = await sendControl(stateDir, { op: 'target.list' });
  if (reply === null) return null;
  if (!reply.ok) throw new EngineError(reply.error);
  return new Set((reply.result as TargetView[]).filter((t) => t.state === 'served').map((t) => t.volume));
}

/** Runs fn with an engine on the configured store, closing the store after. */
async function withEngine<T>(program: Command, fn: (engine: Engine) => Promise<T>): Promise<T> {
  const opts = program.opts<GlobalOptions>();
  const { store } = await openStore(process.env, opts.stateDir, opts.config, undefined, { log: (m, level) => level === 'warn' && process.stderr.write(`swiftvol: ${m}\n`) });
  try {
    return await fn(await newEngine(store, opts));
  } finally {
    await store.close();
  }
}

/** A progress bar on a terminal, nothing otherwise. */
function progressBar(label: string): { onProgress: Progress; stop: () => void } {
  if (!process.stderr.isTTY) return { onProgress: () => undefined, stop: () => undefined };
  const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% {done}/{all} {speed}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let running = false;
  return {
    onProgress: (done, total) => {
      const seconds = Math.max((Date.now() - started) / 1000, 0.001);
      const payload = { done: formatSize(done), all: formatSize(total), speed: `${formatSize(done / seconds)}/s` };
      if (!running) {
        bar.start(total, done, payload);
        running = true;
      } else {
        bar.update(done, payload);
      }
    },
    stop: () => {
      if (running) bar.stop();
    },
  };
}

/** Aborts long operations on SIGINT/SIGTERM so they can clean up; a second signal exits at once. */
function abortOnSignals(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const handler = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new EngineError(`interrupted by ${sig}; cleaning up`));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** Operations that replace a volume's content are refused while it is served. */
async function refuseServed(program: Command, name: string, what: string): Promise<void> {
  const served = await servedVolumes(program.opts<GlobalOptions>().stateDir);
  if (served?.has(name)) {
    throw new EngineError(`cannot ${what} volume '${name}': it is being served (swiftvol serve); run 'swiftvol target remove ${name}' first`);
  }
}

function printTargets(targets: TargetView[]): void {
  if (targets.length === 0) {
    console.log('no targets');
    return;
  }
  const rows = [['VOLUME', 'TARGET', 'STATE', 'ALLOW', 'CHAP']];
  for (const t of targets) rows.push([t.volume, t.iqn, t.state, t.allow.join(','), t.chapUser ?? '-']);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd());
}

function printVolumes(volumes: VolumeInfo[]): void {
  const rows = [['NAME', 'SIZE', 'OBJECT', 'STATE', 'VERSION', 'STORED', 'LOCAL', 'DIRTY']];
  for (const v of volumes) {
    rows.push([
      v.name,
      formatSize(v.size),
      formatSize(v.objectSize),
      v.state,
      v.latestVersion === null ? '-' : String(v.latestVersion),
      formatSize(v.storedBytes),
      v.attached ? 'attached' : '-',
      v.dirtyBytes === null ? '-' : formatSize(v.dirtyBytes),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd());
}

function printInfo(v: VolumeInfo): void {
  const lines: Array<[string, string]> = [
    ['name', v.name],
    ['uuid', v.uuid],
    ['size', `${formatSize(v.size)} (${v.size} bytes)`],
    ['object size', formatSize(v.objectSize)],
    ['created', v.createdAt],
    ['state', v.state],
    ['latest version', v.latestVersion === null ? '-' : String(v.latestVersion)],
    ['stored', `${formatSize(v.storedBytes)} (${v.storedBytes} bytes in non-zero objects)`],
    ['attached here', v.attached ? `yes, on version ${v.baseVersion ?? '?'}` : 'no'],
    ['parent', v.parent ? `${v.parent.volume}@${v.parent.snapshot} (version ${v.parent.seq})` : '-'],
    ['encrypted', v.encrypted ? 'yes (AES-256-GCM)' : 'no'],
    ['children', v.children.length ? v.children.join(', ') : '-'],
  ];
  if (v.dirtyBytes !== null) lines.push(['local changes', `${formatSize(v.dirtyBytes)} (as of the last flush)`]);
  if (v.cachedBytes !== null) lines.push(['cached', `${formatSize(v.cachedBytes)} fetched from the store and kept here`]);
  for (const [k, val] of lines) console.log(`${(k + ':').padEnd(16)}${val}`);
  if (v.stores) {
    console.log('stores:');
    printStores(v.stores);
  }
}

function printStores(stores: StoreState[]): void {
  for (const s of stores) {
    const what = s.state === 'behind' && s.lacking !== undefined ? `behind (lacks ${s.lacking} object(s))` : s.state;
    const version = s.latestVersion === undefined ? '' : `, version ${s.latestVersion ?? '-'}`;
    console.log(`  ${s.name.padEnd(14)}${what}${version}${s.reason && s.state !== 'in-sync' ? `: ${s.reason}` : ''}`);
  }
}

function buildProgram(): Command {
  const program = new Command();
  program
    .name('swiftvol')
    .description('iSCSI volumes whose data lives in OpenStack Swift')
    .version('0.1.0')
    .addOption(
      new Option('--state-dir <dir>', 'local state directory').env('SWIFTVOL_STATE_DIR').default(DEFAULT_STATE_DIR),
    )
    .addOption(new Option('--config <file>', 'Swift settings file (ST_* or OS_* variables)').env('SWIFTVOL_CONFIG'))
    .addOption(new Option('--key-file <file>', 'key of encrypted volumes: 32 bytes, or 64 hex digits').env('SWIFTVOL_KEY_FILE'))
    .addOption(new Option('--iqn-prefix <prefix>', 'prefix of target names').env('SWIFTVOL_IQN_PREFIX').default(DEFAULT_IQN_PREFIX).argParser(iqnPrefixArg))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const volume = program.command('volume').description('create, list, inspect and delete volumes');
  volume
    .command('create')
    .description('create an empty volume')
    .argument('<name>', 'volume name', volumeArg)
    .requiredOption('--size <size>', 'volume size (e.g. 10G, 512M)', volumeSizeArg)
    .option('--object-size <size>', 'bytes per object: a power of two from 1M to 64M', objectSizeArg, 8 * 2 ** 20)
    .option('--encrypt', 'encrypt its data with the key of --key-file (AES-256-GCM per block)')
    .option('--stores <a,b>', 'the stores (config file sections) it lives on; default all', storesArg)
    .action(async (name: string, opts: { size: number; objectSize: number; encrypt?: boolean; stores?: string[] }) => {
      const info = await withEngine(program, (engine) => engine.createVolume(name, opts.size, opts.objectSize, { encrypt: opts.encrypt, stores: opts.stores }));
      console.log(`created volume ${info.name}: ${formatSize(info.size)}, objects of ${formatSize(info.objectSize)}`);
    });
  volume
    .command('list')
    .description('list the volumes in the store')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const volumes = await withEngine(program, (engine) => engine.list());
      if (opts.json) console.log(JSON.stringify(volumes, null, 2));
      else printVolumes(volumes);
    });
  volume
    .command('info')
    .description('show one volume')
    .argument('<name>', 'volume name', volumeArg)
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const info = await withEngine(program, (engine) => engine.info(name));
      if (opts.json) console.log(JSON.stringify(info, null, 2));
      else printInfo(info);
    });
  volume
    .command('delete')
    .description('delete a volume from the store and its local state')
    .argument('<name>', 'volume name', volumeArg)
    .action(async (name: string) => {
      await withEngine(program, (engine) => engine.deleteVolume(name));
      console.log(`deleted volume ${name}`);
    });

  program
    .command('import')
    .description('create a volume from an image: a file (raw, qcow2, vmdk, vhdx, vdi, vpc; detected by qemu-img) or an object in Swift')
    .argument('<image>', 'image file, or swift://CONTAINER/OBJECT of the configured Swift account (an object or a large-object manifest)')
    .argument('<name>', 'new volume name', volumeArg)
    .option('--format <format>', `the image's format, instead of detecting it (${IMAGE_FORMATS.join(', ')})`, formatArg(IMAGE_FORMATS))
    .option('--object-size <size>', 'bytes per object: a power of two from 1M to 64M', objectSizeArg, 8 * 2 ** 20)
    .option('--size <size>', 'volume size, if larger than the image', volumeSizeArg)
    .option('--concurrency <n>', 'parallel uploads', countArg, 4)
    .option('--encrypt', 'encrypt its data with the key of --key-file (AES-256-GCM per block)')
    .option('--stores <a,b>', 'the stores (config file sections) it lives on; default all', storesArg)
    .action(async (file: string, name: string, opts: { format?: string; objectSize: number; size?: number; concurrency: number; encrypt?: boolean; stores?: string[] }) => {
      const bar = progressBar('import');
      const abort = abortOnSignals();
      try {
        const { openImage } = await import('../image/open-image.js');
        const { info, format, read, imageSize } = await withEngine(program, async (engine) => {
          validateVolumeName(name); // before an image is opened (qemu-nbd started) for nothing
          const { source, format } = await openImage(file, { format: opts.format, store: engine.store });
          let read = 0;
          const info = await engine.importImage(source, name, { ...opts, onProgress: bar.onProgress, onRead: (n) => (read += n), signal: abort.signal });
          return { info, format, read, imageSize: source.size };
        });
        bar.stop();
        if (imageSize % 512 !== 0 && opts.size === undefined) {
          process.stderr.write(`swiftvol: image ${file} is ${imageSize} bytes, not a multiple of 512: volume ${name} is ${info.size} bytes, the rest zeros\n`);
        }
        console.log(`imported ${file} (${format}) as volume ${info.name}: ${formatSize(info.size)}, ${formatSize(read)} read from the image, ${formatSize(info.storedBytes)} stored (zero chunks skipped)`);
      } finally {
        bar.stop();
        abort.dispose();
      }
    });

  program
    .command('export')
    .description("write an image of a volume's current content (sparse: zero chunks stay unallocated)")
    .argument('<volume[@snapshot]>', 'volume, or one of its snapshots', volumeOrSnapshotArg)
    .argument('<file>', 'output file')
    .option('--format <format>', `the image format to write (${EXPORT_FORMATS.join(', ')}; default raw)`, formatArg(EXPORT_FORMATS), 'raw')
    .option('--force', 'replace the output file if it exists')
    .option('--concurrency <n>', 'parallel reads', countArg, 4)
    .action(async (ref: { volume: string; snapshot?: string }, file: string, opts: { format: string; force?: boolean; concurrency: number }) => {
      const bar = progressBar('export');
      const abort = abortOnSignals();
      if (!opts.force && fs.existsSync(file)) throw new EngineError(`'${file}' exists; use --force to replace it`);
      // another format: a sparse raw image first (beside the target), converted by qemu-img
      const raw = opts.format === 'raw' ? file : `${file}.swiftvol-${process.pid}.raw`;
      const converted = `${file}.swiftvol-${process.pid}.${opts.format}`;
      try {
        await withEngine(program, (engine) =>
          engine.exportVolume(ref.volume, raw, { ...opts, force: true, snapshot: ref.snapshot, onProgress: bar.onProgress, signal: abort.signal, shownAs: file }),
        );
        bar.stop();
        if (raw !== file) {
          const { convertImage } = await import('../image/qemu-image.js');
          await convertImage(raw, converted, opts.format);
          fs.renameSync(converted, file);
        }
        console.log(`exported ${ref.snapshot ? `snapshot ${ref.volume}@${ref.snapshot}` : `volume ${ref.volume}`} to ${file}${opts.format === 'raw' ? '' : ` (${opts.format})`}`);
      } finally {
        bar.stop();
        abort.dispose();
        if (raw !== file) {
          fs.rmSync(raw, { force: true });
          fs.rmSync(converted, { force: true });
        }
      }
    });

  volume
    .command('verify')
    .description('read every object of a volume (its latest version) or snapshot in the store and check every block')
    .argument('<volume[@snapshot]>', 'volume, or one of its snapshots', volumeOrSnapshotArg)
    .option('--json', 'machine-readable output')
    .option('--concurrency <n>', 'parallel reads', countArg, 4)
    .action(async (ref: { volume: string; snapshot?: string }, opts: { json?: boolean; concurrency: number }) => {
      const what = ref.snapshot ? `snapshot ${ref.volume}@${ref.snapshot}` : `volume ${ref.volume}`;
      const bar = progressBar(`verify ${ref.snapshot ? `${ref.volume}@${ref.snapshot}` : ref.volume}`);
      const abort = abortOnSignals();
      let report: ScrubReport;
      try {
        report = await withEngine(program, (engine) =>
          engine.verifyVolume(ref.volume, { snapshot: ref.snapshot, concurrency: opts.concurrency, onProgress: bar.onProgress, signal: abort.signal }),
        );
      } finally {
        bar.stop();
        abort.dispose();
      }
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else {
        for (const f of report.findings) console.log(`${f.problem}: chunk ${f.chunk}: ${f.message}`);
        console.log(`${what} (version ${report.seq}): ${report.objects} object(s), ${formatSize(report.bytes)} checked, ${report.findings.length} bad`);
      }
      if (report.findings.length > 0) throw new EngineError(`${what}: ${report.findings.length} of ${report.objects} object(s) corrupt, missing or unreadable`);
    });
  volume
    .command('attach')
    .description('attach a volume found in the store to this machine, at its latest snapshot')
    .argument('<name>', 'volume name', volumeArg)
    .option('--force', 'attach a mirrored volume even if fewer than a majority of its stores answer')
    .action(async (name: string, opts: { force?: boolean }) => {
      const info = await withEngine(program, (engine) => engine.attach(name, { force: opts.force }));
      console.log(`attached volume ${name} at version ${info.baseVersion}`);
    });
  volume
    .command('resync')
    .description('bring every reachable store of a mirrored volume up to date (resumable)')
    .argument('<name>', 'volume name', volumeArg)
    .option('--discard <store>', "split brain: give up this store's divergent versions and copy the others' over them")
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { discard?: string; json?: boolean }) => {
      const stateDir = program.opts<GlobalOptions>().stateDir;
      let result: VolumeResync;
      const served = await servedVolumes(stateDir);
      if (served?.has(name)) {
        // serve holds the volume: its own mirror view must learn of the resync, so serve runs it
        const reply = await sendControl(stateDir, { op: 'volume.resync', volume: name, ...(opts.discard ? { discard: opts.discard } : {}) });
        if (reply === null) throw new EngineError('swiftvol serve stopped answering');
        if (!reply.ok) throw new EngineError(reply.error);
        result = reply.result as VolumeResync;
      } else {
        const bar = progressBar(`resync ${name}`);
        const abort = abortOnSignals();
        try {
          result = await withEngine(program, (engine) =>
            engine.resync(name, { discard: opts.discard, onProgress: (done, total) => bar.onProgress(done, total), signal: abort.signal }),
          );
        } finally {
          bar.stop();
          abort.dispose();
        }
      }
      if (opts.json) console.log(JSON.stringify(result, null, 2));
      else {
        console.log(`resynced volume ${name}: ${result.copied} object(s) copied, ${result.deleted} version table(s) the others no longer hold removed`);
        printStores(result.stores);
      }
    });
  const mirror = volume.command('mirror').description('change the stores a mirrored volume lives on');
  mirror
    .command('add')
    .description('add a store to the volume and fill it from a good copy')
    .argument('<name>', 'volume name', volumeArg)
    .argument('<store>', 'store (config file section)')
    .action(async (name: string, store: string) => {
      await refuseServed(program, name, 'change the stores of');
      const bar = progressBar(`fill ${store}`);
      try {
        const r = await withEngine(program, (engine) => engine.mirrorAdd(name, store, { onProgress: (d, t) => bar.onProgress(d, t) }));
        bar.stop();
        console.log(`volume ${name} now lives on ${r.stores.map((s) => s.name).join(', ')}: ${r.copied} object(s) copied to ${store}`);
        printStores(r.stores);
      } finally {
        bar.stop();
      }
    });
  mirror
    .command('remove')
    .description("drop a store from the volume and delete the volume's copy there")
    .argument('<name>', 'volume name', volumeArg)
    .argument('<store>', 'store (config file section)')
    .action(async (name: string, store: string) => {
      await refuseServed(program, name, 'change the stores of');
      const r = await withEngine(program, (engine) => engine.mirrorRemove(name, store));
      console.log(`volume ${name} now lives on ${r.stores.map((s) => s.name).join(', ')}: ${r.deleted} object(s) deleted from ${store}`);
    });
  volume
    .command('flatten')
    .description('copy what a clone borrows from its parent, so that it stands alone')
    .argument('<name>', 'volume name', volumeArg)
    .action(async (name: string) => {
      await refuseServed(program, name, 'flatten');
      const { copied } = await withEngine(program, (engine) => engine.flatten(name));
      console.log(`flattened volume ${name}: ${copied} object(s) copied`);
    });

  const snapshot = program.command('snapshot').description('point-in-time snapshots of volumes, kept in Swift');
  snapshot
    .command('create')
    .description('snapshot a volume (also while it is served and written)')
    .argument('<volume>', 'volume name', volumeArg)
    .argument('<snapshot>', 'snapshot name', snapshotNameArg)
    .option('--no-wait', 'return once the dirty set is frozen; the upload goes on in swiftvol serve')
    .action(async (name: string, snap: string, opts: { wait: boolean }) => {
      const global = program.opts<GlobalOptions>();
      const served = await servedVolumes(global.stateDir);
      const bar = progressBar(`snapshot ${name}@${snap}`);
      try {
        if (served?.has(name)) {
          const reply = await sendControl(global.stateDir, { op: 'snapshot.create', volume: name, name: snap });
          if (!reply || !reply.ok) throw new EngineError(reply ? reply.error : 'swiftvol serve went away');
          let status = reply.result as SnapshotStatus;
          let toldWaiting = false;
          const tellWaiting = (): void => {
            if (!status.waitingFor || toldWaiting) return;
            toldWaiting = true;
            bar.stop();
            process.stderr.write(`swiftvol: waiting for the store (${status.waitingFor}): the snapshot completes when it answers; see 'swiftvol snapshot list ${name}'\n`);
          };
          tellWaiting();
          if (!opts.wait) {
            console.log(`snapshot ${name}@${snap} frozen (${formatSize(status.changedBytes)} changed); uploading in swiftvol serve`);
            return;
          }
          while (status.state === 'uploading') {
            tellWaiting();
            if (!status.waitingFor) bar.onProgress(status.doneBytes, status.totalBytes);
            // serve answers when the upload has settled, or after half a second with the progress
            const poll = await sendControl(global.stateDir, { op: 'snapshot.wait', volume: name, name: snap, startedAt: status.startedAt, ms: 500 });
            if (poll?.ok === false && poll.error === UNKNOWN_CONTROL_REQUEST) {
              // a serve started before an upgrade: ask for its job list now and then
              await new Promise((r) => setTimeout(r, 200));
              const jobs = await sendControl(global.stateDir, { op: 'snapshot.jobs', volume: name });
              if (!jobs || !jobs.ok) throw new EngineError(jobs ? jobs.error : 'swiftvol serve went away during the upload');
              const started = status.startedAt;
              status = (jobs.result as SnapshotStatus[]).find((j) => j.name === snap && j.startedAt === started) ?? status;
              continue;
            }
            if (!poll || !poll.ok) throw new EngineError(poll ? poll.error : 'swiftvol serve went away during the upload');
            status = poll.result as SnapshotStatus;
          }
          bar.stop();
          if (status.state === 'failed') throw new EngineError(`snapshot ${name}@${snap} failed: ${status.error ?? 'unknown error'}`);
          console.log(`snapshot ${name}@${snap} created: version ${status.seq}, ${formatSize(status.changedBytes)} changed`);
          return;
        }
        if (!opts.wait) process.stderr.write(`swiftvol: volume ${name} is not served here: waiting for the upload\n`);
        const entry = await withEngine(program, (engine) => engine.snapshot(name, snap, { onProgress: bar.onProgress }));
        bar.stop();
        console.log(`snapshot ${name}@${snap} created: version ${entry.seq}, ${formatSize(entry.changedBytes)} changed`);
      } finally {
        bar.stop();
      }
    });
  snapshot
    .command('list')
    .description("list a volume's snapshots")
    .argument('<volume>', 'volume name', volumeArg)
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const global = program.opts<GlobalOptions>();
      const done = await withEngine(program, (engine) => engine.listSnapshots(name));
      const reply = await sendControl(global.stateDir, { op: 'snapshot.jobs', volume: name });
      const jobs = reply?.ok ? (reply.result as SnapshotStatus[]) : [];
      const rows: Array<SnapshotEntry & { state: string }> = done.map((s) => ({ ...s, state: 'complete' }));
      for (const j of jobs) {
        if (j.state !== 'complete') rows.push({ name: j.name, seq: 0, createdAt: j.startedAt, size: 0, changedBytes: j.changedBytes, storedBytes: 0, state: j.state });
      }
      if (opts.json) {
        console.log(JSON.stringify(rows, null, 2));
        return;
      }
      if (rows.length === 0) {
        console.log('no snapshots');
        return;
      }
      const table = [['NAME', 'CREATED', 'SIZE', 'CHANGED', 'STATE']];
      for (const r of rows) table.push([r.name, r.createdAt, r.size ? formatSize(r.size) : '-', formatSize(r.changedBytes), r.state]);
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
    });
  snapshot
    .command('delete')
    .description('delete a snapshot; objects no version references any more are removed')
    .argument('<volume>', 'volume name', volumeArg)
    .argument('<snapshot>', 'snapshot name', snapshotNameArg)
    .action(async (name: string, snap: string) => {
      const global = program.opts<GlobalOptions>();
      const served = await servedVolumes(global.stateDir);
      let objects: number;
      if (served?.has(name)) {
        const reply = await sendControl(global.stateDir, { op: 'snapshot.delete', volume: name, name: snap });
        if (!reply || !reply.ok) throw new EngineError(reply ? reply.error : 'swiftvol serve went away');
        objects = (reply.result as { objects: number }).objects;
      } else {
        objects = (await withEngine(program, (engine) => engine.deleteSnapshot(name, snap))).objects;
      }
      console.log(`deleted snapshot ${name}@${snap} (${objects} object(s) freed)`);
    });
  snapshot
    .command('rollback')
    .description('return a volume to a snapshot, discarding what was written since')
    .argument('<volume>', 'volume name', volumeArg)
    .argument('<snapshot>', 'snapshot name', snapshotNameArg)
    .option('--force', 'discard writes made since the last snapshot')
    .action(async (name: string, snap: string, opts: { force?: boolean }) => {
      await refuseServed(program, name, 'roll back');
      const table = await withEngine(program, (engine) => engine.rollback(name, snap, opts));
      console.log(`rolled volume ${name} back to ${snap} (version ${table.seq})`);
    });

  program
    .command('clone')
    .description('a new volume from a snapshot, sharing its objects (instant, whatever the size)')
    .argument('<volume@snapshot>', 'the snapshot to clone', snapshotRefArg)
    .argument('<new-volume>', 'name of the new volume', volumeArg)
    .action(async (ref: { volume: string; snapshot: string }, name: string) => {
      const info = await withEngine(program, (engine) => engine.clone(ref.volume, ref.snapshot, name));
      console.log(`cloned ${ref.volume}@${ref.snapshot} as volume ${info.name} (${formatSize(info.size)})`);
    });

  program
    .command('serve')
    .description('serve exported volumes over iSCSI (foreground; SIGTERM stops cleanly)')
    .option('--portal <addr:port>', 'iSCSI portal of the tgtd started here', portalArg, { host: '127.0.0.1', port: 3260 })
    .option('--tgtd-control <n>', 'use the running tgtd with this control port instead of starting one', controlPortArg)
    .option('--no-tgtd', 'start no tgtd and manage no targets: serve LUNs configured in tgtd by hand (README.swift.md)')
    .option('--cache-size <size>', "bound of the clean cache of all served volumes (default: a tenth of the state dir's filesystem)", cacheSizeArg)
    .option('--fetch-threads <n>', "with --engine-threads 0: worker threads that receive the main thread's GETs from Swift (0: none; default: half the CPUs, at most 4, with 4 CPUs or more, else 0)", threadsArg)
    .option('--engine-threads <n>', 'worker threads that serve the volumes, each with its own engine, connections to Swift and share of the cache (0: the main thread serves them; default: half the CPUs, at most 4, with 4 CPUs or more, else 0)', threadsArg)
    .option('--metrics <addr:port>', 'serve Prometheus metrics at http://ADDR:PORT/metrics (off by default; port 0 picks a free one)', metricsArg)
    .addOption(new Option('--log-format <format>', 'text (an ISO time and the message) or json (one object per line: time, level, volume, msg)').choices(LOG_FORMATS).default('text'))
    .action(async (opts: { portal: { host: string; port: number }; tgtdControl?: number; tgtd: boolean; cacheSize?: number; fetchThreads?: number; engineThreads?: number; metrics?: { host: string; port: number }; logFormat: LogFormat }) => {
      const global = program.opts<GlobalOptions>();
      const log = serveLog(opts.logFormat);
      const systemd = (await import('../daemon/systemd-notify.js')).systemdNotifier();
      // before the cache opens: opening it tidies its files, which must not happen under a running serve
      if ((await sendControl(global.stateDir, { op: 'status' }, 5000).catch(() => null)) !== null) {
        throw new EngineError(`swiftvol serve is already running on ${global.stateDir}`);
      }
      // fetch threads asked for: the volumes stay on the main thread unless engine threads are asked for too (refused below)
      const engineThreads = opts.engineThreads ?? (opts.fetchThreads ? 0 : defaultThreads());
      // until the stop below is set up, a request to stop is kept for it
      let stopAsked: string | null = null;
      let stopNow = (why: string): void => void (stopAsked ??= why);
      if (engineThreads > 0 && opts.fetchThreads !== undefined && opts.fetchThreads > 0) {
        throw new EngineError('--fetch-threads and --engine-threads cannot both be given: engine threads receive their own GETs');
      }
      if (!(await reuseFreedBuffers())) log("glibc refused serve's malloc thresholds (src/os/malloc-tuning.ts): freed buffers go back to the kernel", { level: 'warn' });
      const { GatewayCache } = await import('../engine/gateway-cache.js');
      const cacheBudget = opts.cacheSize ?? defaultCacheSize(global.stateDir);
      // what an earlier serve with more engine threads kept would count against no budget
      GatewayCache.removeUnused(global.stateDir, engineThreads);
      // with engine threads each opens its own share (thread 0's is this one's directory)
      const cache = engineThreads > 0 ? undefined : GatewayCache.open(global.stateDir, cacheBudget);
      const threadCount = engineThreads > 0 ? 0 : (opts.fetchThreads ?? defaultThreads());
      const { FetchThreads } = await import('../store/threaded-store.js');
      const threads = threadCount > 0 ? new FetchThreads(threadCount) : undefined;
      const metrics = opts.metrics ? new (await import('../daemon/metrics.js')).ServeMetrics() : undefined;
      const { store, source } = await openStore(process.env, global.stateDir, global.config, undefined, { log: (m, level) => log(m, { level }) }, { threads, meter: metrics && ((name) => metrics.storeMeter(name)) });
      const engine = await newEngine(store, global, cache);
      const { EngineThreads } = await import('../daemon/engine-threads.js');
      const engineThreadPool =
        engineThreads > 0
          ? new EngineThreads({
              count: engineThreads,
              stateDir: global.stateDir,
              config: global.config,
              keyFile: global.keyFile,
              cacheBudget,
              log,
              metrics,
              // as a crash of serve: the other threads' volumes are flushed and closed, and serve exits with 1
              onDeath: () => {
                process.exitCode = 1;
                stopNow('an engine thread died');
              },
              lineageRoot: (name) => engine.lineageRoot(name),
            })
          : undefined;
      try {
        await engineThreadPool?.start();
      } catch (err) {
        await store.close();
        throw err;
      }
      const { Daemon } = await import('../daemon/daemon.js');
      const daemon = new Daemon({
        engine,
        cache,
        threads: engineThreadPool,
        stateDir: global.stateDir,
        host: opts.portal.host,
        port: opts.portal.port,
        existingTgtd: opts.tgtdControl,
        noTgtd: !opts.tgtd,
        log,
        onRequest: metrics?.onRequest,
      });
      const serving = engineThreadPool
        ? `${engineThreads} engine thread(s), each with ${formatSize(engineThreadPool.cacheShare)} of the clean cache`
        : `clean cache up to ${formatSize(cache!.blocks.budget)} (${formatSize(cache!.blocks.stats().bytes)} held), ${threads && threads.stores > 0 ? `${threadCount} fetch thread(s)` : 'GETs on the main thread'}`;
      log(`swiftvol serve ${process.pid}: store ${store.description} (${source}), state ${global.stateDir}, ${serving}`);
      // Signals are handled from the start: one during start-up stops cleanly once started.
      const stopped = new Promise<void>((resolve) => {
        const stop = (why: string): void => {
          systemd?.stopping();
          log(`${why}: flushing and stopping`);
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        stopNow = stop;
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
        if (stopAsked !== null) stop(stopAsked);
      });
      let metricsServer: { close(): Promise<void> } | undefined;
      let started = false;
      try {
        await daemon.start();
        started = true;
        if (metrics && opts.metrics) {
          metrics.attach({ view: () => daemon.view() });
          const at = await metrics.listen(opts.metrics.host, opts.metrics.port);
          metricsServer = at;
          log(`metrics on http://${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}/metrics`);
        }
      } catch (err) {
        if (started) await daemon.stop();
        await engineThreadPool?.stop();
        await store.close();
        await threads?.close();
        cache?.close();
        throw err;
      }
      const ready = opts.tgtd ? `ready: ${daemon.targets().filter((t) => t.state === 'served').length} target(s) on ${daemon.portal}` : 'ready: block socket only';
      log(ready);
      systemd?.ready(ready);
      await stopped;
      await metricsServer?.close();
      await daemon.stop();
      await engineThreadPool?.stop();
      await store.close();
      await threads?.close();
      cache?.close();
      log('stopped');
    });

  const target = program.command('target').description('export volumes as iSCSI targets (served by swiftvol serve)');
  target
    .command('add')
    .description('export volumes, each as iqn…:VOLUME, LUN 1 (several at once: one process, one check of the names)')
    .argument('<volume...>', 'volume names', volumesArg)
    .option('--allow <addr|cidr|iqn>', 'initiator allowed to log in (repeatable; default 127.0.0.1)', allowArg)
    .option('--chap <user:secret>', 'require CHAP with this user and secret', chapArg)
    .action(async (volumes: string[], opts: { allow?: string[]; chap?: { user: string; secret: string } }) => {
      const global = program.opts<GlobalOptions>();
      const allow = opts.allow ?? ['127.0.0.1'];
      // a running serve checks and adds them all (the store stays closed here: it is quick)
      const reply = await sendControl(global.stateDir, { op: 'targets.add', volumes, allow, chap: opts.chap, iqnPrefix: global.iqnPrefix });
      if (reply !== null) {
        if (!reply.ok) throw new EngineError(reply.error);
        for (const view of reply.result as TargetView[]) console.log(`serving ${view.volume} as ${view.iqn}, LUN 1`);
        return;
      }
      // No serve running: record the exports for the next start, every name checked first.
      const registry = new TargetRegistry(global.stateDir);
      const sizes = await withEngine(program, async (engine) => {
        const found = await engine.sizesOf(volumes);
        const missing = volumes.filter((v) => !found.has(v));
        if (missing.length > 0) throw new EngineError(volumesMessage(missing, 'does not exist', 'do not exist'));
        return found;
      });
      const recorded = new Set(registry.list().map((t) => t.volume));
      const already = volumes.filter((v) => recorded.has(v));
      if (already.length > 0) throw new EngineError(volumesMessage(already, 'is already exported', 'are already exported'));
      registry.put(...volumes.map((volume) => ({ volume, iqn: targetName(global.iqnPrefix, volume), allow, chap: opts.chap, size: sizes.get(volume) })));
      for (const volume of volumes) console.log(`exported ${volume} as ${targetName(global.iqnPrefix, volume)}; served when swiftvol serve runs`);
    });
  target
    .command('remove')
    .description('stop exporting volumes (initiators are logged out)')
    .argument('<volume...>', 'volume names', volumesArg)
    .action(async (volumes: string[]) => {
      const global = program.opts<GlobalOptions>();
      const reply = await sendControl(global.stateDir, { op: 'targets.remove', volumes });
      if (reply !== null && !reply.ok) throw new EngineError(reply.error);
      if (reply === null) {
        const registry = new TargetRegistry(global.stateDir);
        const recorded = new Set(registry.list().map((t) => t.volume));
        const absent = volumes.filter((v) => !recorded.has(v));
        if (absent.length > 0) throw new EngineError(volumesMessage(absent, 'is not exported', 'are not exported'));
        registry.remove(...volumes);
      }
      for (const volume of volumes) console.log(`removed the target of ${volume}`);
    });
  target
    .command('list')
    .description('list exported volumes')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const global = program.opts<GlobalOptions>();
      const reply = await sendControl(global.stateDir, { op: 'target.list' });
      let targets: TargetView[];
      if (reply === null) targets = new TargetRegistry(global.stateDir).list().map((t) => viewOf(t));
      else if (!reply.ok) throw new EngineError(reply.error);
      else targets = reply.result as TargetView[];
      if (opts.json) console.log(JSON.stringify(targets, null, 2));
      else printTargets(targets);
    });

  return program;
}

/** Whether err is a failure the code names (its message is for the user), not a bug. */
async function isNamedFailure(err: unknown): Promise<boolean> {
  if (err instanceof EngineError || err instanceof StoreError || err instanceof FormatError || err instanceof TargetSpecError || err instanceof LocalPathError) return true;
  // already loaded if the command could throw one of these; imported here otherwise
  const [{ ConfigError }, { TgtError }, { NativeAddonError }] = await Promise.all([
    import('../config/store-config.js'),
    import('../daemon/tgtd.js'),
    import('../native/addons.js'),
  ]);
  return err instanceof ConfigError || err instanceof TgtError || err instanceof NativeAddonError;
}

async function main(argv: string[]): Promise<number> {
  // serve, import, export, snapshot and verify move hundreds of MB/s of buffers through a small heap
  widenSmallHeapGrowth();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message already; asked-for help and version are not errors.
      return err.exitCode === 0 ? 0 : 2;
    }
    const known = await isNamedFailure(err);
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`swiftvol: ${known ? '' : 'unexpected error: '}${message}\n`);
    if (process.env.SWIFTVOL_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

// A safety net: a bug must not show a user a stack trace (SWIFTVOL_DEBUG=1 shows it).
process.on('unhandledRejection', (err) => {
  process.stderr.write(`swiftvol: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
  if (process.env.SWIFTVOL_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});

process.exitCode = await main(process.argv);
