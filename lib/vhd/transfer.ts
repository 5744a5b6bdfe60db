import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { abortError } from '../errors.js';
import { fsError, vhdError } from './errors.js';
import type { VhdFiles } from './files.js';
import { DEFAULT_BLOCK_SIZE, MAX_DISK_SIZE } from './image.js';

/** How far a long copy has got, as given to an `onProgress` callback. */
export interface TransferProgress {
  /** Bytes of the virtual disk dealt with so far (copied, or skipped as holes). */
  done: number;
  /** Bytes in all. */
  total: number;
}

/** What {@link VirtualDisk.import} and {@link VirtualDisk.convert} resolve to. */
export interface TransferResult {
  /** Absolute path of the new image. */
  path: string;
  /** Virtual size of the new disk. */
  size: number;
  /** Bytes of data written: blocks that were all zeros (or held by no image) are not counted. */
  bytesWritten: number;
}

/** Options shared by {@link VirtualDisk.import} and {@link VirtualDisk.convert}. */
interface TransferOptions {
  /** Replace a file already at the destination (default `true`); `false` fails with `EEXIST`. Atomic either way. */
  overwrite?: boolean;
  /** Aborts the copy: the promise rejects with an `AbortError` and the destination is left as it was. */
  signal?: AbortSignal;
  /** Called after each block-sized step with the bytes done so far. */
  onProgress?: (progress: TransferProgress) => void;
  /**
   * Make the new image durable (`fdatasync`) before it is renamed into place (default
   * `true`, as `create()` does). `false` skips that sync, as `qemu-img convert` does by
   * default: as safe against a process crash, but after a power loss the destination may
   * hold a partial image.
   */
  sync?: boolean;
}

/** Options of {@link VirtualDisk.import}. */
export interface ImportDiskOptions extends TransferOptions {
  /** The kind of image to make. */
  type: 'dynamic' | 'fixed' | 'raw';
  /** Bytes the stream holds (a multiple of 512); optional for a `fs.ReadStream` of a whole file. */
  size?: number;
}

/** Options of {@link VirtualDisk.convert}. */
export interface ConvertDiskOptions extends TransferOptions {
  /** The kind of image to make. */
  type: 'dynamic' | 'fixed' | 'raw';
  /** Format of the source: `vhd` (default) or `raw`. */
  format?: 'vhd' | 'raw';
}

/** Options of {@link VirtualDisk.createReadStream}. */
export interface DiskReadStreamOptions {
  /** First byte to read (default 0). */
  start?: number;
  /** Last byte to read, inclusive as in `fs.createReadStream` (default: the disk's last byte). */
  end?: number;
  /** Bytes per chunk, and the stream's buffer limit (default 2 MiB). */
  highWaterMark?: number;
}

/** The parts of a disk a copy reads from. */
interface CopySource {
  readonly size: number;
  /** Reads `length` bytes at `offset` into the start of `out` (a buffer the copy reuses). */
  readInto(offset: number, out: Buffer, length: number): Promise<void>;
}

/** The part of a disk a copy writes to. */
interface CopyTarget {
  readonly size: number;
  write(offset: number, data: Uint8Array): Promise<void>;
}

/** Checks the options every copy takes (TypeError). */
export function checkTransferOptions(overwrite: unknown, signal: unknown, onProgress: unknown, sync?: unknown): void {
  if (overwrite !== undefined && typeof overwrite !== 'boolean') throw new TypeError('overwrite must be a boolean');
  if (sync !== undefined && typeof sync !== 'boolean') throw new TypeError('sync must be a boolean');
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('signal must be an AbortSignal');
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new TypeError('onProgress must be a function');
}

/**
 * Runs `fill(tmp)` on a temporary path beside `path`, then puts the result in place: renamed
 * over `path` with `replace`, linked in only where nothing is (EEXIST) without. On any
 * failure (an abort included) the temporary file is removed and `path` is untouched; a crash
 * leaves at most the temporary file.
 */
