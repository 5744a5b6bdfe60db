import { type FileHandle, access, realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { XenError, abortError, closedError } from '../errors.js';
import { SparseBlocks } from './blocks.js';
import { MAX_CHAIN_DEPTH, findParentPath } from './chain.js';
import { type VhdProblem, checkImage } from './check.js';
import { type CoalesceOptions, type CoalesceResult, coalesceInto } from './coalesce.js';
import { newFooter, writeAll, writeNewImage } from './create.js';
import { fsError, vhdError } from './errors.js';
import { toVhdTimestamp } from './fields.js';
import { DiskType, NO_DATA_OFFSET, type VhdFooter, encodeFooter } from './footer.js';
import { type VhdFiles, type WithInternal, filesOf, internalOptions, nodeFiles } from './files.js';
import { DEFAULT_BLOCK_SIZE, MAX_DISK_SIZE, type VhdImage, readImage, readInto } from './image.js';
import { type RepairReport, repairImage } from './repair.js';
import { resizeImage } from './resize.js';
import {
  type ConvertDiskOptions,
  type DiskReadStreamOptions,
  type ImportDiskOptions,
  type TransferProgress,
  type TransferResult,
  checkNewDisk,
  checkTransferOptions,
  copyDisk,
  diskReadStream,
  importInto,
  replaceAtomically,
  sizeOfFileStream,
  untouchedFileStream,
  fileBlocks,
} from './transfer.js';

export type { ConvertDiskOptions, DiskReadStreamOptions, ImportDiskOptions, TransferProgress, TransferResult };

/** The kinds of disk image: the three VHD kinds, and a raw image (the bytes of the disk, nothing else). */
export type VirtualDiskType = 'raw' | 'fixed' | 'dynamic' | 'differencing';

/** Options of {@link VirtualDisk.create}. */
export interface CreateDiskOptions {
  /** Size in bytes: a multiple of 512, at most 2040 GiB. Kept exactly, whatever the CHS geometry. */
  size: number;
  /**
   * `dynamic` grows as blocks are written; `fixed` allocates the whole size up front (zeros
   * are written over it, as blktap's libvhd does, so it never runs out of space later);
   * `raw` is a plain file of the disk's bytes (sparse where never written).
   */
  type: 'dynamic' | 'fixed' | 'raw';
  /**
   * Replace a file already at `path` (default `true`, as `qemu-img create` and
   * `vhd-util create` do). The replacement is atomic: the new image is written beside it
   * and renamed over it, so a failed create leaves the old file as it was. `false` fails
   * with `EEXIST` instead.
   */
  overwrite?: boolean;
  /**
   * Stops a long create (a fixed disk's zero fill): the promise rejects with an `AbortError`
   * and nothing is left at `path` (an old file there stays as it was).
   */
  signal?: AbortSignal;
}

/** Options of {@link VirtualDisk.open}. */
export interface OpenDiskOptions {
  /** Open without write access; writes then fail with `VHD_READ_ONLY`. */
  readOnly?: boolean;
  /**
   * `vhd` (the default) or `raw`: a raw image is any file, its bytes the disk's, its size
   * the disk's size. Never guessed: a damaged VHD must fail, not open as raw.
   */
  format?: 'vhd' | 'raw';
}

/** What {@link VirtualDisk.info} reports. */
export interface VirtualDiskInfo {
  /** Absolute path of the image file. */
  path: string;
  /** Virtual size in bytes. */
  size: number;
  type: VirtualDiskType;
  /** The VHD's UUID; empty for a raw image. */
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

/** The stand-in metadata of a raw image of `size` bytes: its footer is never written, it only answers {@link VirtualDisk.info}. */
function rawImage(size: number): VhdImage {
  return { footer: { ...newFooter(size, DiskType.fixed, NO_DATA_OFFSET), uuid: '' }, footerOffset: size, size, sparse: undefined };
}

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

  private constructor(
    /** Absolute path of the image file. */
    readonly path: string,
    private readonly fh: FileHandle,
    private image: VhdImage,
    private readOnly: boolean,
    private readonly parent: VirtualDisk | undefined,
    private blocks: SparseBlocks | undefined,
    /** The file layer every handle of this disk, its parents and children goes through. */
    private readonly files: VhdFiles,
    private readonly raw = false,
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
    const { size, type, overwrite, signal } = options ?? {};
    if (overwrite !== undefined && typeof overwrite !== 'boolean') throw new TypeError('overwrite must be a boolean');
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('signal must be an AbortSignal');
    checkNewDisk(path, type, size);
    if (signal?.aborted) throw abortError(signal);
    await writeNewImage(resolve(path), { size, type, blockSize: DEFAULT_BLOCK_SIZE, ...(signal ? { signal } : {}) }, overwrite ?? true);
    return VirtualDisk.open(path, { format: type === 'raw' ? 'raw' : 'vhd' });
  }

  /**
   * Makes a new disk at `path` from a stream of raw disk bytes (a `Readable`, or any async
   * iterable of `Uint8Array`s), written beside `path` and renamed over it only once complete
   * and (unless `sync: false`) durable. All-zero blocks stay unallocated (holes in a raw image; a fixed one
   * is fully allocated, zeros written there). The
   * stream must hold exactly `size` bytes (RangeError otherwise); `size` may be left out
   * when `source` is a `fs.ReadStream` of a whole file. Such a stream, when nothing has read
   * from it yet, is not consumed: its file is read directly (positioned reads into reused
   * buffers) and the stream is closed.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm, writeFile } from 'node:fs/promises';
   * import { createReadStream } from 'node:fs';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-import-'));
   * const raw = Buffer.alloc(4 * 1024 * 1024);
   * raw.write('boot', 510);
   * await writeFile(join(dir, 'disk.raw'), raw);
   * await VirtualDisk.import(join(dir, 'disk.vhd'), createReadStream(join(dir, 'disk.raw')), { type: 'dynamic' });
   * const disk = await VirtualDisk.open(join(dir, 'disk.vhd'), { readOnly: true });
   * console.log(disk.info().allocatedBytes); // 2097152: the second, all-zero block stays unallocated
   * await disk.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  static async import(path: string, source: AsyncIterable<Uint8Array> | Readable, options: ImportDiskOptions): Promise<TransferResult> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    if (source === null || typeof source !== 'object' || typeof (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function') {
      throw new TypeError('source must be a Readable or an async iterable of Uint8Array');
    }
    const { type, overwrite, signal, onProgress, sync } = options ?? {};
    const files = filesOf(options);
    const size = options?.size ?? (await sizeOfFileStream(source));
    checkNewDisk(path, type, size);
    checkTransferOptions(overwrite, signal, onProgress, sync);
    if (signal?.aborted) throw abortError(signal);
    let bytesWritten = 0;
    await replaceAtomically(resolve(path), overwrite ?? true, 'vhd.import', files, async (tmp) => {
      // A fixed image's zero blocks are written by the import itself: one pass, not two.
      await writeNewImage(tmp, { size, type, blockSize: DEFAULT_BLOCK_SIZE, allocate: false }, false, files);
      const disk = await VirtualDisk.open(tmp, { format: type === 'raw' ? 'raw' : 'vhd', [internalOptions]: { files } } as OpenDiskOptions);
      try {
        // A whole file behind a fs.ReadStream is read directly, as qemu-img reads its input:
        // the stream is closed unread.
        const file = untouchedFileStream(source);
        try {
          const direct = file === undefined ? undefined : fileBlocks(file);
          disk.deferMetadata();
          bytesWritten = await importInto(disk, direct?.blocks ?? source, size, options, type === 'fixed', direct?.release);
          await disk.writeDeferred();
        } finally {
          if (file !== undefined) (source as Readable).destroy();
        }
        if (sync !== false) await disk.flush();
      } finally {
        await disk.close();
      }
    });
    return { path: resolve(path), size, bytesWritten };
  }

  /**
   * Copies the disk at `src` (a differencing disk with its whole chain, flattened) into a new
   * image of `type` at `dst`, written beside `dst` and renamed over it only once complete and
   * (unless `sync: false`) durable. Only data is copied: unallocated and all-zero blocks stay unallocated
   * (holes in a raw image; zeros written in a fixed one, which is fully allocated). A raw source needs `format: 'raw'`; a raw source whose size is not
   * a multiple of 512 is padded with zeros.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-convert-'));
   * const base = await VirtualDisk.create(join(dir, 'base.vhd'), { size: 8 * 1024 * 1024, type: 'dynamic' });
   * await base.write(0, Buffer.from('base'));
   * const child = await base.snapshot(join(dir, 'child.vhd'));
   * await child.write(2, Buffer.from('SE'));
   * await child.close();
   * await base.close();
   * await VirtualDisk.convert(join(dir, 'child.vhd'), join(dir, 'flat.raw'), { type: 'raw' });
   * const flat = await VirtualDisk.open(join(dir, 'flat.raw'), { format: 'raw', readOnly: true });
   * console.log(flat.info().type, (await flat.read(0, 4)).toString()); // raw baSE
   * await flat.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  static async convert(src: string, dst: string, options: ConvertDiskOptions): Promise<TransferResult> {
    if (typeof src !== 'string' || src === '') throw new TypeError('src must be a non-empty string');
    if (typeof dst !== 'string' || dst === '') throw new TypeError('dst must be a non-empty string');
    const { type, format, overwrite, signal, onProgress, sync } = options ?? {};
    const files = filesOf(options);
    if (type !== 'dynamic' && type !== 'fixed' && type !== 'raw') throw new TypeError(`type must be 'raw', 'fixed' or 'dynamic', got ${String(type)}`);
    checkTransferOptions(overwrite, signal, onProgress, sync);
    if (signal?.aborted) throw abortError(signal);
    const source = await VirtualDisk.open(src, { readOnly: true, format, [internalOptions]: { files } } as OpenDiskOptions);
    try {
      if (resolve(dst) === source.path) throw new TypeError('src and dst must be different files');
      const size = Math.ceil(source.size / 512) * 512;
      if (size > MAX_DISK_SIZE && type !== 'raw') throw vhdError('VHD_TOO_LARGE', `size ${size} exceeds the 2040 GiB VHD limit`, source.path, 'vhd.convert');
      if (size === 0) throw new RangeError(`${source.path} is empty: a disk needs at least one sector`);
      let bytesWritten = 0;
      await replaceAtomically(resolve(dst), overwrite ?? true, 'vhd.convert', files, async (tmp) => {
        await writeNewImage(tmp, { size, type, blockSize: DEFAULT_BLOCK_SIZE, allocate: false }, false, files);
        const target = await VirtualDisk.open(tmp, { format: type === 'raw' ? 'raw' : 'vhd', [internalOptions]: { files } } as OpenDiskOptions);
        try {
          target.deferMetadata();
          const reader = {
            size: source.size,
            readInto: (o: number, out: Buffer, l: number) => source.exclusive(() => source.readInto(o, out, 0, l, false)),
          };
          bytesWritten = await copyDisk(reader, (o, l) => source.holdsData(o, l), target, options, type === 'fixed');
          await target.writeDeferred();
          if (sync !== false) await target.flush();
        } finally {
          await target.close();
        }
      });
      return { path: resolve(dst), size, bytesWritten };
    } finally {
      await source.close();
    }
  }

  /**
   * Opens the disk at `path`, following the parent chain of a differencing disk (parents are
   * opened read-only; each must carry the UUID its child names). A hidden disk (the parent
   * of a snapshot or clone) only opens with `readOnly`.
   */
  static async open(path: string, options: OpenDiskOptions = {}): Promise<VirtualDisk> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    const { format = 'vhd' } = options;
    if (format !== 'vhd' && format !== 'raw') throw new TypeError(`format must be 'vhd' or 'raw', got ${String(format)}`);
    const internal = (options as WithInternal<OpenDiskOptions>)[internalOptions] ?? {};
    const files = internal.files ?? nodeFiles;
    if (format === 'raw') return VirtualDisk.openRaw(resolve(path), options.readOnly === true, files);
    return VirtualDisk.openChain(resolve(path), options.readOnly === true, [], internal.allowHidden === true, files);
  }

  private static async openRaw(path: string, readOnly: boolean, files: VhdFiles): Promise<VirtualDisk> {
    let fh: FileHandle;
    try {
      fh = await files.open(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw fsError(err, 'vhd.open', path);
    }
    try {
      const { size } = await fh.stat();
      return new VirtualDisk(path, fh, rawImage(size), readOnly, undefined, undefined, files, true);
    } catch (err) {
      await fh.close();
      throw fsError(err, 'vhd.open', path);
    }
  }

  /**
   * Makes `childPath` a new differencing disk whose parent is the disk at `basePath`, which
   * is marked hidden (if it is not already) and must not be written again. Call it once per
   * child to make many children of one base.
   */
  static clone(basePath: string, childPath: string): Promise<VirtualDisk>;
  /** @internal With the engine's internal options (the crash tests' file layer). */
  static clone(basePath: string, childPath: string, internal: WithInternal<object>): Promise<VirtualDisk>;
  static async clone(basePath: string, childPath: string, internal?: WithInternal<object>): Promise<VirtualDisk> {
    if (typeof basePath !== 'string' || basePath === '') throw new TypeError('basePath must be a non-empty string');
    const files = filesOf(internal);
    // An already hidden base is only read, so it may be a read-only file.
    let base = await VirtualDisk.openChain(resolve(basePath), true, [], true, files);
    if (!base.footer.hidden) {
      await base.close();
      base = await VirtualDisk.openChain(resolve(basePath), false, [], true, files);
    }
    try {
      // The base, now read-only, becomes the child's parent as it is: nothing read twice.
      return await base.exclusive(() => base.makeChild(childPath, base));
    } catch (err) {
      await base.close();
      throw err;
    }
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
  static check(path: string): Promise<VhdProblem[]>;
  /** @internal With the engine's internal options (the crash tests' file layer). */
  static check(path: string, internal: WithInternal<object>): Promise<VhdProblem[]>;
  static async check(path: string, internal?: WithInternal<object>): Promise<VhdProblem[]> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    const abs = resolve(path);
    const files = filesOf(internal);
    let fh: FileHandle;
    try {
      fh = await files.open(abs, 'r');
    } catch (err) {
      throw fsError(err, 'vhd.check', abs);
    }
    try {
      return await checkImage(fh, abs, files);
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
  static repair(path: string): Promise<RepairReport>;
  /** @internal With the engine's internal options (the crash tests' file layer). */
  static repair(path: string, internal: WithInternal<object>): Promise<RepairReport>;
  static async repair(path: string, internal?: WithInternal<object>): Promise<RepairReport> {
    if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
    return repairImage(resolve(path), filesOf(internal));
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
      return new VirtualDisk(path, fh, image, readOnly, parent, blocks, files);
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

  /**
   * A `Readable` of the virtual disk's bytes from `start` to `end` (inclusive, as in
   * `fs.createReadStream`; the whole disk by default), in chunks of `highWaterMark` bytes
   * (2 MiB by default). Reads happen only as the consumer takes chunks; unallocated
   * regions are produced as zeros without touching the file.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { createWriteStream } from 'node:fs';
   * import { pipeline } from 'node:stream/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-stream-'));
   * const disk = await VirtualDisk.create(join(dir, 'disk.vhd'), { size: 16 * 1024 * 1024, type: 'dynamic' });
   * await disk.write(0, Buffer.from('hello'));
   * await pipeline(disk.createReadStream(), createWriteStream(join(dir, 'disk.raw')));
   * let bytes = 0;
   * for await (const chunk of disk.createReadStream({ start: 0, end: 4 })) bytes += chunk.length;
   * console.log(bytes); // 5
   * await disk.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  createReadStream(options: DiskReadStreamOptions = {}): Readable {
    if (this.closed) throw closedError('vhd.createReadStream');
    return diskReadStream(this.size, options, (offset, length) => this.read(offset, length));
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
      type: this.raw ? 'raw' : (typeNames[this.footer.diskType] as VirtualDiskType),
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
   * hidden and read-only. Nothing is copied: the child starts empty and reads through. The
   * child is built from what this disk already holds in memory, so the time taken does not
   * depend on the disk's size or data: the hidden flag is made durable at once, the child
   * (its empty BAT, 4 bytes per 2 MiB, from a table shared by all new images) is written but
   * not synced — its first {@link flush} makes it durable, with the first data written to it.
   */
  async snapshot(childPath: string): Promise<VirtualDisk> {
    if (this.closed) throw closedError('vhd.snapshot');
    return this.exclusive(async () => {
      // The child reads through its own handles, so closing this disk does not break it.
      const parent = await this.reopenReadOnly();
      try {
        return await this.makeChild(childPath, parent);
      } catch (err) {
        await parent.close();
        throw err;
      }
    });
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
    // A raw image has no structure to be wrong.
    if (this.raw) return [];
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
      if (this.raw) {
        // Every byte of a raw image is data: it only grows (the new area a hole, reading zeros).
        if (size < this.size) throw vhdError('VHD_SHRINK_LOSES_DATA', `a raw image cannot shrink: every one of its ${this.size} bytes is data`, this.path, 'vhd.resize');
        await this.fh.truncate(size);
        await this.fh.datasync();
        this.image = rawImage(size);
        this.footer = this.image.footer;
        return;
      }
      // The layout in memory is the one the batched write path keeps current (BAT, batmap).
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
        // The parent this disk reads through was changed behind its back: read its metadata
        // again (the copied sectors are this disk's own, so reads were right all along).
        await parent.exclusive(() => parent.reload()).catch(() => undefined);
      }
    });
  }

  /**
   * Re-reads the metadata after a change of layout (resize) or of the file through another
   * handle (coalesce into this parent), and rebuilds the block layer exactly as `openChain`
   * does: a fresh BAT of the disk's own (decoded from the file, never the shared unused
   * table), an empty bitmap cache, the end footer where the file now ends.
   */
  private async reload(): Promise<void> {
    if (this.raw) {
      this.image = rawImage((await this.fh.stat()).size);
      this.footer = this.image.footer;
      return;
    }
    const image = await readImage(this.fh, this.path);
    this.image = image;
    this.footer = image.footer;
    this.blocks = image.sparse ? new SparseBlocks(this.fh, this.path, image.sparse, image.footerOffset, image.footer) : undefined;
  }

  /**
   * Defers the BAT, batmap and footer updates of writes until {@link writeDeferred} (see
   * SparseBlocks.deferMetadata): only for the temporary file an import or a convert fills,
   * which is thrown away unless the copy completes. Each new block then costs one write.
   */
  private deferMetadata(): void {
    this.blocks?.deferMetadata();
  }

  /** Writes what {@link deferMetadata} held back, after the writes queued before it. */
  private async writeDeferred(): Promise<void> {
    await this.exclusive(async () => this.blocks?.writeMetadata());
  }

  private chainDepth(): number {
    return 1 + (this.parent?.chainDepth() ?? 0);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** This disk (and its chain) opened again read-only, sharing the metadata already in memory. */
  private async reopenReadOnly(): Promise<VirtualDisk> {
    let fh: FileHandle;
    try {
      fh = await this.files.open(this.path, 'r');
    } catch (err) {
      throw fsError(err, 'vhd.snapshot', this.path);
    }
    try {
      const parent = await this.parent?.reopenReadOnly();
      const footerOffset = this.blocks?.endOffset ?? this.image.footerOffset;
      const image = { ...this.image, footer: this.footer, footerOffset };
      const blocks = image.sparse ? new SparseBlocks(fh, this.path, image.sparse, footerOffset, this.footer) : undefined;
      return new VirtualDisk(this.path, fh, image, true, parent, blocks, this.files, this.raw);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Marks this disk hidden and read-only, and makes `childPath` its child, reading through `parent`. */
  private async makeChild(childPath: string, parent: VirtualDisk): Promise<VirtualDisk> {
    if (typeof childPath !== 'string' || childPath === '') throw new TypeError('childPath must be a non-empty string');
    if (this.raw) throw vhdError('VHD_UNSUPPORTED', 'a raw image cannot be a parent: convert it to a VHD first', this.path, 'vhd.snapshot');
    if (this.chainDepth() + 1 > MAX_CHAIN_DEPTH) {
      throw vhdError('VHD_CHAIN_TOO_DEEP', `a child would make the chain deeper than ${MAX_CHAIN_DEPTH} disks`, this.path, 'vhd.snapshot');
    }
    const child = resolve(childPath);
    if (await access(child).then(() => true, () => false)) {
      throw XenError.fromErrno('EEXIST', { op: 'vhd.snapshot', path: child });
    }
    const before = { footer: this.footer, readOnly: this.readOnly };
    if (!this.footer.hidden) {
      if (this.readOnly) throw vhdError('VHD_READ_ONLY', 'the disk is open read-only and cannot be marked hidden', this.path, 'vhd.snapshot');
      // Hidden before the child exists: a crash in between leaves a hidden disk, never a
      // writable parent with a child.
      await this.setHidden(true);
      parent.footer = this.footer;
    }
    this.readOnly = true;
    let image: VhdImage;
    try {
      const mtime = (await this.fh.stat()).mtime;
      // Not synced: the child's BAT grows with the disk's size, and the child's first flush
      // makes it durable with the first data written to it (nothing in it needs to be before).
      image = await writeNewImage(child, {
        size: this.size,
        type: 'differencing',
        blockSize: this.blocks?.blockSize ?? DEFAULT_BLOCK_SIZE,
        parent: { path: this.path, uuid: this.footer.uuid, timestamp: toVhdTimestamp(mtime) },
        sync: false,
      }, false, this.files);
    } catch (err) {
      // No child came to be: the disk goes back to what it was (a live snapshot's guest keeps writing to it).
      if (!before.footer.hidden) {
        await this.setHidden(false).then(
          () => {
            this.readOnly = before.readOnly;
            parent.footer = this.footer;
          },
          () => undefined,
        );
      }
      throw err;
    }
    let fh: FileHandle;
    try {
      fh = await this.files.open(child, 'r+');
    } catch (err) {
      throw fsError(err, 'vhd.snapshot', child);
    }
    const sparse = image.sparse as NonNullable<VhdImage['sparse']>;
    return new VirtualDisk(child, fh, image, false, parent, new SparseBlocks(fh, child, sparse, image.footerOffset, image.footer), this.files);
  }

  /** Writes blktap's hidden flag into the footer (end footer, then the copy at 0) and makes it durable. */
  private async setHidden(hidden: boolean): Promise<void> {
    const footer = { ...this.footer, hidden };
    if (this.blocks) await this.blocks.writeFooter(footer);
    else await writeAll(this.fh, encodeFooter(footer), this.image.footerOffset);
    await this.fh.datasync();
    this.footer = footer;
  }

  /** Whether any disk of the chain stores data for some of bytes [offset, offset + length). */
  private holdsData(offset: number, length: number): boolean {
    if (!this.blocks) return true;
    const bs = this.blocks.blockSize;
    for (let b = Math.floor(offset / bs); b * bs < offset + length; b++) if (this.blocks.isAllocated(b)) return true;
    return this.parent?.holdsData(offset, length) ?? false;
  }

  private async readRange(offset: number, length: number): Promise<Buffer> {
    if (this.storesAll(offset, length)) {
      // Every byte will be read from this file (or, for sectors it lacks, filled): zeroing
      // the buffer first would only be undone (a 2 MiB memset per block, on every export).
      const out = Buffer.allocUnsafe(length);
      await this.readInto(offset, out, 0, length, false);
      return out;
    }
    // Zeroed by calloc, which for large buffers maps zero pages lazily: far cheaper than
    // filling unallocated regions of an uninitialised buffer.
    const out = Buffer.alloc(length);
    await this.readInto(offset, out, 0, length, true);
    return out;
  }

  /** Whether this file has storage for every block of bytes [offset, offset + length). */
  private storesAll(offset: number, length: number): boolean {
    if (!this.blocks) return true;
    const bs = this.blocks.blockSize;
    for (let b = Math.floor(offset / bs); b * bs < offset + length; b++) if (!this.blocks.isAllocated(b)) return false;
    return true;
  }

  /**
   * Fills `out[at, at + length)` with the disk's bytes from `offset`: zeros past its end.
   * With `zeroed`, that part of `out` already holds zeros, which are then not written again.
   */
  private async readInto(offset: number, out: Buffer, at: number, length: number, zeroed: boolean): Promise<void> {
    const inside = Math.max(0, Math.min(length, this.size - offset));
    if (inside < length && !zeroed) out.fill(0, at + inside, at + length);
    if (inside === 0) return;
    if (!this.blocks) {
      await readInto(this.fh, offset, out, at, inside, this.path, 'disk data');
      return;
    }
    const bs = this.blocks.blockSize;
    const end = offset + inside;
    for (let pos = offset; pos < end; ) {
      const block = Math.floor(pos / bs);
      const blockStart = block * bs;
      const from = pos - blockStart;
      const to = Math.min(end - blockStart, bs);
      pos = blockStart + to;
      if (!this.blocks.isAllocated(block)) {
        await this.readAbsent(blockStart + from, out, at + blockStart + from - offset, to - from, zeroed);
        continue;
      }
      const first = Math.floor(from / 512);
      for (const run of await this.blocks.runs(block, first, Math.ceil(to / 512) - first)) {
        const rs = Math.max(run.first * 512, from);
        const re = Math.min((run.first + run.count) * 512, to);
        const dest = at + blockStart + rs - offset;
        if (run.present) await this.blocks.readData(block, rs, out, dest, re - rs);
        else await this.readAbsent(blockStart + rs, out, dest, re - rs, zeroed);
      }
    }
  }

  /** Bytes this disk does not store: the parent's, or zeros. */
  private async readAbsent(offset: number, out: Buffer, at: number, length: number, zeroed: boolean): Promise<void> {
    if (this.parent) await this.parent.readInto(offset, out, at, length, zeroed);
    else if (!zeroed) out.fill(0, at, at + length);
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
      aligned = Buffer.allocUnsafe((s1 - s0) * 512);
      await this.readInto(s0 * 512, aligned, 0, 512, false);
      if (s1 - 1 > s0) await this.readInto((s1 - 1) * 512, aligned, aligned.length - 512, 512, false);
      data.copy(aligned, offset - s0 * 512);
    }
    await this.blocks.write(s0, aligned);
  }
}
