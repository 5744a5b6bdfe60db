import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import type { Duplex, Writable } from 'node:stream';
import { resolve } from 'node:path';
import type { DeviceInfo, DeviceKind, DiskSnapshot, DomainEvent, DomainInfo, DomainState, ToolstackConnection } from './backend-toolstack.js';
import type { DiskConfig, DomainConfig, NicConfig, PciConfig } from './config/domain-config.js';
import type { DomainEventsOptions, Domains } from './domains.js';
import { XenError, abortError } from './errors.js';
import { type MigrateOptions, sendMigration } from './migration.js';
import type { VirtualDisk } from './vhd/disk.js';

/** Options of {@link Domain.shutdown} and {@link Domain.reboot}. */
export interface ShutdownOptions {
  /** Wait until the domain is gone (shutdown) or back up (reboot). Default false. */
  wait?: boolean;
  /** With `wait`: give up after this many ms with XenError `XEN_ERROR_GUEST_TIMEDOUT`. */
  timeoutMs?: number;
  /** With `wait`: stop waiting (AbortError). The request already sent stands. */
  signal?: AbortSignal;
}

/** Options of {@link Domain.waitFor}. */
export interface WaitForOptions {
  signal?: AbortSignal;
  /** Give up after this many ms with XenError `XEN_ERROR_TIMEDOUT`. */
  timeoutMs?: number;
}

/** Options of the device calls and {@link Domain.save}. */
export interface DomainCallOptions {
  signal?: AbortSignal;
}

/** Options of {@link Domain.attachDisk}. */
export interface AttachDiskOptions extends DomainCallOptions {
  /** The name the guest sees; the first free `xvdX` when absent. */
  vdev?: string;
  access?: DiskConfig['access'];
  format?: DiskConfig['format'];
  devtype?: DiskConfig['devtype'];
  /**
   * The hotplug script the backend domain runs for the disk (xl-disk-configuration(5)
   * `script=`): a path, or a name under /etc/xen/scripts. The toolstack's `block` when absent.
   */
  script?: string;
  /**
   * Serve a `format: 'vhd'` disk so that {@link Domain.snapshotDisk} can snapshot it live:
   * on the native backend xenode serves it itself, in this process (keep the `Xen` object
   * open while the guest uses it); see {@link CreateOptions.serveVhd}. Default `false`.
   */
  serveVhd?: boolean;
}

/** What {@link Domain.waitFor} waits for: a run state, or `gone` (destroyed). */
export type WaitState = DomainState | 'gone';

const WAIT_POLL_MS = 50;

function checkMiB(value: unknown, op: string): asserts value is number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw new RangeError(`${op}: MiB must be a positive integer, got ${String(value)}`);
}

function isGone(err: unknown): boolean {
  return err instanceof XenError && err.code === 'ESRCH';
}

/**
 * One domain (a virtual machine) of the host. Get one from `xen.domains.create()`,
 * `get()` or `restore()`. It follows its domain across a reboot (which gives a new domid,
 * as on Xen) by its uuid; once the domain is destroyed, calls reject with XenError `ESRCH`.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * const dom = await xen.domains.create({ name: 'app', type: 'pvh', kernel: '/boot/vmlinuz', memory: 512, maxMemory: 1024, vcpus: 1, maxVcpus: 4 });
 * await dom.setVcpus(2);
 * await dom.setMemoryTarget(768);
 * const info = await dom.info();
 * console.log(info.state, info.vcpus.online, info.memory.target);   // running 2 768
 * await dom.shutdown({ wait: true, timeoutMs: 5000 });
 * await xen.close();
 * ```
 */
export class Domain {
  private currentDomid: number;

  /** @internal Use `xen.domains`. */
  constructor(
    private readonly domains: Domains,
    domid: number,
    /** The domain's UUID (stable across reboots and save/restore). */
    readonly uuid: string,
    /** The domain's name when this object was made (see {@link info} for the current one). */
    readonly name: string,
  ) {
    this.currentDomid = domid;
  }

  /** The domain id; changes when the domain reboots (Xen gives the new instance a new id). */
  get domid(): number {
    return this.currentDomid;
  }

