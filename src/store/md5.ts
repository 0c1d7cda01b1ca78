// MD5 (Swift's ETag) of large buffers on libuv's thread pool, through the
// native addon native/md5_digest.cc: a megabyte per job, so that hashing an
// 8 MiB object neither stops the event loop (and the transfers it drives)
// for ~15 ms nor holds a pool thread, shared with file I/O, that long. The
// bytes are read where they are: no copy, no memory moved between threads.
import { createHash } from 'node:crypto';
import { md5Digest } from '../native/addons.js';

/** Below this size a trip to the pool costs more than it saves. */
const MIN_OFFLOAD = 256 * 1024;
/** Bytes hashed per pool job. */
const PIECE = 1024 * 1024;

/** Hex MD5 of data. The caller must not change `data` until the promise settles. */
export async function md5OnPool(data: Uint8Array): Promise<string> {
  if (data.length < MIN_OFFLOAD) return createHash('md5').update(data).digest('hex');
  const md5 = md5Digest();
  const context = md5.md5Begin();
  for (let at = 0; at < data.length; at += PIECE) {
    const piece = data.subarray(at, Math.min(at + PIECE, data.length));
    await new Promise<void>((resolve, reject) => md5.md5Update(context, piece, (err) => (err ? reject(err) : resolve())));
  }
  return md5.md5End(context);
}
