import { type FileHandle, link, open, rename, rm } from 'node:fs/promises';
import type { VhdFiles } from './files.js';

/** The error a {@link FaultyFiles} layer throws from the operation it "crashes" in. @internal */
export class SimulatedCrash extends Error {
  constructor(op: string, n: number) {
    super(`simulated crash before ${op} (operation ${n})`);
    this.name = 'SimulatedCrash';
  }
}

/** Options of {@link FaultyFiles}. @internal */
export interface FaultyFilesOptions {
  /**
   * How many persisting operations (write, datasync, truncate…) reach the files before the
   * simulated crash; the next one and every later one fail. Default: never crash (count only).
   */
  crashAfter?: number;
  /**
   * What the failing operations do: `throw` a {@link SimulatedCrash} (the engine's own error
   * paths then run, as after an I/O error), or `drop` them silently and report success (the
   * engine carries on, as if still running, while nothing it does reaches the file any more:
   * what is on disk is what a `kill -9` at that instant would leave).
   */
  mode?: 'throw' | 'drop';
  /**
   * Tear the write the crash interrupts: its bytes up to the first 4 KiB boundary of the file
   * reach it, the rest does not, as when a kill lands in the middle of a large write (the
   * kernel copies it in page by page). Default false: the interrupted write does nothing.
   */
  tear?: boolean;
}

/** FileHandle methods that change what is on disk. */
const PERSISTING = new Set(['write', 'writev', 'datasync', 'sync', 'truncate', 'writeFile', 'appendFile']);
// Directory changes (rename, link, remove) go through the layer's own methods below and count too.

/**
 * A file layer for crash tests: it wraps the `fs.promises` FileHandles the VHD engine uses and
 * counts, across all files it opened, the operations that persist something. After
 * `crashAfter` of them, the process is treated as killed: nothing more reaches any file. Run a
 * scenario once with the default options to learn its number of operations, then once per N
 * below that to exercise every point a crash can happen at.
 *
 * Operations reach the file in call order and fully, as after a process kill (the page cache
 * keeps every completed write); reordering by the disk after a power loss is not simulated.
 *
 * @internal
 */
export class FaultyFiles implements VhdFiles {
  /** Persisting operations that reached a file. */
  operations = 0;
  /** What each of them was, for failure messages: `write 512@0 base.vhd`. */
  readonly log: string[] = [];
  private readonly crashAfter: number;
  private readonly mode: 'throw' | 'drop';
  private readonly tear: boolean;
  /** Whether the interrupted write was torn (part of it reached the file). */
  torn = false;

  constructor(options: FaultyFilesOptions = {}) {
    this.crashAfter = options.crashAfter ?? Infinity;
    this.mode = options.mode ?? 'throw';
    this.tear = options.tear ?? false;
  }

  /** Whether the simulated crash has happened. */
  get crashed(): boolean {
    return this.attempted > this.operations;
  }

  private attempted = 0;

  async open(path: string, flags: 'r' | 'r+' | 'wx'): Promise<FileHandle> {
    if (this.crashed && this.mode === 'throw') throw new SimulatedCrash(`open ${path}`, this.attempted);
    const fh = await open(path, flags);
    const name = baseName(path);
    return new Proxy(fh, {
      get: (target, prop, receiver) => {
        const value: unknown = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        const fn = value as (...args: unknown[]) => unknown;
        if (typeof prop !== 'string' || !PERSISTING.has(prop)) return fn.bind(target);
        return (...args: unknown[]) => this.persist(prop, name, args, () => fn.apply(target, args));
      },
    });
  }

  /** A rename reaches the directory whole or not at all, as rename(2) does. */
  async rename(from: string, to: string): Promise<void> {
    await this.persist('rename', baseName(to), [from], () => rename(from, to));
  }

  async link(existing: string, newPath: string): Promise<void> {
    await this.persist('link', baseName(newPath), [existing], () => link(existing, newPath));
  }

  /** Removing a temporary file also changes the directory: after the crash, nothing is removed. */
  async remove(path: string): Promise<void> {
    await this.persist('remove', baseName(path), [], () => rm(path, { force: true }));
  }

  private async persist(op: string, name: string, args: unknown[], run: () => unknown): Promise<unknown> {
    this.attempted++;
    const what = describe(op, name, args);
    if (this.operations >= this.crashAfter) {
      if (this.tear && this.attempted === this.operations + 1) {
        if (op === 'write') await this.tearWrite(args, run);
        else if (op === 'writev') await this.tearWritev(args, run);
      }
      if (this.mode === 'throw') throw new SimulatedCrash(what, this.attempted);
      // Dropped: report what a successful call would have.
      if (op === 'write') return { bytesWritten: writtenLength(args), buffer: args[0] };
      if (op === 'writev') return { bytesWritten: vectorLength(args), buffers: args[0] };
      return undefined;
    }
    this.operations++;
    this.log.push(what);
    return run();
  }

  private async tearWrite(args: unknown[], run: () => unknown): Promise<void> {
    const [buf, offset, length, position] = args as [unknown, number | undefined, number | undefined, number | null | undefined];
    if (!(buf instanceof Uint8Array) || typeof position !== 'number') return;
    const prefix = toPageBoundary(position);
    if (prefix >= (length ?? buf.length - (offset ?? 0))) return;
    await this.runTorn(args, 2, prefix, run);
  }

  /** A torn `writev`: the bytes up to the first 4 KiB boundary of the file reach it, as for {@link tearWrite}. */
  private async tearWritev(args: unknown[], run: () => unknown): Promise<void> {
    const [bufs, position] = args as [Uint8Array[], number | null | undefined];
    if (!Array.isArray(bufs) || typeof position !== 'number') return;
    let prefix = toPageBoundary(position);
    if (prefix >= vectorLength(args)) return;
    const cut: Uint8Array[] = [];
    for (const b of bufs) {
      if (prefix <= 0) break;
      cut.push(b.subarray(0, Math.min(b.length, prefix)));
      prefix -= b.length;
    }
    await this.runTorn(args, 0, cut, run);
  }

  /** Runs the call with `args[index]` cut short to `value`, then restores it: only that much reaches the file. */
  private async runTorn(args: unknown[], index: number, value: unknown, run: () => unknown): Promise<void> {
    const saved = args[index];
    args[index] = value;
    try {
      await run();
      this.torn = true;
    } finally {
      args[index] = saved;
    }
  }
}

/** Bytes from `position` to the next 4 KiB boundary of the file (a whole page when on one). */
function toPageBoundary(position: number): number {
  return Math.ceil((position + 1) / 4096) * 4096 - position;
}

function vectorLength(args: unknown[]): number {
  return (args[0] as Uint8Array[]).reduce((n, b) => n + b.length, 0);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function writtenLength(args: unknown[]): number {
  const [buf, offset, length] = args as [Uint8Array | string, number | undefined, number | undefined];
  if (typeof buf === 'string') return Buffer.byteLength(buf);
  return length ?? buf.length - (offset ?? 0);
}

function describe(op: string, name: string, args: unknown[]): string {
  if (op === 'write') return `write ${writtenLength(args)}@${String(args[3])} ${name}`;
  if (op === 'writev') return `writev ${vectorLength(args)}@${String(args[1])} ${name}`;
  if (op === 'truncate') return `truncate ${String(args[0])} ${name}`;
  return `${op} ${name}`;
}
