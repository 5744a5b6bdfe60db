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
  /** An errno name (`ENOENT` …), `XEN_UNAVAILABLE`, `XEN_CLOSED` or `XEN_VERSION_MISMATCH`. */
  code: string;
  /** The numeric errno, when the failure came from one. */
  errno?: number;
  /** The C function that failed: `xs_read`, `xs_open`, `dlopen` … */
  op: string;
  /** The XenStore path (or socket path) concerned, when there is one. */
  path?: string;
  /** The domain concerned, when there is one. */
  domid?: number;
  /** The event channel port concerned, when there is one. */
  port?: number;
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

/**
 * An open `/dev/xen/evtchn` (`xenevtchn_handle *`). Requests run on the pool and may
 * overlap. Events reach the `onEvent` callback given to
 * {@link NativeAddon.openEventChannels}; the handle keeps the process alive only while
 * `keepAlive(true)` is in force.
 */
export interface EvtchnHandle {
  readonly closed: boolean;
  /** `xenevtchn_bind_unbound_port`: the new local port. */
  bindUnbound(remoteDomid: number): Promise<number>;
  /** `xenevtchn_bind_interdomain`: the new local port. */
  bindInterdomain(remoteDomid: number, remotePort: number): Promise<number>;
  /** `xenevtchn_bind_virq`: the new local port. */
  bindVirq(virq: number): Promise<number>;
  /** `xenevtchn_notify`. */
  notify(port: number): Promise<void>;
  /** `xenevtchn_unbind`. */
  unbind(port: number): Promise<void>;
  /** Refs (true) or unrefs the handle's uv_poll. Synchronous. */
  keepAlive(on: boolean): void;
  /** `xenevtchn_close` once running requests are back (it unbinds every port). Safe to call twice. */
  close(): Promise<void>;
}

/** A region of a {@link GntHandle}: `buffer` is external memory, detached by `unmap`. */
export interface RawGrantRegion {
  id: number;
  buffer: ArrayBuffer;
}

/**
 * An open gntdev + gntalloc pair (`xengnttab_handle *`, `xengntshr_handle *`). `share` and
 * `map` run on the pool; `unmap` is synchronous (it detaches the region's ArrayBuffer,
 * then unmaps). A region whose ArrayBuffer is collected without `unmap` is unmapped then.
 */
export interface GntHandle {
  readonly closed: boolean;
  /** `xengntshr_share_pages`; XEN_UNAVAILABLE when /dev/xen/gntalloc could not be opened. */
  share(domid: number, count: number, writable: boolean): Promise<RawGrantRegion & { refs: number[] }>;
  /** `xengnttab_map_domain_grant_refs`. */
  map(domid: number, refs: readonly number[], writable: boolean): Promise<RawGrantRegion>;
  /** `xengnttab_unmap` / `xengntshr_unshare`; false when `id` is not mapped. */
  unmap(id: number): boolean;
  /** Unmaps every region, then closes both devices. Safe to call twice. */
  close(): Promise<void>;
}

/** `xc_version`: the hypervisor's version and capabilities string. */
export interface RawXenVersion {
  major: number;
  minor: number;
  /** XENVER_extraversion, e.g. `'.7'`. */
  extra: string;
  /** XENVER_capabilities, e.g. `'xen-3.0-x86_64 hvm-3.0-x86_32 …'`. */
  capabilities: string;
  changeset: string;
}

/** `xc_physinfo` (struct xen_sysctl_physinfo), pages as numbers. */
export interface RawPhysinfo {
  threadsPerCore: number;
  coresPerSocket: number;
  nrCpus: number;
  maxCpuId: number;
  nrNodes: number;
  maxNodeId: number;
  cpuKhz: number;
  /** XEN_SYSCTL_PHYSCAP_* bits. */
  capabilities: number;
  totalPages: number;
  freePages: number;
  scrubPages: number;
  outstandingPages: number;
  maxMfn: number;
  hwCap: number[];
}

