import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileStore } from '../src/store/file-store.js';
import { collect, rejectsKind, storeContract } from './fixtures/store-contract.js';

let contractRoot = '';
storeContract('FileStore', {
  atomicIfNoneMatch: true,
  async open() {
    contractRoot = await mkdtemp(join(tmpdir(), 'swiftvol-fs-'));
    return new FileStore(join(contractRoot, 'store'));
  },
  async cleanup() {
    await rm(contractRoot, { recursive: true, force: true });
  },
});

describe('FileStore specifics', () => {
  let root: string;
  let store: FileStore;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'swiftvol-fs-'));
    store = new FileStore(join(root, 's'));
  });
  after(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('keeps every object one flat file inside its container directory', async () => {
    await store.createContainer('vol');
    await store.put('vol', '../../escape', Buffer.from('x'));
    await store.put('vol', 'a/b/c', Buffer.from('y'));
    await store.put('vol', '..', Buffer.from('z'));
    const files = await readdir(join(root, 's', 'vol'));
    assert.deepEqual(files.sort(), ['%2E.', '%2E.%2F..%2Fescape', 'a%2Fb%2Fc'].sort());
    assert.deepEqual(await readdir(join(root, 's')), ['vol']);
    assert.deepEqual(await readdir(root), ['s']);
  });

  it('leaves no temporary files behind, also after a refused put', async () => {
    await store.createContainer('tmpcheck');
    await store.put('tmpcheck', 'o', Buffer.from('1'), { ifNoneMatch: true });
    await rejectsKind(store.put('tmpcheck', 'o', Buffer.from('2'), { ifNoneMatch: true }), 'conflict');
    await rejectsKind(store.put('tmpcheck', 'p', Buffer.from('2'), { md5: '0'.repeat(32) }), 'checksum');
    assert.deepEqual(await readdir(join(root, 's', 'tmpcheck')), ['o']);
  });

  it('detects corruption on disk', async () => {
    await store.createContainer('rot');
    const data = Buffer.alloc(10_000, 7);
    await store.put('rot', 'obj', data);
    const file = join(root, 's', 'rot', 'obj');
    const raw = await readFile(file);
    raw[raw.length - 1] ^= 1; // flip a bit in the data
    await writeFile(file, raw);
    await rejectsKind(store.get('rot', 'obj'), 'checksum', /MD5/);
    // A range does not cover the MD5, but still reads.
    assert.equal((await store.get('rot', 'obj', { start: 0, end: 10 })).length, 10);
    await writeFile(file, raw.subarray(0, raw.length - 5)); // truncated
    await rejectsKind(store.head('rot', 'obj'), 'checksum');
    await rejectsKind(store.get('rot', 'obj'), 'checksum');
  });

  it('ignores stray files it did not write', async () => {
    await store.createContainer('stray');
    await store.put('stray', 'real', Buffer.from('r'));
    await writeFile(join(root, 's', 'stray', '.tmp-deadbeef'), 'partial');
    await writeFile(join(root, 's', 'stray', 'bad%zz'), 'junk');
    assert.deepEqual((await collect(store.list('stray'))).map((o) => o.name), ['real']);
    await store.delete('stray', 'real');
    await rejectsKind(store.deleteContainer('stray'), 'conflict'); // 'bad%zz' is still there
  });

  it('removes leftovers of interrupted puts with an empty container', async () => {
    await store.createContainer('leftover');
    await writeFile(join(root, 's', 'leftover', '.tmp-0123'), 'partial');
    await store.deleteContainer('leftover');
    assert.ok(!(await store.listContainers('leftover')).includes('leftover'));
  });

  it('lists containers of a store that was never written as empty', async () => {
    const fresh = new FileStore(join(root, 'never'));
    assert.deepEqual(await fresh.listContainers(''), []);
    assert.equal(await fresh.head('c', 'o'), null);
    await rejectsKind(fresh.get('c', 'o'), 'not-found');
  });

  it('refuses names whose encoding exceeds a file name', async () => {
    await store.createContainer('long');
    await rejectsKind(store.put('long', '/'.repeat(100), Buffer.from('x')), 'invalid', /too long/);
    await store.put('long', 'n'.repeat(255), Buffer.from('x'));
  });
});
