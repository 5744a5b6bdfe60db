/**
 * The mock host's event channels: one port table per domain, as Xen keeps them, and
 * connections that act as one domain's /dev/xen/evtchn. Errors are those of Xen and of
 * Linux's evtchn driver (see {@link EventChannelConnection}).
 */
import type { EventChannelConnection } from '../backend.js';
import { invokeCallback } from '../callback.js';
import { XenError, closedError } from '../errors.js';

/** Xen's virtual interrupt numbers (xen/include/public/xen.h). */
export const VIRQ = {
  TIMER: 0,
  DEBUG: 1,
  CONSOLE: 2,
  /** A domain died, crashed or shut down: dom0's toolstack watches it. */
  DOM_EXC: 3,
  TBUF: 4,
  DEBUGGER: 6,
  XENOPROF: 7,
  CON_RING: 8,
  PCPU_STATE: 9,
  MEM_EVENT: 10,
  ARGO: 11,
  ENOMEM: 12,
  XENPMU: 13,
} as const;

/** Xen's NR_VIRQS. */
const NR_VIRQS = 24;
/** Per-vCPU VIRQs may be bound once per domain; the others once on the whole host. */
const PER_VCPU_VIRQS = new Set<number>([VIRQ.TIMER, VIRQ.DEBUG, VIRQ.XENOPROF, VIRQ.XENPMU]);
/** Ports of a domain with the 2-level ABI on 64-bit. */
const MAX_PORTS = 4096;

interface Port {
  owner: MockEventChannelConnection;
  state: 'unbound' | 'interdomain' | 'virq';
  /** unbound: who may bind to it; interdomain: the other end's domain. */
  remoteDomid?: number;
  remotePort?: number;
  virq?: number;
}

/** The event channel part of a mock hypervisor. */
export class MockEventChannels {
  private readonly tables = new Map<number, Map<number, Port>>();

  /** @param domainExists whether a domain exists (ESRCH otherwise). */
  constructor(private readonly domainExists: (domid: number) => boolean) {}

  /** A connection acting as `domid`'s /dev/xen/evtchn. */
  open(domid: number): MockEventChannelConnection {
    return new MockEventChannelConnection(this, domid);
  }

  /**
   * Test control: raises a virtual interrupt, as Xen does (VIRQ_DOM_EXC when a domain
   * dies…). A global VIRQ reaches the one port bound to it; a per-vCPU VIRQ, the port of
   * `domid`. Returns whether a port was bound to it.
   */
  raiseVirq(virq: number, domid = 0): boolean {
    for (const [owner, table] of this.tables) {
      if (PER_VCPU_VIRQS.has(virq) && owner !== domid) continue;
      for (const [port, p] of table) {
        if (p.state === 'virq' && p.virq === virq) {
          p.owner.deliver(port);
          return true;
        }
      }
    }
    return false;
  }

  /** @internal */
  table(domid: number): Map<number, Port> {
    let t = this.tables.get(domid);
    if (t === undefined) {
      t = new Map();
      this.tables.set(domid, t);
    }
    return t;
  }

  /** @internal */
  allocate(domid: number, port: Port, op: string): number {
    const t = this.table(domid);
    for (let n = 1; n < MAX_PORTS; n++) {
      if (!t.has(n)) {
        t.set(n, port);
        return n;
      }
    }
    throw XenError.fromErrno('ENOSPC', { op, domid });
  }

  /** @internal */
  checkDomain(domid: number, op: string): void {
    if (!this.domainExists(domid)) throw XenError.fromErrno('ESRCH', { op, domid });
  }

  /** @internal */
  virqBound(virq: number, domid: number): boolean {
    for (const [owner, table] of this.tables) {
      if (PER_VCPU_VIRQS.has(virq) && owner !== domid) continue;
      for (const p of table.values()) if (p.state === 'virq' && p.virq === virq) return true;
    }
    return false;
  }
}

/** One domain's /dev/xen/evtchn on the mock host. */
export class MockEventChannelConnection implements EventChannelConnection {
  onEvent: ((port: number) => void) | undefined;
  private closed = false;
  private readonly pending = new Set<number>();
  private keeper: NodeJS.Timeout | undefined;

