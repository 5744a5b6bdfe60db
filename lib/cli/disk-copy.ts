import { once } from 'node:events';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { abortError } from '../errors.js';
import { VirtualDisk } from '../vhd/disk.js';

/** The virtual disk a copy reads: a VHD (through its chain) or a raw image file. */
export interface DiskSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** Where a copy writes: chunks at their offsets; zero chunks may be skipped when `sparse`. */
export interface DiskSink {
  /** Whether unwritten ranges read as zeros, so zero chunks need not be written. */
  readonly sparse: boolean;
  write(offset: number, data: Buffer): Promise<void>;
  /** Completes the image (its size, durability) and closes it. */
  finish(): Promise<void>;
  /** Closes without completing, after a failure. */
  abandon(): Promise<void>;
}

/** Options of {@link copyDisk}. */
export interface CopyOptions {
  onProgress?: (bytesDone: number) => void;
  signal?: AbortSignal;
}

/** Bytes read at a time: one VHD block, so a dynamic output allocates only blocks with data. */
export const COPY_CHUNK = 2 * 1024 * 1024;
const ZERO_CHUNK = Buffer.alloc(COPY_CHUNK);

/**
 * Copies the whole virtual disk `source` into `sink` in chunks of {@link COPY_CHUNK} bytes,
 * in order; a sparse sink is not given chunks that are all zeros. Memory stays at one chunk.
 * Resolves to the bytes written (zeros skipped excluded).
 */
export async function copyDisk(source: DiskSource, sink: DiskSink, options: CopyOptions = {}): Promise<number> {
  let written = 0;
  try {
    for (let at = 0; at < source.size; at += COPY_CHUNK) {
      if (options.signal?.aborted) throw abortError(options.signal);
      const length = Math.min(COPY_CHUNK, source.size - at);
      const data = await source.read(at, length);
      if (!(sink.sparse && data.equals(length === COPY_CHUNK ? ZERO_CHUNK : ZERO_CHUNK.subarray(0, length)))) {
        await sink.write(at, data);
        written += length;
      }
      options.onProgress?.(at + length);
    }
  } catch (err) {
    await sink.abandon();
    throw err;
  }
  await sink.finish();
  return written;
}

/** Opens `path` as a copy source: a VHD (`vhd`, read-only, chain followed) or a raw image. */
export async function openSource(path: string, format: 'vhd' | 'raw'): Promise<DiskSource> {
  if (format === 'vhd') return VirtualDisk.open(path, { readOnly: true });
  const fh = await open(path, 'r');
  const size = (await fh.stat()).size;
  return {
    size,
    async read(offset, length) {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}

/** A raw image file at `path` (holes where the disk is zero); `replace` allows an existing file. */
export async function rawFileSink(path: string, size: number, replace: boolean): Promise<DiskSink> {
  const fh: FileHandle = await open(path, replace ? 'w' : 'wx');
  return {
    sparse: true,
    async write(offset, data) {
      let done = 0;
      while (done < data.length) done += (await fh.write(data, done, data.length - done, offset + done)).bytesWritten;
    },
    async finish() {
      try {
        await fh.truncate(size);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    },
    abandon: () => fh.close(),
  };
}

/** A raw stream (stdout): every byte in order, waiting for the reader as needed. */
export function streamSink(stream: NodeJS.WritableStream): DiskSink {
  return {
    sparse: false,
    async write(_offset, data) {
      if (!stream.write(data)) await once(stream, 'drain');
    },
    finish: async () => undefined,
    abandon: async () => undefined,
  };
}

/** A new VHD at `path` of `type`; an existing file is replaced only with `replace`. */
export async function vhdSink(path: string, size: number, type: 'fixed' | 'dynamic', replace: boolean): Promise<DiskSink> {
  const disk = await VirtualDisk.create(path, { size, type, overwrite: replace });
  return {
    // A new fixed VHD's data is a hole and a new dynamic one has no blocks: both read zeros.
    sparse: true,
    write: (offset, data) => disk.write(offset, data),
    async finish() {
      try {
        await disk.flush();
      } finally {
        await disk.close();
      }
    },
    abandon: () => disk.close(),
  };
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
