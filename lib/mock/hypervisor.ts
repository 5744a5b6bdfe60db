/**
 * The simulated hypervisor plus the toolstack around it: the domain table (domids
 * allocated as Xen does), memory and CPU accounting against the host, the state machine
 * (building → running ⇄ paused → shutdown/crashed → dying → gone, with on_* actions),
 * devices with their xenstore handshakes, and the domain events. Everything is written to
 * the host's xenstored engine as libxl would write it.
 */
import { randomUUID } from 'node:crypto';
import { debuglog } from 'node:util';
import type { DeviceInfo, DeviceKind, DeviceSpec, DiskSnapshot, DomainEvent, DomainInfo, HostInfo, ShutdownReason } from '../backend-toolstack.js';
import type { DiskConfig, DomainAction, DomainConfig, PciConfig } from '../config/domain-config.js';
import { XenError, abortError, closedError } from '../errors.js';
import type { XenStoreEngine } from '../xenstore/engine.js';
import { SimBlockBackend } from './block-backend.js';
import * as dev from './devices.js';
import { SimDomain, TIMINGS, type MockTiming, type StepDelays } from './domain-sim.js';
import { MockPciBus, type MockPciDevice } from './pci.js';
import { decodeImage, encodeImage, type SaveImage } from './save-image.js';
import { XsWriter } from './xs-writer.js';

const debug = debuglog('xenode:mock');

/** The first domid Xen reserves (DOMID_FIRST_RESERVED): allocation wraps below it. */
const DOMID_FIRST_RESERVED = 0x7ff0;
/** The most vCPUs the simulated Xen gives a guest. */
const MAX_VCPUS = 128;

/** The shape of the simulated machine. */
export interface MockMachine {
  /** Physical memory in MiB. */
  memory: number;
  /** Memory dom0 holds, in MiB. */
  dom0Memory: number;
  sockets: number;
  coresPerSocket: number;
  threadsPerCore: number;
  numaNodes: number;
}

export const DEFAULT_MACHINE: MockMachine = { memory: 16384, dom0Memory: 2048, sockets: 1, coresPerSocket: 4, threadsPerCore: 2, numaNodes: 1 };

