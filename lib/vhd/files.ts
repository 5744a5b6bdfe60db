import { type FileHandle, link, open, rename, rm } from 'node:fs/promises';

/**
 * How the VHD engine reaches the file system: every image file it opens (disks, their
 * parents, snapshot children, temporary files of create/import/convert) and every change to
 * a directory entry it makes (the rename or link that puts a new image in place, the removal
 * of a temporary file). Production code uses {@link nodeFiles}; the crash tests substitute a
 * layer that fails after the Nth write, flush, rename or link (see faulty-file.ts), so the
 * crash-safety proof covers the engine's real code paths.
 *
 * @internal
 */
export interface VhdFiles {
  open(path: string, flags: 'r' | 'r+' | 'wx'): Promise<FileHandle>;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, newPath: string): Promise<void>;
  /** Removes a file if it is there (`rm -f`). */
  remove(path: string): Promise<void>;
}

/** @internal */
export const nodeFiles: VhdFiles = {
  open: (path, flags) => open(path, flags),
  rename: (from, to) => rename(from, to),
  link: (existing, newPath) => link(existing, newPath),
  remove: (path) => rm(path, { force: true }),
};

/**
 * Key of the internal options `VirtualDisk.open()`, `import()` and `convert()` accept beside
 * the public ones. A symbol, so it stays out of the public option types and cannot be passed
 * by accident.
 *
 * @internal
 */
export const internalOptions = Symbol('xenode.vhd.internal');

/** @internal */
export interface InternalOpenOptions {
  /** The file layer (default {@link nodeFiles}); parents, children and coalesce targets inherit it. */
  files?: VhdFiles;
  /** Open a hidden disk for writing: only the engine's own maintenance (coalesce) does that. */
  allowHidden?: boolean;
}

/** @internal */
export type WithInternal<T> = T & { [internalOptions]?: InternalOpenOptions };

/** The file layer named in `options`' internal part, or {@link nodeFiles}. @internal */
export function filesOf(options: unknown): VhdFiles {
  return (options as WithInternal<object> | undefined)?.[internalOptions]?.files ?? nodeFiles;
}
