import { XenStoreEngine, type XenStoreQuota } from '../xenstore/engine.js';
import { XenStoreServer } from '../xenstore/server.js';
import { openLocalConnection } from '../xenstore/local.js';
import { XenStore } from '../xenstore/xenstore.js';
import type { XenBackend, XenStoreConnection } from '../backend.js';
import type { XenError } from '../errors.js';
import type { ShutdownReason, ToolstackConnection } from '../backend-toolstack.js';
import { Hypervisor, type MockMachine } from './hypervisor.js';
import type { MockTiming } from './domain-sim.js';
import type { MockPciDevice } from './pci.js';
import { MockToolstack } from './toolstack.js';
import { ToolstackServer } from './toolstack-server.js';
import { ThreadedXenStoreListener } from './xenstore-thread.js';
import { MockEventChannels, VIRQ, type MockEventChannelConnection } from './event-channels.js';
import { MockGrantTables, type MockGrantConnection } from './grant-tables.js';

/** Options of {@link MockHost.create}. */
export interface MockHostOptions {
  /** Also serve the XenStore wire protocol on this unix socket path (as xenstored does). */
  xenstoreSocket?: string;
  /** XenStore quotas for unprivileged domains; defaults are C xenstored's. */
  xenstoreQuota?: Partial<XenStoreQuota>;
  /**
   * How long simulated steps take: `'realistic'` (default; a domain boots in ~150 ms, a
   * guest takes ~250 ms to shut down) or `'instant'` (every step on the next event-loop
   * turn, for fast tests). The order of states and events is the same in both.
   */
  timing?: MockTiming;
  /** The simulated machine: memory (MiB), dom0's memory, sockets, cores, threads, NUMA nodes. */
  machine?: Partial<MockMachine>;
  /** The host's PCI functions that can be passed through (default: an SR-IOV NIC with 8 VFs and a GPU). */
  pciDevices?: readonly MockPciDevice[];
  /**
   * Also serve the toolstack (domains, host) on this unix socket, for `xenode … --mock-host`
   * and {@link connectMockHost} in other processes. See docs/mock-host.md for the protocol.
   */
  toolstackSocket?: string;
}

/** Options of {@link MockHost.openXenStore}. */
export interface OpenXenStoreOptions {
  /** The domain the connection acts as. 0 (dom0, privileged) by default; others are unprivileged. */
  domid?: number;
}

function checkDomid(domid: unknown, op: string): number {
  if (!Number.isInteger(domid) || (domid as number) < 0 || (domid as number) >= 0x7ff0) {
    throw new RangeError(`${op}: domid must be an integer in 0..32751, got ${String(domid)}`);
  }
  return domid as number;
}

/**
 * A simulated Xen host: dom0 plus a xenstored, all in this process. Each host is isolated
 * (no state is shared between hosts), so tests can create as many as they like. Pass it to
 * `connect({ backend: host })` to run code written for a real host against it.
 *
 * @example
 * ```ts
 * import { MockHost, connect } from 'xenode';
 * const host = await MockHost.create();
 * const xen = await connect({ backend: host });
 * await xen.xenstore.write('/local/domain/0/name', 'Domain-0');
 * const guest = await host.openXenStore({ domid: 7 });    // an unprivileged domain
 * await guest.read('/local/domain/0/name').catch((e) => console.log(e.code)); // 'EACCES'
 * await guest.close();
 * await xen.close();
 * await host.close();
 * ```
 */
export class MockHost {
  /** The xenstored engine: the tree, permissions, transactions and watches. */
  readonly xenstoreEngine: XenStoreEngine;
  /** The unix socket the host serves XenStore on, if any. */
  readonly xenstoreSocket: string | undefined;
  /** @internal The simulated hypervisor: domains, memory, devices, events (tests reach in). */
  readonly hypervisor: Hypervisor;
  /** The unix socket the host serves its toolstack on, if any. */
  readonly toolstackSocket: string | undefined;
  private server: XenStoreServer | undefined;
  private listener: ThreadedXenStoreListener | undefined;
  private toolstackServer: ToolstackServer | undefined;
  private readonly toolstacks = new Set<ToolstackConnection>();
  /** The hypervisor's event channels: every domain's ports. */
  readonly eventChannels: MockEventChannels;
  /** The hypervisor's grant tables: every domain's granted pages. */
  readonly grantTables: MockGrantTables;
  private readonly connections = new Set<{ close(): Promise<void> }>();
  private closing: Promise<void> | undefined;

