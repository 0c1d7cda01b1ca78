// The benchmark's output: the metrics of issue 5 (and 13, 14) with their targets, a text
// table, the JSON array, and an SVG chart of each figure against its target.

export type Target =
  | { kind: 'ratio-min'; value: number } // swiftvol/reference >= value
  | { kind: 'ratio-max'; value: number } // swiftvol/reference <= value
  | { kind: 'value-max'; value: number }; // swiftvol < value (absolute)

export interface MetricDef {
  metric: string;
  unit: string;
  what: string;
  target?: Target;
}

export const METRICS: readonly MetricDef[] = [
  { metric: 'hot_randread_4k_iops', unit: 'IOPS', what: 'hot 4k random read, QD16 (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.9 } },
  { metric: 'hot_randwrite_4k_iops', unit: 'IOPS', what: 'hot 4k random write, QD16 (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.9 } },
  { metric: 'hot_qd1_randread_4k_p50_us', unit: 'us', what: 'hot 4k random read latency p50, QD1 (vs bs_rdwr)' },
  { metric: 'hot_qd1_randread_4k_p99_us', unit: 'us', what: 'hot 4k random read latency p99, QD1 (vs bs_rdwr)' },
  { metric: 'hot_seqread_1m_mbps', unit: 'MB/s', what: 'hot 1M sequential read, QD16 (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.8 } },
  { metric: 'hot_seqwrite_1m_mbps', unit: 'MB/s', what: 'hot 1M sequential write, QD16 (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.8 } },
  { metric: 'cold_seqread_1m_mbps', unit: 'MB/s', what: 'cold 1M sequential read, QD16 (vs raw Swift GETs)', target: { kind: 'ratio-min', value: 0.8 } },
  { metric: 'cold_randread_4k_p50_ms', unit: 'ms', what: 'cold 4k random read latency p50, QD1 (vs raw ranged GET)', target: { kind: 'ratio-max', value: 1.5 } },
  { metric: 'cold_randread_4k_p99_ms', unit: 'ms', what: 'cold 4k random read latency p99, QD1 (vs raw ranged GET)' },
  { metric: 'import_mbps', unit: 'MB/s', what: 'swiftvol import of 1 GiB random (vs raw 8 MiB PUTs)', target: { kind: 'ratio-min', value: 0.8 } },
  { metric: 'import_encrypted_mbps', unit: 'MB/s', what: 'swiftvol import --encrypt of 1 GiB random (vs raw 8 MiB PUTs)' },
  // Issue 13: onto two stores at most 1.2x the time onto one; against raw PUTs to both, that is a ratio of 1/1.2.
  { metric: 'import_mirror2_mbps', unit: 'MB/s', what: 'swiftvol import of 1 GiB random onto two Swifts (vs raw 8 MiB PUTs, each to both at once)', target: { kind: 'ratio-min', value: 0.83 } },
  { metric: 'snapshot_mbps', unit: 'MB/s', what: 'snapshot of 512 MiB changed (vs raw 8 MiB PUTs)', target: { kind: 'ratio-min', value: 0.8 } },
  { metric: 'snapshot_mirror2_mbps', unit: 'MB/s', what: 'snapshot of 512 MiB changed, volume on two Swifts (vs raw 8 MiB PUTs, each to both at once)', target: { kind: 'ratio-min', value: 0.83 } },
  { metric: 'clone_1g_s', unit: 's', what: 'swiftvol clone of a 1 GiB volume', target: { kind: 'value-max', value: 1 } },
  { metric: 'clone_1t_s', unit: 's', what: 'swiftvol clone of a 1 TiB sparse volume', target: { kind: 'value-max', value: 1 } },
  { metric: 'cold_gateway_cpu_ms_per_mb', unit: 'ms/MB', what: 'CPU of serve + tgtd per MB in the cold 1M sequential read (vs the raw client per MB of its GETs)', target: { kind: 'ratio-max', value: 2.0 } },
  // Issue 14: boots.
  { metric: 'boot_fetch_ratio', unit: 'MiB', what: 'bytes fetched from Swift during a cold guest boot (vs bytes the guest read)', target: { kind: 'ratio-max', value: 1.5 } },
  { metric: 'boot_time_ratio', unit: 's', what: 'guest boot to its marker from a cold swiftvol volume (vs the same image on bs_rdwr)', target: { kind: 'ratio-max', value: 1.15 } },
  { metric: 'boot_storm_4_fetch_ratio', unit: 'MiB', what: 'bytes fetched from Swift while 4 clones of one snapshot boot at once (vs one boot\'s fetch)', target: { kind: 'ratio-max', value: 1.3 } },
  { metric: 'daemon_rss_mib', unit: 'MiB', what: 'peak RSS (VmHWM) of swiftvol serve', target: { kind: 'value-max', value: 256 } },
  { metric: 'scale_ready_s', unit: 's', what: 'swiftvol serve with N exported volumes: start to ready (N in the notes)', target: { kind: 'value-max', value: 10 } },
  { metric: 'scale_open_s', unit: 's', what: 'that serve: start until every volume is open (leases taken, in the background after ready)' },
  { metric: 'scale_hot_randread_4k_iops', unit: 'IOPS', what: 'hot 4k random read, QD16, on one of the N scale LUNs (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.9 } },
  { metric: 'scale_hot_randwrite_4k_iops', unit: 'IOPS', what: 'hot 4k random write, QD16, on one of the N scale LUNs (vs bs_rdwr)', target: { kind: 'ratio-min', value: 0.9 } },
  { metric: 'scale_rss_mib', unit: 'MiB', what: 'peak RSS (VmHWM) of that serve once every volume is open', target: { kind: 'value-max', value: 512 } },
  { metric: 'scale_tgtd_threads', unit: 'threads', what: "tgtd's threads with the N swift LUNs (vs with one)", target: { kind: 'ratio-max', value: 1.1 } },
  { metric: 'target_add_ms', unit: 'ms', what: '`swiftvol target add` of one volume against that running serve (median of 5)', target: { kind: 'value-max', value: 200 } },
];

export interface Figure {
  metric: string;
  unit: string;
  swiftvol: number | null;
  reference: number | null;
  ratio: number | null;
}

export interface FigureDetail extends Figure {
  what: string;
  target: string;
  met: boolean | null;
  /** Why swiftvol (or the reference) has no number. */
  error?: string;
  notes: string[];
}

export function targetText(t: Target | undefined): string {
  if (!t) return '-';
  switch (t.kind) {
    case 'ratio-min':
      return `ratio >= ${t.value}`;
    case 'ratio-max':
      return `ratio <= ${t.value}`;
    case 'value-max':
      return `< ${t.value}`;
  }
}

export function isMet(t: Target | undefined, f: Figure): boolean | null {
  if (!t) return null;
  switch (t.kind) {
    case 'ratio-min':
      return f.ratio === null ? false : f.ratio >= t.value;
    case 'ratio-max':
      return f.ratio === null ? false : f.ratio <= t.value;
    case 'value-max':
      return f.swiftvol === null ? false : f.swiftvol < t.value;
  }
}

/** How far a figure is toward its target: 1 = exactly on target, above 1 = better. */
function score(t: Target, f: Figure): number | null {
  switch (t.kind) {
    case 'ratio-min':
      return f.ratio === null ? null : f.ratio / t.value;
    case 'ratio-max':
      return f.ratio === null || f.ratio === 0 ? null : t.value / f.ratio;
    case 'value-max':
      return f.swiftvol === null || f.swiftvol === 0 ? null : t.value / f.swiftvol;
  }
}

export function fmt(n: number | null): string {
  if (n === null || !Number.isFinite(n)) return '-';
  const a = Math.abs(n);
  if (a >= 1000) return n.toFixed(0);
  if (a >= 100) return n.toFixed(1);
  if (a >= 10) return n.toFixed(2);
  return n.toFixed(3);
}

export function table(details: FigureDetail[]): string {
  const rows = [['metric', 'unit', 'swiftvol', 'reference', 'ratio', 'target', 'met?']];
  for (const d of details) {
    const met = d.met === null ? '-' : d.met ? 'yes' : 'NO';
    rows.push([d.metric, d.unit, d.error && d.swiftvol === null ? 'FAILED' : fmt(d.swiftvol), fmt(d.reference), fmt(d.ratio), d.target, d.error ? `${met} (failed)` : met]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar per metric with a target: its score (1 = target), capped at 2. */
export function chart(details: FigureDetail[], title: string): string {
  const defs = new Map(METRICS.map((m) => [m.metric, m]));
  const rows = details.filter((d) => defs.get(d.metric)?.target);
  const others = details.filter((d) => !defs.get(d.metric)?.target);
  const left = 250;
  const barW = 400;
  const rowH = 28;
  const top = 60;
  const maxScore = 2;
  const x = (s: number): number => left + (Math.min(s, maxScore) / maxScore) * barW;
  const height = top + rows.length * rowH + 40 + others.length * 18 + 30;
  const width = left + barW + 330;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="10" y="42" fill="#555">bar = figure relative to its target (1 = exactly on target, longer is better, capped at 2); label: ratio to the reference, or the value</text>`);
  for (let i = 0; i <= 4; i++) {
    const s = (i / 4) * maxScore;
    out.push(`<line x1="${x(s)}" y1="${top - 4}" x2="${x(s)}" y2="${top + rows.length * rowH}" stroke="${s === 1 ? '#000' : '#ddd'}" stroke-width="${s === 1 ? 2 : 1}"${s === 1 ? ' stroke-dasharray="4 3"' : ''}/>`);
    out.push(`<text x="${x(s)}" y="${top + rows.length * rowH + 14}" text-anchor="middle" fill="#555">${s === 1 ? 'target' : s.toFixed(1)}</text>`);
  }
  rows.forEach((d, i) => {
    const def = defs.get(d.metric)!;
    const y = top + i * rowH;
    const s = score(def.target!, d);
    out.push(`<text x="${left - 8}" y="${y + 17}" text-anchor="end">${esc(d.metric)}</text>`);
    if (s === null) {
      const why = d.met === null ? 'not run' : `FAILED${d.error ? `: ${esc(d.error.slice(0, 70))}` : ''}`;
      out.push(`<text x="${left + 4}" y="${y + 17}" fill="#c00" font-weight="bold">${why}</text>`);
      return;
    }
    const color = d.met ? '#2e8b57' : '#d9534f';
    out.push(`<rect x="${left}" y="${y + 5}" width="${Math.max(1, x(s) - left)}" height="${rowH - 10}" fill="${color}"/>`);
    const label = def.target!.kind === 'value-max' ? `${fmt(d.swiftvol)} ${d.unit} (target ${targetText(def.target)} ${d.unit})` : `ratio ${fmt(d.ratio)} (target ${targetText(def.target)})`;
    out.push(`<text x="${left + barW + 10}" y="${y + 17}">${esc(label)}</text>`);
  });
  let y = top + rows.length * rowH + 40;
  out.push(`<text x="10" y="${y}" font-weight="bold">Without a target (reported):</text>`);
  for (const d of others) {
    y += 18;
    out.push(`<text x="20" y="${y}">${esc(`${d.metric}: swiftvol ${d.error && d.swiftvol === null ? 'FAILED' : fmt(d.swiftvol)} ${d.unit}, reference ${fmt(d.reference)} ${d.unit}, ratio ${fmt(d.ratio)}`)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
