/**
 * The toolstack part of the backend contract: domains, their devices, events, consoles,
 * save/restore, and the host. `XenBackend.openToolstack()` returns a
 * {@link ToolstackConnection}; the native backend implements it over libxl, the mock host
 * over its simulated hypervisor, and test/conformance/toolstack-suite.ts checks both
 * against the same expectations.
 *
 * Rules every implementation follows (in addition to those of lib/backend.ts):
 * - Records cross as plain objects (JSON-safe, no class instances), so an implementation
 *   may live in another process (the mock host's control socket does exactly that).
 * - Units follow {@link DomainConfig}: memory in MiB, CPU time in seconds.
 * - A domid (or name) that names no domain rejects with `ESRCH`, whatever the operation
 *   (native: libxl's `ERROR_DOMAIN_NOTFOUND` and xenctrl's `ESRCH` both become `ESRCH`).
 * - Memory that the host cannot provide rejects with `ENOMEM`, before anything is created.
 * - A request that the domain's state or configuration does not allow (a name already in
 *   use, more vCPUs than its maximum, a target above its maximum memory, a vCPU or a
 *   physical CPU that does not exist) rejects with `XEN_ERROR_INVAL`; a device that is
 *   already attached with `XEN_ERROR_DEVICE_EXISTS`; a device that is not attached with
 *   `XEN_ERROR_NOTFOUND`; a PCI device the host cannot assign with `XEN_ERROR_FAIL`;
 *   a save image that is not one with `XEN_ERROR_INVAL`.
 * - dom0 is listed and can be inspected, but pausing, shutting down or destroying it
 *   rejects with `XEN_ERROR_INVAL`.
 * - Domids are allocated as Xen does: increasing from 1, not reused until they wrap at
 *   32751 (`DOMID_FIRST_RESERVED`).
 * - A pending operation that takes a `signal` rejects with an `AbortError` when it is
 *   aborted; what was already done is undone (a half-created domain is destroyed).
 * - After `close()`, calls reject with `XEN_CLOSED`, event listeners receive nothing
 *   more, and open consoles end. `close()` may be called any number of times.
 * - An idle connection (no call in flight, no console open) does not keep the process
 *   alive; an event subscription does not either.
 */
import type { Duplex, Readable, Writable } from 'node:stream';
import type { DiskConfig, DomainConfig, NicConfig, PciConfig } from './config/domain-config.js';
import type { VirtualDisk } from './vhd/disk.js';

/**
 * A domain's run state, as `xl list` shows it (`r b p s c d`). A domain that is running
 * or runnable is `running`; one waiting for an event is `blocked`.
 */
export type DomainState = 'running' | 'blocked' | 'paused' | 'shutdown' | 'crashed' | 'dying';

/** Why a domain shut down (libxl's `libxl_shutdown_reason`, lower-cased). */
export type ShutdownReason = 'poweroff' | 'reboot' | 'suspend' | 'crash' | 'watchdog' | 'soft_reset' | 'unknown';

/** One domain, as {@link ToolstackConnection.listDomains} and `domainInfo` report it. */
export interface DomainInfo {
  domid: number;
  name: string;
  uuid: string;
  state: DomainState;
  /** Set when `state` is `shutdown` or `crashed`. */
  shutdownReason?: ShutdownReason;
  /** Memory in MiB: what the domain has now, its balloon target, and its maximum. */
  memory: { current: number; target: number; max: number };
  /** vCPUs online now, and the most the domain may bring online. */
  vcpus: { online: number; max: number };
  /** CPU time consumed, in seconds. */
  cpuTime: number;
}

/** The host itself, as `xl info` reports it. */
export interface HostInfo {
  /** The hypervisor's version, e.g. `4.17.3`. */
  xenVersion: string;
  /** What guests the hypervisor can run, e.g. `['xen-3.0-x86_64', 'hvm-3.0-x86_32', …]`. */
  capabilities: string[];
  /** Physical CPUs (threads) and how they are arranged. */
  cpus: number;
  cores: number;
  sockets: number;
  threadsPerCore: number;
  numaNodes: number;
  /** Total and free memory in MiB (free: not given to any domain, as `xl info` free_memory). */
  totalMemory: number;
  freeMemory: number;
  /** The default scheduler, e.g. `credit2`. */
  scheduler: string;
}

