import type { FileHandle } from 'node:fs/promises';
import { abortError } from '../errors.js';
import { BAT_UNUSED } from './bat.js';
import { testBit } from './bitmap.js';
import { type VhdImage, readExact } from './image.js';

/** What {@link CoalesceOptions.onProgress} is told after each block. */
export interface CoalesceProgress {
  /** Blocks of the child examined so far. */
  blocksDone: number;
  /** Blocks the child has storage for: the work to do. */
  blocksTotal: number;
  /** Bytes copied into the parent so far. */
  bytesCopied: number;
}

/** Options of {@link VirtualDisk.coalesce}. */
export interface CoalesceOptions {
  /** Called after each block of the child, with the work done so far. */
  onProgress?: (progress: CoalesceProgress) => void;
  /** Stops the copy between two blocks, rejecting with an `AbortError`; run it again to finish. */
  signal?: AbortSignal;
}

/** What {@link VirtualDisk.coalesce} did. */
export interface CoalesceResult {
  /** Absolute path of the parent the data went into. */
  parent: string;
  /** Blocks of the child examined. */
  blocks: number;
  /** Bytes copied: the sectors set in the child's bitmaps. */
  bytesCopied: number;
}

/** Where coalesce writes: the parent, opened for writing. */
export interface CoalesceTarget {
  readonly path: string;
  readonly size: number;
  write(offset: number, data: Uint8Array): Promise<void>;
  resize(size: number): Promise<void>;
  flush(): Promise<void>;
}

/**
 * Copies every sector set in the bitmaps of the child image (open as `fh`, metadata `image`)
 * into `target` at the same offset, block by block, in runs of consecutive sectors.
 *
 * Safe to interrupt at any point and run again: only sectors the child has its own data for
 * are written, and the child itself is only read, so the child reads the same before, during
 * and after; the parent's writes follow its own crash-safe order.
 */
export async function coalesceInto(fh: FileHandle, path: string, image: VhdImage, target: CoalesceTarget, options: CoalesceOptions): Promise<CoalesceResult> {
  const { onProgress, signal } = options;
  const sparse = image.sparse;
  if (!sparse) throw new TypeError('only a differencing disk can be coalesced');
  // A child grown past its parent: the parent grows first (zeros there, as the child reads).
  if (image.size > target.size) await target.resize(image.size);
  const { bat, blockSize, bitmapBytes, sectorsPerBlock } = sparse;
  let blocksTotal = 0;
  for (const e of bat) if (e !== BAT_UNUSED) blocksTotal++;
  let blocksDone = 0;
  let bytesCopied = 0;
  for (let block = 0; block < bat.length; block++) {
    const entry = bat[block] as number;
    if (entry === BAT_UNUSED) continue;
    if (signal?.aborted) throw abortError(signal);
    const bm = await readExact(fh, entry * 512, bitmapBytes, path, 'sector bitmap');
    const last = Math.min(sectorsPerBlock, (image.size - block * blockSize) / 512);
    for (let s = 0; s < last; ) {
      if (!testBit(bm, s)) {
        s++;
        continue;
      }
      let end = s + 1;
      while (end < last && testBit(bm, end)) end++;
      const data = await readExact(fh, entry * 512 + bitmapBytes + s * 512, (end - s) * 512, path, 'block data');
      await target.write(block * blockSize + s * 512, data);
      bytesCopied += data.length;
      s = end;
    }
    blocksDone++;
    onProgress?.({ blocksDone, blocksTotal, bytesCopied });
  }
  await target.flush();
  return { parent: target.path, blocks: blocksDone, bytesCopied };
}
