/**
 * The backend contract. xenode's public classes talk to Xen only through these
 * interfaces; the mock host (lib/mock/) and the native adapter (lib/native/) implement
 * them, and the conformance suite in test/conformance/ checks every implementation
 * against the same expectations.
 *
 * Rules every implementation follows:
 * - Failures reject with {@link XenError}: an errno name as `code` for anything xenstored
 *   or Xen reports (`ENOENT`, `EACCES`, `EAGAIN`, `EINVAL`, `ENOSPC`, `E2BIG`, …), with
 *   `op` and `path` set; the mock uses exactly the codes the real daemon would.
 * - Once `close()` has been called, every pending and later call rejects with
 *   `XEN_CLOSED`; `close()` itself may be called any number of times.
 * - Nothing blocks the Node event loop: blocking C calls run on other threads and
 *   file descriptors are polled by libuv.
 * - An idle connection (no request in flight, no watch registered) does not keep the
 *   process alive.
 */
import type { XsPermission } from './xenstore/wire.js';

export type { XsPermission } from './xenstore/wire.js';
import type { ToolstackBackend } from './backend-toolstack.js';
export type * from './backend-toolstack.js';

/** Transaction id 0: the operation is not part of a transaction. */
export const NO_TRANSACTION = 0;

/**
 * One connection to a xenstored, at the level of its requests (docs/misc/xenstore.txt).
 * Paths are passed through unchanged: absolute (`/local/domain/0/name`), relative to the
 * connection's domain home (`name`), or special (`@introduceDomain`, `@releaseDomain`,
 * for watches only). Validating them is the daemon's job: a bad path rejects with EINVAL.
 *
 * `tx` is a transaction id from {@link XenStoreConnection.transactionStart}, or
 * {@link NO_TRANSACTION}.
 */
export interface XenStoreConnection {
  /**
   * The domain this connection acts as, when the implementation knows it (the mock
   * host's connections do; a socket to a real xenstored is dom0).
   */
  readonly domid: number | undefined;