/** One `xc_domaininfo_t` of `xc_domain_getinfolist`, flags decoded. */
export interface RawDomainInfo {
  domid: number;
  flags: number;
  dying: boolean;
  hvm: boolean;
  shutdown: boolean;
  shutdownReason: number;
  paused: boolean;
  blocked: boolean;
  running: boolean;
  debugged: boolean;
  xenstoreDomain: boolean;
  hap: boolean;
  totPages: number;
  maxPages: number;
  outstandingPages: number;
  sharedPages: number;
  pagedPages: number;
  cpuTimeNs: number;
  onlineVcpus: number;
  maxVcpuId: number;
  ssidref: number;
  cpupool: number;
  /** The domain handle (UUID), formatted. */
  handle: string;
}

/** `xc_mca_op(XEN_MC_fetch)`: XEN_MC_* result flags, the id to acknowledge, a struct mc_info. */
export interface RawMcaFetch {
  flags: number;
  fetchId: number;
  data: Buffer;
}

/** An open `xc_interface *`. Every request is a hypercall on the pool. */
export interface XcHandle {
  readonly closed: boolean;
  version(): Promise<RawXenVersion>;
  physinfo(): Promise<RawPhysinfo>;
  /** Up to `max` (1..1024) domains from `firstDomid` on. */
  domainList(firstDomid: number, max: number): Promise<RawDomainInfo[]>;
  pause(domid: number): Promise<void>;
  unpause(domid: number): Promise<void>;
  setMaxMem(domid: number, maxMemKb: number): Promise<void>;
  getVcpuAffinity(domid: number, vcpu: number): Promise<{ hard: number[]; soft: number[] }>;
  /** `null` leaves that affinity alone; `maxCpus` bounds the CPU numbers (physinfo maxCpuId + 1). */
  setVcpuAffinity(domid: number, vcpu: number, hard: readonly number[] | null, soft: readonly number[] | null, maxCpus: number): Promise<void>;
  memshrControl(domid: number, enable: boolean): Promise<void>;
  /** `xc_sharing_freed_pages` and `xc_sharing_used_frames`. */
  sharingStats(): Promise<{ freedPages: number; usedFrames: number }>;
  /** `XEN_MC_fetch`, urgent or not, acknowledging `ackFetchId` when given. */
  mcaFetch(urgent: boolean, ackFetchId: number | null): Promise<RawMcaFetch>;
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

  // ---- The hypervisor interfaces (native/evtchn.cc, gnttab.cc, xenctrl.cc) ----

  /**
   * Loads libxentoollog.so.1 and libxenevtchn.so.1, then opens /dev/xen/evtchn
   * (XEN_UNAVAILABLE naming what is missing). `onEvent` receives every event's port.
   */
  openEventChannels(onEvent: (port: number) => void): Promise<EvtchnHandle>;
  readonly EvtchnHandle: abstract new (...args: never[]) => EvtchnHandle;
  /** Loads libxengnttab.so.1, then opens /dev/xen/gntdev (and /dev/xen/gntalloc if it can). */
  openGrants(): Promise<GntHandle>;
  readonly GntHandle: abstract new (...args: never[]) => GntHandle;
  /**
   * Loads libxenctrl.so.<major.minor of xenVersion> and opens /dev/xen/privcmd.
   * XEN_VERSION_MISMATCH when only another release's libxenctrl is installed, or when
   * the hypervisor is another release; XEN_UNAVAILABLE when there is none.
   */
  openXenCtrl(): Promise<XcHandle>;
  readonly XcHandle: abstract new (...args: never[]) => XcHandle;
  /**
   * The release check `openXenCtrl` makes, alone, for a `xc_version(XENVER_version)`
   * value (`major << 16 | minor`): null when it matches the build, else the
   * XEN_VERSION_MISMATCH error. `$XENODE_TEST_XEN_BUILD_VERSION` stands in for the build's
   * version in both (a test seam).
   */
  checkXenRelease(xenver: number): RawXenError | null;
}