  private constructor(options: MockHostOptions) {
    this.xenstoreEngine = new XenStoreEngine({ quota: options.xenstoreQuota ?? {} });
    this.xenstoreSocket = options.xenstoreSocket;
    this.toolstackSocket = options.toolstackSocket;
    this.hypervisor = new Hypervisor(this.xenstoreEngine, { timing: options.timing ?? 'realistic', machine: options.machine ?? {}, ...(options.pciDevices ? { pci: options.pciDevices } : {}) });
    const exists = (domid: number) => domid === 0 || this.xenstoreEngine.isDomainIntroduced(domid);
    this.eventChannels = new MockEventChannels(exists);
    this.grantTables = new MockGrantTables(exists);
    // Xen raises VIRQ_DOM_EXC in dom0 whenever a domain shuts down or dies.
    this.hypervisor.subscribe((ev) => {
      if (ev.type === 'shutdown' || ev.type === 'death') this.eventChannels.raiseVirq(VIRQ.DOM_EXC);
    });
  }

  /** Creates a host; with `xenstoreSocket`, resolves once the socket accepts connections. */
  static async create(options: MockHostOptions = {}): Promise<MockHost> {
    if (options === null || typeof options !== 'object') throw new TypeError('MockHost.create: options must be an object');
    if (options.xenstoreSocket !== undefined && typeof options.xenstoreSocket !== 'string') {
      throw new TypeError('MockHost.create: xenstoreSocket must be a path string');
    }
    const host = new MockHost(options);
    if (options.xenstoreSocket !== undefined) {
      host.server = new XenStoreServer(host.xenstoreEngine);
      // Served from a worker thread, so the socket answers even while this thread is blocked.
      host.listener = new ThreadedXenStoreListener(host.xenstoreEngine, host.server);
      await host.listener.listen(options.xenstoreSocket);
    }
    if (options.timing !== undefined && options.timing !== 'instant' && options.timing !== 'realistic') {
      await host.close();
      throw new TypeError(`MockHost.create: timing must be 'instant' or 'realistic', got ${String(options.timing)}`);
    }
    if (options.toolstackSocket !== undefined) {
      host.toolstackServer = new ToolstackServer(() => host.openToolstack());
      try {
        await host.toolstackServer.listen(options.toolstackSocket);
        // Where other processes find it: next to the xenstore they already reach.
        const xs = host.openConnection(0);
        await xs.write(0, '/tool/xenode/toolstack-socket', Buffer.from(options.toolstackSocket));
        await xs.close();
      } catch (err) {
        await host.close();
        throw err;
      }
    }
    return host;
  }

  /**
   * A XenStore client connected to this host's xenstored as `domid`. The first connection
   * of a domain other than dom0 creates its home `/local/domain/<domid>` as libxl does
   * (see `data/`, writable by the domain) and introduces it (firing `@introduceDomain`).
   */
  async openXenStore(options: OpenXenStoreOptions = {}): Promise<XenStore> {
    return new XenStore(this.openConnection(checkDomid(options.domid ?? 0, 'MockHost.openXenStore')));
  }

  /**
   * `domid`'s event channel device (as /dev/xen/evtchn in that domain). A domain other
   * than dom0 is introduced first, as by {@link openXenStore}.
   */
  openEventChannels(options: OpenXenStoreOptions = {}): MockEventChannelConnection {
    const domid = checkDomid(options.domid ?? 0, 'MockHost.openEventChannels');
    this.ensureDomain(domid);
    return this.tracked(this.eventChannels.open(domid));
  }

