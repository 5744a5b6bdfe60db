import { onesComplementChecksum } from './checksum.js';
import { vhdError } from './errors.js';
import { uuidFromBytes, uuidToBytes } from './fields.js';

/** Size of the dynamic disk header. */
export const HEADER_SIZE = 1024;
const COOKIE = 'cxsparse';
const CHECKSUM_AT = 36;
const NAME_AT = 64;
const NAME_BYTES = 512;
const LOCATORS_AT = 576;
const LOCATOR_ENTRY_SIZE = 24;
/** Number of parent locator entries in the header. */
export const LOCATOR_SLOTS = 8;

/** One parent locator entry: where the locator's data lives in the file. */
export interface ParentLocatorEntry {
  /** Platform code (`W2ku`, `W2ru`, `MacX`, …); 0 for an empty slot. */
  code: number;
  /** Space reserved for the data, in 512-byte sectors. */
  dataSpace: number;
  /** Length of the data in bytes. */
  dataLength: number;
  /** Absolute offset of the data in the file. */
  dataOffset: bigint;
}

/** The dynamic disk header (`cxsparse`) of a dynamic or differencing disk. */
export interface VhdHeader {
  dataOffset: bigint;
  /** Absolute offset of the BAT. */
  tableOffset: bigint;
  headerVersion: number;
  maxTableEntries: number;
  /** Bytes of data per block (2 MiB by default); a power of two. */
  blockSize: number;
  parentUuid: string;
  /** Parent's modification time, seconds since 2000-01-01T00:00:00Z. */
  parentTimestamp: number;
  /** Parent's name as stored (UTF-16BE, at most 256 code units). */
  parentUnicodeName: string;
  /** Always {@link LOCATOR_SLOTS} entries. */
  parentLocators: ParentLocatorEntry[];
}

/** An empty parent locator slot. */
export const EMPTY_LOCATOR: ParentLocatorEntry = { code: 0, dataSpace: 0, dataLength: 0, dataOffset: 0n };

/** Encodes a header, computing its checksum. */
export function encodeHeader(h: VhdHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(COOKIE, 0, 'latin1');
  b.writeBigUInt64BE(h.dataOffset, 8);
  b.writeBigUInt64BE(h.tableOffset, 16);
  b.writeUInt32BE(h.headerVersion, 24);
  b.writeUInt32BE(h.maxTableEntries, 28);
  b.writeUInt32BE(h.blockSize, 32);
  uuidToBytes(h.parentUuid).copy(b, 40);
  b.writeUInt32BE(h.parentTimestamp, 56);
  const name = Buffer.from(h.parentUnicodeName, 'utf16le').swap16();
  name.copy(b, NAME_AT, 0, Math.min(name.length, NAME_BYTES));
  for (let i = 0; i < LOCATOR_SLOTS; i++) {
    const l = h.parentLocators[i] ?? EMPTY_LOCATOR;
    const at = LOCATORS_AT + i * LOCATOR_ENTRY_SIZE;
    b.writeUInt32BE(l.code, at);
    b.writeUInt32BE(l.dataSpace, at + 4);
    b.writeUInt32BE(l.dataLength, at + 8);
    b.writeBigUInt64BE(l.dataOffset, at + 16);
  }
  b.writeUInt32BE(onesComplementChecksum(b, CHECKSUM_AT), CHECKSUM_AT);
  return b;
}

/** Decodes and verifies a header: VHD_BAD_HEADER for a wrong cookie, VHD_BAD_CHECKSUM for a bad sum. */
export function decodeHeader(b: Buffer, path: string): VhdHeader {
  if (b.length < HEADER_SIZE || b.toString('latin1', 0, 8) !== COOKIE) {
    throw vhdError('VHD_BAD_HEADER', 'no dynamic disk header (cookie "cxsparse") where the footer points', path);
  }
  const stored = b.readUInt32BE(CHECKSUM_AT);
  const actual = onesComplementChecksum(b.subarray(0, HEADER_SIZE), CHECKSUM_AT);
  if (stored !== actual) {
    throw vhdError('VHD_BAD_CHECKSUM', `header checksum 0x${stored.toString(16)} should be 0x${actual.toString(16)}`, path);
  }
  const nameBytes = Buffer.from(b.subarray(NAME_AT, NAME_AT + NAME_BYTES)).swap16();
  let name = nameBytes.toString('utf16le');
  const nul = name.indexOf('\0');
  if (nul >= 0) name = name.slice(0, nul);
  const parentLocators: ParentLocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_SLOTS; i++) {
    const at = LOCATORS_AT + i * LOCATOR_ENTRY_SIZE;
    parentLocators.push({
      code: b.readUInt32BE(at),
      dataSpace: b.readUInt32BE(at + 4),
      dataLength: b.readUInt32BE(at + 8),
      dataOffset: b.readBigUInt64BE(at + 16),
    });
  }
  return {
    dataOffset: b.readBigUInt64BE(8),
    tableOffset: b.readBigUInt64BE(16),
    headerVersion: b.readUInt32BE(24),
    maxTableEntries: b.readUInt32BE(28),
    blockSize: b.readUInt32BE(32),
    parentUuid: uuidFromBytes(b.subarray(40, 56)),
    parentTimestamp: b.readUInt32BE(56),
    parentUnicodeName: name,
    parentLocators,
  };
}