  /** Runs `fn` on the domid; if the domain is gone, looks for its successor by uuid (a reboot) once. */
  private async run<T>(fn: (ts: ToolstackConnection, domid: number) => Promise<T>): Promise<T> {
    const ts = await this.domains.toolstack();
    try {
      return await fn(ts, this.currentDomid);
    } catch (err) {
      if (!isGone(err)) throw err;
      const next = (await ts.listDomains()).find((d) => d.uuid === this.uuid && d.domid !== this.currentDomid);
      if (next === undefined) throw err;
      this.currentDomid = next.domid;
      return fn(ts, next.domid);
    }
  }

  /** The domain's state, memory (MiB), vCPUs and CPU time now. */
  info(): Promise<DomainInfo> {
    return this.run((ts, id) => ts.domainInfo(id));
  }

  /** The domain's configuration now: devices attached and memory/vCPU changes included. */
  config(): Promise<DomainConfig> {
    return this.run((ts, id) => ts.domainConfig(id));
  }

  pause(): Promise<void> {
    return this.run((ts, id) => ts.pause(id));
  }

  unpause(): Promise<void> {
    return this.run((ts, id) => ts.unpause(id));
  }

  /**
   * Asks the guest to power off (through `control/shutdown`, as `xl shutdown`). Without
   * `wait`, resolves once the guest has taken the request: on the native backend libxl
   * waits up to 60 s for the guest to acknowledge it, then rejects with
   * `XEN_ERROR_GUEST_TIMEDOUT`. With `wait`, resolves once the domain is gone (or shut
   * down, when its `onPoweroff` is `preserve`), and `timeoutMs` bounds the whole wait,
   * acknowledgement included. A paused guest does not react until unpaused.
   */
  async shutdown(options: ShutdownOptions = {}): Promise<void> {
    const preserve = options.wait ? (await this.config()).onPoweroff === 'preserve' : false;
    await this.request('poweroff', options, (ev, id) => ev.domid === id && (ev.type === 'death' || (preserve && ev.type === 'shutdown')));
  }

  /**
   * Asks the guest to reboot (as `xl reboot`). Without `wait`, resolves once the guest has
   * taken the request (as {@link shutdown}). With `wait`, resolves once the new instance
   * runs; this object then refers to it (its new {@link domid}).
   */
  async reboot(options: ShutdownOptions = {}): Promise<void> {
    await this.request('reboot', options, (ev) => ev.type === 'created' && ev.name === this.name);
  }