const noSuchDomain = (op: string, domid: number) => new XenError('ESRCH', `ESRCH: no such domain ${domid} (${op})`, { op, domid, errno: 3 });
const inval = (op: string, message: string, domid?: number) => new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: ${message} (${op})`, { op, ...(domid === undefined ? {} : { domid }) });

function devKey(kind: DeviceKind, devid: number): string {
  return `${kind}/${devid}`;
}

/** The simulated hypervisor of one MockHost. */
export class Hypervisor {
  readonly machine: MockMachine;
  readonly delays: StepDelays;
  readonly pci: MockPciBus;
  private readonly xs: XsWriter;
  private readonly domains = new Map<number, SimDomain>();
  private readonly listeners = new Set<(ev: DomainEvent) => void>();
  private readonly timers = new Set<NodeJS.Timeout | NodeJS.Immediate>();
  /** Rejecters of pending waits, so closing the host ends operations under way. */
  private readonly waiting = new Set<(err: Error) => void>();
  /** Closes under way of the block backends of unplugged disks. */
  private readonly closing = new Set<Promise<void>>();
  private readonly started = Date.now();
  private nextDomid = 1;
  private ringCounter = 8;
  private closed = false;

  constructor(
    private readonly engine: XenStoreEngine,
    options: { timing?: MockTiming; machine?: Partial<MockMachine>; pci?: readonly MockPciDevice[] } = {},
  ) {
    this.machine = { ...DEFAULT_MACHINE, ...options.machine };
    this.delays = TIMINGS[options.timing ?? 'realistic'];
    this.pci = new MockPciBus(options.pci);
    this.xs = new XsWriter(engine);
    this.xs.conn.onWatchEvent = (path, token) => this.onWatch(path, token);
    const dom0 = new SimDomain(0, '00000000-0000-0000-0000-000000000000', { name: 'Domain-0', type: 'pv', memory: this.machine.dom0Memory, vcpus: Math.min(4, this.cpus) }, this.cpus);
    dom0.phase = 'up';
    dom0.setRunning(true);
    this.domains.set(0, dom0);
    this.xs.writeAll('/local/domain/0', { name: 'Domain-0', domid: '0' });
    this.xs.write('/local/domain/0/memory/target', String(this.machine.dom0Memory * 1024));
  }

  get cpus(): number {
    return this.machine.sockets * this.machine.coresPerSocket * this.machine.threadsPerCore;
  }

  /** Memory not given to any domain, in MiB. */
  freeMemory(): number {
    let used = 0;
    for (const d of this.domains.values()) used += d.memCurrent;
    return this.machine.memory - used;
  }

  hostInfo(): HostInfo {
    return {
      xenVersion: '4.17.3',
      capabilities: ['xen-3.0-x86_64', 'hvm-3.0-x86_32', 'hvm-3.0-x86_32p', 'hvm-3.0-x86_64'],
      cpus: this.cpus,
      cores: this.machine.sockets * this.machine.coresPerSocket,
      sockets: this.machine.sockets,
      threadsPerCore: this.machine.threadsPerCore,
      numaNodes: this.machine.numaNodes,
      totalMemory: this.machine.memory,
      freeMemory: this.freeMemory(),
      scheduler: 'credit2',
    };
  }

  // ---- events -------------------------------------------------------------------------

  subscribe(listener: (ev: DomainEvent) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  private emit(ev: DomainEvent): void {
    debug('event %o', ev);
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  // ---- timing -------------------------------------------------------------------------

  /** Waits `ms` (one event-loop turn when 0); rejects with AbortError on `signal`. */
  private wait(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      if (this.closed) return reject(closedError('mock.hypervisor'));
      const settle = (err?: Error) => {
        if (ms === 0) clearImmediate(t as NodeJS.Immediate);
        else clearTimeout(t as NodeJS.Timeout);
        this.timers.delete(t);
        this.waiting.delete(settle);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const t = ms === 0 ? setImmediate(() => settle()) : setTimeout(() => settle(), ms);
      const onAbort = () => settle(abortError(signal as AbortSignal));
      this.timers.add(t);
      this.waiting.add(settle);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Runs `fn` after `ms` unless the hypervisor closes first. */
  private later(ms: number, fn: () => void): void {
    const run = () => {
      this.timers.delete(t);
      if (!this.closed) fn();
    };
    const t = ms === 0 ? setImmediate(run) : setTimeout(run, ms);
    this.timers.add(t);
  }

  // ---- lookups ------------------------------------------------------------------------

  private get(domid: number, op: string): SimDomain {
    const d = this.domains.get(domid);
    if (d === undefined || d.phase === 'dying') throw noSuchDomain(op, domid);
    return d;
  }

  private guest(domid: number, op: string): SimDomain {
    const d = this.get(domid, op);
    if (domid === 0) throw inval(op, 'not permitted on dom0', 0);
    return d;
  }

  list(): DomainInfo[] {
    return [...this.domains.values()].sort((a, b) => a.domid - b.domid).map((d) => d.info());
  }

  info(domid: number): DomainInfo {
    const d = this.domains.get(domid);
    if (d === undefined) throw noSuchDomain('domain.info', domid);
    return d.info();
  }

  domidByName(name: string): number {
    for (const d of this.domains.values()) if (d.name === name && d.phase !== 'dying') return d.domid;
    throw new XenError('ESRCH', `ESRCH: no domain is called '${name}' (domain.byName)`, { op: 'domain.byName', errno: 3 });
  }

  config(domid: number): DomainConfig {
    return this.get(domid, 'domain.config').currentConfig();
  }

  // ---- creation -----------------------------------------------------------------------

  private allocateDomid(): number {
    for (let tries = 0; tries < DOMID_FIRST_RESERVED; tries++) {
      const id = this.nextDomid;
      this.nextDomid = id + 1 >= DOMID_FIRST_RESERVED ? 1 : id + 1;
      // Domains that only exist in xenstore (MockHost.openXenStore({ domid })) keep their id.
      if (!this.domains.has(id) && !this.engine.isDomainIntroduced(id)) return id;
    }
    throw new XenError('ENOSPC', 'ENOSPC: every domid is in use (domain.create)', { op: 'domain.create' });
  }

  private checkNameFree(name: string, op: string, except?: number): void {
    for (const d of this.domains.values()) {
      if (d.name === name && d.domid !== except && d.phase !== 'dying') throw inval(op, `domain name '${name}' is already in use by domain ${d.domid}`);
    }
  }

  /**
   * Builds and starts a domain as libxl_domain_create_new does: checks, domid, memory,
   * the xenstore home, devices to InitWait, unpause, then the guest boots and connects
   * its devices. A failure or abort on the way destroys what was built.
   */
  async create(config: DomainConfig, signal?: AbortSignal, image?: SaveImage, options: { paused?: boolean } = {}): Promise<number> {
    const op = image ? 'domain.restore' : 'domain.create';
    if (signal?.aborted) throw abortError(signal);
    this.checkNameFree(config.name, op);
    const uuid = config.uuid ?? randomUUID();
    // A migration's source on the same host keeps its uuid while it waits, suspended.
    for (const d of this.domains.values()) if (d.uuid === uuid && d.phase !== 'dying' && !(image && d.shutdownReason === 'suspend')) throw inval(op, `uuid ${uuid} is already in use by domain ${d.domid}`);
    const max = config.maxMemory ?? config.memory;
    if (max < config.memory) throw inval(op, `maxMemory ${max} MiB is below memory ${config.memory} MiB`);
    if ((config.maxVcpus ?? config.vcpus) > MAX_VCPUS) throw inval(op, `at most ${MAX_VCPUS} vCPUs per domain`);
    const needed = image?.memCurrent ?? config.memory;
    if (needed > this.freeMemory()) {
      throw new XenError('ENOMEM', `ENOMEM: ${needed} MiB needed, ${this.freeMemory()} MiB free (${op})`, { op, errno: 12 });
    }
    for (const p of config.pcis ?? []) this.pci.checkAssignable(p.bdf, op);
    const disks = (config.disks ?? []).map((d) => ({ kind: 'vbd' as const, devid: dev.vdevToDevid(d.vdev), backendDomid: 0, config: { ...d } }));
    const nics = (config.nics ?? []).map((n, i) => ({ kind: 'vif' as const, devid: i, backendDomid: 0, config: { ...n, mac: n.mac ?? dev.randomMac() } }));
    const pcis = (config.pcis ?? []).map((p, i) => ({ kind: 'pci' as const, devid: i, backendDomid: 0, config: { ...p } }));

    const domid = this.allocateDomid();
    const d = new SimDomain(domid, uuid, { ...structuredClone(config), uuid, disks: disks.map((x) => x.config), nics: nics.map((x) => x.config) }, this.cpus);
    // as libxl: IOMMU mappings when asked for or when created with devices; `enabled`
    // becomes the mode chosen (a PV guest has only separate tables), and that is what the
    // domain's configuration says from then on
    const passthrough = config.passthrough ?? (config.pcis?.length ? 'enabled' : 'disabled');
    if (passthrough === 'disabled') delete d.config.passthrough;
    else d.config.passthrough = passthrough === 'enabled' ? (config.type === 'pv' ? 'sync_pt' : 'share_pt') : passthrough;
    if (!d.config.disks?.length) delete d.config.disks;
    if (!d.config.nics?.length) delete d.config.nics;
    if (image) {
      d.memCurrent = image.memCurrent;
      d.memTarget = image.memTarget;
      d.vcpusOnline = image.vcpusOnline;
      d.restoreCounters(image.cpuTime);
      d.console.restore(Buffer.from(image.console, 'base64'));
    }
    this.domains.set(domid, d);
    debug('creating domain %d (%s)', domid, config.name);
    try {
      d.writeHome(this.xs, Date.now());
      this.xs.conn.watch(`/local/domain/${domid}/control/shutdown`, `guest:${domid}`);
      this.engine.introduceDomain(domid);
      for (const x of [...disks, ...nics, ...pcis]) {
        if (x.kind === 'pci') this.pci.assign(x.config.bdf, domid);
        d.devices.set(devKey(x.kind, x.devid), x);
        dev.writeDevice(this.xs, domid, x);
      }
      await this.plugBackends(d);
      await this.wait(this.delays.build, signal);
      for (const x of d.devices.values()) dev.backendReady(this.xs, domid, x);
      await this.wait(this.delays.device, signal);
      d.phase = 'up';
      d.paused = options.paused === true;
      d.setRunning(!d.paused);
      if (image) d.console.write('\r\n[    0.000000] PM: resume from suspend\r\n');
      else d.bootLog();
      for (const x of d.devices.values()) dev.frontendInitialised(this.xs, domid, x, () => this.ringCounter++);
      await this.wait(this.delays.device, signal);
      for (const x of d.devices.values()) dev.connect(this.xs, domid, x);
    } catch (err) {
      debug('creating domain %d failed: %s', domid, (err as Error).message);
      this.teardown(d, false);
      throw err;
    }
    this.emit({ type: 'created', domid, name: d.name });
    return domid;
  }

  // ---- run state ----------------------------------------------------------------------

  pause(domid: number): void {
    const d = this.guest(domid, 'domain.pause');
    if (d.paused) return;
    d.paused = true;
    d.setRunning(false);
  }

  unpause(domid: number): void {
    const d = this.guest(domid, 'domain.unpause');
    if (!d.paused) return;
    d.paused = false;
    d.setRunning(d.runnable);
  }

  /** What `xl shutdown` / `xl reboot` do: ask the guest through `control/shutdown`. */
  requestShutdown(domid: number, request: 'poweroff' | 'reboot' | 'suspend'): void {
    const d = this.guest(domid, 'domain.shutdown');
    if (d.phase !== 'up') throw inval('domain.shutdown', `domain ${domid} is ${d.state}`, domid);
    this.xs.write(`/local/domain/${domid}/control/shutdown`, request);
  }

  /** The guest saw `control/shutdown` change (or anyone wrote it, e.g. xenstore-write). */
  private onWatch(path: string, token: string): void {
    const m = /^guest:(\d+)$/.exec(token);
    if (m === null) return;
    const d = this.domains.get(Number(m[1]));
    if (d === undefined || d.phase !== 'up') return;
    const request = this.xs.readOr(path, '');
    const reasons: Record<string, ShutdownReason> = { poweroff: 'poweroff', halt: 'poweroff', reboot: 'reboot', suspend: 'suspend' };
    const reason = reasons[request];
    if (reason === undefined) return;
    d.asGuest(() =>
      this.later(this.delays.shutdown, () => {
        if (d.phase !== 'up') return;
        d.acknowledgeShutdown(this.xs);
        d.shutdownLog(reason);
        this.guestShutdown(d, reason);
      }),
    );
  }

  /** The guest called SCHEDOP_shutdown: the domain stops and the toolstack applies on_*. */
  private guestShutdown(d: SimDomain, reason: ShutdownReason): void {
    d.setRunning(false);
    d.phase = reason === 'crash' ? 'crashed' : 'shutdown';
    d.shutdownReason = reason;
    this.engine.shutdownDomain(d.domid);
    this.emit({ type: 'shutdown', domid: d.domid, name: d.name, reason });
    if (reason === 'suspend') return; // save() takes it from here
    const actions: Partial<Record<ShutdownReason, DomainAction | undefined>> = {
      poweroff: d.config.onPoweroff ?? 'destroy',
      reboot: d.config.onReboot ?? 'restart',
      crash: d.config.onCrash ?? 'destroy',
      watchdog: d.config.onWatchdog ?? 'destroy',
      soft_reset: d.config.onSoftReset ?? 'soft-reset',
    };
    const action = actions[reason] ?? 'destroy';
    if (action === 'preserve') return;
    this.later(0, () => {
      const restart = action === 'restart' || action === 'rename-restart' || action === 'coredump-restart' || action === 'soft-reset';
      const config = d.currentConfig();
      this.destroyNow(d).then(
        () => {
          if (restart && !this.closed) this.create(config).catch((err: unknown) => debug('restart of %s failed: %s', config.name, (err as Error).message));
        },
        (err: unknown) => debug('destroy of %d failed: %s', d.domid, (err as Error).message),
      );
    });
  }

  async destroy(domid: number): Promise<void> {
    await this.destroyNow(this.guest(domid, 'domain.destroy'));
  }

  /** dying: devices and xenstore entries go, memory returns, then the domain is gone. */
  private async destroyNow(d: SimDomain): Promise<void> {
    if (d.phase === 'dying') return;
    d.setRunning(false);
    d.phase = 'dying';
    await this.wait(this.delays.dying);
    this.teardown(d, true);
  }

  private teardown(d: SimDomain, announce: boolean): void {
    for (const x of d.devices.values()) {
      this.closeBackend(x);
      dev.remove(this.xs, d.domid, x);
      if (x.kind === 'pci') this.pci.release((x.config as PciConfig).bdf);
    }
    d.devices.clear();
    try {
      this.xs.conn.unwatch(`/local/domain/${d.domid}/control/shutdown`, `guest:${d.domid}`);
    } catch {
      // never registered: creation failed before
    }
    this.xs.rm(`/local/domain/${d.domid}`);
    this.xs.rm(`/vm/${d.uuid}`);
    for (const kind of ['vbd', 'vif', 'pci', 'console']) this.xs.rm(`/local/domain/0/backend/${kind}/${d.domid}`);
    this.domains.delete(d.domid);
    d.console.end();
    if (this.engine.isDomainIntroduced(d.domid)) this.engine.releaseDomain(d.domid);
    if (announce) this.emit({ type: 'death', domid: d.domid, name: d.name });
  }

  // ---- resources ----------------------------------------------------------------------

  setMemoryTarget(domid: number, mib: number): void {
    const op = 'domain.setMemoryTarget';
    const d = this.get(domid, op);
    if (mib > d.memMax) throw inval(op, `target ${mib} MiB is above the maximum ${d.memMax} MiB`, domid);
    d.memTarget = mib;
    this.xs.write(`/local/domain/${domid}/memory/target`, String(mib * 1024));
    if (domid === 0) {
      d.memCurrent = mib;
      return;
    }
    // The guest's balloon driver moves towards the target; growing takes free host memory.
    d.asGuest(() =>
      this.later(this.delays.balloon, () => {
        if (!this.domains.has(domid)) return;
        const grow = Math.min(d.memTarget - d.memCurrent, this.freeMemory());
        d.memCurrent = d.memTarget < d.memCurrent ? d.memTarget : d.memCurrent + Math.max(0, grow);
      }),
    );
  }

  setMaxMemory(domid: number, mib: number): void {
    const op = 'domain.setMaxMemory';
    const d = this.get(domid, op);
    if (mib < d.memTarget) throw inval(op, `maximum ${mib} MiB is below the target ${d.memTarget} MiB`, domid);
    d.memMax = mib;
    this.xs.write(`/local/domain/${domid}/memory/static-max`, String(mib * 1024));
  }

  setVcpus(domid: number, count: number): void {
    const op = 'domain.setVcpus';
    const d = this.get(domid, op);
    if (count < 1 || count > d.maxVcpus) throw inval(op, `${count} vCPUs: the domain has 1..${d.maxVcpus}`, domid);
    const running = d.runnable;
    d.setRunning(false);
    d.vcpusOnline = count;
    d.setRunning(running);
    d.writeVcpus(this.xs);
  }

  pinVcpu(domid: number, vcpu: number, cpus: readonly number[]): void {
    const op = 'domain.pinVcpu';
    const d = this.get(domid, op);
    if (vcpu >= d.maxVcpus) throw inval(op, `vCPU ${vcpu} does not exist (the domain has ${d.maxVcpus})`, domid);
    const bad = cpus.find((c) => c >= this.cpus);
    if (bad !== undefined) throw inval(op, `physical CPU ${bad} does not exist (the host has ${this.cpus})`, domid);
    d.affinity[vcpu] = [...cpus];
  }

  /** The vCPU affinities (test view). */
  affinity(domid: number): number[][] {
    return this.get(domid, 'domain.affinity').affinity.map((a) => [...a]);
  }

  rename(domid: number, name: string): void {
    const op = 'domain.rename';
    const d = this.get(domid, op);
    this.checkNameFree(name, op, domid);
    d.config.name = name;
    this.xs.write(`/local/domain/${domid}/name`, name);
    if (domid !== 0) this.xs.write(`/vm/${d.uuid}/name`, name);
  }

  // ---- devices ------------------------------------------------------------------------

  async attach(domid: number, spec: DeviceSpec, signal?: AbortSignal): Promise<DeviceInfo> {
    const op = 'device.attach';
    const d = this.guest(domid, op);
    if (d.phase !== 'up') throw inval(op, `domain ${domid} is ${d.state}`, domid);
    let x: dev.SimDevice;
    if (spec.kind === 'disk') {
      x = { kind: 'vbd', devid: dev.vdevToDevid(spec.disk.vdev), backendDomid: 0, config: { ...spec.disk } };
    } else if (spec.kind === 'nic') {
      let n = 0;
      while (d.devices.has(devKey('vif', n))) n++;
      x = { kind: 'vif', devid: n, backendDomid: 0, config: { ...spec.nic, mac: spec.nic.mac ?? dev.randomMac() } };
    } else {
      const bdf = dev.normaliseBdf(spec.pci.bdf);
      for (const other of d.devices.values()) {
        if (other.kind === 'pci' && dev.normaliseBdf((other.config as PciConfig).bdf) === bdf) throw new XenError('XEN_ERROR_DEVICE_EXISTS', `XEN_ERROR_DEVICE_EXISTS: ${bdf} is already attached to domain ${domid} (${op})`, { op, domid });
      }
      // as Xen: a device is assigned only into a domain created with IOMMU mappings, which
      // libxl gives one by default only when it is created with devices
      if (d.config.passthrough === undefined) {
        throw new XenError('XEN_ERROR_FAIL', `XEN_ERROR_FAIL: PCI ${bdf} cannot be assigned: domain ${domid} was created without passthrough (no IOMMU mappings); create it with passthrough 'enabled' (${op})`, { op, domid });
      }
      this.pci.checkAssignable(bdf, op);
      let n = 0;
      while (d.devices.has(devKey('pci', n))) n++;
      x = { kind: 'pci', devid: n, backendDomid: 0, config: { ...spec.pci, bdf } };
    }
    if (d.devices.has(devKey(x.kind, x.devid))) {
      throw new XenError('XEN_ERROR_DEVICE_EXISTS', `XEN_ERROR_DEVICE_EXISTS: ${x.kind} ${x.devid} is already attached to domain ${domid} (${op})`, { op, domid });
    }
    if (x.kind === 'pci') this.pci.assign((x.config as PciConfig).bdf, domid);
    d.devices.set(devKey(x.kind, x.devid), x);
    dev.writeDevice(this.xs, domid, x);
    try {
      await this.plugBackends(d, x);
      await this.wait(this.delays.device, signal);
      dev.backendReady(this.xs, domid, x);
    } catch (err) {
      this.unplug(d, x);
      throw err;
    }
    // The guest's frontend picks it up when it runs; a paused guest leaves it at InitWait.
    const present = () => d.devices.get(devKey(x.kind, x.devid)) === x;
    if (d.runnable) {
      await this.wait(this.delays.device, signal);
      if (present()) dev.frontendInitialised(this.xs, domid, x, () => this.ringCounter++);
      await this.wait(this.delays.device, signal);
      if (present()) dev.connect(this.xs, domid, x);
    } else {
      d.asGuest(() =>
        this.later(this.delays.device, () => {
          if (!present()) return;
          dev.frontendInitialised(this.xs, domid, x, () => this.ringCounter++);
          this.later(this.delays.device, () => present() && dev.connect(this.xs, domid, x));
        }),
      );
    }
    return dev.describe(this.xs, domid, x);
  }

  async detach(domid: number, kind: DeviceKind, devid: number, signal?: AbortSignal): Promise<void> {
    const op = 'device.detach';
    const d = this.guest(domid, op);
    const x = d.devices.get(devKey(kind, devid));
    if (x === undefined) throw new XenError('XEN_ERROR_NOTFOUND', `XEN_ERROR_NOTFOUND: domain ${domid} has no ${kind} ${devid} (${op})`, { op, domid });
    for (const step of dev.closeSteps) {
      await this.wait(this.delays.device, signal);
      if (d.devices.get(devKey(kind, devid)) !== x) return;
      step(this.xs, domid, x);
    }
    await this.wait(this.delays.device, signal);
    if (d.devices.get(devKey(kind, devid)) === x) this.unplug(d, x);
  }

  private unplug(d: SimDomain, x: dev.SimDevice): void {
    this.closeBackend(x);
    dev.remove(this.xs, d.domid, x);
    d.devices.delete(devKey(x.kind, x.devid));
    if (x.kind === 'pci') this.pci.release((x.config as PciConfig).bdf);
  }

  /** Gives each vbd (of `only`, or of the domain) a block backend and opens what it opens at plug time. */
  private async plugBackends(d: SimDomain, only?: dev.SimDevice): Promise<void> {
    const vbds = (only ? [only] : [...d.devices.values()]).filter((x) => x.kind === 'vbd' && (x.config as DiskConfig).target !== '');
    for (const x of vbds) {
      const backend = new SimBlockBackend(x.config as DiskConfig, d.domid);
      x.backend = backend;
    }
    await Promise.all(vbds.map((x) => x.backend?.plug()));
  }

  private closeBackend(x: dev.SimDevice): void {
    const backend = x.backend;
    if (backend === undefined) return;
    x.backend = undefined;
    const closing = backend.close().catch((err: unknown) => debug('closing the disk of %s failed: %s', x.devid, (err as Error).message));
    this.closing.add(closing);
    void closing.finally(() => this.closing.delete(closing));
  }

  /** The block backend of the guest's disk `vdev`, for its I/O (test controls) and live snapshots. */
  private diskBackend(d: SimDomain, vdev: string, op: string): { x: dev.SimDevice; backend: SimBlockBackend | undefined } {
    const x = d.devices.get(devKey('vbd', dev.vdevToDevid(vdev)));
    if (x === undefined) throw new XenError('XEN_ERROR_NOTFOUND', `XEN_ERROR_NOTFOUND: domain ${d.domid} has no disk ${vdev} (${op})`, { op, domid: d.domid });
    return { x, backend: x.backend };
  }

  /** See ToolstackConnection.snapshotDisk. */
  async snapshotDisk(domid: number, vdev: string, childPath: string): Promise<DiskSnapshot> {
    const op = 'domain.snapshotDisk';
    const d = this.guest(domid, op);
    if (d.phase !== 'up') throw inval(op, `domain ${domid} is ${d.state}`, domid);
    const { x, backend } = this.diskBackend(d, vdev, op);
    const config = x.config as DiskConfig;
    if (config.format !== 'vhd' || backend === undefined) {
      throw new XenError('XEN_DISK_NOT_VHD', `XEN_DISK_NOT_VHD: disk ${vdev} of domain ${domid} is ${config.format ?? 'raw'} ${JSON.stringify(config.target)}, not a VHD image: only a VHD can take a live snapshot (${op})`, { op, domid, path: config.target });
    }
    const { be } = dev.devicePaths(domid, x);
    const done = await backend.snapshot(childPath, (child) => {
      if (d.devices.get(devKey('vbd', x.devid)) === x) this.xs.write(`${be}/params`, `vhd:${child}`);
    });
    return { vdev: config.vdev, ...done };
  }

  /** The guest reads its disk (test control): waits while the guest is paused, and while the backend is. */
  diskRead(domid: number, vdev: string, offset: number, length: number): Promise<Buffer> {
    return this.guestIo(domid, vdev, 'mock.diskRead', (b) => b.read(offset, length));
  }

  /** The guest writes its disk (test control); resolves when the backend completes the request. */
  diskWrite(domid: number, vdev: string, offset: number, data: Uint8Array): Promise<void> {
    return this.guestIo(domid, vdev, 'mock.diskWrite', (b) => b.write(offset, data));
  }

  private async guestIo<T>(domid: number, vdev: string, op: string, fn: (b: SimBlockBackend) => Promise<T>): Promise<T> {
    const d = this.guest(domid, op);
    if (d.phase !== 'up') throw inval(op, `domain ${domid} is ${d.state}`, domid);
    const { backend } = this.diskBackend(d, vdev, op);
    if (backend === undefined) throw new XenError('XEN_ERROR_NOTFOUND', `XEN_ERROR_NOTFOUND: disk ${vdev} of domain ${domid} is an empty drive (${op})`, { op, domid });
    return new Promise<T>((resolve, reject) => d.asGuest(() => void fn(backend).then(resolve, reject)));
  }

  devices(domid: number): DeviceInfo[] {
    const d = this.get(domid, 'device.list');
    return [...d.devices.values()].map((x) => dev.describe(this.xs, domid, x));
  }

  // ---- console, save, restore ---------------------------------------------------------

  console(domid: number): SimDomain['console'] {
    return this.guest(domid, 'domain.console').console;
  }

  /** Suspends through `control/shutdown = suspend`, encodes the image, destroys the domain. */
  async save(domid: number, signal?: AbortSignal): Promise<{ image: Buffer; finish: () => Promise<void>; resume: () => void }> {
    const op = 'domain.save';
    const d = this.guest(domid, op);
    if (d.phase !== 'up') throw inval(op, `domain ${domid} is ${d.state}`, domid);
    const suspended = new Promise<void>((resolve, reject) => {
      const stop = this.subscribe((ev) => {
        if (ev.domid !== domid) return;
        if (ev.type === 'shutdown' && ev.reason === 'suspend') done(undefined);
        else done(new XenError('XEN_ERROR_FAIL', `XEN_ERROR_FAIL: domain ${domid} went away while suspending (${op})`, { op, domid }));
      });
      const onAbort = () => done(abortError(signal as AbortSignal));
      const done = (err: Error | undefined) => {
        stop();
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    this.requestShutdown(domid, 'suspend');
    try {
      await suspended;
    } catch (err) {
      this.xs.write(`/local/domain/${domid}/control/shutdown`, '');
      throw err;
    }
    const image = encodeImage({
      config: d.currentConfig(),
      memCurrent: d.memCurrent,
      memTarget: d.memTarget,
      vcpusOnline: d.vcpusOnline,
      cpuTime: d.cpuTime(),
      console: d.console.contents().toString('base64'),
    });
    return {
      image,
      finish: () => this.destroyNow(d),
      // As libxl_domain_resume after a failed save: the guest carries on where it was.
      resume: () => {
        if (d.phase !== 'shutdown' || this.domains.get(domid) !== d) return;
        d.phase = 'up';
        d.shutdownReason = undefined;
        this.engine.resumeDomain(domid);
        d.console.write('\r\n[    0.000000] PM: resume after a failed save\r\n');
        d.setRunning(d.runnable);
      },
    };
  }

  /** Restores an image; `name` replaces the saved one, `paused` leaves it paused (a migration's destination). */
  async restore(data: Buffer, signal?: AbortSignal, options: { name?: string; paused?: boolean } = {}): Promise<number> {
    const image = decodeImage(data);
    const config = options.name === undefined ? image.config : { ...image.config, name: options.name };
    return this.create(config, signal, image, { paused: options.paused });
  }

  // ---- test controls --------------------------------------------------------------------

  /** The guest crashes (a kernel panic): shutdown reason `crash`, then `on_crash`. */
  crash(domid: number): void {
    const d = this.guest(domid, 'mock.crash');
    if (d.phase !== 'up') throw inval('mock.crash', `domain ${domid} is ${d.state}`, domid);
    d.console.write('\r\nKernel panic - not syncing: Fatal exception\r\n');
    this.guestShutdown(d, 'crash');
  }

  /** The guest shuts itself down (`poweroff` inside it, or `reboot`). */
  guestInitiatedShutdown(domid: number, reason: ShutdownReason): void {
    const d = this.guest(domid, 'mock.shutdown');
    if (d.phase !== 'up') throw inval('mock.shutdown', `domain ${domid} is ${d.state}`, domid);
    d.shutdownLog(reason);
    this.guestShutdown(d, reason);
  }

  /** The guest waits for events (`blocked`) or has work to do (`running`). */
  guestIdle(domid: number, idle: boolean): void {
    const d = this.guest(domid, 'mock.idle');
    if (d.phase !== 'up') throw inval('mock.idle', `domain ${domid} is ${d.state}`, domid);
    d.idle = idle;
  }

  /** The guest writes to its console. */
  consoleWrite(domid: number, text: string | Buffer): void {
    this.guest(domid, 'mock.consoleWrite').console.write(text);
  }

  /** Stops every timer and ends every console. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) {
      clearTimeout(t as NodeJS.Timeout);
      clearImmediate(t as NodeJS.Immediate);
    }
    this.timers.clear();
    for (const settle of [...this.waiting]) settle(closedError('mock.hypervisor'));
    this.listeners.clear();
    for (const d of this.domains.values()) d.console.end();
    for (const d of this.domains.values()) for (const x of d.devices.values()) this.closeBackend(x);
    this.xs.close();
  }

  /** Resolves once every disk image the backends had open is closed. */
  async closeDisks(): Promise<void> {
    while (this.closing.size > 0) await Promise.all([...this.closing]);
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
