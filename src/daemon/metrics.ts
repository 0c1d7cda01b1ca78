// serve's metrics in Prometheus' text format (`serve --metrics ADDR:PORT`,
// GET /metrics), with prom-client. What is counted as it happens: block
// requests the daemon answers (BlockServer.onRequest) and store requests
// (MeteredStore around each leaf store). What is read at each scrape: bs_swift's
// own counters of its direct I/O (in each volume's shared map), cold reads,
// dirty bytes, the gateway cache, snapshot uploads, resyncs, leases and the
// mirror's stores. The list is in README.md ("Metrics").
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestEvent } from './block-server.js';
import type { DaemonView } from './daemon.js';
import type { StoreMeter } from '../store/metered-store.js';
import { containerName } from '../format/volume-format.js';
import { EngineError } from '../engine/engine-error.js';

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type Series<L extends string> = Iterable<[Partial<Record<L, string>>, number]>;

/** Metric options whose values are read at scrape time: the series fn gives, set afresh each time. */
function scraped<L extends string>(kind: 'gauge' | 'counter', fn: () => Series<L> | Promise<Series<L>>) {
  return {
    async collect(this: Gauge<L> | Counter<L>): Promise<void> {
      const series = await fn();
      this.reset();
      for (const [labels, value] of series) {
        if (kind === 'gauge') (this as Gauge<L>).set(labels, value);
        else (this as Counter<L>).inc(labels, value);
      }
    },
  };
}

export interface MetricsSources {
  /** What serve holds: asked once per scrape (with engine threads, of each thread). */
  view: () => Promise<DaemonView>;
}