  /** `XS_READ`: the node's value. ENOENT when absent, EACCES without read permission. */
  read(tx: number, path: string): Promise<Buffer>;
  /**
   * `XS_WRITE`: creates the node (and missing parents, owned like a new node) or replaces
   * its value. EACCES without write permission on the node (or on the nearest existing
   * ancestor when it is created); ENOSPC past an unprivileged domain's quota;
   * E2BIG when path plus value exceed the 4096-byte payload.
   */
  write(tx: number, path: string, value: Uint8Array): Promise<void>;
  /** `XS_MKDIR`: like write with an empty value, but leaves an existing node untouched. */
  mkdir(tx: number, path: string): Promise<void>;
  /** `XS_RM`: removes the node and everything below it. ENOENT only when the parent is missing too. */
  rm(tx: number, path: string): Promise<void>;
  /** `XS_DIRECTORY` (falling back to `XS_DIRECTORY_PART` where the list is large): child names. */
  directory(tx: number, path: string): Promise<string[]>;
  /** `XS_GET_PERMS`: the permission list, owner first. */
  getPermissions(tx: number, path: string): Promise<XsPermission[]>;
  /** `XS_SET_PERMS`: replaces the list. Only the owner or a privileged domain may; EINVAL for an empty list. */
  setPermissions(tx: number, path: string, perms: readonly XsPermission[]): Promise<void>;
  /** `XS_TRANSACTION_START`: a new transaction id (never 0). */
  transactionStart(): Promise<number>;
  /**
   * `XS_TRANSACTION_END`: commits (`commit = true`) or discards the transaction. A commit
   * rejects with EAGAIN when a node the transaction read or wrote changed meanwhile; the
   * transaction is gone either way.
   */
  transactionEnd(tx: number, commit: boolean): Promise<void>;
  /**
   * `XS_WATCH`: registers a watch; resolves once the daemon acknowledged it. An event for
   * the path itself follows at once (the "first event"), and then one for every change at
   * or below the path, delivered to the `onWatchEvent` handler. EEXIST when the same
   * path and token are already registered.
   */
  watch(path: string, token: string): Promise<void>;
  /** `XS_UNWATCH`: ENOENT when no such watch exists. No event for it is delivered after this resolves. */
  unwatch(path: string, token: string): Promise<void>;
  /** `XS_GET_DOMAIN_PATH`: the home path of a domain, `/local/domain/<domid>`. */
  getDomainPath(domid: number): Promise<string>;
  /**
   * Receives watch events: the path that changed (as the watch was registered: relative
   * when the watch path was relative) and the token given to {@link watch}.
   */
  onWatchEvent: ((path: string, token: string) => void) | undefined;
  /**
   * Called once if the connection ends by itself (the daemon closed it, or it sent
   * something the protocol does not allow) with the reason; not called after `close()`.
   */
  onDisconnect: ((reason: Error) => void) | undefined;
  /** Closes the connection; pending calls reject with XEN_CLOSED. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * A domain's event channel device (`/dev/xen/evtchn`, libxenevtchn): the ports it binds
 * and the events that arrive on them. Closing it unbinds every port it bound.
 *
 * Errors are the hypervisor's errno codes, with `op`, and `domid` / `port` where they
 * apply: `ESRCH` (bindInterdomain to a domain that does not exist; bindUnbound does not
 * check, as Xen does not), `EINVAL` (a remote port that is not unbound for this domain,
 * a VIRQ number Xen does not know), `EEXIST` (the VIRQ is bound already, by anyone for a
 * global VIRQ), `ENOTCONN` (a port this connection has not bound). Notifying an unbound
 * or VIRQ port does nothing and succeeds (Linux's evtchn driver does not report Xen's
 * EINVAL for the latter).
 */
export interface EventChannelConnection {
  /** The domain this connection acts as, when the implementation knows it. */
  readonly domid: number | undefined;
  /** `bind_unbound_port`: a new port that `remoteDomid` may bind to (with bindInterdomain). */
  bindUnbound(remoteDomid: number): Promise<number>;
  /** `bind_interdomain`: a new local port connected to `remotePort` of `remoteDomid`. */
  bindInterdomain(remoteDomid: number, remotePort: number): Promise<number>;
  /** `bind_virq`: a new port on which the virtual interrupt `virq` arrives. */
  bindVirq(virq: number): Promise<number>;
  /** `notify`: sends an event to the other end of `port`. */
  notify(port: number): Promise<void>;
  /** `unbind`: closes `port`; the other end of an interdomain channel becomes unbound. */
  unbind(port: number): Promise<void>;
  /**
   * Receives the port of every event, after the port was unmasked, so that it can fire
   * again. Events coalesce: several notifications may arrive as one event.
   */
  onEvent: ((port: number) => void) | undefined;
  /**
   * Whether the connection keeps the process alive; the caller says so while a port is
   * listened to. Off at first: an idle connection never keeps the process alive.
   */
  keepAlive(on: boolean): void;
  /** Closes the device (unbinding its ports); pending calls reject with XEN_CLOSED. Safe to call twice. */
  close(): Promise<void>;
}

/** A run of pages granted or mapped, as a {@link GrantConnection} returns it. */
export interface GrantRegion {
  /** The region's id, for {@link GrantConnection.unmap}. */
  readonly id: number;
  /**
   * The memory the other domain shares (4096 bytes a page), zero-copy. Native: an
   * external `ArrayBuffer`, detached by unmap (every view of it then has length 0);
   * mock: a `SharedArrayBuffer` standing for the shared pages.
   */
  readonly buffer: ArrayBufferLike;
  /** Where the region starts in `buffer` (0 on a real host) and its length. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

/**
 * A domain's grant devices (`/dev/xen/gntalloc` to grant its pages, `/dev/xen/gntdev` to
 * map other domains' grants, libxengnttab). Closing it unmaps every region.
 * Errors: `EINVAL` (a grant reference that is not granted to this domain, or a
 * read-only grant mapped writable), `ENOMEM`, with `op`, `domid`. Sharing with a domain
 * that does not exist is not an error (gntalloc does not check; nobody maps it).
 */
export interface GrantConnection {
  /** The domain this connection acts as, when the implementation knows it. */
  readonly domid: number | undefined;
  /** Grants `count` new zeroed pages to `domid`: their grant references and memory. */
  share(domid: number, count: number, writable: boolean): Promise<GrantRegion & { refs: number[] }>;
  /** Maps pages `domid` granted to this domain, in the order of `refs`. */
  map(domid: number, refs: readonly number[], writable: boolean): Promise<GrantRegion>;
  /** Unmaps (or stops sharing) a region, at once; false when it was unmapped already. */
  unmap(id: number): boolean;
  /** Unmaps every region and closes the devices. Safe to call twice. */
  close(): Promise<void>;
}

/** What every backend offers: XenStore and the toolstack; event channels and grants are optional. */
export interface XenBackend extends ToolstackBackend {
  /** `'mock'`, `'native'`, or another name for a custom backend. */
  readonly name: string;
  /** Opens a XenStore connection as dom0 (or the domain the backend represents). */
  openXenStore(): Promise<XenStoreConnection>;
  /**
   * Opens the event channel device as dom0 (or the domain the backend represents).
   * Optional: a backend without it makes `xen.eventChannels` reject with XEN_UNAVAILABLE.
   */
  openEventChannels?(): Promise<EventChannelConnection>;
  /** Opens the grant devices, as {@link openEventChannels}. */
  openGrants?(): Promise<GrantConnection>;
  /** Releases everything the backend holds. Safe to call twice. */
  close(): Promise<void>;
}
