import { randomBytes, randomUUID } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { batBytes, sharedBatBytes, sharedUnusedBat } from './bat.js';
import { BATMAP_HEADER_SIZE, BATMAP_VERSION, type BatmapHeader, batmapSectors, encodeBatmapHeader } from './batmap.js';
import { bitmapBytes } from './bitmap.js';
import { abortError } from '../errors.js';
import { fsError } from './errors.js';
import { type VhdFiles, nodeFiles } from './files.js';
import { NIL_UUID, padToSector, toVhdTimestamp } from './fields.js';
import { DiskType, FOOTER_SIZE, NO_DATA_OFFSET, type VhdFooter, encodeFooter } from './footer.js';
import { chsGeometry } from './geometry.js';
import { EMPTY_LOCATOR, type ParentLocatorEntry, type VhdHeader, encodeHeader } from './header.js';
import type { VhdImage } from './image.js';
import { LocatorCode, type LocatorPath, decodeLocatorData, encodeLocatorData } from './locator.js';

/** blktap's creator application: `tap` and a NUL (qemu then trusts the current size). */
export const CREATOR_APP = 'tap\0';
/** blktap's creator version 1.3 (big-endian bitmaps, batmap 1.2). */
export const CREATOR_VERSION = 0x00010003;
const HOST_OS_WI2K = 0x5769326b;
const HEADER_OFFSET = 512;
/** Where xenode puts the BAT: 4 KiB-aligned. */
const TABLE_OFFSET = 4096;

/** The parent a new differencing image points at. */
export interface NewImageParent {
  path: string;
  uuid: string;
  /** Parent's modification time, as a VHD timestamp. */
  timestamp: number;
}

/** What {@link writeNewImage} makes. */
export interface NewImageSpec {
  size: number;
  type: 'raw' | 'fixed' | 'dynamic' | 'differencing';
  blockSize: number;
  parent?: NewImageParent;
  /**
   * Write zeros over a fixed image's whole data area, so that every byte has storage (as
   * blktap's libvhd does: a fixed disk must not fail with ENOSPC later). Default true;
   * import and convert pass false and write every block themselves.
   */
  allocate?: boolean;
  /** Stops the zero fill of a fixed image (AbortError; the temporary file is removed). */
  signal?: AbortSignal;
  /**
   * Make the image durable (`fdatasync`) before it is put in place (default true). A
   * snapshot's child skips it: syncing its BAT (4 bytes per 2 MiB of disk) is the one cost
   * that would grow with the disk's size, and the child's first flush makes it durable
   * along with the first data written to it.
   */
  sync?: boolean;
}

/** Zeros for {@link zeroFill}: one shared buffer, never written to. */
export const ZEROS = Buffer.alloc(4 * 1024 * 1024);

/** Writes zeros over bytes [from, to) of `fh`, 4 MiB at a time, checking `signal` between writes. */
export async function zeroFill(fh: FileHandle, from: number, to: number, signal?: AbortSignal): Promise<void> {
  for (let at = from; at < to; at += ZEROS.length) {
    if (signal?.aborted) throw abortError(signal);
    await writeAll(fh, ZEROS.subarray(0, Math.min(ZEROS.length, to - at)), at);
  }
}

/** A footer as blktap writes it for a new disk. */
export function newFooter(size: number, diskType: number, dataOffset: bigint): VhdFooter {
  return {
    features: 2,
    formatVersion: 0x00010000,
    dataOffset,
    timestamp: toVhdTimestamp(new Date()),
    creatorApplication: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: HOST_OS_WI2K,
    originalSize: BigInt(size),
    currentSize: BigInt(size),
    geometry: chsGeometry(size),
    diskType,
    uuid: randomUUID(),
    savedState: false,
    hidden: false,
  };
}

/** Writes all of `buf` at `offset`. */
export async function writeAll(fh: FileHandle, buf: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done);
    done += bytesWritten;
  }
}

/**
 * Writes `bufs` one after another from `offset`, in one `pwritev` where the kernel takes it
 * all (the usual case): a block's bitmap and its data go out together, without copying them
 * into one buffer. What a short write leaves is written by {@link writeAll}.
 */
export async function writeAllv(fh: FileHandle, bufs: Buffer[], offset: number): Promise<void> {
  let written = (await fh.writev(bufs, offset)).bytesWritten;
  let at = offset;
  for (const buf of bufs) {
    if (written < buf.length) await writeAll(fh, buf.subarray(written), at + written);
    written = Math.max(0, written - buf.length);
    at += buf.length;
  }
}

/**
 * Writes a new, empty VHD at `path`. The image is written front to back (footer copy,
 * header, BAT, batmap, parent locators, end footer) into a temporary file beside `path`,
 * made durable, and only then put in place: with `replace`, renamed over whatever is there
 * (as qemu-img and vhd-util create do, but atomically: a failure leaves the old file
 * intact); without, linked in only if `path` does not exist (EEXIST otherwise). Returns
 * what was written, so that the new image can be used without reading it back (a raw
 * image has no footer: its `footer` is a stand-in).
 */
