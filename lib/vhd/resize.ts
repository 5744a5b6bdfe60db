import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED, batBytes, encodeBat } from './bat.js';
import { BATMAP_HEADER_SIZE, batmapChecksum, batmapSectors, encodeBatmapHeader } from './batmap.js';
import { testBit } from './bitmap.js';
import { writeAll, zeroFill } from './create.js';
import { vhdError } from './errors.js';
import { FOOTER_SIZE, type VhdFooter, encodeFooter } from './footer.js';
import { chsGeometry } from './geometry.js';
import { encodeHeader } from './header.js';
import { type SparseLayout, readExact } from './image.js';

/** The state of the image being resized, as the open disk holds it. */
export interface ResizeTarget {
  fh: FileHandle;
  path: string;
  footer: VhdFooter;
  /** Current virtual size. */
  size: number;
  sparse: SparseLayout | undefined;
  /** Size of the parent, for a differencing disk: its data shows through up to there. */
  parentSize: number | undefined;
}

/**
 * Changes the virtual size of an image. Every step leaves a file that opens as either the old
 * or the new disk, without repair: the new size becomes visible in one sector write (the end
 * footer of a sparse disk, after which the copy at 0 follows), and everything it depends on
 * (zeroed space, a moved BAT) is written first, where the old image does not look.
 */
export async function resizeImage(t: ResizeTarget, newSize: number): Promise<void> {
  if (newSize === t.size) return;
  if (t.sparse) {
    if (newSize < t.size) await checkSparseShrink(t, t.sparse, newSize);
    else await growSparse(t, t.sparse, newSize);
  } else {
    if (newSize < t.size) throw vhdError('VHD_SHRINK_LOSES_DATA', `a fixed disk cannot shrink: every one of its ${t.size} bytes is data`, t.path, 'vhd.resize');
    await growFixed(t, newSize);
    return;
  }
  await writeSparseFooter(t, resized(t.footer, newSize));
}

function resized(footer: VhdFooter, size: number): VhdFooter {
  return { ...footer, currentSize: BigInt(size), geometry: chsGeometry(size) };
}

async function fileEnd(fh: FileHandle): Promise<number> {
  return (await fh.stat()).size - FOOTER_SIZE;
}

/** End footer first (the one `open()` reads), then the copy at 0. */
async function writeSparseFooter(t: ResizeTarget, footer: VhdFooter): Promise<void> {
  const buf = encodeFooter(footer);
  await writeAll(t.fh, buf, await fileEnd(t.fh));
  await writeAll(t.fh, buf, 0);
  await t.fh.datasync();
}


/**
 * A fixed disk's old footer sits where the new area begins. First a copy of the old footer
 * ends the grown file (still the old disk, with space after its data), then the old footer's
 * place is zeroed, then one write of the new footer switches to the new size.
 */
async function growFixed(t: ResizeTarget, newSize: number): Promise<void> {
  const { fh } = t;
  const oldEnd = await fileEnd(fh);
  if (newSize > oldEnd) await writeAll(fh, encodeFooter(t.footer), newSize);
  // The whole new area gets storage, as a fixed disk's data has (not only the old footer's place).
  await zeroFill(fh, t.size, newSize);
  await fh.datasync();
  await writeAll(fh, encodeFooter(resized(t.footer, newSize)), newSize);
  // A file that had room past its data keeps its old footer at the end until cut here.
  if (oldEnd > newSize) await fh.truncate(newSize + FOOTER_SIZE);
  await fh.datasync();
}

/** Refuses to drop data: blocks past the new end, sectors set past it, a parent's data. */
async function checkSparseShrink(t: ResizeTarget, s: SparseLayout, newSize: number): Promise<void> {
  const refuse = (why: string): never => {
    throw vhdError('VHD_SHRINK_LOSES_DATA', `cannot shrink to ${newSize} bytes: ${why}`, t.path, 'vhd.resize');
  };
  if (t.parentSize !== undefined && newSize < t.parentSize) refuse(`the parent's ${t.parentSize} bytes show through this differencing disk`);
  const keep = Math.ceil(newSize / s.blockSize);
  for (let i = keep; i < s.bat.length; i++) if (s.bat[i] !== BAT_UNUSED) refuse(`block ${i} past the new end holds data`);
  const last = keep - 1;
  const within = newSize - last * s.blockSize;
  if (within < s.blockSize && s.bat[last] !== BAT_UNUSED) {
    const bm = await readExact(t.fh, (s.bat[last] as number) * 512, s.bitmapBytes, t.path, 'sector bitmap');
    for (let n = within / 512; n < s.sectorsPerBlock; n++) if (testBit(bm, n)) refuse(`sector ${last * s.sectorsPerBlock + n} past the new end holds data`);
  }
}

