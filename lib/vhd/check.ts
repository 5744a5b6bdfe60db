import { access } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED, batBytes, decodeBat } from './bat.js';
import { BATMAP_HEADER_SIZE, type BatmapHeader, batmapChecksum, decodeBatmapHeader } from './batmap.js';
import { allSet, bitmapBytes, testBit } from './bitmap.js';
import { XenError } from '../errors.js';
import type { VhdFiles } from './files.js';
import { DiskType, FOOTER_SIZE, type VhdFooter, decodeFooter } from './footer.js';
import { HEADER_SIZE, type VhdHeader, decodeHeader } from './header.js';
import { MAX_DISK_SIZE } from './image.js';
import { type LocatorPath, decodeLocatorData, parentCandidates } from './locator.js';

/** The codes a {@link VhdProblem} carries: each has a heading in docs/errors.md. */
export type VhdProblemCode =
  | 'VHD_TRUNCATED'
  | 'VHD_BAD_FOOTER'
  | 'VHD_BAD_CHECKSUM'
  | 'VHD_FOOTER_MISMATCH'
  | 'VHD_BAD_HEADER'
  | 'VHD_TOO_LARGE'
  | 'VHD_BAD_BAT'
  | 'VHD_BAT_OVERLAP'
  | 'VHD_BATMAP_MISMATCH'
  | 'VHD_PARENT_MISSING'
  | 'VHD_PARENT_MISMATCH';

/** One problem {@link VirtualDisk.check} found in an image file. */
export interface VhdProblem {
  code: VhdProblemCode;
  /** What is wrong, in a sentence. */
  message: string;
  /** Byte offset in the file of the structure concerned. */
  offset?: number;
  /** Bytes concerned, from `offset`. */
  length?: number;
  /** Index of the block concerned (its BAT entry). */
  block?: number;
}

/** A decoded footer and the bytes it was decoded from. */
interface FoundFooter {
  footer: VhdFooter;
  raw: Buffer;
}

/** The metadata of a sparse image as found, however damaged. */
export interface SparseAnalysis {
  header: VhdHeader;
  headerOffset: number;
  tableOffset: number;
  /** Entries addressing the disk. */
  entries: number;
  bat: Uint32Array;
  blockSize: number;
  bitmapBytes: number;
  batmap: { header: BatmapHeader; headerOffset: number; map: Buffer } | undefined;
  /** End of the last metadata structure (header, BAT, batmap, parent locators). */
  metadataEnd: number;
  /** Blocks whose storage is plausible: inside the file, clear of metadata and of each other. */
  sound: Set<number>;
  /** End of the storage of the last sound block (0 without one). */
  blocksEnd: number;
  /** Per block: whether every sector is present (sound blocks only). */
  full: Uint8Array;
  locators: LocatorPath[];
}

/** What {@link analyseImage} found: the problems, and what it could make sense of. */
export interface ImageAnalysis {
  fileSize: number;
  problems: VhdProblem[];
  /** The end footer, when it decodes. */
  end: FoundFooter | undefined;
  /** The copy at offset 0, when it decodes. */
  copy: FoundFooter | undefined;
  /** The footer the analysis went by: the end one, else the copy at 0. */
  footer: VhdFooter | undefined;
  sparse: SparseAnalysis | undefined;
}

