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

/** Buffers of {@link sharedUnusedBat}: all 0xff, never to be written. */
const shared = new WeakSet<ArrayBufferLike>();
let unused = new Uint32Array(0);

/**
 * A table of `entries` unused entries (padded to whole sectors) that every caller shares,
 * so that a new image's BAT costs no allocation or fill per disk (a 2040 GiB disk has a
 * 4 MiB BAT: allocating and filling it dominated the time of a snapshot). All bytes are
 * 0xff, which is BAT_UNUSED in either byte order, so the same memory is both the decoded
 * table and its encoding ({@link sharedBatBytes}). Never change it: {@link ownBat} first.
 */
export function sharedUnusedBat(entries: number): Uint32Array {
  const padded = batBytes(entries) / 4;
  if (unused.length < padded) {
    unused = new Uint32Array(padded).fill(BAT_UNUSED);
    shared.add(unused.buffer);
  }
  return unused.subarray(0, entries);
}

/** The encoded sectors of a table from {@link sharedUnusedBat}. */
export function sharedBatBytes(bat: Uint32Array): Buffer {
  return Buffer.from(bat.buffer, bat.byteOffset, batBytes(bat.length));
}

/** `bat` itself when it may be changed, or a private copy of a shared unused table. */
export function ownBat(bat: Uint32Array): Uint32Array {
  return shared.has(bat.buffer) ? bat.slice() : bat;
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