export async function writeNewImage(path: string, spec: NewImageSpec, replace = false, files: VhdFiles = nodeFiles): Promise<VhdImage> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fh: FileHandle;
  try {
    fh = await files.open(tmp, 'wx');
  } catch (err) {
    throw fsError(err, 'vhd.create', path);
  }
  let image: VhdImage;
  try {
    try {
      if (spec.type === 'fixed' || spec.type === 'raw') {
        const footer = newFooter(spec.size, DiskType.fixed, NO_DATA_OFFSET);
        await fh.truncate(spec.size);
        if (spec.type === 'fixed') {
          if (spec.allocate !== false) await zeroFill(fh, 0, spec.size, spec.signal);
          await writeAll(fh, encodeFooter(footer), spec.size);
        }
        image = { footer, footerOffset: spec.size, size: spec.size, sparse: undefined };
      } else {
        image = await writeSparse(fh, path, spec);
      }
      if (spec.sync !== false) await fh.datasync();
    } finally {
      await fh.close();
    }
    if (replace) await files.rename(tmp, path);
    else {
      await files.link(tmp, path);
      await files.remove(tmp);
    }
  } catch (err) {
    // A crash leaves the temporary file behind, as a real one would; only a failure cleans up.
    await files.remove(tmp).catch(() => undefined);
    throw fsError(err, 'vhd.create', path);
  }
  return image;
}

async function writeSparse(fh: FileHandle, path: string, spec: NewImageSpec): Promise<VhdImage> {
  const entries = Math.ceil(spec.size / spec.blockSize);
  const diskType = spec.type === 'dynamic' ? DiskType.dynamic : DiskType.differencing;
  const footerFields = newFooter(spec.size, diskType, BigInt(HEADER_OFFSET));
  const footer = encodeFooter(footerFields);
  const batmapHeaderOffset = TABLE_OFFSET + batBytes(entries);
  const mapOffset = batmapHeaderOffset + BATMAP_HEADER_SIZE;
  const mapSectors = batmapSectors(entries);
  let end = mapOffset + mapSectors * 512;
  const locators: ParentLocatorEntry[] = [];
  const locatorData: Array<[Buffer, number]> = [];
  const locatorPaths: LocatorPath[] = [];
  if (spec.parent) {
    for (const code of [LocatorCode.W2ku, LocatorCode.W2ru, LocatorCode.MacX]) {
      const data = encodeLocatorData(code, spec.parent.path, path);
      const name = decodeLocatorData(code, data);
      if (name !== undefined) locatorPaths.push({ code, path: name });
      const space = padToSector(data.length);
      locators.push({ code, dataSpace: space / 512, dataLength: data.length, dataOffset: BigInt(end) });
      locatorData.push([data, end]);
      end += space;
    }
  }
  while (locators.length < 8) locators.push(EMPTY_LOCATOR);
  const headerFields: VhdHeader = {
    dataOffset: NO_DATA_OFFSET,
    tableOffset: BigInt(TABLE_OFFSET),
    headerVersion: 0x00010000,
    maxTableEntries: entries,
    blockSize: spec.blockSize,
    parentUuid: spec.parent?.uuid ?? NIL_UUID,
    parentTimestamp: spec.parent?.timestamp ?? 0,
    parentUnicodeName: spec.parent ? basename(spec.parent.path).slice(0, 255) : '',
    parentLocators: locators,
  };
  const map = Buffer.alloc(mapSectors * 512);
  // The checksum of an all-zero map, without summing up to 128 KiB of zeros.
  const batmapHeader: BatmapHeader = { batmapOffset: BigInt(mapOffset), batmapSize: mapSectors, batmapVersion: BATMAP_VERSION, checksum: ~0 >>> 0 };
  await writeAll(fh, footer, 0);
  await writeAll(fh, encodeHeader(headerFields), HEADER_OFFSET);
  const bat = sharedUnusedBat(entries);
  await writeAll(fh, sharedBatBytes(bat), TABLE_OFFSET);
  await writeAll(fh, encodeBatmapHeader(batmapHeader), batmapHeaderOffset);
  await writeAll(fh, map, mapOffset);
  for (const [data, at] of locatorData) await writeAll(fh, data, at);
  await writeAll(fh, footer, end);
  await fh.truncate(end + FOOTER_SIZE);
  const sectorsPerBlock = spec.blockSize / 512;
  return {
    footer: footerFields,
    footerOffset: end,
    size: spec.size,
    sparse: {
      header: headerFields,
      tableOffset: TABLE_OFFSET,
      bat,
      blockSize: spec.blockSize,
      sectorsPerBlock,
      bitmapBytes: bitmapBytes(sectorsPerBlock),
      batmap: { header: batmapHeader, headerOffset: batmapHeaderOffset, map },
      locators: locatorPaths,
    },
  };
}