  /** `domid`'s grant devices (gntalloc and gntdev in that domain), as {@link openEventChannels}. */
  openGrants(options: OpenXenStoreOptions = {}): MockGrantConnection {
    const domid = checkDomid(options.domid ?? 0, 'MockHost.openGrants');
    this.ensureDomain(domid);
    return this.tracked(this.grantTables.open(domid));
  }

  /**
   * Test control: raises a virtual interrupt (see {@link VIRQ}) as the hypervisor does;
   * true when a port was bound to it. {@link releaseDomain} raises `VIRQ.DOM_EXC` itself.
   */
  raiseVirq(virq: number, domid = 0): boolean {
    return this.eventChannels.raiseVirq(virq, domid);
  }

  private tracked<C extends { close(): Promise<void> }>(conn: C): C {
    if (this.closing) throw new RangeError('MockHost: the host is closed');
    this.connections.add(conn);
    const close = conn.close.bind(conn);
    conn.close = () => {
      this.connections.delete(conn);
      return close();
    };
    return conn;
  }

  private ensureDomain(domid: number): void {
    if (this.closing) throw new RangeError('MockHost: the host is closed');
    if (domid !== 0 && !this.xenstoreEngine.isDomainIntroduced(domid)) {
      this.makeDomainHome(domid);
      this.introduceDomain(domid);
    }
  }

  /** The raw backend connection, for code that implements the XenBackend contract. */
  openConnection(domid = 0): XenStoreConnection {
    this.ensureDomain(domid);
    // Tracked so that closing the host closes its clients; forgotten once closed.
    return this.tracked(openLocalConnection(this.xenstoreEngine, domid));
  }

  /**
   * Creates a domain's home as libxl does before introducing it: `/local/domain/<domid>`
   * owned by dom0 and readable by the domain, with `data`, `drivers`, `feature`, `attr`
   * and `error` owned by the domain (writable by it), and `device` and `control`
   * read-only to it. Nodes that exist already are left alone.
   */
  private makeDomainHome(domid: number): void {
    const dom0 = this.xenstoreEngine.connect(0);
    try {
      const home = `/local/domain/${domid}`;
      const ro = [{ domid: 0, read: false, write: false }, { domid, read: true, write: false }];
      const rw = [{ domid, read: false, write: false }];
      const tx = dom0.transactionStart();
      const mk = (path: string, perms: typeof ro) => {
        try {
          dom0.read(tx, path);
          return;
        } catch (err) {
          if ((err as XenError).code !== 'ENOENT') throw err;
        }
        dom0.mkdir(tx, path);
        dom0.setPermissions(tx, path, perms);
      };
      mk(home, ro);
      for (const dir of ['device', 'control']) mk(`${home}/${dir}`, ro);
      for (const dir of ['data', 'drivers', 'feature', 'attr', 'error']) mk(`${home}/${dir}`, rw);
      dom0.transactionEnd(tx, true);
    } finally {
      dom0.close();
    }
  }

  /** Test control: announce a domain to xenstored (fires `@introduceDomain`). */
  introduceDomain(domid: number): void {
    this.xenstoreEngine.introduceDomain(checkDomid(domid, 'MockHost.introduceDomain'));
  }

  /** Test control: tell xenstored a domain is gone (fires `@releaseDomain`, raises `VIRQ.DOM_EXC`). */
  releaseDomain(domid: number): void {
    this.xenstoreEngine.releaseDomain(checkDomid(domid, 'MockHost.releaseDomain'));
    this.eventChannels.raiseVirq(VIRQ.DOM_EXC);
  }

  /** A backend over this host, as `connect({ backend: host })` uses. Closing it leaves the host running. */
  backend(): XenBackend {
    return {
      name: 'mock',
      openXenStore: async () => this.openConnection(0),
      openToolstack: async () => this.openToolstack(),
      openEventChannels: async () => this.openEventChannels(),
      openGrants: async () => this.openGrants(),
      close: async () => undefined,
    };
  }

  /** A toolstack session on the simulated hypervisor (what `xen.domains` uses). */
  openToolstack(): ToolstackConnection {
    if (this.closing) throw new RangeError('MockHost: the host is closed');
    const ts = new MockToolstack(this.hypervisor);
    this.toolstacks.add(ts);
    const close = ts.close.bind(ts);
    ts.close = () => {
      this.toolstacks.delete(ts);
      return close();
    };
    return ts;
  }