  private async request(kind: 'poweroff' | 'reboot', options: ShutdownOptions, done: (ev: DomainEvent, domid: number) => boolean): Promise<void> {
    const { wait = false, timeoutMs, signal } = options;
    if (timeoutMs !== undefined && (!Number.isFinite(timeoutMs) || timeoutMs < 0)) throw new RangeError(`${kind}: timeoutMs must be a non-negative number`);
    if (!wait) return this.run((ts, id) => ts.shutdown(id, kind));
    const ac = new AbortController();
    let failed: { err: unknown } | undefined; // the request itself, rejected
    const events = this.domains.eventStream({ signal: ac.signal }, () => true);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => ac.abort(new XenError('XEN_ERROR_GUEST_TIMEDOUT', `XEN_ERROR_GUEST_TIMEDOUT: domain ${this.currentDomid} did not ${kind === 'poweroff' ? 'shut down' : 'reboot'} within ${timeoutMs} ms`, { op: `domain.${kind}`, domid: this.currentDomid })), timeoutMs);
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw abortError(signal);
      // Subscribed before the request, so the outcome cannot be missed.
      await this.domains.toolstack();
      await new Promise((r) => setImmediate(r));
      const domid = this.currentDomid;
      // libxl settles the request only once the guest acknowledges it (60 s at most): the
      // events and the timer run meanwhile, so timeoutMs bounds the whole wait, and a
      // guest that shuts down before the acknowledgement is seen is not waited for twice.
      this.run((ts, id) => ts.shutdown(id, kind)).catch((err: unknown) => {
        failed ??= { err };
        ac.abort(err);
      });
      for await (const ev of events) {
        if (done(ev, domid)) {
          if (ev.type === 'created') this.currentDomid = ev.domid;
          return;
        }
      }
    } catch (err) {
      if (failed !== undefined) throw failed.err;
      if (ac.signal.aborted && ac.signal.reason instanceof XenError) throw ac.signal.reason;
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      await events.return();
    }
  }

  /** Destroys the domain at once (as `xl destroy`); resolves when it is gone. */
  destroy(): Promise<void> {
    return this.run((ts, id) => ts.destroy(id));
  }

  /** Sets the balloon target in MiB (as `xl mem-set`); the guest's balloon driver follows. */
  setMemoryTarget(mib: number): Promise<void> {
    checkMiB(mib, 'setMemoryTarget');
    return this.run((ts, id) => ts.setMemoryTarget(id, mib));
  }

  /** Sets the maximum memory in MiB (as `xl mem-max`). */
  setMaxMemory(mib: number): Promise<void> {
    checkMiB(mib, 'setMaxMemory');
    return this.run((ts, id) => ts.setMaxMemory(id, mib));
  }

  /** Brings `count` vCPUs online (as `xl vcpu-set`), at most the domain's maxVcpus. */
  setVcpus(count: number): Promise<void> {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`setVcpus: count must be a positive integer, got ${String(count)}`);
    return this.run((ts, id) => ts.setVcpus(id, count));
  }

  /** Pins a vCPU to physical CPUs (as `xl vcpu-pin`). */
  pinVcpu(vcpu: number, cpus: readonly number[]): Promise<void> {
    if (!Number.isInteger(vcpu) || vcpu < 0) throw new RangeError(`pinVcpu: vcpu must be a non-negative integer, got ${String(vcpu)}`);
    if (!Array.isArray(cpus) || cpus.length === 0 || !cpus.every((c) => Number.isInteger(c) && c >= 0)) throw new TypeError('pinVcpu: cpus must be a non-empty array of CPU numbers');
    return this.run((ts, id) => ts.pinVcpu(id, vcpu, [...cpus]));
  }

  /** Renames the domain (as `xl rename`); XenError `XEN_ERROR_INVAL` when the name is taken. */
  rename(name: string): Promise<void> {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_.:+-][A-Za-z0-9_.:+@-]{0,63}$/.test(name)) throw new TypeError(`rename: not a valid domain name: ${JSON.stringify(name)}`);
    return this.run((ts, id) => ts.rename(id, name));
  }

  /**
   * Attaches a disk while the domain runs (as `xl block-attach`): a file or device path,
   * a {@link VirtualDisk}, or a full {@link DiskConfig}. A VirtualDisk is flushed, then
   * attached by its path (as `vhd`, or `raw` for a raw image): the disk's backend opens the
   * image and serves the guest from it, so from then on the backend owns the file — do not
   * write through your own handle while the disk is attached (close it, or use it only for
   * reading what was there before).
   *
   * @example
   * ```ts
   * import { connect } from 'xenode';
   * const xen = await connect({ backend: 'mock' });
   * const dom = await xen.domains.create({ name: 'nas', type: 'pv', kernel: '/k', memory: 256, vcpus: 1 });
   * const disk = await dom.attachDisk('/srv/data.img', { access: 'ro' });
   * console.log(disk.kind, disk.devid, disk.backendState);    // vbd 51712 connected
   * const nic = await dom.attachNic({ bridge: 'xenbr0', queues: 4 });
   * console.log((await dom.listDevices()).length);            // 2
   * await dom.detachDevice(nic);
   * await xen.close();
   * ```
   */
  async attachDisk(disk: string | VirtualDisk | DiskConfig, options: AttachDiskOptions = {}): Promise<DeviceInfo> {
    let config: DiskConfig;
    if (typeof disk === 'string') config = { target: disk, vdev: '' };
    else if (disk !== null && typeof disk === 'object' && 'vdev' in disk && typeof (disk as DiskConfig).target === 'string') config = { ...(disk as DiskConfig) };
    else if (disk !== null && typeof disk === 'object' && typeof (disk as VirtualDisk).path === 'string' && typeof (disk as VirtualDisk).info === 'function') {
      const vd = disk as VirtualDisk;
      config = { target: vd.path, vdev: '', format: vd.info().type === 'raw' ? 'raw' : 'vhd' };
      // What was written through the caller's handle must be in the file the backend opens (a closed disk has nothing pending).
      await vd.flush().catch((err: unknown) => {
        if (!(err instanceof XenError && err.code === 'XEN_CLOSED')) throw err;
      });
    } else throw new TypeError('attachDisk: expected a path, a VirtualDisk or a DiskConfig');
    if (options.vdev !== undefined) config.vdev = options.vdev;
    if (options.access !== undefined) config.access = options.access;
    if (options.format !== undefined) config.format = options.format;
    if (options.devtype !== undefined) config.devtype = options.devtype;
    if (options.script !== undefined) {
      if (typeof options.script !== 'string') throw new TypeError('attachDisk: script must be a string');
      if (options.script === '' || /[\0,]/.test(options.script)) throw new RangeError(`attachDisk: script must be a non-empty path without commas, got ${JSON.stringify(options.script)}`);
      config.script = options.script;
    }
    if (config.vdev === '') config.vdev = await this.freeVdev();
    if (!/^(xvd|hd|sd)[a-z]+\d*$/.test(config.vdev)) throw new RangeError(`attachDisk: vdev must name a virtual disk (xvdb, hdc, sdb…), got ${JSON.stringify(config.vdev)}`);
    if (options.serveVhd !== undefined && typeof options.serveVhd !== 'boolean') throw new TypeError('attachDisk: serveVhd must be a boolean');
    const call = { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.serveVhd === true ? { serveVhd: true } : {}) };
    return this.run((ts, id) => ts.attachDevice(id, { kind: 'disk', disk: config }, call));
  }

  private async freeVdev(): Promise<string> {
    const used = new Set((await this.listDevices()).filter((d) => d.kind === 'vbd').map((d) => (d.config as DiskConfig).vdev));
    for (let i = 0; i < 26; i++) {
      const name = `xvd${String.fromCharCode(97 + i)}`;
      if (!used.has(name)) return name;
    }
    throw new RangeError('attachDisk: every xvda..xvdz is taken; pass options.vdev');
  }

  /** Attaches a network interface (as `xl network-attach`); `queues` sets multi-queue netfront. */
  attachNic(nic: NicConfig = {}, options: DomainCallOptions = {}): Promise<DeviceInfo> {
    if (nic === null || typeof nic !== 'object') throw new TypeError('attachNic: nic must be an object');
    if (nic.queues !== undefined && (!Number.isInteger(nic.queues) || nic.queues < 1)) throw new RangeError(`attachNic: queues must be a positive integer, got ${String(nic.queues)}`);
    if (nic.mac !== undefined && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(nic.mac)) throw new RangeError(`attachNic: not a MAC address: ${JSON.stringify(nic.mac)}`);
    return this.run((ts, id) => ts.attachDevice(id, { kind: 'nic', nic: { ...nic } }, options.signal === undefined ? {} : { signal: options.signal }));
  }

  /**
   * Passes a host PCI function through (as `xl pci-attach`), SR-IOV virtual functions
   * included. XenError `XEN_ERROR_FAIL` when the host cannot assign it.
   */
  attachPci(pci: string | PciConfig, options: DomainCallOptions = {}): Promise<DeviceInfo> {
    const config = typeof pci === 'string' ? { bdf: pci } : { ...pci };
    if (typeof config.bdf !== 'string' || !/^(?:[0-9a-f]{1,4}:)?[0-9a-f]{1,2}:[0-1]?[0-9a-f]\.[0-7]$/i.test(config.bdf)) throw new RangeError(`attachPci: not a PCI address ([DDDD:]BB:DD.F): ${JSON.stringify(config.bdf)}`);
    return this.run((ts, id) => ts.attachDevice(id, { kind: 'pci', pci: config }, options.signal === undefined ? {} : { signal: options.signal }));
  }

  /** Detaches a device (one {@link listDevices} or an attach call returned). */
  detachDevice(device: Pick<DeviceInfo, 'kind' | 'devid'>, options: DomainCallOptions = {}): Promise<void> {
    const kinds: DeviceKind[] = ['vbd', 'vif', 'pci'];
    if (device === null || typeof device !== 'object' || !kinds.includes(device.kind) || !Number.isInteger(device.devid)) throw new TypeError('detachDevice: expected { kind: vbd|vif|pci, devid }');
    return this.run((ts, id) => ts.detachDevice(id, device.kind, device.devid, options.signal === undefined ? {} : { signal: options.signal }));
  }

  /**
   * Takes a live snapshot of the running domain's VHD disk `vdev`: the disk's backend pauses
   * (the guest keeps running; its disk requests wait), flushes, the image becomes the hidden,
   * read-only parent of a new differencing image at `childPath`, the backend switches to the
   * child and resumes. Writes the guest made before are in the parent, later ones in the
   * child. Resolves with both paths and `pausedMs`, how long the guest's disk requests were
   * held. Rejects with nothing changed: XenError `XEN_ERROR_NOTFOUND` (no disk `vdev`),
   * `XEN_DISK_NOT_VHD` (not a VHD image), `EEXIST` (`childPath` exists), `XEN_ERROR_INVAL`
   * (the domain is not running), `XEN_LIVE_SNAPSHOT_UNSUPPORTED` (a backend that cannot do
   * it: the native one on Xen 4.17, for a disk that xenode's own block backend does not
   * serve; see docs/blkback.md). A disk this connection serves with
   * `xen.blockBackend.serve()` is snapshotted by it, in this process.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { MockHost, VirtualDisk, connect } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-live-'));
   * const host = await MockHost.create({ timing: 'instant' });
   * const xen = await connect({ backend: host });
   * await (await VirtualDisk.create(join(dir, 'root.vhd'), { size: 64 * 1024 * 1024, type: 'dynamic' })).close();
   * const dom = await xen.domains.create({
   *   name: 'web', type: 'pvh', kernel: '/boot/vmlinuz', memory: 256, vcpus: 1,
   *   disks: [{ target: join(dir, 'root.vhd'), vdev: 'xvda', format: 'vhd' }],
   * });
   * await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('before'));
   * const snap = await dom.snapshotDisk('xvda', join(dir, 'root-1.vhd'));
   * console.log(snap.child === join(dir, 'root-1.vhd'), snap.pausedMs < 1000); // true true
   * await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('after!'));
   * await dom.destroy();
   * await xen.close();
   * await host.close();
   * const parent = await VirtualDisk.open(snap.parent, { readOnly: true });
   * console.log((await parent.read(0, 6)).toString()); // before
   * await parent.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  snapshotDisk(vdev: string, childPath: string): Promise<DiskSnapshot> {
    if (typeof vdev !== 'string' || !/^(xvd|hd|sd)[a-z]+\d*$/.test(vdev)) throw new RangeError(`snapshotDisk: vdev must name a virtual disk (xvda, hdc, sdb…), got ${JSON.stringify(vdev)}`);
    if (typeof childPath !== 'string' || childPath === '') throw new TypeError('snapshotDisk: childPath must be a non-empty string');
    const child = resolve(childPath);
    return this.run(async (ts, id) => {
      // A disk xenode serves itself is snapshotted by its backend, in this process.
      const served = this.domains.servedDisk(id, vdev);
      return served !== undefined ? served.snapshot(child) : ts.snapshotDisk(id, vdev, child);
    });
  }

  /** The domain's devices, with the xenbus state of their frontend and backend. */
  listDevices(): Promise<DeviceInfo[]> {
    return this.run((ts, id) => ts.listDevices(id));
  }

  /** This domain's events (`shutdown` with its reason, `death`), as `xen.domains.events()` but filtered. */
  events(options: DomainEventsOptions = {}): AsyncIterableIterator<DomainEvent> {
    return this.domains.eventStream(options, (ev) => ev.domid === this.currentDomid);
  }

  /**
   * Resolves once the domain is in `state` (or gone, for `'gone'`). `'running'` is also
   * met by `'blocked'`: both mean the guest is up and unpaused, and an idle guest spends
   * most of its time blocked, waiting for an event, so on real Xen it may seldom be seen
   * running at the instant of a poll. `'blocked'` waits for blocked only. Rejects with XenError
   * `XEN_ERROR_TIMEDOUT` after `timeoutMs`, `ESRCH` if the domain dies while waiting for a
   * state, AbortError on `signal`.
   */
  async waitFor(state: WaitState, options: WaitForOptions = {}): Promise<void> {
    const states: WaitState[] = ['running', 'blocked', 'paused', 'shutdown', 'crashed', 'dying', 'gone'];
    if (!states.includes(state)) throw new RangeError(`waitFor: state must be one of ${states.join(', ')}`);
    const { signal, timeoutMs } = options;
    const started = performance.now();
    const ts = await this.domains.toolstack();
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      let now: DomainState | 'gone';
      try {
        now = (await ts.domainInfo(this.currentDomid)).state;
      } catch (err) {
        if (!isGone(err)) throw err;
        now = 'gone';
      }
      if (now === state || (state === 'running' && now === 'blocked')) return;
      if (now === 'gone') throw new XenError('ESRCH', `ESRCH: domain ${this.currentDomid} is gone (waiting for ${state})`, { op: 'domain.waitFor', domid: this.currentDomid, errno: 3 });
      if (timeoutMs !== undefined && performance.now() - started >= timeoutMs) {
        throw new XenError('XEN_ERROR_TIMEDOUT', `XEN_ERROR_TIMEDOUT: domain ${this.currentDomid} is ${now}, not ${state}, after ${timeoutMs} ms`, { op: 'domain.waitFor', domid: this.currentDomid });
      }
      // Pause/unpause have no event in libxl: poll, but wake early on any event of this domain.
      await this.nap(signal);
    }
  }

  private nap(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const ac = new AbortController();
      const events = this.events({ signal: ac.signal });
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        ac.abort();
        resolve();
      };
      const timer = setTimeout(done, WAIT_POLL_MS);
      signal?.addEventListener('abort', done, { once: true });
      events.next().then(done, done);
    });
  }

  /**
   * The guest's console as a byte stream (as `xl console`): reading gives what the guest
   * printed (what the console still holds first), writing types into it. It ends when the
   * domain dies; destroy it to detach.
   */
  console(): Promise<Duplex> {
    return this.run((ts, id) => ts.openConsole(id));
  }

  /**
   * Saves the domain (as `xl save`) to a file path or a writable stream (not ended); the
   * domain is suspended, written out and destroyed. Restore it with `xen.domains.restore()`.
   */
  async save(pathOrWritable: string | Writable, options: DomainCallOptions = {}): Promise<void> {
    const opts = options.signal === undefined ? {} : { signal: options.signal };
    if (typeof pathOrWritable === 'string') {
      const out = createWriteStream(pathOrWritable);
      try {
        await this.run((ts, id) => ts.save(id, out, opts));
      } finally {
        out.end();
        await finished(out).catch(() => undefined);
      }
      return;
    }
    if (pathOrWritable === null || typeof pathOrWritable !== 'object' || typeof pathOrWritable.write !== 'function') throw new TypeError('save: expected a file path or a Writable');
    await this.run((ts, id) => ts.save(id, pathOrWritable, opts));
  }

  /**
   * Migrates the domain (as `xl migrate`) through `stream`, a Duplex connected to a host
   * that runs {@link Domains.receiveMigration} on its other end: a TCP socket, an ssh
   * child's stdio (`Duplex.from({ readable: child.stdout, writable: child.stdin })`), or
   * the two ends of a pair on the same host. Resolves once the destination runs the
   * domain and the source is destroyed. The stream is left open (not ended).
   *
   * The domain never runs twice and is not lost: until the destination confirms the
   * restore, a failure resumes it here. Rejects with XenError
   * `XEN_MIGRATION_REFUSED` (the destination said no: name in use, not enough memory;
   * nothing was sent), `XEN_MIGRATION_FAILED` (the stream broke or the destination failed;
   * the domain runs on here), `XEN_MIGRATION_UNCONFIRMED` (the stream broke after the
   * hand-over: the domain is left suspended here as `<name>--migratedaway`), or
   * `XEN_MIGRATION_UNSUPPORTED` (a live migration this host cannot do, see
   * {@link MigrateOptions.live}). On the same host, the source is renamed
   * `<name>--migratedaway` and the destination arrives as `<name>--incoming` until the
   * hand-over; this `Domain` then follows the domain to its new domid.
   *
   * @example
   * ```ts
   * import { Duplex, PassThrough } from 'node:stream';
   * import { connect } from 'xenode';
   * const xen = await connect({ backend: 'mock' });
   * const dom = await xen.domains.create({ name: 'web', type: 'pvh', kernel: '/boot/vmlinuz', memory: 256, vcpus: 1 });
   * // a stream pair to this same host; across hosts, a net.Socket on each side
   * const [a, b] = [new PassThrough(), new PassThrough()];
   * const arriving = xen.domains.receiveMigration(Duplex.from({ readable: a, writable: b }));
   * await dom.migrate(Duplex.from({ readable: b, writable: a }), { onProgress: (p) => console.log(p.phase, p.bytes) });
   * const moved = await arriving;
   * console.log(moved.name, moved.domid !== dom.domid);   // web true
   * await xen.close();
   * ```
   */
  async migrate(stream: Duplex, options: MigrateOptions = {}): Promise<void> {
    const ts = await this.domains.toolstack();
    await sendMigration(ts, this.currentDomid, stream, options);
  }
}
