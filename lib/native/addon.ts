/**
 * The typed contract of the raw addon (native/addon.cc), as node-gyp-build loads it
 * (types only: a .ts file rather than a .d.ts so that tsc carries it into dist/).
 * Only lib/native/ uses it; everything else goes through the XenBackend contract
 * (lib/backend.ts).
 *
 * Rules every export follows:
 * - An argument of the wrong type throws `TypeError` / `RangeError` synchronously (a
 *   string with a NUL character included: C would silently cut it short).
 * - Blocking C calls run on the libuv thread pool; their promises reject with a
 *   {@link RawXenError}, which lib/native/errors.ts turns into a `XenError`.
 * - Closing is idempotent; every pending and later call rejects with `XEN_CLOSED`.
 */

/** The error the addon rejects with, made in native/errors.cc: a plain `Error` with these fields. */
export interface RawXenError extends Error {
  name: 'XenError';
  /** An errno name (`ENOENT` …), `XEN_UNAVAILABLE` or `XEN_CLOSED`. */
  code: string;
  /** The numeric errno, when the failure came from one. */
  errno?: number;
  /** The C function that failed: `xs_read`, `xs_open`, `dlopen` … */
  op: string;
  /** The XenStore path (or socket path) concerned, when there is one. */
  path?: string;
}

/** One entry of a node's permission list, as `xs_get_permissions` returns it. */
export interface RawPermission {
  domid: number;
  read: boolean;
  write: boolean;
}

/**
 * One libxenstore connection (`struct xs_handle *` from `xs_open(XS_UNWATCH_FILTER)`).
 * Requests run one at a time, in call order. Watch events reach the `onWatchEvent`
 * callback given to {@link NativeAddon.openXenStore}, never before the `watch()` that
 * registered them has resolved. While a watch is registered the handle keeps the
 * process alive; otherwise it does not.
 *
 * When xenstored goes away, the request that finds out and every later one reject with
 * `XEN_CLOSED` carrying the errno, and `onLost` is called once. A handle that only
 * waits for watch events finds out within about a second (libxenstore does not signal
 * it, so the handle looks while a watch is registered).
 */
export interface XsHandle {
  /** True once `close()` has been called. */
  readonly closed: boolean;
  /**
   * `'socket'` when xenstored's unix socket (`$XENSTORED_PATH` or the default) exists,
   * which libxenstore prefers; `'device'` when it fell back to the xenbus device.
   */
  readonly transport: 'socket' | 'device';
  /** `xs_read`. */
  read(tx: number, path: string): Promise<Buffer>;
  /** `xs_write`; the bytes are copied before the call returns. */
  write(tx: number, path: string, value: Uint8Array): Promise<void>;
  /** `xs_mkdir`. */
  mkdir(tx: number, path: string): Promise<void>;
  /** `xs_rm`. */
  rm(tx: number, path: string): Promise<void>;
  /** `xs_directory` (libxenstore falls back to `XS_DIRECTORY_PART` by itself). */
  directory(tx: number, path: string): Promise<string[]>;
  /** `xs_get_permissions`: owner first. */
  getPermissions(tx: number, path: string): Promise<RawPermission[]>;
  /** `xs_set_permissions`; each `domid` must be in 0..65535. */
  setPermissions(tx: number, path: string, perms: readonly RawPermission[]): Promise<void>;
  /** `xs_transaction_start`: a transaction id, never 0. */
  transactionStart(): Promise<number>;
  /** `xs_transaction_end(h, tx, !commit)`: EAGAIN when a commit conflicts. */
  transactionEnd(tx: number, commit: boolean): Promise<void>;
  /** `xs_watch`. */
  watch(path: string, token: string): Promise<void>;
  /** `xs_unwatch`; no event of that watch is delivered once it resolves. */
  unwatch(path: string, token: string): Promise<void>;
  /** `xs_get_domain_path`. */
  getDomainPath(domid: number): Promise<string>;
  /**
   * Rejects pending requests with `XEN_CLOSED` at once, then `xs_close` once the running
   * one has come back. Resolves when the connection is closed. Safe to call twice.
   */
  close(): Promise<void>;
}

/** What `require('node-gyp-build')(root)` returns for xenode. */
export interface NativeAddon {
  /** The Xen version whose headers the addon was built against, e.g. `'4.17.0'`. */
  readonly xenVersion: string;
  /**
   * Loads libxenstore.so.4 (XEN_UNAVAILABLE naming it and the fix when it is missing),
   * then `xs_open` (XEN_UNAVAILABLE with the errno when no xenstored can be reached).
   * `onWatchEvent` receives every watch event; `onLost`, the `XEN_CLOSED` error once if
   * the connection to xenstored is lost (never after `close()`).
   */
  openXenStore(onWatchEvent: (path: string, token: string) => void, onLost?: (err: RawXenError) => void): Promise<XsHandle>;
  /** The class of the handles; not constructible from JavaScript. */
  readonly XsHandle: abstract new (...args: never[]) => XsHandle;
}
