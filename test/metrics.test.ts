// serve --metrics: Prometheus text at /metrics, scraped while a real
// initiator (qemu-io over iSCSI, through tgtd and bs_swift) moves known
// amounts of data to and from a volume in a real Swift; the counters must
// move by those bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir, writeImage } from './fixtures/files.js';
import { qemuIoOk } from './fixtures/initiators.js';
import { scrapeMetrics, sample, type Samples } from './fixtures/metrics.js';
import { startServe, stopLeftTgtd, swiftvolEnv, swiftvolSync, type Serve } from './fixtures/serve.js';

const MiB = 1024 * 1024;
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | null = null;
let metricsUrl: string;

function ok(args: string[]): string {
  const r = swiftvolSync(args, env);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  if (!fs.existsSync('/usr/lib/tgt/backing-store/bs_swift.so')) throw new Error('bs_swift.so is not installed in /usr/lib/tgt/backing-store: run scripts/setup');
  swift = await startSwift();
  tmp = tempDir();
  env = swiftvolEnv(swift, path.join(tmp.dir, 'state'));
  const image = path.join(tmp.dir, 'image.raw');
  writeImage(image, 16 * MiB, 4 * MiB, () => false);
  ok(['import', image, 'm1']);
  ok(['target', 'add', 'm1']);
  serve = await startServe(env, await freePort(), { args: ['--metrics', '127.0.0.1:0', '--log-format', 'json'] });
  const m = /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(serve.output());
  assert.ok(m, `serve says where its metrics are:\n${serve.output()}`);
  metricsUrl = m[1]!;
});

after(async () => {
  if (serve) await serve.stop();
  await stopLeftTgtd(path.join(tmp.dir, 'state'));
  await swift?.stop();
  tmp?.remove();
});

const scrape = (): Promise<Samples> => scrapeMetrics(metricsUrl);

const get = sample;
const delta = (before: Samples, after: Samples, key: string): number => get(after, key) - get(before, key);

test('counters move by the bytes an initiator reads and writes', async () => {
  const url = serve!.url('m1');
  const s0 = await scrape();
  for (const name of ['swiftvol_store_requests_total', 'swiftvol_cache_bytes', 'swiftvol_volume_dirty_bytes', 'swiftvol_volume_lease_held', 'swiftvol_serve_process_resident_memory_bytes']) {
    assert.ok([...s0.keys()].some((k) => k.startsWith(name)), `${name} is exported`);
  }

  // a cold read of 4 MiB: from Swift, through the daemon
  await qemuIoOk(url, ['read 0 4M']);
  const s1 = await scrape();
  assert.equal(delta(s0, s1, 'swiftvol_volume_bytes_total{volume="m1",op="read"}'), 4 * MiB, 'the daemon read 4 MiB');
  assert.equal(delta(s0, s1, 'swiftvol_volume_read_bytes_total{volume="m1",temperature="cold"}'), 4 * MiB, 'all of it cold');
  assert.ok(delta(s0, s1, 'swiftvol_store_bytes_total{store="swift",direction="received"}') >= 4 * MiB, 'at least that much came from Swift');
  assert.ok(delta(s0, s1, 'swiftvol_store_requests_total{store="swift",op="get",outcome="ok"}') >= 1);
  assert.ok(get(s1, 'swiftvol_volume_request_duration_seconds_count{volume="m1",op="read"}') >= 1);
  // the gateway cache is filled in the background, after the reply: it holds the read soon after
  let held = get(s1, 'swiftvol_cache_bytes{kind="held"}');
  for (const deadline = Date.now() + 10_000; held < 4 * MiB && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    held = get(await scrape(), 'swiftvol_cache_bytes{kind="held"}');
  }
  assert.ok(held >= 4 * MiB, `the read is in the gateway cache (${held} bytes held)`);
  assert.ok(get(s1, 'swiftvol_cache_bytes{kind="budget"}') > 0);

  // read again: hot (the gateway cache), nothing more from Swift for it
  await qemuIoOk(url, ['read 0 4M']);
  const s2 = await scrape();
  assert.equal(delta(s1, s2, 'swiftvol_volume_read_bytes_total{volume="m1",temperature="hot"}'), 4 * MiB, 'the second read is hot');
  assert.equal(delta(s1, s2, 'swiftvol_volume_read_bytes_total{volume="m1",temperature="cold"}'), 0);

  // 1 MiB written: through the daemon or by bs_swift directly, in all 1 MiB; then dirty
  await qemuIoOk(url, ['write -P 0x5a 8M 1M', 'flush', 'write -P 0x5b 8M 1M', 'flush', 'read -P 0x5b 8M 1M']);
  const s3 = await scrape();
  const written = delta(s2, s3, 'swiftvol_volume_bytes_total{volume="m1",op="write"}') + delta(s2, s3, 'swiftvol_volume_direct_bytes_total{volume="m1",op="write"}');
  assert.equal(written, 2 * MiB, 'two writes of 1 MiB, counted once each');
  assert.ok(delta(s2, s3, 'swiftvol_volume_requests_total{volume="m1",op="flush",result="good"}') >= 2, 'the flushes');
  const readBack = delta(s2, s3, 'swiftvol_volume_read_bytes_total{volume="m1",temperature="hot"}');
  assert.equal(readBack, MiB, 'reading back written blocks is hot');
  assert.equal(get(s3, 'swiftvol_volume_dirty_bytes{volume="m1"}'), MiB);
  assert.equal(get(s3, 'swiftvol_volume_lease_held{volume="m1"}'), 1);

  // a snapshot's upload shows, then the dirty bytes are gone
  ok(['snapshot', 'create', 'm1', 's1']);
  const s4 = await scrape();
  assert.equal(get(s4, 'swiftvol_snapshot_bytes{volume="m1",snapshot="s1",state="complete",kind="done"}'), get(s4, 'swiftvol_snapshot_bytes{volume="m1",snapshot="s1",state="complete",kind="total"}'));
  assert.ok(get(s4, 'swiftvol_snapshot_bytes{volume="m1",snapshot="s1",state="complete",kind="total"}') >= MiB);
  assert.ok(delta(s3, s4, 'swiftvol_store_bytes_total{store="swift",direction="sent"}') >= MiB, 'the upload went to Swift');
});

test('--log-format json: every line of serve is one JSON object with time, level and msg; a volume\'s events name it', () => {
  const lines = serve!.output().split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 3, serve!.output());
  const events = lines.map((l) => JSON.parse(l) as { time?: string; level?: string; msg?: string; volume?: string });
  for (const e of events) {
    assert.match(e.time ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(['info', 'warn', 'error'].includes(e.level ?? ''), JSON.stringify(e));
    assert.equal(typeof e.msg, 'string');
  }
  const serving = events.find((e) => e.msg?.startsWith('serving m1 as '));
  assert.equal(serving?.volume, 'm1', 'the event of serving a volume names it');
  assert.ok(events.some((e) => e.msg?.startsWith('snapshot m1@s1: committed') && e.volume === 'm1'));
});

test('anything but GET /metrics is 404; a bad --metrics is refused', async () => {
  const res = await fetch(metricsUrl.replace('/metrics', '/other'));
  assert.equal(res.status, 404);
  const bad = swiftvolSync(['serve', '--metrics', 'localhost'], env);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /'localhost' is not ADDR:PORT/);
});
