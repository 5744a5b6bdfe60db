import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED } from './bat.js';
import { BATMAP_HEADER_SIZE, batmapChecksum, encodeBatmapHeader } from './batmap.js';
import { allSet, setBit, testBit } from './bitmap.js';
import { writeAll } from './create.js';
import { type VhdFooter, encodeFooter } from './footer.js';
import { type SparseLayout, readExact } from './image.js';

/** Bitmaps kept in memory at most (512 bytes each for 2 MiB blocks). */
const BITMAP_CACHE = 4096;

/** A run of sectors of one block that are all present in the file, or all absent. */
export interface SectorRun {
  present: boolean;
  first: number;
  count: number;
}

/**
 * The blocks of a dynamic or differencing image: BAT, sector bitmaps, batmap and the end
 * footer. Writes that allocate follow the crash-safe order: data, bitmap, BAT, batmap, then
 * the footer moved to the new end of the file.
 */
export class SparseBlocks {
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly bmSectors: number;

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

  /** Number of blocks with storage in this file. */
  allocatedBlocks(): number {
    let n = 0;
    for (const e of this.layout.bat) if (e !== BAT_UNUSED) n++;
    return n;
  }

  /** Runs covering sectors [first, first + count) of `block`, in order. */
  async runs(block: number, first: number, count: number): Promise<SectorRun[]> {
    if (this.layout.bat[block] === BAT_UNUSED) return [{ present: false, first, count }];
    const bm = await this.bitmap(block);
    const out: SectorRun[] = [];
    for (let s = first; s < first + count; s++) {
      const present = testBit(bm, s);
      const last = out[out.length - 1];
      if (last && last.present === present) last.count++;
      else out.push({ present, first: s, count: 1 });
    }
    return out;
  }

  /** Reads `length` bytes of `block`'s data starting at byte `offset` within the block. */
  async readData(block: number, offset: number, length: number): Promise<Buffer> {
    return readExact(this.fh, this.dataOffset(block) + offset, length, this.path, 'block data');
  }

  /** Writes whole sectors at sector `first` of `block`, allocating the block if needed. */
  async writeSectors(block: number, first: number, data: Buffer): Promise<void> {
    const count = data.length / 512;
    if (this.layout.bat[block] === BAT_UNUSED) {
      await this.allocate(block, first, data);
      return;
    }
    await writeAll(this.fh, data, this.dataOffset(block) + first * 512);
    const bm = await this.bitmap(block);
    let changed = false;
    for (let s = first; s < first + count; s++) {
      if (!testBit(bm, s)) {
        setBit(bm, s);
        changed = true;
      }
    }
    if (!changed) return;
    await writeAll(this.fh, bm, (this.layout.bat[block] as number) * 512);
    await this.updateBatmap(block, bm);
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
    if (this.bitmaps.size >= BITMAP_CACHE) this.bitmaps.delete(this.bitmaps.keys().next().value as number);
    this.bitmaps.set(block, bm);
    return bm;
  }

  /** Data 4 KiB-aligned, as blktap places it: the bitmap sits just before the aligned data. */
  private nextBlockSector(): number {
    let s = Math.ceil(this.footerOffset / 512);
    while ((s + this.bmSectors) % 8 !== 0) s++;
    return s;
  }

  private async allocate(block: number, first: number, data: Buffer): Promise<void> {
    const sector = this.nextBlockSector();
    const start = sector * 512;
    // Unwritten parts of the block stay holes, which read as the zeros the spec asks for.
    await writeAll(this.fh, data, start + this.layout.bitmapBytes + first * 512);
    const bm = Buffer.alloc(this.layout.bitmapBytes);
    for (let s = first; s < first + data.length / 512; s++) setBit(bm, s);
    await writeAll(this.fh, bm, start);
    this.layout.bat[block] = sector;
    await this.writeBatSector(block);
    if (this.bitmaps.size >= BITMAP_CACHE) this.bitmaps.delete(this.bitmaps.keys().next().value as number);
    this.bitmaps.set(block, bm);
    await this.updateBatmap(block, bm);
    this.footerOffset = start + this.layout.bitmapBytes + this.layout.blockSize;
    await writeAll(this.fh, encodeFooter(this.footer), this.footerOffset);
  }

  private async writeBatSector(block: number): Promise<void> {
    const firstEntry = Math.floor(block / 128) * 128;
    const buf = Buffer.alloc(512, 0xff);
    const bat = this.layout.bat;
    for (let i = firstEntry; i < Math.min(firstEntry + 128, bat.length); i++) buf.writeUInt32BE(bat[i] as number, (i - firstEntry) * 4);
    await writeAll(this.fh, buf, this.layout.tableOffset + firstEntry * 4);
  }

  /** Sets the block's batmap bit once all its sectors are present. */
  private async updateBatmap(block: number, bm: Buffer): Promise<void> {
    const batmap = this.layout.batmap;
    if (!batmap || block >= batmap.map.length * 8 || testBit(batmap.map, block)) return;
    if (!allSet(bm, this.layout.sectorsPerBlock)) return;
    setBit(batmap.map, block);
    batmap.header.checksum = batmapChecksum(batmap.map, batmap.header.batmapVersion);
    // Header and map up to the changed sector in one write, so the checksum never disagrees
    // with the map after a crash between two writes.
    const mapOffset = Number(batmap.header.batmapOffset);
    const upTo = (Math.floor((block >> 3) / 512) + 1) * 512;
    if (mapOffset === batmap.headerOffset + BATMAP_HEADER_SIZE) {
      await writeAll(this.fh, Buffer.concat([encodeBatmapHeader(batmap.header), batmap.map.subarray(0, upTo)]), batmap.headerOffset);
    } else {
      await writeAll(this.fh, batmap.map, mapOffset);
      await writeAll(this.fh, encodeBatmapHeader(batmap.header), batmap.headerOffset);
    }
  }
}