async function growSparse(t: ResizeTarget, s: SparseLayout, newSize: number): Promise<void> {
  const entries = Math.ceil(newSize / s.blockSize);
  const batmapFits = !s.batmap || s.batmap.header.batmapSize * 512 * 8 >= entries;
  if (entries <= s.header.maxTableEntries) {
    await clearEntries(t, s, entries);
  } else if (batBytes(entries) === batBytes(s.header.maxTableEntries) && batmapFits) {
    // The BAT's last sector has room: entries past the old maximum are padding, unused.
    await clearEntries(t, s, entries);
    await writeAll(t.fh, encodeHeader({ ...s.header, maxTableEntries: entries }), Number(t.footer.dataOffset));
    await t.fh.datasync();
  } else {
    await moveTable(t, s, entries);
  }
}

/**
 * Entries the grown disk will use must read as unused: another tool may have left anything
 * past the entries it needed. Rewritten while the old size hides them.
 */
async function clearEntries(t: ResizeTarget, s: SparseLayout, entries: number): Promise<void> {
  const from = s.bat.length;
  const upTo = Math.min(entries, s.header.maxTableEntries);
  if (upTo <= from) return;
  const onDisk = await readExact(t.fh, s.tableOffset + from * 4, (upTo - from) * 4, t.path, 'BAT');
  const unused = Buffer.alloc(onDisk.length, 0xff);
  if (!onDisk.equals(unused)) {
    await writeAll(t.fh, unused, s.tableOffset + from * 4);
    await t.fh.datasync();
  }
  const map = s.batmap;
  if (map) {
    let dirty = false;
    for (let i = from; i < Math.min(entries, map.map.length * 8); i++) {
      if (testBit(map.map, i)) {
        map.map[i >> 3] = (map.map[i >> 3] as number) & ~(0x80 >> (i & 7));
        dirty = true;
      }
    }
    if (dirty) {
      map.header.checksum = batmapChecksum(map.map, map.header.batmapVersion);
      await writeAll(t.fh, map.map, Number(map.header.batmapOffset));
      await writeAll(t.fh, encodeBatmapHeader(map.header), map.headerOffset);
      await t.fh.datasync();
    }
  }
}

/**
 * A BAT too small for the new size moves, with the batmap that must follow it, past the last
 * block: (1) a copy of the current footer is written where the file will end, so the image
 * stays whole while (2) the new table is written before it; (3) one header write then points
 * at the new table. The new size itself comes after, with the footer.
 */
async function moveTable(t: ResizeTarget, s: SparseLayout, entries: number): Promise<void> {
  const { fh } = t;
  const oldEnd = await fileEnd(fh);
  const tableAt = Math.ceil(oldEnd / 4096) * 4096;
  const bat = new Uint32Array(entries).fill(BAT_UNUSED);
  bat.set(s.bat);
  const table = encodeBat(bat);
  let region = table;
  if (s.batmap) {
    const sectors = batmapSectors(entries);
    const map = Buffer.alloc(sectors * 512);
    s.batmap.map.copy(map, 0, 0, Math.min(map.length, s.batmap.map.length));
    // Bits past the old entries belong to no block yet.
    for (let i = s.bat.length; i < map.length * 8; i++) map[i >> 3] = (map[i >> 3] as number) & ~(0x80 >> (i & 7));
    const header = encodeBatmapHeader({
      batmapOffset: BigInt(tableAt + table.length + BATMAP_HEADER_SIZE),
      batmapSize: sectors,
      batmapVersion: s.batmap.header.batmapVersion,
      checksum: batmapChecksum(map, s.batmap.header.batmapVersion),
    });
    region = Buffer.concat([table, header, map]);
  }
  const newEnd = tableAt + region.length;
  await writeAll(fh, encodeFooter(t.footer), newEnd);
  await writeAll(fh, region, tableAt);
  await fh.datasync();
  await writeAll(fh, encodeHeader({ ...s.header, tableOffset: BigInt(tableAt), maxTableEntries: entries }), Number(t.footer.dataOffset));
  await fh.datasync();
}
