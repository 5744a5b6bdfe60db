import { XenError } from '../errors.js';

/** The `VHD_…` codes a {@link XenError} from the VHD engine may carry (see docs/errors.md). */
export type VhdErrorCode =
  | 'VHD_BAD_FOOTER'
  | 'VHD_BAD_HEADER'
  | 'VHD_BAD_CHECKSUM'
  | 'VHD_BAD_BAT'
  | 'VHD_TRUNCATED'
  | 'VHD_PARENT_MISSING'
  | 'VHD_PARENT_MISMATCH'
  | 'VHD_PARENT_CYCLE'
  | 'VHD_TOO_LARGE'
  | 'VHD_CHAIN_TOO_DEEP'
  | 'VHD_READ_ONLY'
  | 'VHD_UNSUPPORTED'
  | 'VHD_SHRINK_LOSES_DATA'
  | 'VHD_NOT_DIFFERENCING';

/** A disk-format fault in the file at `path`. */
export function vhdError(code: VhdErrorCode, message: string, path: string, op = 'vhd.open'): XenError {
  return new XenError(code, `${code}: ${message} (${path})`, { op, path });
}

/** A file-system failure (`ENOENT`, `EEXIST`, …) as a XenError naming the step and file. */
export function fsError(err: unknown, op: string, path: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || err instanceof XenError || (err as Error).name === 'AbortError') return err;
  return new XenError(code, `${code}: ${(err as Error).message}`, { op, path, cause: err });
}
