// Bit operations on the per-chunk block bitmaps (bit i of byte i>>3, LSB first).

export function testBit(bits: Uint8Array, i: number): boolean {
  return (bits[i >> 3]! & (1 << (i & 7))) !== 0;
}

export function popcount8(byte: number): number {
  let n = byte - ((byte >> 1) & 0x55);
  n = (n & 0x33) + ((n >> 2) & 0x33);
  return (n + (n >> 4)) & 0x0f;
}

/** Set bits in a bitmap. */
export function countBits(bits: Uint8Array): number {
  let count = 0;
  for (const byte of bits) count += popcount8(byte);
  return count;
}