export async function replaceAtomically(path: string, replace: boolean, op: string, files: VhdFiles, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await fill(tmp);
    if (replace) await files.rename(tmp, path);
    else {
      await files.link(tmp, path);
      await files.remove(tmp);
    }
  } catch (err) {
    await files.remove(tmp).catch(() => undefined);
    throw fsError(err, op, path);
  }
}

/** Block writes a copy keeps in flight. */
const MAX_IN_FLIGHT = 4;

/**
 * The writes a copy has started and not yet awaited (the disk runs them in order), so that
 * reading the next blocks overlaps writing the last ones, as qemu-img's parallel requests do.
 */
class WritesInFlight {
  private readonly writes: Array<Promise<void>> = [];

  /** Adds `writing`; resolves once there is room for another (rejects if the oldest failed). */
  async add(writing: Promise<void>): Promise<void> {
    writing.catch(() => undefined); // awaited later; not an unhandled rejection meanwhile
    this.writes.push(writing);
    if (this.writes.length >= MAX_IN_FLIGHT) await this.writes.shift();
  }

  /** Waits for every write; rejects with the first failure. */
  async drain(): Promise<void> {
    while (this.writes.length > 0) await this.writes.shift();
  }

  /** Waits for every write, failed or not: never leave writes running into a disk about to be closed and removed. */
  async settle(): Promise<void> {
    await Promise.allSettled(this.writes);
  }
}

/** Whether every byte of `b` is zero (a memcmp against zeros, not a loop in JS). */
function isZero(b: Buffer, zeros: Buffer): boolean {
  return b.length <= zeros.length && b.equals(zeros.subarray(0, b.length));
}

/**
 * Copies `source` into the empty `target` block by block. Blocks that `holdsData` says no
 * image stores are skipped unread; blocks read as all zeros are skipped too (the target
 * already reads zeros there) — unless `allocate` (a fixed target, whose every byte must have
 * storage): then zeros are written there, so the image is filled in one pass.
 */
export async function copyDisk(
  source: CopySource,
  holdsData: (offset: number, length: number) => boolean,
  target: CopyTarget,
  { signal, onProgress }: TransferOptions,
  allocate = false,
): Promise<number> {
  const step = DEFAULT_BLOCK_SIZE;
  const zeros = Buffer.alloc(step);
  const total = source.size;
  let written = 0;
  // Block buffers for reads, reused once their write is done: no fresh 2 MiB (and its page
  // faults) per block. Writes stay in flight while the next blocks are read.
  const spare: Buffer[] = [];
  const inFlight = new WritesInFlight();
  try {
    for (let offset = 0, steps = 0; offset < total; offset += step) {
      if (signal?.aborted) throw abortError(signal);
      const length = Math.min(step, total - offset);
      // A mostly empty 2 TiB disk is a million blocks skipped without I/O: let others run.
      if (++steps % 4096 === 0) await new Promise(setImmediate);
      let stored = false;
      if (holdsData(offset, length)) {
        const buffer = spare.pop() ?? Buffer.allocUnsafeSlow(step);
        await source.readInto(offset, buffer, length);
        const data = buffer.subarray(0, length);
        if (isZero(data, zeros)) spare.push(buffer);
        else {
          await inFlight.add(target.write(offset, data).then(() => void spare.push(buffer)));
          written += length;
          stored = true;
        }
      }
      if (!stored && allocate) await inFlight.add(target.write(offset, zeros.subarray(0, length)));
      onProgress?.({ done: offset + length, total });
    }
    await inFlight.drain();
    return written;
  } finally {
    await inFlight.settle();
  }
}

/**
 * Writes the raw bytes of `source` into the empty `target`, which is exactly `size` bytes:
 * gathered into whole blocks so that each block is written (or, all zeros, skipped) at once.
 * With `allocate` (a fixed target) all-zero blocks are written too, as zeros.
 * RangeError when the stream holds more or fewer than `size` bytes.
 */
