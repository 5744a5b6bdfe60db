import { constants } from 'node:os';
import type { VhdErrorCode } from './vhd/errors.js';

/**
 * Every code a {@link XenError} may carry. Each one has a heading in docs/errors.md.
 *
 * - errno names (`ENOENT`, `EACCES`, `EAGAIN`, …) for failures reported by Xen or xenstored;
 * - `XEN_UNAVAILABLE`: the native backend cannot load a Xen library or the addon;
 * - `XEN_CLOSED`: the handle was closed before or while the operation ran;
 * - `XEN_VERSION_MISMATCH`: the host runs another Xen release than the toolstack part
 *   (libxenctrl) was built for; XenStore, event channels and grant tables still work;
 * - `XEN_PROTOCOL`: a peer sent something the XenStore wire protocol does not allow;
 * - `XEN_INVALID_CONFIG`: a domain configuration (object or xl.cfg text) is wrong (`field` names what);
 * - `XEN_MIGRATION_REFUSED` / `_FAILED` / `_UNCONFIRMED` / `_UNSUPPORTED`: a migration's
 *   destination said no, a migration broke (the source runs on), broke after the
 *   hand-over (the source waits, suspended), or cannot be live on this host;
 * - `VHD_…`: a fault in a VHD disk image, or a use of one its state forbids (`path` names the file).
 */
export type XenErrorCode =
  | 'EINVAL'
  | 'EACCES'
  | 'EEXIST'
  | 'EISDIR'
  | 'ENOENT'
  | 'ENOMEM'
  | 'ENOSPC'
  | 'EIO'
  | 'ENOTEMPTY'
  | 'ENOSYS'
  | 'EROFS'
  | 'EBUSY'
  | 'EAGAIN'
  | 'EISCONN'
  | 'E2BIG'
  | 'EPERM'
  | 'XEN_UNAVAILABLE'
  | 'XEN_CLOSED'
  | 'XEN_VERSION_MISMATCH'
  | 'ESRCH'
  | 'ENOTCONN'
  | 'XEN_PROTOCOL'
  | 'XEN_INVALID_CONFIG'
  | 'XEN_MIGRATION_REFUSED'
  | 'XEN_MIGRATION_FAILED'
  | 'XEN_MIGRATION_UNCONFIRMED'
  | 'XEN_MIGRATION_UNSUPPORTED'
  | VhdErrorCode
  | (string & {});

/** Details a {@link XenError} may carry about what it concerns. */
export interface XenErrorDetails {
  /** The operation that failed, e.g. `xenstore.read` or `XS_WRITE`. */
  op?: string;
  /** The XenStore path (or file path) the operation concerned. */
  path?: string;
  /** The domain the operation concerned. */
  domid?: number;
  /** The event channel port the operation concerned. */
  port?: number;
  /** The numeric errno, where the failure came from one. */
  errno?: number;
  /** The underlying error, if any. */
  cause?: unknown;
  /** For `XEN_INVALID_CONFIG`: the configuration field at fault, e.g. `memory` or `disks[1].vdev`. */
  field?: string;
  /** For `XEN_INVALID_CONFIG` from xl.cfg text: the 1-based line at fault. */
  line?: number;
}

const errnoByName = constants.errno as Record<string, number>;

/**
 * The one error class xenode throws for failures of Xen, xenstored, the mock host or the
 * native libraries. Wrong arguments are `TypeError` / `RangeError` instead, thrown before
 * anything is sent to a backend.
 *
 * @example
 * ```ts
 * import { connect, XenError } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * try {
 *   await xen.xenstore.read('/no/such/node');
 * } catch (err) {
 *   if (err instanceof XenError && err.code === 'ENOENT') console.log('absent:', err.path);
 * }
 * await xen.close();
 * ```
 */
export class XenError extends Error {
  /** A documented code: an errno name or one of the `XEN_…` codes. */
  readonly code: XenErrorCode;
  /** The numeric errno when the code is an errno name. */
  readonly errno: number | undefined;
  /** The operation that failed. */
  readonly op: string | undefined;
  /** The XenStore path (or file) concerned. */
  readonly path: string | undefined;
  /** The domain concerned. */
  readonly domid: number | undefined;
  /** The event channel port concerned. */
  readonly port: number | undefined;
  /** The configuration field concerned (`XEN_INVALID_CONFIG`). */
  readonly field: string | undefined;
  /** The xl.cfg line concerned (`XEN_INVALID_CONFIG`). */
  readonly line: number | undefined;

  constructor(code: XenErrorCode, message: string, details: XenErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'XenError';
    this.code = code;
    this.errno = details.errno ?? errnoByName[code];
    this.op = details.op;
    this.path = details.path;
    this.domid = details.domid;
    this.port = details.port;
    this.field = details.field;
    this.line = details.line;
  }

  /** Builds an error from an errno name such as `ENOENT`, with a message naming op and path. */
  static fromErrno(code: string, details: XenErrorDetails = {}): XenError {
    const where = [details.op, details.path].filter(Boolean).join(' ');
    const text = errnoText[code] ?? code;
    return new XenError(code, where ? `${code}: ${text} (${where})` : `${code}: ${text}`, details);
  }
}

const errnoText: Record<string, string> = {
  EINVAL: 'invalid argument or path',
  EACCES: 'permission denied',
  EEXIST: 'already exists',
  EISDIR: 'is a directory',
  ENOENT: 'no such node',
  ENOMEM: 'out of memory',
  ENOSPC: 'quota exceeded',
  EIO: 'input/output error',
  ENOTEMPTY: 'not empty',
  ENOSYS: 'operation not supported',
  EROFS: 'read-only',
  EBUSY: 'busy',
  EAGAIN: 'transaction conflict, try again',
  EISCONN: 'already connected',
  E2BIG: 'reply too large',
  EPERM: 'operation not permitted',
  EQUOTA: 'quota exceeded',
  ESRCH: 'no such domain',
  ENOTCONN: 'port not bound by this handle',
};

/** The error a closed handle's operations reject with. */
export function closedError(op: string): XenError {
  return new XenError('XEN_CLOSED', `${op}: the handle is closed`, { op });
}

/** The `AbortError` a `{ signal }` option rejects with, carrying the signal's reason. */
export function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  (err as Error & { code: string }).code = 'ABORT_ERR';
  return err;
}
