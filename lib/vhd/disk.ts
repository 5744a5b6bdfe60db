import { type FileHandle, access, realpath, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { XenError, abortError, closedError } from '../errors.js';
import { SparseBlocks } from './blocks.js';
import { MAX_CHAIN_DEPTH, findParentPath } from './chain.js';
import { writeAll, writeNewImage } from './create.js';
import { fsError, vhdError } from './errors.js';
import { toVhdTimestamp } from './fields.js';
import { DiskType, type VhdFooter, encodeFooter } from './footer.js';
import { DEFAULT_BLOCK_SIZE, MAX_DISK_SIZE, type VhdImage, readExact, readImage } from './image.js';
import { type VhdFiles, type WithInternal, internalOptions, nodeFiles } from './files.js';
import { type VhdProblem, checkImage } from './check.js';
import { type CoalesceOptions, type CoalesceResult, coalesceInto } from './coalesce.js';
import { type RepairReport, repairImage } from './repair.js';
import { resizeImage } from './resize.js';

/** The kinds of VHD image. */
export type VirtualDiskType = 'fixed' | 'dynamic' | 'differencing';

/** Options of {@link VirtualDisk.create}. */
export interface CreateDiskOptions {
  /** Size in bytes: a multiple of 512, at most 2040 GiB. Kept exactly, whatever the CHS geometry. */
  size: number;
  /** `dynamic` grows as blocks are written; `fixed` allocates the whole size up front. */
  type: 'dynamic' | 'fixed';
  /**
   * Replace a file already at `path` (default `true`, as `qemu-img create` and
   * `vhd-util create` do). The replacement is atomic: the new image is written beside it
   * and renamed over it, so a failed create leaves the old file as it was. `false` fails
   * with `EEXIST` instead.
   */
  overwrite?: boolean;
}

/** Options of {@link VirtualDisk.open}. */
export interface OpenDiskOptions {
  /** Open without write access; writes then fail with `VHD_READ_ONLY`. */
  readOnly?: boolean;
}

/** What {@link VirtualDisk.info} reports. */
export interface VirtualDiskInfo {
  /** Absolute path of the image file. */
  path: string;
  /** Virtual size in bytes. */
  size: number;
  type: VirtualDiskType;
  uuid: string;
  /** Absolute path of the parent image, for a differencing disk. */
  parent: string | undefined;
  /** Images in the chain, this one included (1 for a disk without parent). */
  chainDepth: number;
  /** Bytes of data stored in this file: allocated blocks times block size (the size, if fixed). */
  allocatedBytes: number;
  /** Block size of a dynamic or differencing disk; undefined for a fixed one. */
  blockSize: number | undefined;
  /** blktap's hidden flag: set on a disk that has been snapshotted or cloned. */
  hidden: boolean;
}

const typeNames: Record<number, VirtualDiskType> = {
  [DiskType.fixed]: 'fixed',
  [DiskType.dynamic]: 'dynamic',
  [DiskType.differencing]: 'differencing',
};

function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`offset must be a non-negative integer, got ${offset}`);
  if (offset + length > size) throw new RangeError(`range ${offset}+${length} runs past the end of the ${size}-byte disk`);
}

/**
 * A VHD virtual disk (fixed, dynamic or differencing, per Microsoft's VHD specification
 * with blktap's conventions), read and written at any byte offset. A differencing disk
 * reads through to its parent chain wherever its own sector bitmap is clear. Format faults
 * are {@link XenError}s with a `VHD_…` code and the file's `path`.
 *
 * @example
 * ```ts
 * import { mkdtemp, rm } from 'node:fs/promises';
 * import { tmpdir } from 'node:os';
 * import { join } from 'node:path';
 * import { VirtualDisk } from 'xenode';
 *
 * const dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-'));
 * const base = await VirtualDisk.create(join(dir, 'base.vhd'), { size: 64 * 1024 * 1024, type: 'dynamic' });
 * await base.write(1000, Buffer.from('hello'));
 * const child = await base.snapshot(join(dir, 'child.vhd')); // base is now hidden and read-only
 * await child.write(1002, Buffer.from('LLO'));
 * console.log((await base.read(1000, 5)).toString(), (await child.read(1000, 5)).toString()); // hello heLLO
 * console.log(child.info().chainDepth); // 2
 * await child.close();
 * await base.close();
 * await rm(dir, { recursive: true });
 * ```
 */
export class VirtualDisk {
  private closed = false;
  private tail: Promise<unknown> = Promise.resolve();
  private footer: VhdFooter;
  private files: VhdFiles = nodeFiles;

