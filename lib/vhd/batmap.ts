import { vhdError } from './errors.js';
import { padToSector } from './fields.js';

/**
 * blktap's batmap: a header (`tdbatmap`) in the sector after the BAT's space, then a bit map
 * with one bit per block (MSB first), set when every sector of the block is allocated, so
 * tapdisk can skip reading that block's bitmap. Its checksum is the one's complement of the
 * byte sum of the whole map (version 1.2 sums unsigned bytes).
 */
export const BATMAP_HEADER_SIZE = 512;
const COOKIE = 'tdbatmap';
/** Batmap version 1.2, the current one. */
export const BATMAP_VERSION = 0x00010002;

export interface BatmapHeader {
  /** Absolute offset of the map. */
  batmapOffset: bigint;
  /** Size of the map in sectors. */
  batmapSize: number;
  batmapVersion: number;
  checksum: number;
}

/** Sectors a batmap for `entries` blocks needs. */
export function batmapSectors(entries: number): number {
  return padToSector(Math.ceil(entries / 8)) / 512;
}

/** The checksum of a map (signed bytes in version 1.1, unsigned from 1.2). */
export function batmapChecksum(map: Uint8Array, version = BATMAP_VERSION): number {
  let sum = 0;
  for (const byte of map) sum = (sum + (version === 0x00010001 && byte > 127 ? byte - 256 : byte)) >>> 0;
  return ~sum >>> 0;
}

/** Encodes the header into one sector. */
export function encodeBatmapHeader(h: BatmapHeader): Buffer {
  const b = Buffer.alloc(BATMAP_HEADER_SIZE);
  b.write(COOKIE, 0, 'latin1');
  b.writeBigUInt64BE(h.batmapOffset, 8);
  b.writeUInt32BE(h.batmapSize, 16);
  b.writeUInt32BE(h.batmapVersion, 20);
  b.writeUInt32BE(h.checksum, 24);
  return b;
}

/** The header in `b`, or undefined when the sector holds none (images not made by blktap). */
export function decodeBatmapHeader(b: Buffer): BatmapHeader | undefined {
  if (b.length < 28 || b.toString('latin1', 0, 8) !== COOKIE) return undefined;
  return {
    batmapOffset: b.readBigUInt64BE(8),
    batmapSize: b.readUInt32BE(16),
    batmapVersion: b.readUInt32BE(20),
    checksum: b.readUInt32BE(24),
  };
}

/** Throws VHD_BAD_CHECKSUM when `map` does not match the checksum in `h`. */
export function verifyBatmap(h: BatmapHeader, map: Uint8Array, path: string): void {
  const actual = batmapChecksum(map, h.batmapVersion);
  if (actual !== h.checksum) {
    throw vhdError('VHD_BAD_CHECKSUM', `batmap checksum 0x${h.checksum.toString(16)} should be 0x${actual.toString(16)}`, path);
  }
}