  /** Test control: the guest in `domid` crashes (shutdown reason `crash`, then its `onCrash` action). */
  crashDomain(domid: number): void {
    this.hypervisor.crash(checkDomid(domid, 'MockHost.crashDomain'));
  }

  /** Test control: the guest shuts itself down (`poweroff`, `reboot`, …), then its `on_*` action applies. */
  guestShutdown(domid: number, reason: ShutdownReason = 'poweroff'): void {
    this.hypervisor.guestInitiatedShutdown(checkDomid(domid, 'MockHost.guestShutdown'), reason);
  }

  /**
   * Test control: the guest in `domid` waits for events (`idle`, the default: Xen shows it
   * `blocked`, as an idle guest mostly is) or has work to do again (`running`). A paused
   * domain stays `paused` either way; the simulated guest keeps answering requests.
   */
  guestIdle(domid: number, idle = true): void {
    if (typeof idle !== 'boolean') throw new TypeError('MockHost.guestIdle: idle must be a boolean');
    this.hypervisor.guestIdle(checkDomid(domid, 'MockHost.guestIdle'), idle);
  }

  /** The host's PCI functions that can be passed through, with the domain each is assigned to. */
  pciDevices(): (MockPciDevice & { domid?: number })[] {
    return this.hypervisor.pci.list();
  }

  /** Test control: the guest writes `text` to its console. */
  writeConsole(domid: number, text: string | Uint8Array): void {
    this.hypervisor.consoleWrite(checkDomid(domid, 'MockHost.writeConsole'), typeof text === 'string' ? text : Buffer.from(text));
  }

  /**
   * Test control: the guest writes `data` at byte `offset` of its disk `vdev`, through the
   * disk's block backend into the image (a VHD attached to the domain, or a raw file). Waits
   * while the guest is paused or the backend is (a live snapshot); resolves once the backend
   * has completed the request, as a guest's bio completes.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { MockHost, VirtualDisk, connect } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-guest-io-'));
   * const host = await MockHost.create({ timing: 'instant' });
   * const xen = await connect({ backend: host });
   * const dom = await xen.domains.create({ name: 'io', type: 'pvh', kernel: '/boot/vmlinuz', memory: 64, vcpus: 1 });
   * const disk = await VirtualDisk.create(join(dir, 'data.vhd'), { size: 16 * 1024 * 1024, type: 'dynamic' });
   * await disk.close();
   * await dom.attachDisk(disk, { vdev: 'xvdb' });
   * await host.guestDiskWrite(dom.domid, 'xvdb', 4096, Buffer.from('written by the guest'));
   * console.log((await host.guestDiskRead(dom.domid, 'xvdb', 4096, 20)).toString()); // written by the guest
   * await xen.close();
   * await host.close();
   * const image = await VirtualDisk.open(join(dir, 'data.vhd'), { readOnly: true });
   * console.log((await image.read(4096, 7)).toString()); // written
   * await image.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  guestDiskWrite(domid: number, vdev: string, offset: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Buffer or Uint8Array');
    return this.hypervisor.diskWrite(checkDomid(domid, 'MockHost.guestDiskWrite'), vdev, offset, data);
  }

  /** Test control: the guest reads `length` bytes at `offset` of its disk `vdev`, through the disk's block backend (see {@link guestDiskWrite}). */
  guestDiskRead(domid: number, vdev: string, offset: number, length: number): Promise<Buffer> {
    return this.hypervisor.diskRead(checkDomid(domid, 'MockHost.guestDiskRead'), vdev, offset, length);
  }

  /** Stops the socket server and closes every connection. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.toolstackServer?.close();
      await Promise.all([...this.toolstacks].map((t) => t.close()));
      this.hypervisor.close();
      await this.hypervisor.closeDisks();
      await Promise.all([...this.connections].map((c) => c.close()));
      await this.listener?.close();
      await this.server?.close();
    })();
    return this.closing;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