  private constructor(
    /** Absolute path of the image file. */
    readonly path: string,
    private readonly fh: FileHandle,
    private image: VhdImage,
    private readOnly: boolean,
    private readonly parent: VirtualDisk | undefined,
    private blocks: SparseBlocks | undefined,
  ) {
    this.footer = image.footer;
  }

  /** Virtual size in bytes. */
  get size(): number {
    return this.image.size;
  }

  /** Creates a new, empty disk at `path` (replacing a file there unless `overwrite: false`) and opens it for writing. */
  static async create(path: string, options: CreateDiskOptions): Promise<VirtualDisk> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    const { size, type, overwrite } = options ?? {};
    if (overwrite !== undefined && typeof overwrite !== 'boolean') throw new TypeError('overwrite must be a boolean');
    if (type !== 'dynamic' && type !== 'fixed') throw new TypeError(`type must be 'dynamic' or 'fixed', got ${String(type)}`);
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) throw new RangeError(`size must be a positive multiple of 512, got ${size}`);
    if (size > MAX_DISK_SIZE) throw vhdError('VHD_TOO_LARGE', `size ${size} exceeds the 2040 GiB VHD limit`, resolve(path), 'vhd.create');
    await writeNewImage(resolve(path), { size, type, blockSize: DEFAULT_BLOCK_SIZE }, overwrite ?? true);
    return VirtualDisk.open(path);
  }

  /**
   * Opens the disk at `path`, following the parent chain of a differencing disk (parents are
   * opened read-only; each must carry the UUID its child names). A hidden disk (the parent
   * of a snapshot or clone) only opens with `readOnly`.
   */
  static async open(path: string, options: OpenDiskOptions = {}): Promise<VirtualDisk> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    const internal = (options as WithInternal<OpenDiskOptions>)[internalOptions] ?? {};
    return VirtualDisk.openChain(resolve(path), options.readOnly === true, [], internal.allowHidden === true, internal.files ?? nodeFiles);
  }

  /**
   * Makes `childPath` a new differencing disk whose parent is the disk at `basePath`, which
   * is marked hidden (if it is not already) and must not be written again. Call it once per
   * child to make many children of one base.
   */
  static async clone(basePath: string, childPath: string): Promise<VirtualDisk> {
    if (typeof basePath !== 'string' || basePath === '') throw new TypeError('basePath must be a non-empty string');
    // An already hidden base is only read, so it may be a read-only file.
    let base = await VirtualDisk.openChain(resolve(basePath), true, [], true, nodeFiles);
    if (!base.footer.hidden) {
      await base.close();
      base = await VirtualDisk.openChain(resolve(basePath), false, [], true, nodeFiles);
    }
    try {
      await base.exclusive(() => base.makeChild(childPath));
    } finally {
      await base.close();
    }
    return VirtualDisk.open(childPath);
  }

  /**
   * Examines the image at `path` without opening it as a disk, so that an image too damaged
   * to open can still be examined: every problem found, as {@link VhdProblem} records (an
   * empty array for a sound image). Only I/O failures (`ENOENT`…) reject. See
   * {@link VirtualDisk.check | disk.check()} for what is checked.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm, truncate, stat } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-check-'));
   * const path = join(dir, 'disk.vhd');
   * await (await VirtualDisk.create(path, { size: 16 * 1024 * 1024, type: 'dynamic' })).close();
   * await truncate(path, (await stat(path)).size - 100); // lose part of the end footer
   * for (const p of await VirtualDisk.check(path)) console.log(p.code, p.offset); // VHD_BAD_FOOTER …
   * console.log((await VirtualDisk.repair(path)).actions.map((a) => a.message));
   * console.log(await VirtualDisk.check(path)); // []
   * await rm(dir, { recursive: true });
   * ```
   */
  static async check(path: string): Promise<VhdProblem[]> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    const abs = resolve(path);
    let fh: FileHandle;
    try {
      fh = await nodeFiles.open(abs, 'r');
    } catch (err) {
      throw fsError(err, 'vhd.check', abs);
    }
    try {
      return await checkImage(fh, abs, nodeFiles);
    } catch (err) {
      throw fsError(err, 'vhd.check', abs);
    } finally {
      await fh.close();
    }
  }

  /**
   * Repairs what a crash can leave in the image at `path`, which must not be open: restores a
   * missing or damaged end footer of a dynamic or differencing disk from the copy at offset
   * 0 (a crash while a block was being added leaves it so), rewrites a copy at 0 that
   * differs from a valid end footer, and recomputes a batmap out of step with the sector
   * bitmaps. Reports what it did and what problems remain; running it again does nothing.
   * An image with no valid footer anywhere fails with `VHD_BAD_FOOTER`.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-repair-'));
   * const path = join(dir, 'disk.vhd');
   * const disk = await VirtualDisk.create(path, { size: 16 * 1024 * 1024, type: 'dynamic' });
   * await disk.close();
   * // After a crash, repair before opening: it does nothing to a sound image.
   * const report = await VirtualDisk.repair(path);
   * console.log(report.actions.length, report.problems.length); // 0 0
   * await (await VirtualDisk.open(path)).close();
   * await rm(dir, { recursive: true });
   * ```
   */
  static async repair(path: string): Promise<RepairReport> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    return repairImage(resolve(path), nodeFiles);
  }

  private static async openChain(path: string, readOnly: boolean, seen: string[], allowHidden: boolean, files: VhdFiles): Promise<VirtualDisk> {
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      throw fsError(err, 'vhd.open', path);
    }
    if (seen.includes(real)) throw vhdError('VHD_PARENT_CYCLE', 'the parent chain leads back to this disk', path);
    if (seen.length >= MAX_CHAIN_DEPTH) throw vhdError('VHD_CHAIN_TOO_DEEP', `the chain is deeper than ${MAX_CHAIN_DEPTH} disks`, path);
    let fh: FileHandle;
    try {
      fh = await files.open(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw fsError(err, 'vhd.open', path);
    }
    let parent: VirtualDisk | undefined;
    try {
      const image = await readImage(fh, path);
      if (image.footer.hidden && !readOnly && !allowHidden) {
        throw vhdError('VHD_READ_ONLY', 'the disk is hidden (a snapshot or clone parent): open it with { readOnly: true }', path);
      }
      if (image.sparse && image.footer.diskType === DiskType.differencing) {
        parent = await VirtualDisk.openChain(await findParentPath(image, path), true, [...seen, real], true, files);
        if (parent.footer.uuid !== image.sparse.header.parentUuid) {
          throw vhdError('VHD_PARENT_MISMATCH', `parent ${parent.path} has UUID ${parent.footer.uuid}, the child expects ${image.sparse.header.parentUuid}`, path);
        }
      }
      const blocks = image.sparse ? new SparseBlocks(fh, path, image.sparse, image.footerOffset, image.footer) : undefined;
      const disk = new VirtualDisk(path, fh, image, readOnly, parent, blocks);
      disk.files = files;
      return disk;
    } catch (err) {
      await parent?.close();
      await fh.close();
      throw err;
    }
  }

  /** Reads `length` bytes at byte `offset` of the virtual disk. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`length must be a non-negative integer, got ${length}`);
    checkRange(offset, length, this.size);
    if (this.closed) throw closedError('vhd.read');
    return this.exclusive(() => this.readRange(offset, length));
  }

  /** Writes `data` at byte `offset`; partial sectors are read, merged and written whole. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Buffer or Uint8Array');
    checkRange(offset, data.length, this.size);
    if (this.closed) throw closedError('vhd.write');
    if (this.readOnly) throw vhdError('VHD_READ_ONLY', 'the disk is open read-only', this.path, 'vhd.write');
    if (data.length === 0) return;
    return this.exclusive(() => this.writeRange(offset, Buffer.from(data.buffer, data.byteOffset, data.length))).catch((err: unknown) => {
      throw fsError(err, 'vhd.write', this.path);
    });
  }

  /** Waits for pending writes and makes them durable (fdatasync). */
  async flush(): Promise<void> {
    if (this.closed) throw closedError('vhd.flush');
    await this.exclusive(() => this.fh.datasync()).catch((err: unknown) => {
      throw fsError(err, 'vhd.flush', this.path);
    });
  }

  /** Closes the disk and its parents. Calling it again does nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.fh.close();
    await this.parent?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Size, type, identity, chain and allocation of the disk. */
  info(): VirtualDiskInfo {
    return {
      path: this.path,
      size: this.size,
      type: typeNames[this.footer.diskType] as VirtualDiskType,
      uuid: this.footer.uuid,
      parent: this.parent?.path,
      chainDepth: this.chainDepth(),
      allocatedBytes: this.blocks ? this.blocks.allocatedBlocks() * this.blocks.blockSize : this.size,
      blockSize: this.blocks?.blockSize,
      hidden: this.footer.hidden,
    };
  }

  /**
   * Makes `childPath` a new differencing disk whose parent is this one, and turns this disk
   * hidden and read-only. Nothing is copied: the child starts empty and reads through.
   */
  async snapshot(childPath: string): Promise<VirtualDisk> {
    if (this.closed) throw closedError('vhd.snapshot');
    await this.exclusive(() => this.makeChild(childPath));
    return VirtualDisk.open(childPath, { [internalOptions]: { files: this.files } } as OpenDiskOptions);
  }

  /**
   * Every problem in this disk's file, as {@link VhdProblem} records (empty when sound): bad
   * checksums (footer, header, batmap), an end footer missing or differing from the copy at
   * offset 0, a truncated file, BAT entries past the end of the data or overlapping each other
   * or the metadata, a batmap that disagrees with the sector bitmaps, a parent that is
   * missing or has another UUID. Parents are not examined: check each file of a chain.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-check-'));
   * const disk = await VirtualDisk.create(join(dir, 'disk.vhd'), { size: 16 * 1024 * 1024, type: 'dynamic' });
   * await disk.write(0, Buffer.from('data'));
   * const problems = await disk.check();
   * console.log(problems.length === 0 ? 'sound' : problems.map((p) => `${p.code}: ${p.message}`).join('\n')); // sound
   * await disk.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  async check(): Promise<VhdProblem[]> {
    if (this.closed) throw closedError('vhd.check');
    return this.exclusive(() => checkImage(this.fh, this.path, this.files)).catch((err: unknown) => {
      throw fsError(err, 'vhd.check', this.path);
    });
  }

  /**
   * Changes the virtual size. Growing adds space that reads as zeros (a dynamic disk's BAT
   * moves to the end of the file if it has no room); shrinking is refused with
   * `VHD_SHRINK_LOSES_DATA` when data lies past the new end (always for a fixed disk, and
   * below the parent's size for a differencing one). A crash at any point leaves the old or
   * the new disk.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-resize-'));
   * const disk = await VirtualDisk.create(join(dir, 'disk.vhd'), { size: 8 * 1024 * 1024, type: 'dynamic' });
   * await disk.write(0, Buffer.from('boot'));
   * await disk.resize(1024 ** 3);
   * console.log(disk.size, (await disk.read(0, 4)).toString()); // 1073741824 boot
   * await disk.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  async resize(size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) throw new RangeError(`size must be a positive multiple of 512, got ${size}`);
    if (this.closed) throw closedError('vhd.resize');
    if (size > MAX_DISK_SIZE) throw vhdError('VHD_TOO_LARGE', `size ${size} exceeds the 2040 GiB VHD limit`, this.path, 'vhd.resize');
    if (this.readOnly) throw vhdError('VHD_READ_ONLY', 'the disk is open read-only', this.path, 'vhd.resize');
    await this.exclusive(async () => {
      const sparse = this.image.sparse;
      await resizeImage({ fh: this.fh, path: this.path, footer: this.footer, size: this.size, sparse, parentSize: this.parent?.size }, size);
      await this.reload();
    }).catch((err: unknown) => {
      throw fsError(err, 'vhd.resize', this.path);
    });
  }

  /**
   * Copies this differencing disk's own data — only the sectors set in its bitmaps — into
   * its parent, which then reads exactly as this disk does: this disk can be deleted. The
   * parent is written through a handle of its own (it stays hidden) and must have no other
   * child, which would see the change. Safe to run again after a crash or an abort at any
   * point: this disk is only read, so it reads the same throughout.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-coalesce-'));
   * const base = await VirtualDisk.create(join(dir, 'base.vhd'), { size: 8 * 1024 * 1024, type: 'dynamic' });
   * const child = await base.snapshot(join(dir, 'child.vhd'));
   * await child.write(512, Buffer.from('new data'));
   * const result = await child.coalesce({ onProgress: (p) => console.log(`${p.blocksDone}/${p.blocksTotal}`) });
   * console.log(result.bytesCopied); // 512
   * await child.close();
   * await base.close();
   * const parent = await VirtualDisk.open(join(dir, 'base.vhd'), { readOnly: true });
   * console.log((await parent.read(512, 8)).toString()); // new data
   * await parent.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  async coalesce(options: CoalesceOptions = {}): Promise<CoalesceResult> {
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new TypeError('onProgress must be a function');
    if (this.closed) throw closedError('vhd.coalesce');
    const parent = this.parent;
    if (!parent) throw vhdError('VHD_NOT_DIFFERENCING', 'only a differencing disk has a parent to coalesce into', this.path, 'vhd.coalesce');
    if (options.signal?.aborted) throw abortError(options.signal);
    return this.exclusive(async () => {
      const target = await VirtualDisk.open(parent.path, { [internalOptions]: { files: this.files, allowHidden: true } } as OpenDiskOptions);
      try {
        // Metadata as it is now in the file: the engine keeps it current as it writes.
        return await coalesceInto(this.fh, this.path, await readImage(this.fh, this.path), target, options);
      } finally {
        await target.close();
      }
    });
  }

  /** Re-reads the metadata after a change of layout (resize). */
  private async reload(): Promise<void> {
    this.image = await readImage(this.fh, this.path);
    this.footer = this.image.footer;
    this.blocks = this.image.sparse ? new SparseBlocks(this.fh, this.path, this.image.sparse, this.image.footerOffset, this.image.footer) : undefined;
  }

  private chainDepth(): number {
    return 1 + (this.parent?.chainDepth() ?? 0);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async makeChild(childPath: string): Promise<void> {
    if (typeof childPath !== 'string' || childPath === '') throw new TypeError('childPath must be a non-empty string');
    if (this.chainDepth() + 1 > MAX_CHAIN_DEPTH) {
      throw vhdError('VHD_CHAIN_TOO_DEEP', `a child would make the chain deeper than ${MAX_CHAIN_DEPTH} disks`, this.path, 'vhd.snapshot');
    }
    if (await access(childPath).then(() => true, () => false)) {
      throw XenError.fromErrno('EEXIST', { op: 'vhd.snapshot', path: resolve(childPath) });
    }
    if (!this.footer.hidden) {
      if (this.readOnly) throw vhdError('VHD_READ_ONLY', 'the disk is open read-only and cannot be marked hidden', this.path, 'vhd.snapshot');
      // Hidden before the child exists: a crash in between leaves a hidden disk, never a
      // writable parent with a child.
      const footer = { ...this.footer, hidden: true };
      if (this.blocks) await this.blocks.writeFooter(footer);
      else await writeAll(this.fh, encodeFooter(footer), this.image.footerOffset);
      await this.fh.datasync();
      this.footer = footer;
    }
    this.readOnly = true;
    const mtime = (await stat(this.path)).mtime;
    await writeNewImage(resolve(childPath), {
      size: this.size,
      type: 'differencing',
      blockSize: this.blocks?.blockSize ?? DEFAULT_BLOCK_SIZE,
      parent: { path: this.path, uuid: this.footer.uuid, timestamp: toVhdTimestamp(mtime) },
    }, false, this.files);
  }

  private async readRange(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const end = Math.min(offset + length, this.size);
    if (end <= offset) return out;
    if (!this.blocks) {
      (await readExact(this.fh, offset, end - offset, this.path, 'disk data')).copy(out);
      return out;
    }
    const bs = this.blocks.blockSize;
    for (let pos = offset; pos < end; ) {
      const block = Math.floor(pos / bs);
      const blockStart = block * bs;
      const from = pos - blockStart;
      const to = Math.min(end - blockStart, bs);
      const first = Math.floor(from / 512);
      for (const run of await this.blocks.runs(block, first, Math.ceil(to / 512) - first)) {
        const rs = Math.max(run.first * 512, from);
        const re = Math.min((run.first + run.count) * 512, to);
        let data: Buffer | undefined;
        if (run.present) data = await this.blocks.readData(block, rs, re - rs);
        else if (this.parent) data = await this.parent.readRange(blockStart + rs, re - rs);
        data?.copy(out, blockStart + rs - offset);
      }
      pos = blockStart + to;
    }
    return out;
  }

  private async writeRange(offset: number, data: Buffer): Promise<void> {
    if (!this.blocks) {
      await writeAll(this.fh, data, offset);
      return;
    }
    const end = offset + data.length;
    const s0 = Math.floor(offset / 512);
    const s1 = Math.ceil(end / 512);
    let aligned = data;
    if (offset % 512 !== 0 || end % 512 !== 0) {
      aligned = Buffer.alloc((s1 - s0) * 512);
      (await this.readRange(s0 * 512, 512)).copy(aligned, 0);
      if (s1 - 1 > s0) (await this.readRange((s1 - 1) * 512, 512)).copy(aligned, aligned.length - 512);
      data.copy(aligned, offset - s0 * 512);
    }
    const spb = this.blocks.blockSize / 512;
    for (let s = s0; s < s1; ) {
      const block = Math.floor(s / spb);
      const stop = Math.min(s1, (block + 1) * spb);
      await this.blocks.writeSectors(block, s - block * spb, aligned.subarray((s - s0) * 512, (stop - s0) * 512));
      s = stop;
    }
  }
}
