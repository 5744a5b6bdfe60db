import { type FileHandle, open } from 'node:fs/promises';

/**
 * How the VHD engine opens image files. Production code uses {@link nodeFiles}; the crash
 * tests substitute a layer that fails after the Nth write or flush (see faulty-file.ts).
 *
 * @internal
 */
export interface VhdFiles {
  open(path: string, flags: 'r' | 'r+' | 'wx'): Promise<FileHandle>;
}

/** @internal */
export const nodeFiles: VhdFiles = {
  open: (path, flags) => open(path, flags),
};

/**
 * Key of the internal options `VirtualDisk.open()` accepts beside the public ones. A symbol,
 * so it stays out of the public option types and cannot be passed by accident.
 *
 * @internal
 */
export const internalOptions = Symbol('xenode.vhd.internal');

/** @internal */
export interface InternalOpenOptions {
  /** The file layer (default {@link nodeFiles}); parents and coalesce targets inherit it. */
  files?: VhdFiles;
  /** Open a hidden disk for writing: only the engine's own maintenance (coalesce) does that. */
  allowHidden?: boolean;
}

/** @internal */
export type WithInternal<T> = T & { [internalOptions]?: InternalOpenOptions };