/** What {@link ToolstackConnection.attachDevice} attaches. */
export type DeviceSpec =
  | { kind: 'disk'; disk: DiskConfig }
  | { kind: 'nic'; nic: NicConfig }
  | { kind: 'pci'; pci: PciConfig };

/** A device kind as xenstore names it under `device/` and `backend/`. */
export type DeviceKind = 'vbd' | 'vif' | 'pci';

/** A xenbus state (xen/io/xenbus.h), by name. */
export type XenbusState =
  | 'unknown'
  | 'initialising'
  | 'initwait'
  | 'initialised'
  | 'connected'
  | 'closing'
  | 'closed'
  | 'reconfiguring'
  | 'reconfigured';

/** One attached device and where its frontend/backend handshake stands. */
export interface DeviceInfo {
  kind: DeviceKind;
  /** The device id: the `$DEVID` of `device/<kind>/$DEVID`. */
  devid: number;
  /** The backend domain. */
  backendDomid: number;
  /** xenstore paths of both ends. */
  frontendPath: string;
  backendPath: string;
  /** The states (xenbus) of both ends. */
  frontendState: XenbusState;
  backendState: XenbusState;
  /** The configuration it was attached with. */
  config: DiskConfig | NicConfig | PciConfig;
}

/** A domain event (libxl's `DOMAIN_SHUTDOWN` / `DOMAIN_DEATH`, plus creation). */
export type DomainEvent =
  | { type: 'created'; domid: number; name: string }
  | { type: 'shutdown'; domid: number; name: string; reason: ShutdownReason }
  | { type: 'death'; domid: number; name: string };

/** How a domain shuts down: a request to the guest (`control/shutdown`), as `xl shutdown`/`xl reboot` do. */
export type ShutdownRequest = 'poweroff' | 'reboot';

/**
 * What {@link ToolstackConnection.snapshotDisk} did: the disk's image before and after, and
 * how long the backend took no request from the guest.
 */
export interface DiskSnapshot {
  /** The disk, as the guest names it (`xvda`). */
  vdev: string;
  /** The image the disk used until now: hidden and read-only from now on, the child's parent. */
  parent: string;
  /** The new differencing image the backend now reads and writes (absolute path). */
  child: string;
  /**
   * Milliseconds during which the backend took no request off the guest's ring: from the
   * pause, through the flush, the snapshot and the switch, to the resume. The guest kept
   * running; its disk requests waited.
   */
  pausedMs: number;
}

/** Options of the calls that may take long. */
export interface ToolstackCallOptions {
  signal?: AbortSignal;
  /**
   * For `createDomain` and a disk's `attachDevice`: serve the `format: 'vhd'` disks through
   * the lent {@link DiskServer} (see {@link ToolstackConnection.useDiskServer}) so that they
   * can be snapshotted live. Ignored by a backend that serves them so already (the mock).
   */
  serveVhd?: boolean;
}

/**
 * A disk that xenode's block backend serves to a domain, as a toolstack sees it (the
 * `ServedDisk` of `xen.blockBackend.serve()` is one).
 */
