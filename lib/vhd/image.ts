import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED, batBytes, decodeBat } from './bat.js';
import { BATMAP_HEADER_SIZE, type BatmapHeader, decodeBatmapHeader, verifyBatmap } from './batmap.js';
import { bitmapBytes } from './bitmap.js';
import { fsError, vhdError } from './errors.js';
import { DiskType, FOOTER_SIZE, type VhdFooter, decodeFooter } from './footer.js';
import { HEADER_SIZE, type VhdHeader, decodeHeader } from './header.js';
import { type LocatorPath, decodeLocatorData } from './locator.js';

/** The largest disk the VHD format (and blktap) allows: 2040 GiB. */
export const MAX_DISK_SIZE = 2040 * 1024 ** 3;
/** The block size xenode writes, as blktap and Hyper-V do. */
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;

/** blktap's batmap as found in a file. */
export interface BatmapState {
  header: BatmapHeader;
  headerOffset: number;
  map: Buffer;
}

/** The metadata of a dynamic or differencing image. */
export interface SparseLayout {
  header: VhdHeader;
  tableOffset: number;
  /**
   * Entries addressing the disk (the BAT may have more). For a new image, the table of
   * unused entries every new image shares: replace it with `ownBat(bat)` before changing it.
   */
  bat: Uint32Array;
  blockSize: number;
  sectorsPerBlock: number;
  bitmapBytes: number;
  batmap: BatmapState | undefined;
  locators: LocatorPath[];
}

/** Everything read and verified from a VHD file when it is opened. */
export interface VhdImage {
  footer: VhdFooter;
  /** Where the end footer is: the end of the file's data. */
  footerOffset: number;
  size: number;
  sparse: SparseLayout | undefined;
}

/** Reads exactly `length` bytes at `offset`; VHD_TRUNCATED when the file ends first. */
export async function readExact(fh: FileHandle, offset: number, length: number, path: string, what: string): Promise<Buffer> {
  // Every byte is read or the call throws, so the buffer needs no zeroing.
  const buf = Buffer.allocUnsafe(length);
  await readInto(fh, offset, buf, 0, length, path, what);
  return buf;
}

/** Reads exactly `length` bytes at file `offset` into `out` at `at`; VHD_TRUNCATED when the file ends first. */
export async function readInto(fh: FileHandle, offset: number, out: Buffer, at: number, length: number, path: string, what: string): Promise<void> {
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      ({ bytesRead: n } = await fh.read(out, at + done, length - done, offset + done));
    } catch (err) {
      throw fsError(err, 'vhd.read', path);
    }
    if (n === 0) throw vhdError('VHD_TRUNCATED', `the file ends inside the ${what} (offset ${offset + done})`, path);
    done += n;
  }
}

function safeOffset(v: bigint, what: string, path: string, code: 'VHD_BAD_HEADER' | 'VHD_BAD_FOOTER'): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw vhdError(code, `${what} ${v} is out of range`, path);
  return Number(v);
}

