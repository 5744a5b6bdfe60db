import { padToSector } from './fields.js';

/** A BAT entry for a block that has no storage in the file. */
export const BAT_UNUSED = 0xffffffff;

/** Bytes the BAT of `entries` entries occupies on disk (rounded up to a sector). */
export function batBytes(entries: number): number {
  return padToSector(entries * 4);
}

/** Encodes a BAT: big-endian u32 sector offsets, padded with unused entries to a sector. */
export function encodeBat(bat: Uint32Array): Buffer {
  const b = Buffer.alloc(batBytes(bat.length), 0xff);
  Buffer.from(bat.buffer, bat.byteOffset, bat.length * 4).copy(b);
  if (!bigEndianHost) b.subarray(0, bat.length * 4).swap32();
  return b;
}

/** An encoded BAT of `entries` unused entries. */
export function emptyBat(entries: number): Buffer {
  return Buffer.alloc(batBytes(entries), 0xff);
}

const bigEndianHost = new Uint8Array(new Uint32Array([1]).buffer)[0] === 0;

/**
 * Decodes `entries` BAT entries. The result is a view over `b`, byte-swapped in place (no
 * copy: a 2040 GiB disk has a 4 MiB BAT, and opening it should not touch that twice), so
 * `b` must not be used afterwards.
 */
export function decodeBat(b: Buffer, entries: number): Uint32Array {
  const bytes = b.byteOffset % 4 === 0 ? b.subarray(0, entries * 4) : Buffer.from(b.subarray(0, entries * 4));
  if (!bigEndianHost) bytes.swap32();
  return new Uint32Array(bytes.buffer, bytes.byteOffset, entries);
}