export interface ServedDiskHandle {
  /** The disk's name in the guest (`xvda`). */
  readonly vdev: string;
  /** The image the guest's disk reads and writes now (the child, after a live snapshot). */
  readonly path: string;
  /** Whether the guest sees the disk read-only. */
  readonly readOnly: boolean;
  /** Resolves once the disk is no longer served, whoever ended it. Never rejects. */
  readonly closed: Promise<unknown>;
  /** Detaches the disk and closes its image. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * What a toolstack is lent to serve VHD disks itself, where the host's own backends
 * cannot (see {@link ToolstackConnection.useDiskServer}): `xen.blockBackend`, in the
 * process that owns the toolstack connection.
 */
export interface DiskServer {
  /**
   * Serves the opened image `disk` to domain `domid` as its disk `vdev` (the served disk
   * owns the image from then on; on a rejection it is the caller's to close).
   */
  serve(domid: number, vdev: string, disk: VirtualDisk, options: { readOnly: boolean }): Promise<ServedDiskHandle>;
}

/**
 * A toolstack session (libxl's `libxl_ctx`). Every domid argument rejects with `ESRCH`
 * when no such domain exists.
 */
export interface ToolstackConnection {
  /** The host (`libxl_get_physinfo`, `libxl_get_version_info`). */
  hostInfo(): Promise<HostInfo>;
  /**
   * Creates and starts a domain (`libxl_domain_create_new`) from a configuration already
   * validated by the caller. Resolves with its domid once it runs and its devices are
   * connected. Rejects with `ENOMEM` when its memory does not fit, `XEN_ERROR_INVAL`
   * when the name is taken; nothing is left behind on failure or abort.
   */
  createDomain(config: DomainConfig, options?: ToolstackCallOptions): Promise<number>;
  /** Every domain, dom0 first, by domid (`libxl_list_domain`). */
  listDomains(): Promise<DomainInfo[]>;
  /** One domain (`libxl_domain_info`). */
  domainInfo(domid: number): Promise<DomainInfo>;
  /** The domid of the domain called `name` (`libxl_name_to_domid`); `ESRCH` when none is. */
  domidByName(name: string): Promise<number>;
  /** The domain's current configuration, devices and memory/vCPU changes included. */
  domainConfig(domid: number): Promise<DomainConfig>;
  /** `libxl_domain_pause` / `libxl_domain_unpause`. */
  pause(domid: number): Promise<void>;
  unpause(domid: number): Promise<void>;
  /**
   * Asks the guest to power off or reboot (writes `control/shutdown`, as `xl shutdown`
   * does) and resolves once the request is written; the guest acts on it in its own time
   * (not at all while paused). Events tell the outcome.
   */
  shutdown(domid: number, request: ShutdownRequest): Promise<void>;
  /** Destroys the domain at once (`libxl_domain_destroy`); resolves when it is gone. */
  destroy(domid: number): Promise<void>;
  /** Sets the balloon target in MiB (`libxl_set_memory_target`); `XEN_ERROR_INVAL` above the maximum. */
  setMemoryTarget(domid: number, mib: number): Promise<void>;
  /** Sets the maximum memory in MiB (`libxl_domain_setmaxmem`); `XEN_ERROR_INVAL` below the target. */
  setMaxMemory(domid: number, mib: number): Promise<void>;
  /** Brings vCPUs 0..count-1 online and the others offline (`libxl_set_vcpuonline`). */
  setVcpus(domid: number, count: number): Promise<void>;
  /** Pins a vCPU to physical CPUs (`libxl_set_vcpuaffinity`). */
  pinVcpu(domid: number, vcpu: number, cpus: readonly number[]): Promise<void>;
  /** Renames the domain (`libxl_domain_rename`); `XEN_ERROR_INVAL` when the name is taken. */
  rename(domid: number, name: string): Promise<void>;
  /** Attaches a device at run time (`libxl_device_*_add`); resolves once its backend is connected. */
  attachDevice(domid: number, device: DeviceSpec, options?: ToolstackCallOptions): Promise<DeviceInfo>;
  /** Detaches a device (`libxl_device_*_remove`); resolves once both ends are closed and removed. */
  detachDevice(domid: number, kind: DeviceKind, devid: number, options?: ToolstackCallOptions): Promise<void>;
  /** The domain's devices with their handshake state. */
  listDevices(domid: number): Promise<DeviceInfo[]>;
  /**
   * Live snapshot of the running domain's VHD disk `vdev` (blktap2's `tap-ctl pause`, then
   * `unpause -a CHILD`): the disk's backend stops taking guest requests, finishes those it
   * took and flushes them, the image becomes the hidden, read-only parent of a new
   * differencing image at `childPath`, the backend is pointed at the child (xenstore's
   * backend `params` and the domain's configuration name it from then on), and requests
   * flow again. Every write the guest made before the pause is in the parent, every later
   * one in the child; none is lost.
   *
   * Rejects, with nothing changed (the backend running on its old image, no child file):
   * `ESRCH` for no such domain; `XEN_ERROR_INVAL` for dom0 or a domain that is not running
   * (building, shut down, crashed); `XEN_ERROR_NOTFOUND` when no disk `vdev` is attached;
   * `XEN_DISK_NOT_VHD` when the disk is not a VHD image; `EEXIST` when `childPath` exists;
   * the image's own `VHD_…` error when it cannot have a child (too deep a chain, read-only).
   * A backend with no way to switch a running disk to a new image rejects with
   * `XEN_LIVE_SNAPSHOT_UNSUPPORTED` (the native backend on Xen 4.17, unless xenode's own
   * block backend serves the disk: see docs/blkback.md).
   */
  snapshotDisk(domid: number, vdev: string, childPath: string): Promise<DiskSnapshot>;
  /**
   * Optional. Lends the connection a {@link DiskServer} (the `Xen` object does so when it
   * opens the toolstack). A backend whose host cannot serve a VHD disk in a way that can be
   * snapshotted live then serves each `format: 'vhd'` disk of a `createDomain` or
   * `attachDevice` called with `serveVhd` through it, in this process: the disk is reported
   * by `domainConfig` and `listDevices`, `snapshotDisk` switches it live, and it ends with
   * the domain. Where this is absent (the mock host simulates its own), nothing changes.
   */
  useDiskServer?(server: DiskServer): void;
  /**
   * Delivers every domain event from now on to `listener` until the returned function is
   * called (calling it twice is harmless). A subscription does not keep the process alive.
   */
  subscribe(listener: (event: DomainEvent) => void): () => void;
  /**
   * The domain's primary console as a byte stream: reading gives what the guest wrote
   * (what the console ring still holds first), writing types into the guest. Ends when
   * the domain dies.
   */
  openConsole(domid: number): Promise<Duplex>;
  /**
   * Suspends the domain and writes its image to `out` (`libxl_domain_suspend`, as
   * `xl save`): the domain shuts down with reason `suspend` and is destroyed once the
   * image is written. If writing fails, the domain resumes and the call rejects with the
   * stream's error. `out` is not ended.
   */
  save(domid: number, out: Writable, options?: ToolstackCallOptions): Promise<void>;
  /** Restores a domain from an image written by `save` (`libxl_domain_create_restore`); resolves with its new domid. */
  restore(input: Readable, options?: ToolstackCallOptions): Promise<number>;
  /**
   * The sending half of a migration (`libxl_domain_suspend` into the stream, with
   * `LIBXL_SUSPEND_LIVE` when `live`): writes the domain's save image (what `save`
   * writes) to `out` and leaves the domain suspended, neither destroyed nor resumed: the
   * caller destroys it once the destination runs it, or calls `migrateResume`. `live`
   * copies memory while the guest runs and pauses it only for the last pass; a backend
   * that cannot track dirty pages for this guest rejects at once with
   * `XEN_MIGRATION_UNSUPPORTED`, the domain untouched. If writing fails, the domain runs
   * again (resumed) and the call rejects with the stream's error. `out` is not ended.
   */
  migrateSuspend(domid: number, out: Writable, options?: ToolstackCallOptions & { live?: boolean }): Promise<void>;
  /** Resumes a domain `migrateSuspend` left suspended (`libxl_domain_resume`, co-operative): the guest carries on. */
  migrateResume(domid: number): Promise<void>;
  /**
   * The receiving half: restores the image read from `input` (what `save` and
   * `migrateSuspend` write) as a paused domain called `name`, devices connected. Resolves
   * with its domid; nothing is left behind on failure. Unlike `createDomain` it accepts a
   * uuid already in use (the source domain of a migration on the same host).
   */
  migrateRestore(input: Readable, options: ToolstackCallOptions & { name: string }): Promise<number>;
  /** Ends the session. Safe to call twice. */
  close(): Promise<void>;
}

/** The backend member that opens a toolstack session; `XenBackend` extends it. */
export interface ToolstackBackend {
  /**
   * Opens a toolstack session as dom0. The native backend rejects with `XEN_UNAVAILABLE`
   * while its libxl binding is not built.
   */
  openToolstack(): Promise<ToolstackConnection>;
}
