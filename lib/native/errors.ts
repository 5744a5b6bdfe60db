/**
 * Raw addon errors (see {@link RawXenError}) become {@link XenError}s here. They are
 * re-created rather than re-labelled: the new error is made after the caller's `await`
 * resumed, so its stack shows the caller, where the addon's had no JavaScript frames.
 */
import { XenError } from '../errors.js';
import type { RawXenError } from './addon.js';

/** True for an error made by native/errors.cc. */
export function isRawXenError(err: unknown): err is RawXenError {
  return err instanceof Error && err.name === 'XenError' && !(err instanceof XenError) && typeof (err as RawXenError).code === 'string';
}

/**
 * The XenError for a raw addon error; anything else (a TypeError from argument checks)
 * is returned unchanged. Failures of a request are named after the contract-level
 * operation `op` (`xenstore.read` …), as the other backends name them. XEN_UNAVAILABLE
 * and XEN_VERSION_MISMATCH keep the step that failed (`dlopen`, `xs_open`), which is
 * what tells the fix. `domid` and `port` are carried over.
 */
export function fromNative(err: unknown, op: string, path?: string): unknown {
  if (!isRawXenError(err)) return err;
  const where = path ?? err.path;
  const about = { domid: err.domid, port: err.port };
  if (err.code === 'XEN_UNAVAILABLE' || err.code === 'XEN_VERSION_MISMATCH') {
    return new XenError(err.code, err.message, { op: err.op, path: where, errno: err.errno, ...about });
  }
  if (!err.code.startsWith('XEN_')) {
    // The hypervisor interfaces add what the library logged: keep it, it tells why.
    const detail = err.op.startsWith('xs_') ? '' : err.message.replace(/^[^)]*\)(: )?/, '');
    const e = XenError.fromErrno(err.code, { op, path: where, errno: err.errno, ...about });
    return detail ? new XenError(err.code, `${e.message}: ${detail}`, { op, path: where, errno: err.errno, ...about }) : e;
  }
  // The addon's messages start with the C function ("xs_read: the handle is closed").
  const prefix = `${err.op}: `;
  const message = err.message.startsWith(prefix) ? `${op}: ${err.message.slice(prefix.length)}` : err.message;
  return new XenError(err.code, message, { op, path: where, errno: err.errno, ...about });
}
