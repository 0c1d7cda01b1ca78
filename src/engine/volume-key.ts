// The key of encrypted volumes (doc/format.md, "Encryption"): 32 bytes from
// a key file, never stored. Each data object gets its own AES-256-GCM key,
// derived from the volume key and the object's (generation, chunk) with
// HKDF-SHA256; each 4 KiB block of it is sealed with the block's index as the
// nonce. A generation is drawn anew for every write attempt, so no (key,
// nonce) pair is ever used twice, and a block moved to another place or
// object fails its authentication.
import fs from 'node:fs';
import { createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { aesGcm } from '../native/addons.js';
import { BLOCK_SIZE, BLOCK_TAG_SIZE, blockSumsLength, type VolumeEncryption } from '../format/volume-format.js';
import { EngineError } from './engine-error.js';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const KEY_CHECK_TEXT = 'swiftvol key check 1';
/** Reads of at most this many blocks are opened on the event loop (Node's crypto): a pool job costs ~50 µs. */
const INLINE_BLOCKS = 2;
/** Derived object keys kept (deriving one costs a few microseconds). */
const OBJECT_KEYS_KEPT = 256;

export class VolumeKey {
  private readonly objectKeys = new Map<string, Buffer>();

  private constructor(private readonly key: Buffer) {}

  /**
   * Reads a key file: 32 raw bytes, or 64 hex digits (one line). Any other
   * content is refused with a one-line error.
   */
  static fromFile(file: string): VolumeKey {
    let data: Buffer;
    try {
      data = fs.readFileSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new EngineError(`key file ${file} does not exist`);
      throw new EngineError(`cannot read key file ${file}: ${code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (code ?? (err as Error).message)}`);
    }
    const text = data.toString('latin1').trim();
    if (/^[0-9a-fA-F]{64}$/.test(text)) return new VolumeKey(Buffer.from(text, 'hex'));
    if (data.length === KEY_BYTES) return new VolumeKey(Buffer.from(data));
    throw new EngineError(`key file ${file} holds ${data.length} bytes: a key is 32 bytes, or 64 hex digits`);
  }

  /** What a volume's metadata records of the key. */
  encryption(): VolumeEncryption {
    return { cipher: 'aes-256-gcm', keyCheck: this.check() };
  }

  /** Refuses a key that is not the volume's (its check value differs). */
  verify(encryption: VolumeEncryption, volume: string): void {
    if (encryption.keyCheck !== this.check()) throw new EngineError(`the key given is not the key of volume '${volume}' (its key check does not match)`);
  }

  /**
   * Seals a chunk's plaintext into `out` (data.length bytes of ciphertext,
   * then the blocks' tags; `out` may start at data itself: each block's
   * ciphertext replaces its plaintext). On libuv's pool (native/aes_gcm.cc).
   */
  async seal(data: Uint8Array, out: Buffer, generation: string, chunk: number): Promise<void> {
    const key = this.objectKey(generation, chunk);
    await new Promise<void>((resolve, reject) =>
      aesGcm().sealBlocks(key, data, out.subarray(0, data.length), out.subarray(data.length, data.length + blockSumsLength(data.length, 'aes-256-gcm')), 0, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }

  /**
   * Opens blocks [firstBlock, ...) of an object: `sealed` holds their
   * ciphertext, `tags` their tags. Resolves to the plaintext, or to the index
   * (in the range) of the first block that fails its authentication. A read
   * of a block or two is opened here (a job on the pool costs more than it
   * saves for so little), a larger one on libuv's pool.
   */
  async open(sealed: Buffer, tags: Buffer, generation: string, chunk: number, firstBlock: number): Promise<{ data: Buffer; bad: number }> {
    const blocks = Math.ceil(sealed.length / BLOCK_SIZE);
    if (tags.length !== blocks * BLOCK_TAG_SIZE) throw new Error(`${tags.length} bytes of tags for ${blocks} blocks`);
    const key = this.objectKey(generation, chunk);
    const out = Buffer.allocUnsafe(sealed.length);
    if (blocks > INLINE_BLOCKS) {
      const bad = await new Promise<number>((resolve, reject) =>
        aesGcm().openBlocks(key, sealed, tags, out, firstBlock, (err, index) => (err ? reject(err) : resolve(index))),
      );
      return { data: out, bad };
    }
    for (let b = 0; b < blocks; b++) {
      const start = b * BLOCK_SIZE;
      const end = Math.min(start + BLOCK_SIZE, sealed.length);
      const decipher = createDecipheriv('aes-256-gcm', key, nonce(firstBlock + b), { authTagLength: BLOCK_TAG_SIZE });
      decipher.setAuthTag(tags.subarray(b * BLOCK_TAG_SIZE, (b + 1) * BLOCK_TAG_SIZE));
      decipher.update(sealed.subarray(start, end)).copy(out, start);
      try {
        decipher.final();
      } catch {
        return { data: out, bad: b };
      }
    }
    return { data: out, bad: -1 };
  }

  private check(): string {
    return createHmac('sha256', this.key).update(KEY_CHECK_TEXT).digest().subarray(0, 16).toString('hex');
  }

  /** The object's own key: HKDF-SHA256 of the volume key, salted with the generation, for the chunk. */
  private objectKey(generation: string, chunk: number): Buffer {
    const id = `${generation}/${chunk}`;
    let key = this.objectKeys.get(id);
    if (!key) {
      key = Buffer.from(hkdfSync('sha256', this.key, Buffer.from(generation, 'hex'), `swiftvol data object ${chunk}`, KEY_BYTES));
      this.objectKeys.set(id, key);
      if (this.objectKeys.size > OBJECT_KEYS_KEPT) this.objectKeys.delete(this.objectKeys.keys().next().value!);
    }
    return key;
  }
}

/** A block's nonce: its index in the object, big-endian, in 12 bytes. */
function nonce(block: number): Buffer {
  const n = Buffer.alloc(NONCE_BYTES);
  n.writeUInt32BE(block, NONCE_BYTES - 4);
  return n;
}
