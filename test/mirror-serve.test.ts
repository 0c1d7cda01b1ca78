// A mirrored volume served over iSCSI (the real tgtd, bs_swift.so, swiftvol
// serve, QEMU's initiator) on two real Swifts, while the first cluster's
// proxy is frozen for 60 s (SIGSTOP of the proxy and its workers): writes and
// flushes go on, cold reads are served by the other cluster (the first in a
// few seconds, the rest without waiting on the frozen one), a snapshot
// completes within the deadline, and once the cluster is back serve resyncs
// it by itself until both hold the same objects and tables.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from './fixtures/swift.js';
import { tempDir, sha256, sha256File } from './fixtures/files.js';
import { qemuIoOk } from './fixtures/initiators.js';
import { startServe, stopLeftTgtd, swiftvolSync, type Serve } from './fixtures/serve.js';
import { contentOf, freeze, listing, startClusters, stopClusters, thaw, writeMirrorConfig, type Cluster } from './fixtures/mirror.js';

const MiB = 1024 * 1024;
const DEADLINE_S = 10;
let clusters: Cluster[];
let tmp: { dir: string; remove: () => void };
let env: NodeJS.ProcessEnv;
let serve: Serve | null = null;
let content: Buffer;

function ok(args: string[], e: NodeJS.ProcessEnv = env): string {
  const r = swiftvolSync(args, e);
  assert.equal(r.status, 0, `swiftvol ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function states(): string[][] {
  const info = JSON.parse(ok(['volume', 'info', 'vol', '--json'])) as { stores: Array<{ name: string; state: string }> };
  return info.stores.map((s) => [s.name, s.state]);
}

before(async () => {
  clusters = await startClusters(['east', 'west']);
  tmp = tempDir('swiftvol-mirror-serve-');
  const config = writeMirrorConfig(path.join(tmp.dir, 'stores.conf'), clusters, [`SWIFTVOL_MIRROR_DEADLINE=${DEADLINE_S}`]);
  env = { PATH: process.env.PATH, SWIFTVOL_CONFIG: config, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'state') };
  // 64 MiB, MiB i filled with byte i+1: every read can check its pattern
  content = Buffer.alloc(64 * MiB);
  for (let i = 0; i < 64; i++) content.fill(i + 1, i * MiB, (i + 1) * MiB);
  const image = path.join(tmp.dir, 'image.raw');
  fs.writeFileSync(image, content);
  // imported from another state dir: serve's starts cold, with nothing cached
  ok(['import', image, 'vol'], { ...env, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'importer') });
  ok(['target', 'add', 'vol']);
  serve = await startServe(env, await freePort());
});

after(async () => {
  for (const c of clusters ?? []) thaw(c);
  if (serve) await serve.stop();
  await stopLeftTgtd(path.join(tmp.dir, 'state'));
  await stopClusters(clusters);
  tmp.remove();
});

test('one cluster frozen for 60 s: I/O and a snapshot go on, then serve resyncs it', { timeout: 300_000 }, async () => {
  const url = serve!.url('vol');
  const east = clusters[0]!;
  freeze(east);
  const frozenAt = Date.now();
  try {
    // cold reads: east comes first in the set and does not answer
    const t0 = Date.now();
    await qemuIoOk(url, ['read -P 3 2M 64k']);
    const first = Date.now() - t0;
    assert.ok(first < 6000, `the first cold read took ${first} ms`);
    const t1 = Date.now();
    const reads = [10, 20, 30, 40, 50, 60].map((m) => `read -P ${m + 1} ${m}M 64k`);
    await qemuIoOk(url, reads);
    const rest = Date.now() - t1;
    assert.ok(rest < 6 * 1000, `six more cold reads took ${rest} ms: they waited on the frozen cluster`);
    // writes and flushes
    await qemuIoOk(url, ['write -P 0xaa 5M 1M', 'flush', 'write -P 0xbb 33M 2M', 'flush', 'read -P 0xaa 5M 1M']);
    content.fill(0xaa, 5 * MiB, 6 * MiB);
    content.fill(0xbb, 33 * MiB, 35 * MiB);
    // a snapshot: completes within the deadline (east is left out of it)
    const t2 = Date.now();
    ok(['snapshot', 'create', 'vol', 'during']);
    const took = Date.now() - t2;
    assert.ok(took < (DEADLINE_S + 10) * 1000, `the snapshot took ${took} ms with a deadline of ${DEADLINE_S} s`);
    await qemuIoOk(url, ['write -P 0xcc 50M 64k', 'flush']);
    await new Promise((r) => setTimeout(r, Math.max(0, 60_000 - (Date.now() - frozenAt))));
  } finally {
    thaw(east);
  }
  // serve finds east answering again and resyncs it by itself
  // (its log line comes once the resync and the collection after it are done)
  const resynced = (): boolean => /resync vol: \d+ object\(s\) copied/.test(serve!.output());
  for (let i = 0; i < 120 && !resynced(); i++) await new Promise((r) => setTimeout(r, 1000));
  assert.ok(resynced(), serve!.output());
  assert.deepEqual(states(), [['east', 'in-sync'], ['west', 'in-sync']], serve!.output());
  const [a, b] = await Promise.all(clusters.map((c) => listing(c.store, 'swiftvol-vol')));
  assert.deepEqual(contentOf(a), contentOf(b), 'both clusters hold the same objects and tables');
  assert.ok(contentOf(a).some((n) => n.startsWith('versions/')));
  // east's copy alone holds the snapshot taken while it was frozen
  const eastOnly = { PATH: process.env.PATH, ST_AUTH: east.swift.authUrl, ST_USER: east.swift.user, ST_KEY: east.swift.key, SWIFTVOL_STATE_DIR: path.join(tmp.dir, 'east-only') };
  const out = path.join(tmp.dir, 'during.raw');
  ok(['export', 'vol@during', out], eastOnly);
  assert.equal(sha256File(out), sha256(content.subarray(0, 64 * MiB)));
  await qemuIoOk(url, ['read -P 0xcc 50M 64k', 'read -P 0xbb 33M 2M']);
});
