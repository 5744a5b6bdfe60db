import { padToSector } from './fields.js';

/**
 * Sector bitmaps (one per block) and blktap's batmap are bit strings, most significant bit
 * first: bit `n` is bit `7 - n % 8` of byte `n / 8`.
 */
export function testBit(map: Uint8Array, n: number): boolean {
  return (((map[n >> 3] as number) >> (7 - (n & 7))) & 1) === 1;
}

/** Sets bit `n` (MSB first). */
export function setBit(map: Uint8Array, n: number): void {
  map[n >> 3] = (map[n >> 3] as number) | (0x80 >> (n & 7));
}

/** Bytes of a block's sector bitmap on disk: one bit per sector, padded to a sector. */
export function bitmapBytes(sectorsPerBlock: number): number {
  return padToSector(Math.ceil(sectorsPerBlock / 8));
}

/** Whether bits [0, count) are all set. */
export function allSet(map: Uint8Array, count: number): boolean {
  const whole = count >> 3;
  for (let i = 0; i < whole; i++) if (map[i] !== 0xff) return false;
  for (let n = whole * 8; n < count; n++) if (!testBit(map, n)) return false;
  return true;
}