/** Reads up to `length` bytes at `offset`; shorter at the end of the file. */
async function readUpTo(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

function problemOf(err: unknown, offset: number, length: number): VhdProblem {
  if (err instanceof XenError && err.code.startsWith('VHD_')) {
    // The engine's messages end with the path in parentheses: the report names the file once.
    return { code: err.code as VhdProblemCode, message: err.message.replace(/^VHD_\w+: /, '').replace(/ \([^()]*\)$/, ''), offset, length };
  }
  throw err;
}

function tryFooter(raw: Buffer, path: string, offset: number, problems: VhdProblem[], where: string): FoundFooter | undefined {
  if (raw.length < FOOTER_SIZE) return undefined;
  try {
    return { footer: decodeFooter(raw, path), raw };
  } catch (err) {
    const p = problemOf(err, offset, FOOTER_SIZE);
    problems.push({ ...p, message: `${where}: ${p.message}` });
    return undefined;
  }
}

/**
 * Examines the image open as `fh` without trusting any of it: every structure is checked
 * against the file's size and the others, and each fault becomes a {@link VhdProblem} rather
 * than an exception, so an image too damaged to open can still be examined (and repaired).
 * Only I/O errors throw.
 */
export async function analyseImage(fh: FileHandle, path: string): Promise<ImageAnalysis> {
  const fileSize = (await fh.stat()).size;
  const problems: VhdProblem[] = [];
  const out: ImageAnalysis = { fileSize, problems, end: undefined, copy: undefined, footer: undefined, sparse: undefined };
  if (fileSize < FOOTER_SIZE) {
    problems.push({ code: 'VHD_TRUNCATED', message: `${fileSize} bytes is too short for a VHD footer`, offset: 0, length: fileSize });
    return out;
  }
  const endAt = fileSize - FOOTER_SIZE;
  const endProblems: VhdProblem[] = [];
  out.end = tryFooter(await readUpTo(fh, endAt, FOOTER_SIZE), path, endAt, endProblems, 'end footer');
  const copyRaw = await readUpTo(fh, 0, FOOTER_SIZE);
  const copyLooksLikeFooter = copyRaw.toString('latin1', 0, 8) === 'conectix';
  const copyProblems: VhdProblem[] = [];
  if (out.end?.footer.diskType !== DiskType.fixed && (copyLooksLikeFooter || out.end)) {
    out.copy = tryFooter(copyRaw, path, 0, copyProblems, 'footer copy at offset 0');
  }
  if (!out.end && out.copy) {
    // What a crash while a block was added leaves: say so, once.
    const why = endProblems[0] as VhdProblem;
    problems.push({ ...why, message: `${why.message}; the copy at offset 0 is intact and repair() restores it` });
  } else {
    problems.push(...endProblems);
  }
  problems.push(...copyProblems);
  out.footer = out.end?.footer ?? out.copy?.footer;
  const footer = out.footer;
  if (!footer) return out;
  if (out.end && out.copy && !out.copy.raw.equals(out.end.raw)) {
    problems.push({ code: 'VHD_FOOTER_MISMATCH', message: 'the footer copy at offset 0 differs from the end footer; repair() rewrites it', offset: 0, length: FOOTER_SIZE });
  }
  if (footer.currentSize > BigInt(MAX_DISK_SIZE)) {
    problems.push({ code: 'VHD_TOO_LARGE', message: `disk size ${footer.currentSize} exceeds the 2040 GiB VHD limit`, offset: endAt, length: FOOTER_SIZE });
    return out;
  }
  const size = Number(footer.currentSize);
  if (size % 512 !== 0) {
    problems.push({ code: 'VHD_BAD_FOOTER', message: `disk size ${size} is not a multiple of 512`, offset: endAt, length: FOOTER_SIZE });
    return out;
  }
  if (footer.diskType === DiskType.fixed) {
    if (endAt < size) problems.push({ code: 'VHD_TRUNCATED', message: `a fixed disk of ${size} bytes needs ${size + FOOTER_SIZE} bytes of file, not ${fileSize}`, offset: endAt });
    return out;
  }
  out.sparse = await analyseSparse(fh, path, footer, size, out.end ? endAt : fileSize, problems);
  return out;
}

async function analyseSparse(fh: FileHandle, path: string, footer: VhdFooter, size: number, dataEnd: number, problems: VhdProblem[]): Promise<SparseAnalysis | undefined> {
  if (footer.dataOffset > BigInt(dataEnd)) {
    problems.push({ code: 'VHD_TRUNCATED', message: `the header at ${footer.dataOffset} lies past the end of the file` });
    return undefined;
  }
  const headerOffset = Number(footer.dataOffset);
  let header: VhdHeader;
  try {
    const raw = await readUpTo(fh, headerOffset, HEADER_SIZE);
    if (headerOffset + HEADER_SIZE > dataEnd) throw new XenError('VHD_TRUNCATED', `VHD_TRUNCATED: the header at ${headerOffset} runs past the end of the file`);
    header = decodeHeader(raw, path);
  } catch (err) {
    problems.push(problemOf(err, headerOffset, HEADER_SIZE));
    return undefined;
  }
  const { blockSize } = header;
  const headerProblem = (message: string): undefined => {
    problems.push({ code: 'VHD_BAD_HEADER', message, offset: headerOffset, length: HEADER_SIZE });
    return undefined;
  };
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) return headerProblem(`block size ${blockSize} is not a power of two of at least 512`);
  const entries = Math.ceil(size / blockSize);
  if (header.maxTableEntries < entries) return headerProblem(`${header.maxTableEntries} BAT entries cannot map ${size} bytes in blocks of ${blockSize}`);
  if (header.tableOffset > BigInt(Number.MAX_SAFE_INTEGER)) return headerProblem(`BAT offset ${header.tableOffset} is out of range`);
  const tableOffset = Number(header.tableOffset);
  const tableBytes = batBytes(header.maxTableEntries);
  if (tableOffset + tableBytes > dataEnd) {
    problems.push({ code: 'VHD_TRUNCATED', message: `the BAT at ${tableOffset} runs past the end of the file`, offset: tableOffset, length: tableBytes });
    return undefined;
  }
  const bat = decodeBat(await readUpTo(fh, tableOffset, entries * 4), entries);
  // Structures that must not overlap: [start, end, what]
  const regions: Array<[number, number, string]> = [
    [0, FOOTER_SIZE, 'the footer copy'],
    [headerOffset, headerOffset + HEADER_SIZE, 'the header'],
    [tableOffset, tableOffset + tableBytes, 'the BAT'],
  ];
  const batmap = await readBatmapLoosely(fh, tableOffset + tableBytes, dataEnd, problems, regions);
  const locators = footer.diskType === DiskType.differencing ? await readLocatorsLoosely(fh, header, dataEnd, problems, regions) : [];
  const metadataEnd = Math.max(...regions.map((r) => r[1]));
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const [a0, a1, a] = regions[i] as [number, number, string];
      const [b0, b1, b] = regions[j] as [number, number, string];
      if (a0 < b1 && b0 < a1) problems.push({ code: 'VHD_BAD_HEADER', message: `${a} and ${b} overlap`, offset: Math.max(a0, b0), length: Math.min(a1, b1) - Math.max(a0, b0) });
    }
  }
  const bmBytes = bitmapBytes(blockSize / 512);
  const blockBytes = bmBytes + blockSize;
  const sound = new Set<number>();
  const placed: Array<[number, number]> = [];
  for (let i = 0; i < entries; i++) {
    const e = bat[i] as number;
    if (e === BAT_UNUSED) continue;
    const start = e * 512;
    const where = { offset: start, length: blockBytes, block: i };
    if (start + blockBytes > dataEnd) {
      problems.push({ code: 'VHD_BAD_BAT', message: `block ${i} (sector ${e}) runs past the end of the file's data at ${dataEnd}`, ...where });
      // Storage cut short by a crash before the end footer moved still counts for repair.
      if (start < dataEnd && start >= metadataEnd) placed.push([start, i]);
      continue;
    }
    const clash = regions.find(([r0, r1]) => start < r1 && r0 < start + blockBytes);
    if (clash) {
      problems.push({ code: 'VHD_BAT_OVERLAP', message: `block ${i} (sector ${e}) overlaps ${clash[2]}`, ...where });
      continue;
    }
    placed.push([start, i]);
  }
  placed.sort((a, b) => a[0] - b[0]);
  let blocksEnd = 0;
  for (let k = 0; k < placed.length; k++) {
    const [start, i] = placed[k] as [number, number];
    const prev = placed[k - 1];
    const next = placed[k + 1];
    if (prev && prev[0] + blockBytes > start) {
      problems.push({ code: 'VHD_BAT_OVERLAP', message: `block ${i} (sector ${start / 512}) overlaps block ${prev[1]}`, offset: start, length: blockBytes, block: i });
    } else if (!next || start + blockBytes <= next[0]) {
      sound.add(i);
      blocksEnd = Math.max(blocksEnd, start + blockBytes);
    }
  }
  const full = new Uint8Array(entries);
  for (const i of sound) {
    const bm = await readUpTo(fh, (bat[i] as number) * 512, bmBytes);
    full[i] = bm.length === bmBytes && allSet(bm, blockSize / 512) ? 1 : 0;
  }
  if (batmap) checkBatmap(batmap, bat, entries, sound, full, problems);
  return { header, headerOffset, tableOffset, entries, bat, blockSize, bitmapBytes: bmBytes, batmap, metadataEnd, sound, blocksEnd, full, locators };
}

