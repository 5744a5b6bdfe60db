import { onesComplementChecksum } from './checksum.js';
import { vhdError } from './errors.js';
import { uuidFromBytes, uuidToBytes } from './fields.js';
import type { Geometry } from './geometry.js';

/** Size of the hard disk footer. */
export const FOOTER_SIZE = 512;
const COOKIE = 'conectix';
const CHECKSUM_AT = 64;

/** Disk type codes of the footer. */
export const DiskType = { fixed: 2, dynamic: 3, differencing: 4 } as const;
/** `data offset` of a fixed disk: there is no next structure. */
export const NO_DATA_OFFSET = 0xffff_ffff_ffff_ffffn;

/** The hard disk footer, which every VHD ends with (and a sparse one also begins with). */
export interface VhdFooter {
  /** Feature bits; bit 1 ("reserved") is always set. */
  features: number;
  /** File format version, 0x00010000. */
  formatVersion: number;
  /** Absolute offset of the dynamic header; {@link NO_DATA_OFFSET} for a fixed disk. */
  dataOffset: bigint;
  /** Creation time, seconds since 2000-01-01T00:00:00Z. */
  timestamp: number;
  /** Four characters naming the creator; blktap writes `tap` and a NUL. */
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: bigint;
  /** The disk's size in bytes: authoritative, whatever the geometry says. */
  currentSize: bigint;
  geometry: Geometry;
  /** 2 fixed, 3 dynamic, 4 differencing. */
  diskType: number;
  uuid: string;
  savedState: boolean;
  /** blktap's hidden flag (the byte after saved state): set on snapshot parents. */
  hidden: boolean;
}

/** Encodes a footer, computing its checksum. */
export function encodeFooter(f: VhdFooter): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  b.write(COOKIE, 0, 'latin1');
  b.writeUInt32BE(f.features, 8);
  b.writeUInt32BE(f.formatVersion, 12);
  b.writeBigUInt64BE(f.dataOffset, 16);
  b.writeUInt32BE(f.timestamp, 24);
  b.write(f.creatorApplication.padEnd(4, '\0').slice(0, 4), 28, 'latin1');
  b.writeUInt32BE(f.creatorVersion, 32);
  b.writeUInt32BE(f.creatorHostOs, 36);
  b.writeBigUInt64BE(f.originalSize, 40);
  b.writeBigUInt64BE(f.currentSize, 48);
  b.writeUInt16BE(f.geometry.cylinders, 56);
  b.writeUInt8(f.geometry.heads, 58);
  b.writeUInt8(f.geometry.sectorsPerTrack, 59);
  b.writeUInt32BE(f.diskType, 60);
  uuidToBytes(f.uuid).copy(b, 68);
  b[84] = f.savedState ? 1 : 0;
  b[85] = f.hidden ? 1 : 0;
  b.writeUInt32BE(onesComplementChecksum(b, CHECKSUM_AT), CHECKSUM_AT);
  return b;
}

/**
 * Decodes and verifies a footer read from `path`: VHD_BAD_FOOTER for a wrong cookie or
 * disk type, VHD_BAD_CHECKSUM for a checksum that does not match.
 */
export function decodeFooter(b: Buffer, path: string): VhdFooter {
  if (b.length < FOOTER_SIZE || b.toString('latin1', 0, 8) !== COOKIE) {
    throw vhdError('VHD_BAD_FOOTER', 'no VHD footer (cookie "conectix") at the end of the file', path);
  }
  const stored = b.readUInt32BE(CHECKSUM_AT);
  const actual = onesComplementChecksum(b.subarray(0, FOOTER_SIZE), CHECKSUM_AT);
  if (stored !== actual) {
    throw vhdError('VHD_BAD_CHECKSUM', `footer checksum 0x${stored.toString(16)} should be 0x${actual.toString(16)}`, path);
  }
  const diskType = b.readUInt32BE(60);
  if (diskType !== DiskType.fixed && diskType !== DiskType.dynamic && diskType !== DiskType.differencing) {
    throw vhdError('VHD_BAD_FOOTER', `unsupported disk type ${diskType}`, path);
  }
  return {
    features: b.readUInt32BE(8),
    formatVersion: b.readUInt32BE(12),
    dataOffset: b.readBigUInt64BE(16),
    timestamp: b.readUInt32BE(24),
    creatorApplication: b.toString('latin1', 28, 32),
    creatorVersion: b.readUInt32BE(32),
    creatorHostOs: b.readUInt32BE(36),
    originalSize: b.readBigUInt64BE(40),
    currentSize: b.readBigUInt64BE(48),
    geometry: { cylinders: b.readUInt16BE(56), heads: b[58] as number, sectorsPerTrack: b[59] as number },
    diskType,
    uuid: uuidFromBytes(b.subarray(68, 84)),
    savedState: b[84] !== 0,
    hidden: b[85] !== 0,
  };
}