export async function importInto(
  target: CopyTarget,
  source: AsyncIterable<Uint8Array>,
  size: number,
  { signal, onProgress }: TransferOptions,
  allocate = false,
  release?: (chunk: Uint8Array) => void,
): Promise<number> {
  const step = DEFAULT_BLOCK_SIZE;
  const zeros = Buffer.alloc(step);
  let written = 0;
  let stage = Buffer.allocUnsafe(step);
  let filled = 0;
  let offset = 0;
  const inFlight = new WritesInFlight();
  /** Starts writing `data` (unless all zeros); resolves, with that write, once there is room for another. */
  const put = async (data: Buffer): Promise<Promise<void> | undefined> => {
    const zero = isZero(data, zeros);
    let writing: Promise<void> | undefined;
    if (!zero || allocate) {
      // The shared zero block, not the stage buffer, which is reused once written.
      writing = target.write(offset, zero ? zeros.subarray(0, data.length) : data);
      if (!zero) written += data.length;
      await inFlight.add(writing);
    }
    offset += data.length;
    onProgress?.({ done: offset, total: size });
    return zero && !allocate ? undefined : writing;
  };
  const onAbort = (): void => {
    // Ends a `for await` that waits on a stream which may never produce again.
    if (source instanceof Readable) source.destroy(abortError(signal as AbortSignal));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of source) {
      if (signal?.aborted) throw abortError(signal);
      if (!(chunk instanceof Uint8Array)) throw new TypeError('the source must produce Buffers or Uint8Arrays (not strings: no encoding)');
      const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      if (offset + filled + bytes.length > size) throw new RangeError(`the source holds more than the ${size} bytes expected`);
      // Writes that still read from the chunk: it goes back to `release` once they are done.
      const holding: Array<Promise<void>> = [];
      for (let used = 0; used < bytes.length; ) {
        if (filled === 0 && bytes.length - used >= step) {
          // A whole block in the chunk (as from a stream of block-sized reads): no copy.
          const writing = await put(bytes.subarray(used, used + step));
          if (writing !== undefined) holding.push(writing);
          used += step;
          continue;
        }
        const n = Math.min(step - filled, bytes.length - used);
        bytes.copy(stage, filled, used, used + n);
        filled += n;
        used += n;
        if (filled === step) {
          await put(stage);
          stage = Buffer.allocUnsafe(step); // the last one may still be being written
          filled = 0;
        }
      }
      if (release !== undefined) void Promise.allSettled(holding).then(() => release(chunk));
    }
    if (filled > 0) await put(stage.subarray(0, filled));
    await inFlight.drain();
    if (signal?.aborted) throw abortError(signal);
    if (offset !== size) throw new RangeError(`the source ended after ${offset} bytes, ${size} expected`);
    return written;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await inFlight.settle();
  }
}

/** A Readable of bytes [start, end] of a disk of `size` bytes, read on demand through `read`. */
export function diskReadStream(size: number, options: DiskReadStreamOptions, read: (offset: number, length: number) => Promise<Buffer>): Readable {
  const { start = 0, end = size - 1, highWaterMark = DEFAULT_BLOCK_SIZE } = options ?? {};
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`start must be a non-negative integer, got ${start}`);
  if (!Number.isSafeInteger(end) || end >= size) throw new RangeError(`end must be an integer below the disk size ${size}, got ${end}`);
  if (end < start - 1) throw new RangeError(`end ${end} is before start ${start}`);
  if (!Number.isSafeInteger(highWaterMark) || highWaterMark <= 0) throw new RangeError(`highWaterMark must be a positive integer, got ${highWaterMark}`);
  let pos = start;
  return new Readable({
    highWaterMark,
    read(this: Readable) {
      if (pos > end) {
        this.push(null);
        return;
      }
      const length = Math.min(highWaterMark, end + 1 - pos);
      const at = pos;
      pos += length;
      read(at, length).then(
        (chunk) => this.push(chunk),
        (err: unknown) => this.destroy(err as Error),
      );
    },
  });
}

