#!/usr/bin/env node
// swiftvol: the command line. Usage errors exit 2, failures exit 1, both with
// one line on stderr; a stack trace only with SWIFTVOL_DEBUG=1.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { Engine, type Progress, type VolumeInfo } from '../engine/engine.js';
import { EngineError } from '../engine/engine-error.js';
import { FormatError, validateObjectSize, validateVolumeName, validateVolumeSize } from '../format/volume-format.js';
import { StoreError } from '../store/object-store.js';
import { ConfigError, openStore } from '../config/store-config.js';
import { formatSize, parseSize } from './sizes.js';

const DEFAULT_STATE_DIR = '/var/lib/swiftvol';

interface GlobalOptions {
  stateDir: string;
  config?: string;
}

function sizeArg(text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function volumeSizeArg(text: string): number {
  const size = sizeArg(text);
  try {
    validateVolumeSize(size);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return size;
}

function objectSizeArg(text: string): number {
  const size = sizeArg(text);
  try {
    validateObjectSize(size);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return size;
}

function volumeArg(text: string): string {
  try {
    validateVolumeName(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return text;
}

function countArg(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new InvalidArgumentError(`'${text}' is not a number from 1 to 64`);
  return n;
}

/** Runs fn with an engine on the configured store, closing the store after. */
async function withEngine<T>(program: Command, fn: (engine: Engine) => Promise<T>): Promise<T> {
  const opts = program.opts<GlobalOptions>();
  const { store } = openStore(process.env, opts.stateDir, opts.config);
  try {
    return await fn(new Engine(store, opts.stateDir));
  } finally {
    await store.close();
  }
}

/** A progress bar on a terminal, nothing otherwise. */
function progressBar(label: string): { onProgress: Progress; stop: () => void } {
  if (!process.stderr.isTTY) return { onProgress: () => undefined, stop: () => undefined };
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
  ];
  if (v.dirtyBytes !== null) lines.push(['local changes', `${formatSize(v.dirtyBytes)} (as of the last flush)`]);
  for (const [k, val] of lines) console.log(`${(k + ':').padEnd(16)}${val}`);
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
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const volume = program.command('volume').description('create, list, inspect and delete volumes');
  volume
    .command('create')
    .description('create an empty volume')
    .argument('<name>', 'volume name', volumeArg)
    .requiredOption('--size <size>', 'volume size (e.g. 10G, 512M)', volumeSizeArg)
    .option('--object-size <size>', 'bytes per object: a power of two from 1M to 64M', objectSizeArg, 8 * 2 ** 20)
    .action(async (name: string, opts: { size: number; objectSize: number }) => {
      const info = await withEngine(program, (engine) => engine.createVolume(name, opts.size, opts.objectSize));
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
    .description('create a volume from a raw image file')
    .argument('<file>', 'raw image file')
    .argument('<name>', 'new volume name', volumeArg)
    .option('--object-size <size>', 'bytes per object: a power of two from 1M to 64M', objectSizeArg, 8 * 2 ** 20)
    .option('--size <size>', 'volume size, if larger than the image', volumeSizeArg)
    .option('--concurrency <n>', 'parallel uploads', countArg, 4)
    .action(async (file: string, name: string, opts: { objectSize: number; size?: number; concurrency: number }) => {
      const bar = progressBar('import');
      const abort = abortOnSignals();
      try {
        const info = await withEngine(program, (engine) =>
          engine.importImage(file, name, { ...opts, onProgress: bar.onProgress, signal: abort.signal }),
        );
        bar.stop();
        console.log(`imported ${file} as volume ${info.name}: ${formatSize(info.size)}, ${formatSize(info.storedBytes)} stored (zero chunks skipped)`);
      } finally {
        bar.stop();
        abort.dispose();
      }
    });

  program
    .command('export')
    .description("write a sparse raw image of a volume's current content")
    .argument('<name>', 'volume name', volumeArg)
    .argument('<file>', 'output file')
    .option('--force', 'replace the output file if it exists')
    .option('--concurrency <n>', 'parallel reads', countArg, 4)
    .action(async (name: string, file: string, opts: { force?: boolean; concurrency: number }) => {
      const bar = progressBar('export');
      const abort = abortOnSignals();
      try {
        await withEngine(program, (engine) => engine.exportVolume(name, file, { ...opts, onProgress: bar.onProgress, signal: abort.signal }));
        bar.stop();
        console.log(`exported volume ${name} to ${file}`);
      } finally {
        bar.stop();
        abort.dispose();
      }
    });

  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message already; asked-for help and version are not errors.
      return err.exitCode === 0 ? 0 : 2;
    }
    const known = err instanceof EngineError || err instanceof StoreError || err instanceof ConfigError || err instanceof FormatError;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`swiftvol: ${known ? '' : 'unexpected error: '}${message}\n`);
    if (process.env.SWIFTVOL_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
