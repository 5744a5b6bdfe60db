/**
 * The typed contract of the raw addon (native/addon.cc), as node-gyp-build loads it.
 * Declarations only: tsc does not emit a .d.ts input, so `npm run build` copies this file
 * into dist/native/ beside the declarations that import it (scripts/finish-build.mjs).
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
  /** An errno name (`ENOENT` …), `XEN_UNAVAILABLE`, `XEN_CLOSED`, `XEN_VERSION_MISMATCH`, or `XEN_ERROR_<NAME>` from libxl. */
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

/**
 * One libxl context (`libxl_ctx *`), from {@link NativeAddon.openLibxl}. libxl data
 * crosses as JSON text (libxl's own `_to_json` / `_from_json`). Every method returns a
 * promise; failures reject with a {@link RawXenError} whose code is `XEN_ERROR_<NAME>`
 * for libxl's `ERROR_<NAME>`, `op` the libxl function and `domid` the domain. Long
 * operations (create, restore, destroy, suspend, Remus, devices) are libxl asynchronous
 * operations: no thread waits for them, and while one runs (or a death watch is set)
 * the handle keeps the process alive. A domid outside 0..32751 is a RangeError.
 */
export interface XlHandle {
  /** True once `close()` has been called. */
  readonly closed: boolean;
  /** The running hypervisor's version, e.g. `'4.17.7'`. */
  readonly xenVersion: string;
  /** `libxl_domain_config_from_json` + `libxl_domain_create_new`: the new domid. The domain is left paused. */
  createDomain(configJson: string): Promise<number>;
  /** `libxl_domain_create_restore` from a save stream on `fd` (kept open until it settles): the new domid, paused. */
  restoreDomain(configJson: string, fd: number, paramsJson?: string): Promise<number>;
  /** `libxl_domain_destroy`. */
  destroyDomain(domid: number): Promise<void>;
  /** `libxl_domain_shutdown`: asks the guest; watch the domain to see it go. */
  shutdownDomain(domid: number): Promise<void>;
  /** `libxl_domain_reboot`: asks the guest. */
  rebootDomain(domid: number): Promise<void>;
  /** `libxl_domain_pause`. */
  pauseDomain(domid: number): Promise<void>;
  /** `libxl_domain_unpause`. */
  unpauseDomain(domid: number): Promise<void>;
  /** `libxl_list_domain`: a JSON array of `libxl_dominfo`. */
  listDomains(): Promise<string>;
  /** `libxl_domain_info`: one `libxl_dominfo` as JSON. */
  domainInfo(domid: number): Promise<string>;
  /** `libxl_retrieve_domain_configuration` + `libxl_domain_config_to_json`. */
  domainConfig(domid: number): Promise<string>;
  /** `libxl_set_memory_target`, in KiB (negative only when `relative`). */
  setMemoryTarget(domid: number, targetKiB: number, relative: boolean, enforce: boolean): Promise<void>;
  /** `libxl_domain_setmaxmem`, in KiB. */
  setMaxMemory(domid: number, maxKiB: number): Promise<void>;
  /** `libxl_set_vcpuonline` with vcpus `0..count-1` online. */
  setVcpuCount(domid: number, count: number): Promise<void>;
  /** `libxl_device_<kind>_from_json` + `libxl_device_<kind>_add`. */
  addDevice(domid: number, kind: 'disk' | 'nic' | 'pci', deviceJson: string): Promise<void>;
  /** `libxl_device_<kind>_from_json` + `libxl_device_<kind>_remove`. */
  removeDevice(domid: number, kind: 'disk' | 'nic' | 'pci', deviceJson: string): Promise<void>;
  /** `libxl_domain_suspend` writing the save stream to `fd`; the domain is left suspended (destroy it, as `xl save` does). */
  suspendDomain(domid: number, fd: number, live: boolean, debug: boolean): Promise<void>;
  /** `libxl_domain_resume` of a domain `suspendDomain` left suspended; `suspendCancel`: the guest's co-operative resume. Absent from older builds. */
  resumeDomain?(domid: number, suspendCancel: boolean): Promise<void>;
  /** `libxl_domain_remus_start`: settles only when replication stops. */
  remusStart(domid: number, infoJson: string, sendFd: number, recvFd: number): Promise<void>;
  /** `libxl_evenable_domain_death`: a watch id; its events reach `onEvent` with `for_user` = that id. */
  watchDomain(domid: number): Promise<number>;
  /** `libxl_evdisable_domain_death`; an unknown id is not an error. */
  unwatchDomain(watchId: number): Promise<void>;
  /** `libxl_console_get_tty`: the pty path. */
  consoleTty(domid: number, consoleNumber: number, type: 'pv' | 'serial'): Promise<string>;
  /** `libxl_domain_rename`; with `oldName`, only if the domain is still called that. */
  renameDomain(domid: number, newName: string, oldName?: string): Promise<void>;
  /**
   * Rejects pending calls with `XEN_CLOSED` at once, aborts the asynchronous operations
   * in flight (`libxl_ao_abort`), waits for them, then frees the context. Safe to call twice.
   */
  close(): Promise<void>;
}

/** The libxl types {@link NativeAddon.validateLibxlJson} can parse. */
export type LibxlJsonType = 'domain_config' | 'device_disk' | 'device_nic' | 'device_pci' | 'domain_restore_params' | 'domain_remus_info';

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
  /**
   * Loads libxentoollog.so.1 and libxenlight.so.<ver> (XEN_UNAVAILABLE naming the
   * missing one and the fix; XEN_VERSION_MISMATCH when the host has another Xen's
   * libxenlight or runs another Xen), then `libxl_ctx_alloc` (XEN_UNAVAILABLE, with what
   * libxl logged, off a dom0). `onEvent` receives each domain event as libxl's JSON
   * (`libxl_event_to_json`); `onError`, a `XEN_LIBXL_DISASTER` error if libxl can no
   * longer report events (the context should then be closed).
   * Absent from addons built before libxl was bound.
   */
  openLibxl?(onEvent: (eventJson: string) => void, onError: (err: RawXenError) => void): Promise<XlHandle>;
  /**
   * libxl's own parser (`libxl_<type>_from_json`) on `json`, resolving with libxl's
   * re-serialisation (`_to_json`) of what it understood. Needs libxenlight installed but
   * no hypervisor: it runs in a private copy of the library. Rejects with
   * `XEN_ERROR_<NAME>` and libxl's log lines in the message when libxl refuses it.
   */
  validateLibxlJson?(type: LibxlJsonType, json: string): Promise<string>;
  /** `pipe2(O_CLOEXEC)`: `[readFd, writeFd]`, blocking, for libxl's save and migration streams. Absent from older builds. */
  makePipe?(): [number, number];
  /** renameat2(a, b, RENAME_EXCHANGE): swaps two names atomically (absent from builds before it). */
  exchangeFiles?(a: string, b: string): Promise<void>;
  /** The class of libxl contexts; not constructible from JavaScript. */
  readonly XlHandle?: abstract new (...args: never[]) => XlHandle;
}
