// Opens what an import reads (issue 15): a local file of any format QEMU
// reads, or an object of the configured Swift account (swift://CONTAINER/OBJECT,
// which covers what Glance's Swift store writes: an object per image, or a
// static or dynamic large-object manifest of segments). Raw images are read
// directly (a file, or ranged GETs); the other formats through qemu-nbd,
// which reads only the clusters qemu-img map says hold data.
import { EngineError } from '../engine/engine-error.js';
import { RawImageFile, imageFileSize, type ImageSource } from '../engine/image-file.js';
import type { ObjectStore } from '../store/object-store.js';
import { NbdClient } from './nbd-client.js';
import { ObjectHttp } from './object-http.js';
import { QemuNbd, ToolMissingError, imageInfo, imageMap, type Extent } from './qemu-image.js';

/** Pieces an object is read in by ranged GETs. */
const GET_PIECE = 8 * 1024 * 1024;

export interface OpenImageOptions {
  /** Skip detection: the image is in this format. */
  format?: string;
  /** The store a swift:// image is read from. */
  store?: ObjectStore;
}

/** An opened image and what it was found to be. */
export interface OpenedImage {
  source: ImageSource;
  format: string;
}

/** swift://CONTAINER/OBJECT, or null for a path. */
export function parseSwiftUrl(spec: string): { container: string; object: string } | null {
  if (!spec.startsWith('swift://')) return null;
  const m = /^swift:\/\/([^/]+)\/(.+)$/.exec(spec);
  if (!m) throw new EngineError(`'${spec}' is not swift://CONTAINER/OBJECT`);
  return { container: decodeURIComponent(m[1]!), object: decodeURIComponent(m[2]!) };
}

export async function openImage(spec: string, options: OpenImageOptions = {}): Promise<OpenedImage> {
  const swift = parseSwiftUrl(spec);
  if (swift) return openObject(spec, swift.container, swift.object, options);
  imageFileSize(spec); // a missing file, a directory: said plainly, before QEMU says it its way
  if (options.format === 'raw') return { source: new RawImageFile(spec), format: 'raw' };
  const info = await imageInfo(spec, options.format).catch((err: Error) => {
    // without QEMU's tools a raw image can still be imported, if the user says it is one
    if (err instanceof ToolMissingError) throw new EngineError(`${err.message}; or give --format raw for a raw image`);
    throw err;
  });
  if (info.format === 'raw') return { source: new RawImageFile(spec), format: 'raw' };
  return { source: await QemuImage.open(spec, spec, info.format, info.virtualSize), format: info.format };
}

async function openObject(spec: string, container: string, object: string, options: OpenImageOptions): Promise<OpenedImage> {
  const store = options.store;
  if (!store) throw new EngineError(`${spec}: no Swift store is configured (set ST_AUTH/ST_USER/ST_KEY or OS_* variables, or --config)`);
  const head = await store.head(container, object);
  if (!head) throw new EngineError(`${spec}: object ${container}/${object} does not exist in ${store.description}`);
  if (head.size === 0) throw new EngineError(`image '${spec}' is empty`);
  if (options.format === 'raw') return { source: new ObjectImage(spec, store, container, object, head.size), format: 'raw' };
  const http = await ObjectHttp.serve(store, container, object, head.size);
  try {
    const qemuName = `json:${JSON.stringify({ 'file.driver': 'http', 'file.url': http.url, 'file.readahead': 1024 * 1024 })}`;
    const info = await imageInfo(qemuName, options.format);
    if (info.format === 'raw') {
      await http.close();
      return { source: new ObjectImage(spec, store, container, object, head.size), format: 'raw' };
    }
    return { source: await QemuImage.open(spec, qemuName, info.format, info.virtualSize, http), format: info.format };
  } catch (err) {
    await http.close();
    throw err;
  }
}

/** A raw image in an object of the store, read by ranged GETs. */
class ObjectImage implements ImageSource {
  constructor(
    readonly name: string,
    private readonly store: ObjectStore,
    private readonly container: string,
    private readonly object: string,
    readonly size: number,
  ) {}

  dataIn(start: number, end: number): Array<{ start: number; end: number }> {
    return [{ start, end }];
  }

  async readFully(buffer: Buffer, position: number): Promise<void> {
    for (let at = 0; at < buffer.length; at += GET_PIECE) {
      const end = Math.min(buffer.length, at + GET_PIECE);
      const data = await this.store.get(this.container, this.object, { start: position + at, end: position + end });
      data.copy(buffer, at);
    }
  }

  async close(): Promise<void> {}
}

/** An image of another format, exported as raw bytes by qemu-nbd; only its data extents are read. */
class QemuImage implements ImageSource {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly extents: Extent[],
    private readonly nbd: QemuNbd,
    private readonly client: NbdClient,
    private readonly http: ObjectHttp | undefined,
  ) {}

  static async open(name: string, qemuName: string, format: string, virtualSize: number, http?: ObjectHttp): Promise<QemuImage> {
    const extents = (await imageMap(qemuName, format)).filter((e) => e.data);
    const nbd = await QemuNbd.start(qemuName, format);
    try {
      const client = await NbdClient.connect(nbd.socket);
      if (client.size !== virtualSize) throw new EngineError(`qemu-nbd exports ${client.size} bytes of ${name}, qemu-img said ${virtualSize}`);
      return new QemuImage(name, virtualSize, extents, nbd, client, http);
    } catch (err) {
      await nbd.stop();
      throw err;
    }
  }

  dataIn(start: number, end: number): Array<{ start: number; end: number }> {
    // extents are in order: from the first that ends after start
    let lo = 0;
    let hi = this.extents.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.extents[mid]!;
      if (e.start + e.length <= start) lo = mid + 1;
      else hi = mid;
    }
    const parts: Array<{ start: number; end: number }> = [];
    for (let i = lo; i < this.extents.length && this.extents[i]!.start < end; i++) {
      const e = this.extents[i]!;
      const from = Math.max(start, e.start);
      const to = Math.min(end, e.start + e.length);
      const last = parts.at(-1);
      if (last && last.end === from) last.end = to; // adjacent extents (of different depths in a backing chain): one read
      else parts.push({ start: from, end: to });
    }
    return parts;
  }

  readFully(buffer: Buffer, position: number): Promise<void> {
    return this.client.read(buffer, position);
  }

  async close(): Promise<void> {
    await this.client.close().catch(() => undefined);
    await this.nbd.stop();
    await this.http?.close();
  }
}
