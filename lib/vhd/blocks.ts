import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED, encodeBat, ownBat } from './bat.js';
import { BATMAP_HEADER_SIZE, encodeBatmapHeader } from './batmap.js';
import { allSet, setBit, testBit } from './bitmap.js';
import { writeAll, writeAllv } from './create.js';
import { type VhdFooter, encodeFooter } from './footer.js';
import { type SparseLayout, readExact, readInto } from './image.js';

/** Bitmaps kept in memory at most (512 bytes each for 2 MiB blocks). */
const BITMAP_CACHE = 4096;

/** A run of sectors of one block that are all present in the file, or all absent. */
export interface SectorRun {
  present: boolean;
  first: number;
  count: number;
}

/** One block's share of a write: whole sectors at sector `first` of `block`. */
interface Piece {
  block: number;
  first: number;
  data: Buffer;
}

/**
 * The blocks of a dynamic or differencing image: BAT, sector bitmaps, batmap and the end
 * footer. A write follows the crash-safe order for all the blocks it touches at once: data
 * (with the bitmap of each new block, which nothing points at yet), bitmaps of existing
 * blocks, then the BAT entries of new blocks in one write, the batmap once, and the footer
 * moved once to the new end of the file.
 */
export class SparseBlocks {
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly bmSectors: number;
  /** Set by {@link deferMetadata}: BAT entries, batmap bits and the end footer wait for {@link writeMetadata}. */
  private deferred = false;
  /** New blocks whose BAT entry (and, when full, batmap bit) is not written yet. */
  private pending: number[] = [];

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly layout: SparseLayout,
    private footerOffset: number,
    private footer: VhdFooter,
  ) {
    this.bmSectors = layout.bitmapBytes / 512;
  }

  get blockSize(): number {
    return this.layout.blockSize;
  }

  /** Where the end footer is now. */
  get endOffset(): number {
    return this.footerOffset;
  }

  /** Number of blocks with storage in this file. */
  allocatedBlocks(): number {
    let n = 0;
    for (const e of this.layout.bat) if (e !== BAT_UNUSED) n++;
    return n;
  }

  /** Whether `block` has storage in this file. */
  isAllocated(block: number): boolean {
    return this.layout.bat[block] !== BAT_UNUSED;
  }

  /** Runs covering sectors [first, first + count) of `block`, in order. */
  async runs(block: number, first: number, count: number): Promise<SectorRun[]> {
    if (this.layout.bat[block] === BAT_UNUSED) return [{ present: false, first, count }];
    const batmap = this.layout.batmap;
    if (batmap && block < batmap.map.length * 8 && testBit(batmap.map, block)) return [{ present: true, first, count }];
    return bitmapRuns(await this.bitmap(block), first, count);
  }

  /** Reads `length` bytes of `block`'s data at byte `offset` within the block into `out` at `at`. */
  async readData(block: number, offset: number, out: Buffer, at: number, length: number): Promise<void> {
    await readInto(this.fh, this.dataOffset(block) + offset, out, at, length, this.path, 'block data');
  }

  /** Writes whole sectors starting at disk sector `sector`, allocating blocks as needed. */
  async write(sector: number, data: Buffer): Promise<void> {
    const spb = this.layout.sectorsPerBlock;
    const fresh: Piece[] = [];
    const changed: Array<{ block: number; bm: Buffer }> = [];
    const end = sector + data.length / 512;
    for (let s = sector; s < end; ) {
      const block = Math.floor(s / spb);
      const stop = Math.min(end, (block + 1) * spb);
      const piece = { block, first: s - block * spb, data: data.subarray((s - sector) * 512, (stop - sector) * 512) };
      s = stop;
      if (this.layout.bat[block] === BAT_UNUSED) {
        fresh.push(piece);
        continue;
      }
      await writeAll(this.fh, piece.data, this.dataOffset(block) + piece.first * 512);
      const bm = await this.bitmap(block);
      if (setRange(bm, piece.first, piece.data.length / 512)) changed.push({ block, bm });
    }
    for (const { block, bm } of changed) await writeAll(this.fh, bm, (this.layout.bat[block] as number) * 512);
    const placed = fresh.length > 0 ? await this.place(fresh) : [];
    if (this.deferred) {
      for (const { block } of placed) this.pending.push(block);
      // A rewritten block that became full: its batmap bit is set with the new blocks' bits.
      for (const { block, bm } of changed) if (allSet(bm, spb)) this.pending.push(block);
      return;
    }
    const full = [...changed, ...placed].filter(({ bm }) => allSet(bm, spb)).map(({ block }) => block);
    if (placed.length > 0) await this.writeBatRange(placed[0]!.block, placed[placed.length - 1]!.block);
    await this.markFull(full);
    if (placed.length > 0) await writeAll(this.fh, encodeFooter(this.footer), this.footerOffset);
  }

  /**
   * From now on, writes put only data and sector bitmaps in the file; the BAT entries of new
   * blocks, their batmap bits and the moved end footer are written by {@link writeMetadata},
   * once for all. Only for an image no one else can see yet (the temporary file of an import
   * or a convert, renamed into place when complete): until then the file on disk does not
   * point at its new blocks, so a crash leaves a file that is thrown away in any case. Reads
   * through this object see every write at once (the BAT is kept in memory).
   */
  deferMetadata(): void {
    this.deferred = true;
  }

  /** Writes what {@link deferMetadata} held back: BAT entries, batmap, end footer. */
  async writeMetadata(): Promise<void> {
    if (this.pending.length === 0) return;
    const blocks = this.pending;
    this.pending = [];
    let low = Infinity;
    let high = -1;
    for (const b of blocks) {
      low = Math.min(low, b);
      high = Math.max(high, b);
    }
    await this.writeBatRange(low, high);
    const spb = this.layout.sectorsPerBlock;
    const full: number[] = [];
    for (const b of blocks) if (allSet(await this.bitmap(b), spb)) full.push(b);
    await this.markFull(full);
    await writeAll(this.fh, encodeFooter(this.footer), this.footerOffset);
  }

  /** Replaces the footer: at the end of the file, then the copy at 0. */
  async writeFooter(footer: VhdFooter): Promise<void> {
    this.footer = footer;
    const buf = encodeFooter(footer);
    await writeAll(this.fh, buf, this.footerOffset);
    await writeAll(this.fh, buf, 0);
  }

  private dataOffset(block: number): number {
    return (this.layout.bat[block] as number) * 512 + this.layout.bitmapBytes;
  }

  private async bitmap(block: number): Promise<Buffer> {
    const cached = this.bitmaps.get(block);
    if (cached) return cached;
    const bm = await readExact(this.fh, (this.layout.bat[block] as number) * 512, this.layout.bitmapBytes, this.path, 'sector bitmap');
    this.remember(block, bm);
    return bm;
  }

  private remember(block: number, bm: Buffer): void {
    if (this.bitmaps.size >= BITMAP_CACHE) this.bitmaps.delete(this.bitmaps.keys().next().value as number);
    this.bitmaps.set(block, bm);
  }

  /** Data 4 KiB-aligned, as blktap places it: the bitmap sits just before the aligned data. */
  private nextBlockSector(from: number): number {
    let s = Math.ceil(from / 512);
    while ((s + this.bmSectors) % 8 !== 0) s++;
    return s;
  }

  /**
   * Gives each piece's block storage past the end of the file and writes its data and
   * bitmap there. Nothing points at that space until the BAT is written, so the order of
   * these writes does not matter to a crash; the BAT entries are set in memory only.
   */
  private async place(pieces: Piece[]): Promise<Array<{ block: number; bm: Buffer; sector: number }>> {
    const out: Array<{ block: number; bm: Buffer; sector: number }> = [];
    // A new image starts with the shared table of unused entries: copy it before changing it.
    this.layout.bat = ownBat(this.layout.bat);
    let endOfData = this.footerOffset;
    for (const { block, first, data } of pieces) {
      const sector = this.nextBlockSector(endOfData);
      const start = sector * 512;
      const count = data.length / 512;
      const bm = Buffer.alloc(this.layout.bitmapBytes);
      setRange(bm, first, count);
      if (first === 0) {
        // Bitmap and data are adjacent: one write.
        await writeAllv(this.fh, [bm, data], start);
      } else {
        // Unwritten parts of the block stay holes, which read as the zeros the spec asks for.
        await writeAll(this.fh, bm, start);
        await writeAll(this.fh, data, start + this.layout.bitmapBytes + first * 512);
      }
      out.push({ block, bm, sector });
      endOfData = start + this.layout.bitmapBytes + this.layout.blockSize;
    }
    // Only once every block is written: a failed write leaves the in-memory state as it was.
    for (const { block, bm, sector } of out) {
      this.layout.bat[block] = sector;
      this.remember(block, bm);
    }
    this.footerOffset = endOfData;
    return out;
  }

  /** Writes the BAT sectors holding entries `from`..`to` in one write. */
  private async writeBatRange(from: number, to: number): Promise<void> {
    const bat = this.layout.bat;
    const first = Math.floor(from / 128) * 128;
    const last = Math.min(bat.length, (Math.floor(to / 128) + 1) * 128);
    await writeAll(this.fh, encodeBat(bat.subarray(first, last)), this.layout.tableOffset + first * 4);
  }

  /** Sets the batmap bits of blocks whose sectors are now all present, in one write. */
  private async markFull(blocks: number[]): Promise<void> {
    const batmap = this.layout.batmap;
    if (!batmap) return;
    let top = -1;
    let sum = ~batmap.header.checksum >>> 0;
    const signed = batmap.header.batmapVersion === 0x00010001;
    for (const block of blocks) {
      if (block >= batmap.map.length * 8 || testBit(batmap.map, block)) continue;
      const i = block >> 3;
      const before = batmap.map[i] as number;
      setBit(batmap.map, block);
      const after = batmap.map[i] as number;
      // The checksum is a byte sum: adjust it by this byte's change rather than re-summing the map.
      sum = (sum + (signed ? (after << 24 >> 24) - (before << 24 >> 24) : after - before)) >>> 0;
      top = Math.max(top, i);
    }
    if (top < 0) return;
    batmap.header.checksum = ~sum >>> 0;
    // Header and map up to the changed sector in one write, so the checksum never disagrees
    // with the map after a crash between two writes.
    const mapOffset = Number(batmap.header.batmapOffset);
    const upTo = (Math.floor(top / 512) + 1) * 512;
    if (mapOffset === batmap.headerOffset + BATMAP_HEADER_SIZE) {
      await writeAll(this.fh, Buffer.concat([encodeBatmapHeader(batmap.header), batmap.map.subarray(0, upTo)]), batmap.headerOffset);
    } else {
      await writeAll(this.fh, batmap.map, mapOffset);
      await writeAll(this.fh, encodeBatmapHeader(batmap.header), batmap.headerOffset);
    }
  }
}