/** Checks the path, type and size of a disk to be made; TypeError, RangeError or VHD_TOO_LARGE. */
export function checkNewDisk(path: string, type: unknown, size: number | undefined): asserts type is 'dynamic' | 'fixed' | 'raw' {
  if (typeof path !== 'string' || path === '') throw new TypeError('path must be a non-empty string');
  if (type !== 'dynamic' && type !== 'fixed' && type !== 'raw') throw new TypeError(`type must be 'dynamic', 'fixed' or 'raw', got ${String(type)}`);
  if (!Number.isSafeInteger(size) || (size as number) <= 0 || (size as number) % 512 !== 0) {
    throw new RangeError(`size must be a positive multiple of 512, got ${size}`);
  }
  if ((size as number) > MAX_DISK_SIZE && type !== 'raw') {
    throw vhdError('VHD_TOO_LARGE', `size ${size} exceeds the 2040 GiB VHD limit`, resolve(path), 'vhd.create');
  }
}

/**
 * The path of `source` when it is a `fs.ReadStream` over a whole file that nothing has read
 * from yet (the one kind of stream whose bytes can be had without consuming it), else
 * undefined.
 */
export function untouchedFileStream(source: unknown): string | undefined {
  if (!(source instanceof Readable)) return undefined;
  const s = source as Readable & { path?: unknown; start?: unknown; end?: unknown; bytesRead?: unknown };
  const whole = (s.start === undefined || s.start === 0) && (s.end === undefined || s.end === Infinity);
  const untouched = s.bytesRead === 0 && s.readableLength === 0 && !s.readableDidRead && !s.destroyed && s.readableFlowing !== true;
  return typeof s.path === 'string' && whole && untouched ? s.path : undefined;
}

/** Buffers {@link fileBlocks} reads into: enough for every write {@link importInto} keeps in flight and the next reads. */
const FILE_BUFFERS = MAX_IN_FLIGHT + 2;

/**
 * The bytes of the file at `path`, block by block, through positioned reads into a few
 * reused buffers — what a `fs.ReadStream` would produce, without its fresh 2 MiB allocation
 * (and page faults) per chunk, which cost more than the rest of an import. A buffer is read
 * into again only once the consumer has handed it back through `release` (as
 * {@link importInto} does when nothing refers to the chunk any more); until then the
 * reading waits.
 */
export function fileBlocks(path: string): { blocks: AsyncGenerator<Buffer>; release: (chunk: Uint8Array) => void } {
  const free = Array.from({ length: FILE_BUFFERS }, () => Buffer.allocUnsafeSlow(DEFAULT_BLOCK_SIZE));
  let wake: (() => void) | undefined;
  const release = (chunk: Uint8Array): void => {
    free.push(Buffer.from(chunk.buffer as ArrayBuffer, 0, DEFAULT_BLOCK_SIZE));
    wake?.();
    wake = undefined;
  };
  async function* blocks(): AsyncGenerator<Buffer> {
    const fh = await open(path, 'r');
    try {
      for (let position = 0; ; ) {
        while (free.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const buffer = free.pop() as Buffer;
        let filled = 0;
        while (filled < buffer.length) {
          const { bytesRead } = await fh.read(buffer, filled, buffer.length - filled, position + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        if (filled === 0) return;
        position += filled;
        yield buffer.subarray(0, filled);
        if (filled < buffer.length) return;
      }
    } finally {
      await fh.close();
    }
  }
  return { blocks: blocks(), release };
}

/** The byte count of a `fs.ReadStream` over a whole file; TypeError for any other source. */
export async function sizeOfFileStream(source: unknown): Promise<number> {
  const s = source as { path?: unknown; start?: unknown; end?: unknown; bytesRead?: unknown };
  if (typeof s.path !== 'string' || (s.start !== undefined && s.start !== 0) || (s.end !== undefined && s.end !== Infinity) || s.bytesRead !== 0) {
    throw new TypeError('size is required unless source is a fs.ReadStream of a whole file');
  }
  const fh = await open(s.path, 'r');
  try {
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}