async function readBatmapLoosely(
  fh: FileHandle,
  headerOffset: number,
  dataEnd: number,
  problems: VhdProblem[],
  regions: Array<[number, number, string]>,
): Promise<SparseAnalysis['batmap']> {
  if (headerOffset + BATMAP_HEADER_SIZE > dataEnd) return undefined;
  const header = decodeBatmapHeader(await readUpTo(fh, headerOffset, BATMAP_HEADER_SIZE));
  if (!header) return undefined;
  regions.push([headerOffset, headerOffset + BATMAP_HEADER_SIZE, 'the batmap header']);
  const mapOffset = Number(header.batmapOffset);
  const mapBytes = header.batmapSize * 512;
  if (mapOffset + mapBytes > dataEnd) {
    problems.push({ code: 'VHD_TRUNCATED', message: 'the batmap runs past the end of the file', offset: mapOffset, length: mapBytes });
    return undefined;
  }
  regions.push([mapOffset, mapOffset + mapBytes, 'the batmap']);
  const map = await readUpTo(fh, mapOffset, mapBytes);
  return { header, headerOffset, map };
}

function checkBatmap(
  batmap: NonNullable<SparseAnalysis['batmap']>,
  bat: Uint32Array,
  entries: number,
  sound: Set<number>,
  full: Uint8Array,
  problems: VhdProblem[],
): void {
  const { header, headerOffset, map } = batmap;
  const actual = batmapChecksum(map, header.batmapVersion);
  if (actual !== header.checksum) {
    problems.push({ code: 'VHD_BAD_CHECKSUM', message: `batmap checksum 0x${header.checksum.toString(16)} should be 0x${actual.toString(16)}`, offset: headerOffset, length: BATMAP_HEADER_SIZE });
  }
  const mapOffset = Number(header.batmapOffset);
  for (let i = 0; i < Math.min(entries, map.length * 8); i++) {
    const bit = testBit(map, i);
    const where = { offset: mapOffset + (i >> 3), length: 1, block: i };
    if (bat[i] === BAT_UNUSED) {
      if (bit) problems.push({ code: 'VHD_BATMAP_MISMATCH', message: `the batmap marks block ${i} full, but it has no storage`, ...where });
    } else if (sound.has(i)) {
      if (bit && !full[i]) problems.push({ code: 'VHD_BATMAP_MISMATCH', message: `the batmap marks block ${i} full, but its bitmap has sectors clear`, ...where });
      if (!bit && full[i]) problems.push({ code: 'VHD_BATMAP_MISMATCH', message: `block ${i} is full but the batmap does not say so (harmless: it lags after a crash)`, ...where });
    }
  }
}