  /** @internal Use {@link MockEventChannels.open}. */
  constructor(
    private readonly hv: MockEventChannels,
    readonly domid: number,
  ) {}

  async bindUnbound(remoteDomid: number): Promise<number> {
    const op = 'eventChannels.bindUnbound';
    this.checkOpen(op);
    // Xen records the remote domid without looking it up: it is checked when that domain binds.
    return this.hv.allocate(this.domid, { owner: this, state: 'unbound', remoteDomid }, op);
  }

  async bindInterdomain(remoteDomid: number, remotePort: number): Promise<number> {
    const op = 'eventChannels.bindInterdomain';
    this.checkOpen(op);
    this.hv.checkDomain(remoteDomid, op);
    const remote = this.hv.table(remoteDomid).get(remotePort);
    if (remote === undefined || remote.state !== 'unbound' || remote.remoteDomid !== this.domid) {
      throw XenError.fromErrno('EINVAL', { op, domid: remoteDomid, port: remotePort });
    }
    const port = this.hv.allocate(this.domid, { owner: this, state: 'interdomain', remoteDomid, remotePort }, op);
    remote.state = 'interdomain';
    remote.remoteDomid = this.domid;
    remote.remotePort = port;
    return port;
  }

  async bindVirq(virq: number): Promise<number> {
    const op = 'eventChannels.bindVirq';
    this.checkOpen(op);
    if (!Number.isInteger(virq) || virq < 0 || virq >= NR_VIRQS) throw XenError.fromErrno('EINVAL', { op });
    if (this.hv.virqBound(virq, this.domid)) throw XenError.fromErrno('EEXIST', { op });
    return this.hv.allocate(this.domid, { owner: this, state: 'virq', virq }, op);
  }

  async notify(port: number): Promise<void> {
    const op = 'eventChannel.notify';
    const p = this.own(port, op);
    // Nothing to do on an unbound or VIRQ port. (Xen refuses the latter with EINVAL, but
    // Linux's evtchn driver does not pass the hypervisor's answer on: notify succeeds.)
    if (p.state !== 'interdomain') return;
    const remote = this.hv.table(p.remoteDomid as number).get(p.remotePort as number);
    remote?.owner.deliver(p.remotePort as number);
  }

  async unbind(port: number): Promise<void> {
    this.own(port, 'eventChannel.unbind');
    this.release(port);
  }

  keepAlive(on: boolean): void {
    if (on && this.keeper === undefined && !this.closed) {
      // Stands for the native poll handle: a listened port keeps the process alive.
      this.keeper = setInterval(() => {}, 0x7fffffff);
    } else if (!on && this.keeper !== undefined) {
      clearInterval(this.keeper);
      this.keeper = undefined;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.keepAlive(false);
    for (const [port, p] of this.hv.table(this.domid)) if (p.owner === this) this.release(port);
  }

  /** @internal An event for `port` (coalesced with one not delivered yet). */
  deliver(port: number): void {
    if (this.closed || this.pending.has(port)) return;
    this.pending.add(port);
    setImmediate(() => {
      this.pending.delete(port);
      if (!this.closed && this.hv.table(this.domid).get(port)?.owner === this) invokeCallback(this.onEvent, port);
    });
  }

  private release(port: number): void {
    const table = this.hv.table(this.domid);
    const p = table.get(port);
    table.delete(port);
    if (p?.state === 'interdomain') {
      // The other end stays allocated, unbound, as Xen leaves it.
      const remote = this.hv.table(p.remoteDomid as number).get(p.remotePort as number);
      if (remote !== undefined) {
        remote.state = 'unbound';
        remote.remoteDomid = this.domid;
        delete remote.remotePort;
      }
    }
  }

  private own(port: number, op: string): Port {
    this.checkOpen(op);
    const p = this.hv.table(this.domid).get(port);
    if (p === undefined || p.owner !== this) throw XenError.fromErrno('ENOTCONN', { op, port });
    return p;
  }

  private checkOpen(op: string): void {
    if (this.closed) throw closedError(op);
  }
}
