// Sizes as users write them: 10G, 512M, 4096, 1.5T. Binary units (K = 1024).
const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new Error(`'${text}' is not a size (examples: 10G, 512M, 1048576)`);
  const value = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (value > Number.MAX_SAFE_INTEGER) throw new Error(`'${text}' is too large (at most ${Number.MAX_SAFE_INTEGER} bytes)`);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`'${text}' is not a whole positive number of bytes`);
  return value;
}

export function formatSize(bytes: number): string {
  for (const unit of ['P', 'T', 'G', 'M', 'K'] as const) {
    const scale = UNITS[unit]!;
    if (bytes >= scale) {
      const value = bytes / scale;
      return `${Number.isInteger(value) ? value : value.toFixed(1)}${unit}`;
    }
  }
  return `${bytes}B`;
}