async function readLocatorsLoosely(
  fh: FileHandle,
  header: VhdHeader,
  dataEnd: number,
  problems: VhdProblem[],
  regions: Array<[number, number, string]>,
): Promise<LocatorPath[]> {
  const out: LocatorPath[] = [];
  for (const l of header.parentLocators) {
    if (l.code === 0 || l.dataLength === 0) continue;
    const offset = Number(l.dataOffset);
    const space = Math.max(l.dataSpace * 512, l.dataLength);
    if (offset + l.dataLength > dataEnd) {
      problems.push({ code: 'VHD_BAD_HEADER', message: 'a parent locator points past the end of the file', offset, length: l.dataLength });
      continue;
    }
    regions.push([offset, offset + space, 'a parent locator']);
    const name = decodeLocatorData(l.code, await readUpTo(fh, offset, l.dataLength));
    if (name !== undefined) out.push({ code: l.code, path: name });
  }
  return out;
}

/**
 * Whether a differencing image's parent can be found and carries the UUID the child records:
 * VHD_PARENT_MISSING or VHD_PARENT_MISMATCH otherwise.
 */
export async function checkParent(sparse: SparseAnalysis, path: string, files: VhdFiles): Promise<VhdProblem[]> {
  const candidates = parentCandidates(sparse.locators, path);
  let parentPath: string | undefined;
  for (const c of candidates) {
    if (await access(c).then(() => true, () => false)) {
      parentPath = c;
      break;
    }
  }
  const where = { offset: sparse.headerOffset, length: HEADER_SIZE };
  if (parentPath === undefined) {
    const tried = candidates.length > 0 ? `tried ${candidates.join(', ')}` : 'the image has no usable parent locator';
    return [{ code: 'VHD_PARENT_MISSING', message: `parent "${sparse.header.parentUnicodeName}" not found: ${tried}`, ...where }];
  }
  const fh = await files.open(parentPath, 'r');
  let uuid: string | undefined;
  try {
    const fileSize = (await fh.stat()).size;
    // The parent's copy at 0 serves when its end footer was lost in a crash.
    for (const at of [fileSize - FOOTER_SIZE, 0]) {
      if (at < 0) continue;
      try {
        uuid = decodeFooter(await readUpTo(fh, at, FOOTER_SIZE), parentPath).uuid;
        break;
      } catch {
        // try the copy
      }
    }
  } finally {
    await fh.close();
  }
  if (uuid === undefined) return [{ code: 'VHD_PARENT_MISMATCH', message: `parent ${parentPath} has no readable footer`, ...where }];
  if (uuid !== sparse.header.parentUuid) {
    return [{ code: 'VHD_PARENT_MISMATCH', message: `parent ${parentPath} has UUID ${uuid}, the child expects ${sparse.header.parentUuid}`, ...where }];
  }
  return [];
}

/** Every problem in the image open as `fh`, its parent link included. */
export async function checkImage(fh: FileHandle, path: string, files: VhdFiles): Promise<VhdProblem[]> {
  const analysis = await analyseImage(fh, path);
  const problems = analysis.problems;
  if (analysis.sparse && analysis.footer?.diskType === DiskType.differencing) problems.push(...(await checkParent(analysis.sparse, path, files)));
  return problems;
}
