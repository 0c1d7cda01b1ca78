// kill -9 right after a flush loses nothing that was flushed, and what was
// written after it is either there whole (per 4 KiB block) or not at all.
// On the FileStore and on a real Swift: the writer is a child process that
// takes its store as the CLI does (src/config/store-config.ts), Swift from the
// environment, else the FileStore under its state dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { onEachStore, type StoreRun } from './fixtures/stores.js';
import { writeImage, repoRoot } from './fixtures/files.js';
import { Engine } from '../src/engine/engine.js';

const MiB = 1024 * 1024;

/**
 * Runs the crash writer on a volume until it prints `marker`, lets it go on
 * for `graceMs`, then kills it with SIGKILL.
 */
async function runChildUntil(
  run: StoreRun,
  stateDir: string,
  name: string,
  mode: 'flush-then-write' | 'overwrite-cached',
  writes: Array<{ offset: number; fill: number; length: number }>,
  marker: string,
  graceMs: number,
): Promise<void> {
  const child = spawn(process.execPath, [path.join(repoRoot, 'dist/test/fixtures/crash-writer.js'), stateDir, name, mode, JSON.stringify(writes)], {
    env: run.childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let out = '';
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes(`${marker}\n`)) resolve();
      });
      child.on('exit', (code) => reject(new Error(`crash-writer exited early (${code}): ${stderr}`)));
    });
    await new Promise((r) => setTimeout(r, graceMs));
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
}

/** Whether a block is one the child wrote after its flush (self-describing content). */
function isPhaseTwoBlock(data: Buffer, block: number): boolean {
  const counter = data.readUInt32LE(4);
  if (counter === 0) return false;
  for (let i = 0; i < 4096; i += 8) {
    if (data.readUInt32LE(i) !== block || data.readUInt32LE(i + 4) !== counter) return false;
  }
  return true;
}

onEachStore((run) => {
  test('kill -9 after a flush loses no flushed byte', async (t) => {
    const size = 16 * MiB;
    const image = path.join(run.dir, 'base.raw');
    const model = writeImage(image, size, MiB, (chunk) => chunk % 4 === 1);
    const stateDir = path.join(run.dir, 'state');
    const engine = new Engine(await run.storeFor(stateDir), stateDir);
    await engine.importImage(image, 'crash', { objectSize: 2 * MiB });

    // Writes of every shape: sub-block, unaligned to blocks, across chunks.
    const writes: Array<{ offset: number; fill: number; length: number }> = [];
    for (let i = 0; i < 60; i++) {
      const offset = Math.floor(Math.random() * (size / 512 - 2048)) * 512;
      const length = (1 + Math.floor(Math.random() * 2048)) * 512;
      writes.push({ offset, length, fill: 1 + (i % 250) });
    }
    for (const w of writes) model.fill(w.fill, w.offset, w.offset + w.length);

    // Let it write unflushed blocks for a moment, then kill it mid-stream.
    await runChildUntil(run, stateDir, 'crash', 'flush-then-write', writes, 'FLUSHED', 300);

    const volume = await engine.open('crash', 'crash test check');
    try {
      const data = await volume.read(0, size);
      let phaseTwo = 0;
      for (let block = 0; block < size / 4096; block++) {
        const got = data.subarray(block * 4096, (block + 1) * 4096);
        const want = model.subarray(block * 4096, (block + 1) * 4096);
        if (got.equals(want)) continue;
        assert.ok(isPhaseTwoBlock(got, block), `block ${block} holds neither the flushed data nor a whole later write`);
        phaseTwo++;
      }
      t.diagnostic(`${phaseTwo} blocks from unflushed writes survived whole; all flushed data present`);
    } finally {
      await volume.close();
    }
    await engine.deleteVolume('crash');
  });

  test('kill -9 after overwriting cached blocks: the volume reads what its next snapshot holds', async (t) => {
    const size = 8 * MiB;
    const image = path.join(run.dir, 'cached.raw');
    const base = writeImage(image, size, MiB, () => false);
    const stateDir = path.join(run.dir, 'state-cached');
    const engine = new Engine(await run.storeFor(stateDir), stateDir);
    await engine.importImage(image, 'cached', { objectSize: 2 * MiB });

    // Whole blocks and a sub-block write, in place over clean cached blocks, never flushed.
    const writes = [0, 5, 511, 512, 1500, 2047].map((block, i) => ({ offset: block * 4096, length: 4096, fill: 0x41 + i }));
    writes.push({ offset: 700 * 4096 + 1024, length: 512, fill: 0x61 });
    await runChildUntil(run, stateDir, 'cached', 'overwrite-cached', writes, 'WRITTEN', 0);

    const volume = await engine.open('cached', 'crash test check');
    let data: Buffer;
    try {
      data = await volume.read(0, size);
    } finally {
      await volume.close();
    }
    let survived = 0;
    for (const w of writes) {
      const block = Math.floor(w.offset / 4096);
      const got = data.subarray(block * 4096, (block + 1) * 4096);
      const old = base.subarray(block * 4096, (block + 1) * 4096);
      const written = Buffer.from(old);
      written.fill(w.fill, w.offset - block * 4096, w.offset - block * 4096 + w.length);
      assert.ok(got.equals(old) || got.equals(written), `block ${block} holds neither its old content nor the whole write`);
      if (got.equals(written)) survived++;
    }
    // The property: a snapshot taken now holds exactly what the volume reads.
    await engine.snapshot('cached', 'after-crash');
    const exported = path.join(run.dir, 'cached-after-crash.raw');
    await engine.exportVolume('cached', exported, { snapshot: 'after-crash' });
    const snapshot = fs.readFileSync(exported);
    for (let block = 0; block < size / 4096; block++) {
      const got = data.subarray(block * 4096, (block + 1) * 4096);
      assert.ok(got.equals(snapshot.subarray(block * 4096, (block + 1) * 4096)), `block ${block}: the volume reads other bytes than its snapshot holds`);
    }
    t.diagnostic(`${survived} of ${writes.length} unflushed overwrites read back; the snapshot agrees block for block`);
    await engine.deleteVolume('cached');
  });
});
