// Name and range checks shared by the stores, so every store refuses the same
// inputs with StoreError('invalid') instead of each failing in its own way.

import { StoreError, type ByteRange, type ReadRange } from './object-store.js';

// Swift's defaults (constraints.py): container names up to 256 bytes, object
// names up to 1024 bytes, both as UTF-8.
export const MAX_CONTAINER_NAME_BYTES = 256;
export const MAX_OBJECT_NAME_BYTES = 1024;

function isWellFormed(s: string): boolean {
  try {
    encodeURIComponent(s); // throws URIError on a lone surrogate
    return true;
  } catch {
    return false;
  }
}

export function checkContainerName(container: string): void {
  if (typeof container !== 'string' || container.length === 0) {
    throw new StoreError('invalid', 'container name is empty');
  }
  if (container.includes('/')) {
    throw new StoreError('invalid', `container name ${JSON.stringify(container)} contains '/'`);
  }
  if (container.includes('\0')) {
    throw new StoreError('invalid', `container name ${JSON.stringify(container)} contains NUL`);
  }
  if (container === '.' || container === '..') {
    throw new StoreError('invalid', `container name ${JSON.stringify(container)} is not allowed`);
  }
  if (!isWellFormed(container)) {
    throw new StoreError('invalid', `container name ${JSON.stringify(container)} is not valid Unicode`);
  }
  if (Buffer.byteLength(container, 'utf8') > MAX_CONTAINER_NAME_BYTES) {
    throw new StoreError('invalid', `container name is longer than ${MAX_CONTAINER_NAME_BYTES} bytes`);
  }
}

export function checkObjectName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) {
    throw new StoreError('invalid', 'object name is empty');
  }
  if (name.includes('\0')) {
    throw new StoreError('invalid', `object name ${JSON.stringify(name)} contains NUL`);
  }
  if (!isWellFormed(name)) {
    throw new StoreError('invalid', `object name ${JSON.stringify(name)} is not valid Unicode`);
  }
  if (Buffer.byteLength(name, 'utf8') > MAX_OBJECT_NAME_BYTES) {
    throw new StoreError('invalid', `object name is longer than ${MAX_OBJECT_NAME_BYTES} bytes`);
  }
}

/**
 * Checks a [start, end) range, where an empty range (start === end) is
 * allowed; or a list of ranges: not empty, none empty, ascending and disjoint.
 */
export function checkRange(range: ReadRange): void {
  const one = (r: ByteRange): void => {
    const { start, end } = r;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new StoreError('invalid', `bad byte range [${start}, ${end})`);
    }
  };
  if ('start' in range) return one(range);
  if (range.length === 0) throw new StoreError('invalid', 'an empty list of byte ranges');
  let last = 0;
  for (const r of range) {
    one(r);
    if (r.start === r.end) throw new StoreError('invalid', `an empty byte range [${r.start}, ${r.end}) in a list of ranges`);
    if (r.start < last) throw new StoreError('invalid', `byte range [${r.start}, ${r.end}) overlaps or precedes the one before it`);
    last = r.end;
  }
}

/** Byte-wise UTF-8 order, which is the order Swift lists names in. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Hex MD5s are compared case-insensitively; anything else is not an MD5. */
export function isHexMd5(s: string): boolean {
  return /^[0-9a-fA-F]{32}$/.test(s);
}