export class ServeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'volume' | 'op' | 'result'>;
  private readonly bytes: Counter<'volume' | 'op'>;
  private readonly latency: Histogram<'volume' | 'op'>;
  private readonly storeRequests: Counter<'store' | 'op' | 'outcome'>;
  private readonly storeBytes: Counter<'store' | 'direction'>;
  private readonly storeLatency: Histogram<'store' | 'op'>;
  private sources: MetricsSources | null = null;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'swiftvol_serve_' });
    this.requests = new Counter({
      name: 'swiftvol_volume_requests_total',
      help: 'Block requests the daemon answered (bs_swift sends it what it does not do itself), by operation and result',
      labelNames: ['volume', 'op', 'result'],
      registers,
    });
    this.bytes = new Counter({ name: 'swiftvol_volume_bytes_total', help: 'Bytes the daemon read and wrote for block requests', labelNames: ['volume', 'op'], registers });
    this.latency = new Histogram({
      name: 'swiftvol_volume_request_duration_seconds',
      help: 'Time from a block request to its reply, in the daemon',
      labelNames: ['volume', 'op'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.storeRequests = new Counter({ name: 'swiftvol_store_requests_total', help: 'Requests to each store, by operation and outcome (ok or the error kind)', labelNames: ['store', 'op', 'outcome'], registers });
    this.storeBytes = new Counter({ name: 'swiftvol_store_bytes_total', help: 'Bytes sent to (put) and received from (get) each store', labelNames: ['store', 'direction'], registers });
    this.storeLatency = new Histogram({ name: 'swiftvol_store_request_duration_seconds', help: 'Time of store requests', labelNames: ['store', 'op'], buckets: LATENCY_BUCKETS, registers });

    const view = (): Promise<DaemonView | null> => this.scrapeView();
    const perVolume =
      <L extends string>(fn: (v: DaemonView['volumes'][number]) => Array<[Partial<Record<L, string>>, number]>) =>
      async (): Promise<Series<L>> =>
        ((await view())?.volumes ?? []).flatMap(fn);
    const direct = (field: 'Ops' | 'Bytes') =>
      perVolume<'volume' | 'op'>(({ name, direct: d }) => {
        return [
          [{ volume: name, op: 'read' }, d[`read${field}`]],
          [{ volume: name, op: 'write' }, d[`write${field}`]],
        ];
      });
    const temperature = (field: 'ops' | 'bytes') =>
      perVolume<'volume' | 'temperature'>(({ name, coldReads, coldReadBytes, direct: d }) => {
        const daemon = this.daemonReads.get(name) ?? { ops: 0, bytes: 0 };
        const cold = field === 'ops' ? coldReads : coldReadBytes;
        const directReads = field === 'ops' ? d.readOps : d.readBytes;
        return [
          [{ volume: name, temperature: 'cold' }, cold],
          [{ volume: name, temperature: 'hot' }, Math.max(0, daemon[field] - cold) + directReads],
        ];
      });
    new Counter({ name: 'swiftvol_volume_direct_requests_total', help: "Reads and overwrites of local blocks bs_swift did itself (tgtd's side, never sent to the daemon)", labelNames: ['volume', 'op'], registers, ...scraped('counter', direct('Ops')) });
    new Counter({ name: 'swiftvol_volume_direct_bytes_total', help: 'Bytes bs_swift read and wrote in local blocks itself', labelNames: ['volume', 'op'], registers, ...scraped('counter', direct('Bytes')) });
    new Counter({
      name: 'swiftvol_volume_reads_total',
      help: 'Reads by where their data was: cold (some of it from the store) or hot (the overlay, the gateway cache, or bs_swift directly)',
      labelNames: ['volume', 'temperature'],
      registers,
      ...scraped('counter', temperature('ops')),
    });
    new Counter({ name: 'swiftvol_volume_read_bytes_total', help: 'Bytes read, cold or hot (as swiftvol_volume_reads_total)', labelNames: ['volume', 'temperature'], registers, ...scraped('counter', temperature('bytes')) });
    new Gauge({
      name: 'swiftvol_volume_dirty_bytes',
      help: 'Bytes written to a volume since its last snapshot (in its overlay, never evicted)',
      labelNames: ['volume'],
      registers,
      ...scraped('gauge', perVolume<'volume'>(({ name, dirtyBytes }) => [[{ volume: name }, dirtyBytes]])),
    });
    new Gauge({
      name: 'swiftvol_volume_engine_thread',
      help: 'The engine thread that serves an open volume (serve --engine-threads; absent: the main thread serves it)',
      labelNames: ['volume'],
      registers,
      ...scraped('gauge', perVolume<'volume'>(({ name, thread }) => (thread === null ? [] : [[{ volume: name }, thread]]))),
    });
    new Gauge({
      name: 'swiftvol_volume_lease_held',
      help: "1 while serve holds the volume's lease, 0 once it lost it",
      labelNames: ['volume'],
      registers,
      ...scraped('gauge', perVolume<'volume'>(({ name, leaseHeld }) => [[{ volume: name }, leaseHeld ? 1 : 0]])),
    });
    const cache = async (): Promise<DaemonView['cache']> => (await view())?.cache ?? null;
    new Gauge({
      name: 'swiftvol_cache_bytes',
      help: 'Clean data the gateway cache holds (held), and its bound (budget)',
      labelNames: ['kind'],
      registers,
      ...scraped<'kind'>('gauge', async () => {
        const st = await cache();
        return st ? [[{ kind: 'held' }, st.bytes], [{ kind: 'budget' }, st.budget]] : [];
      }),
    });
    new Gauge({ name: 'swiftvol_cache_objects', help: 'Data objects the gateway cache holds blocks of', registers, ...scraped<never>('gauge', async () => [[{}, (await cache())?.objects ?? 0]]) });
    new Counter({ name: 'swiftvol_cache_evicted_total', help: 'Objects evicted from the gateway cache since serve started', registers, ...scraped<never>('counter', async () => [[{}, (await cache())?.evicted ?? 0]]) });
    new Gauge({
      name: 'swiftvol_snapshot_bytes',
      help: 'Snapshot uploads started by serve (running, and the last few done): bytes to upload (total) and uploaded (done)',
      labelNames: ['volume', 'snapshot', 'state', 'kind'],
      registers,
      ...scraped<'volume' | 'snapshot' | 'state' | 'kind'>('gauge', async () =>
        ((await view())?.snapshots ?? []).flatMap((j) => [
          [{ volume: j.volume, snapshot: j.name, state: j.state, kind: 'total' }, j.totalBytes],
          [{ volume: j.volume, snapshot: j.name, state: j.state, kind: 'done' }, j.doneBytes],
        ]),
      ),
    });
    new Gauge({
      name: 'swiftvol_resync_running',
      help: '1 while a mirrored volume is being resynced',
      labelNames: ['volume'],
      registers,
      ...scraped<'volume'>('gauge', async () => ((await view())?.resyncing ?? []).map((v) => [{ volume: v }, 1])),
    });
    new Counter({
      name: 'swiftvol_resync_objects_copied_total',
      help: 'Objects copied to stores that were behind, since serve started',
      labelNames: ['volume'],
      registers,
      ...scraped<'volume'>('counter', async () => ((await view())?.resyncCopied ?? []).map(([v, n]) => [{ volume: v }, n])),
    });
    new Gauge({
      name: 'swiftvol_mirror_store_up',
      help: '1 for a mirror store that answers, 0 for one routed around (it kept timing out)',
      labelNames: ['store'],
      registers,
      ...scraped<'store'>('gauge', async () => ((await view())?.mirror?.members ?? []).map((m) => [{ store: m.name }, m.up ? 1 : 0])),
    });
    new Gauge({
      name: 'swiftvol_mirror_store_state',
      help: "1 for the state of each mirror store of a served volume's set (in-sync, behind, unreachable, split-brain), as serve knows it",
      labelNames: ['volume', 'store', 'state'],
      registers,
      ...scraped<'volume' | 'store' | 'state'>('gauge', async () => {
        const v = await view();
        if (!v?.mirror) return [];
        const served = new Map(v.volumes.map(({ name }) => [containerName(name), name]));
        return v.mirror.states.filter((k) => served.has(k.container)).map((k) => [{ volume: served.get(k.container)!, store: k.store, state: k.state }, 1]);
      }),
    });
  }

  /** Reads the daemon answered, per volume (hot = these less the cold ones, plus bs_swift's own). */
  private readonly daemonReads = new Map<string, { ops: number; bytes: number }>();


  /** Where the scrape-time metrics come from (once serve has started). */
  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** The block server's observer. */
  readonly onRequest = (e: RequestEvent): void => {
    if (e.op === 'read') {
      const r = this.daemonReads.get(e.volume) ?? { ops: 0, bytes: 0 };
      r.ops++;
      r.bytes += e.bytes;
      this.daemonReads.set(e.volume, r);
    }
    this.requests.inc({ volume: e.volume, op: e.op, result: e.good ? 'good' : 'check-condition' });
    if (e.bytes > 0) this.bytes.inc({ volume: e.volume, op: e.op }, e.bytes);
    this.latency.observe({ volume: e.volume, op: e.op }, e.seconds);
  };

  /** A meter for the leaf store of that name. */
  storeMeter(store: string): StoreMeter {
    return (r) => {
      this.storeRequests.inc({ store, op: r.op, outcome: r.outcome });
      if (r.sent > 0) this.storeBytes.inc({ store, direction: 'sent' }, r.sent);
      if (r.received > 0) this.storeBytes.inc({ store, direction: 'received' }, r.received);
      this.storeLatency.observe({ store, op: r.op }, r.seconds);
    };
  }

  /** The view of the scrape under way (one per scrape: with engine threads it is a message to each). */
  private current: Promise<DaemonView | null> | null = null;

  private scrapeView(): Promise<DaemonView | null> {
    return this.current ?? (this.sources ? this.sources.view() : Promise.resolve(null));
  }

  /** The text of /metrics. */
  async render(): Promise<string> {
    // the view first: with engine threads, its reply comes after the threads' last request counts
    const view = this.sources ? this.sources.view() : Promise.resolve(null);
    await view;
    this.current = view;
    try {
      return await this.registry.metrics();
    } finally {
      this.current = null;
    }
  }

  /** Serves GET /metrics on host:port; returns the address it listens on. */
  async listen(host: string, port: number): Promise<MetricsServer> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      this.render().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new EngineError(`cannot serve metrics on ${host}:${port}: ${err.message}`)));
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as { address: string; port: number };
    return {
      host: address.address,
      port: address.port,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
}

export interface MetricsServer {
  host: string;
  port: number;
  close(): Promise<void>;
}