/** Sets bits [first, first + count) of `bm`; whether any was clear. Whole bytes at a time. */
export function setRange(bm: Buffer, first: number, count: number): boolean {
  let changed = false;
  let n = first;
  const end = first + count;
  for (; n < end && (n & 7) !== 0; n++) {
    if (!testBit(bm, n)) {
      setBit(bm, n);
      changed = true;
    }
  }
  for (; n + 8 <= end; n += 8) {
    if (bm[n >> 3] !== 0xff) {
      bm[n >> 3] = 0xff;
      changed = true;
    }
  }
  for (; n < end; n++) {
    if (!testBit(bm, n)) {
      setBit(bm, n);
      changed = true;
    }
  }
  return changed;
}

/** The present/absent runs of bits [first, first + count): whole 0x00 and 0xff bytes skip bit tests. */
export function bitmapRuns(bm: Buffer, first: number, count: number): SectorRun[] {
  const out: SectorRun[] = [];
  const end = first + count;
  const push = (present: boolean, s: number, n: number): void => {
    const last = out[out.length - 1];
    if (last && last.present === present) last.count += n;
    else out.push({ present, first: s, count: n });
  };
  for (let s = first; s < end; ) {
    const byte = bm[s >> 3] as number;
    if ((s & 7) === 0 && s + 8 <= end && (byte === 0 || byte === 0xff)) {
      // Extend over every following byte equal to this one.
      let e = s + 8;
      while (e + 8 <= end && bm[e >> 3] === byte) e += 8;
      push(byte === 0xff, s, e - s);
      s = e;
    } else {
      push(testBit(bm, s), s, 1);
      s++;
    }
  }
  return out;
}
