// fio with its libiscsi engine (built from Debian's fio source by
// scripts/bench): one job, JSON output, the figures the table needs.
import fs from 'node:fs';
import path from 'node:path';
import { BenchError, run } from './procs.js';

export interface FioJob {
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: string;
  iodepth: number;
  /** Time-based run of this many seconds (after ramp); absent: one pass over size. */
  runtime?: number;
  ramp?: number;
  /** Bytes to cover (default: the whole LUN). */
  size?: string;
  offset?: string;
  /** Seed of the random offsets (fio's default is one fixed seed: every run reads the same blocks). */
  seed?: number;
  /** Also log each I/O's latency (fio's lat log), returned as FioResult.latenciesMs. */
  latencies?: boolean;
}

export interface FioResult {
  iops: number;
  /** Bytes per second. */
  bw: number;
  /** Completion latency (submission to completion) percentiles, microseconds. */
  p50us: number;
  p99us: number;
  ios: number;
  seconds: number;
  /** fio's own CPU use, percent of one core. */
  cpu: number;
  /** Each I/O's total latency, ms, when the job asked for them. */
  latenciesMs?: number[];
}

/** iscsi://HOST:PORT/IQN/LUN, as fio's filename= wants it (':' escaped). */
export function fioFilename(host: string, port: number, iqn: string, lun = 1): string {
  return `iscsi://${host}:${port}/${iqn}/${lun}`.replace(/:/g, '\\:');
}

interface FioJson {
  jobs: Array<{
    error: number;
    usr_cpu: number;
    sys_cpu: number;
    read: FioDir;
    write: FioDir;
  }>;
}
interface FioDir {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  runtime: number;
  lat_ns?: { percentile?: Record<string, number> };
  clat_ns?: { percentile?: Record<string, number> };
}

export async function runFio(fio: string, filename: string, job: FioJob, workDir: string, label: string): Promise<FioResult> {
  const out = path.join(workDir, `fio-${label}.json`);
  const args = [
    `--name=${label}`,
    '--ioengine=libiscsi',
    `--filename=${filename}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    '--numjobs=1',
    '--lat_percentiles=1',
    '--percentile_list=50:99',
    '--output-format=json',
    `--output=${out}`,
  ];
  if (job.runtime !== undefined) args.push('--time_based', `--runtime=${job.runtime}`);
  if (job.ramp) args.push(`--ramp_time=${job.ramp}`);
  if (job.size) args.push(`--size=${job.size}`);
  if (job.offset) args.push(`--offset=${job.offset}`);
  // (fio 3.33 ignores randseed unless randrepeat is off)
  if (job.seed !== undefined) args.push('--randrepeat=0', `--randseed=${job.seed}`);
  const latLog = path.join(workDir, `fio-${label}`);
  if (job.latencies) args.push(`--write_lat_log=${latLog}`, '--log_avg_msec=0');
  const timeoutMs = ((job.runtime ?? 120) + (job.ramp ?? 0) + 60) * 1000;
  const r = await run(fio, args, { timeoutMs });
  let parsed: FioJson;
  try {
    parsed = JSON.parse(fs.readFileSync(out, 'utf8')) as FioJson;
  } catch {
    throw new BenchError(`fio ${label} failed (exit ${r.code ?? r.signal}): ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join(' | ')}`);
  }
  const j = parsed.jobs[0];
  if (r.code !== 0 || !j || j.error !== 0) {
    throw new BenchError(`fio ${label} failed (exit ${r.code ?? r.signal}, job error ${j?.error}): ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join(' | ')}`);
  }
  const dir = job.rw.endsWith('read') ? j.read : j.write;
  if (dir.total_ios === 0) throw new BenchError(`fio ${label} completed no I/O`);
  const pct = dir.lat_ns?.percentile ?? dir.clat_ns?.percentile ?? {};
  return {
    iops: dir.iops,
    bw: dir.bw_bytes,
    p50us: (pct['50.000000'] ?? NaN) / 1000,
    p99us: (pct['99.000000'] ?? NaN) / 1000,
    ios: dir.total_ios,
    seconds: dir.runtime / 1000,
    cpu: (j.usr_cpu ?? 0) + (j.sys_cpu ?? 0),
    ...(job.latencies ? { latenciesMs: readLatLog(`${latLog}_lat.1.log`) } : {}),
  };
}

/** fio's lat log ("msec, latency ns, direction, bs, offset" per I/O): the latencies, ms. */
function readLatLog(file: string): number[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new BenchError(`fio wrote no latency log ${file}: ${(err as Error).message}`);
  }
  const out: number[] = [];
  for (const line of text.split('\n')) {
    const ns = Number(line.split(',')[1]);
    if (line.trim() !== '' && Number.isFinite(ns)) out.push(ns / 1e6);
  }
  if (out.length === 0) throw new BenchError(`fio's latency log ${file} holds no I/O`);
  return out;
}