/** Reads and verifies footer, header, BAT, batmap and parent locators of the file open as `fh`. */
export async function readImage(fh: FileHandle, path: string): Promise<VhdImage> {
  const fileSize = (await fh.stat()).size;
  if (fileSize < FOOTER_SIZE) throw vhdError('VHD_TRUNCATED', `${fileSize} bytes is too short for a VHD footer`, path);
  const footerOffset = fileSize - FOOTER_SIZE;
  const footer = decodeFooter(await readExact(fh, footerOffset, FOOTER_SIZE, path, 'footer'), path);
  if (footer.currentSize > BigInt(MAX_DISK_SIZE)) {
    throw vhdError('VHD_TOO_LARGE', `disk size ${footer.currentSize} exceeds the 2040 GiB VHD limit`, path);
  }
  const size = Number(footer.currentSize);
  if (size % 512 !== 0) throw vhdError('VHD_BAD_FOOTER', `disk size ${size} is not a multiple of 512`, path);
  if (footer.diskType === DiskType.fixed) {
    if (footerOffset < size) throw vhdError('VHD_TRUNCATED', `a fixed disk of ${size} bytes needs ${size + FOOTER_SIZE} bytes of file, not ${fileSize}`, path);
    return { footer, footerOffset, size, sparse: undefined };
  }
  const headerOffset = safeOffset(footer.dataOffset, 'header offset', path, 'VHD_BAD_FOOTER');
  if (headerOffset + HEADER_SIZE > footerOffset) throw vhdError('VHD_TRUNCATED', `the header at ${headerOffset} lies past the end of the file`, path);
  const header = decodeHeader(await readExact(fh, headerOffset, HEADER_SIZE, path, 'header'), path);
  const { blockSize } = header;
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) throw vhdError('VHD_BAD_HEADER', `block size ${blockSize} is not a power of two of at least 512`, path);
  const entries = Math.ceil(size / blockSize);
  if (header.maxTableEntries < entries) {
    throw vhdError('VHD_BAD_HEADER', `${header.maxTableEntries} BAT entries cannot map ${size} bytes in blocks of ${blockSize}`, path);
  }
  const tableOffset = safeOffset(header.tableOffset, 'BAT offset', path, 'VHD_BAD_HEADER');
  const tableBytes = batBytes(header.maxTableEntries);
  if (tableOffset + tableBytes > footerOffset) throw vhdError('VHD_TRUNCATED', `the BAT at ${tableOffset} runs past the end of the file`, path);
  const bat = decodeBat(await readExact(fh, tableOffset, entries * 4, path, 'BAT'), entries);
  const sectorsPerBlock = blockSize / 512;
  const bmBytes = bitmapBytes(sectorsPerBlock);
  for (let i = 0; i < entries; i++) {
    const e = bat[i] as number;
    if (e === BAT_UNUSED) continue;
    const start = e * 512;
    if (start < headerOffset + HEADER_SIZE || start + bmBytes + blockSize > footerOffset) {
      throw vhdError('VHD_BAD_BAT', `BAT entry ${i} (sector ${e}) points outside the file's data area`, path);
    }
  }
  const batmap = await readBatmap(fh, tableOffset + tableBytes, footerOffset, path);
  const locators = footer.diskType === DiskType.differencing ? await readLocators(fh, header, footerOffset, path) : [];
  return {
    footer,
    footerOffset,
    size,
    sparse: { header, tableOffset, bat, blockSize, sectorsPerBlock, bitmapBytes: bmBytes, batmap, locators },
  };
}

async function readBatmap(fh: FileHandle, headerOffset: number, footerOffset: number, path: string): Promise<BatmapState | undefined> {
  if (headerOffset + BATMAP_HEADER_SIZE > footerOffset) return undefined;
  const header = decodeBatmapHeader(await readExact(fh, headerOffset, BATMAP_HEADER_SIZE, path, 'batmap header'));
  if (!header) return undefined;
  const mapOffset = Number(header.batmapOffset);
  if (mapOffset + header.batmapSize * 512 > footerOffset) throw vhdError('VHD_TRUNCATED', 'the batmap runs past the end of the file', path);
  const map = await readExact(fh, mapOffset, header.batmapSize * 512, path, 'batmap');
  verifyBatmap(header, map, path);
  return { header, headerOffset, map };
}

async function readLocators(fh: FileHandle, header: VhdHeader, footerOffset: number, path: string): Promise<LocatorPath[]> {
  const out: LocatorPath[] = [];
  for (const l of header.parentLocators) {
    if (l.code === 0 || l.dataLength === 0) continue;
    const offset = Number(l.dataOffset);
    if (offset + l.dataLength > footerOffset) throw vhdError('VHD_BAD_HEADER', 'a parent locator points past the end of the file', path);
    const name = decodeLocatorData(l.code, await readExact(fh, offset, l.dataLength, path, 'parent locator'));
    if (name !== undefined) out.push({ code: l.code, path: name });
  }
  return out;
}
