import { type FileHandle, link, open, rename, rm } from 'node:fs/promises';
import { loadAddon } from '../native/load.js';

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
  /** Puts the file at `from` in place at `to`, atomically, as rename(2) does; `from` is gone after. */
  rename(from: string, to: string): Promise<void>;
  link(existing: string, newPath: string): Promise<void>;
  /** Removes a file if it is there (`rm -f`). */
  remove(path: string): Promise<void>;
}

/** The addon's renameat2(RENAME_EXCHANGE), null where the addon is not built (or predates it). */
let exchanger: ((a: string, b: string) => Promise<void>) | null | undefined;

function exchangeFiles(): ((a: string, b: string) => Promise<void>) | null {
  if (exchanger === undefined) {
    try {
      const addon = loadAddon();
      exchanger = typeof addon.exchangeFiles === 'function' ? addon.exchangeFiles.bind(addon) : null;
    } catch {
      exchanger = null;
    }
  }
  return exchanger;
}

/** Codes of a file system or kernel without RENAME_EXCHANGE, or of `to` not being there: rename instead. */
const RENAME_INSTEAD = new Set(['ENOENT', 'EINVAL', 'ENOSYS', 'ENOTSUP', 'EOPNOTSUPP']);

/**
 * Puts `from` in place at `to`. Over an existing file: exchanges the two names
 * (renameat2 RENAME_EXCHANGE, through the native addon), then removes the old file under
 * `from`'s name. Atomic for `to` as rename(2) is, but cheaper on ext4: a rename over an
 * existing file makes ext4 (auto_da_alloc) write out the new file's delayed-allocation data
 * inside the call, hundreds of milliseconds for a gigabyte image; an exchange does not. A
 * crash between the two steps leaves the old image under the temporary name, which is what
 * a crash may leave anyway. Plain rename(2) where `to` does not exist, without the addon,
 * or on a file system that cannot exchange.
 */
export async function replaceFile(from: string, to: string): Promise<void> {
  const exchange = exchangeFiles();
  if (exchange === null) return rename(from, to);
  try {
    await exchange(from, to);
  } catch (err) {
    if (RENAME_INSTEAD.has((err as { code?: string }).code ?? '')) return rename(from, to);
    throw err;
  }
  // `to` is the new image now, whatever happens here: a failure to remove the old one
  // leaves it under the temporary name, as a crash would.
  await rm(from, { force: true }).catch(() => undefined);
}

/** @internal */
export const nodeFiles: VhdFiles = {
  open: (path, flags) => open(path, flags),
  rename: replaceFile,
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
