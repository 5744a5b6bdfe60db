/**
 * The native {@link ToolstackConnection}: domains, devices, events, consoles and
 * save/restore on a real Xen host, over libxl ({@link LibxlConnection}), libxenctrl
 * ({@link XenCtrl}) and xenstore (device states, names, balloon targets, domain events).
 *
 * What libxl alone does not do, this connection does, as `xl` does:
 * - `createDomain` creates the domain paused and unpauses it once it is built.
 * - With a {@link DiskServer} lent (`useDiskServer`, which `connect()` does) and the call's
 *   `serveVhd` option, a disk of `format: 'vhd'` is not given to libxl (Debian's Xen 4.17 has no tapdisk, and qdisk
 *   cannot open a differencing VHD) but served by xenode's block backend in this process:
 *   the image is opened before the domain is built, served while it is still paused, and
 *   closed when the domain is destroyed (or dies). See docs/blkback.md.
 * - A domain's `on_poweroff` / `on_reboot` / `on_crash` / `on_watchdog` actions are carried
 *   out by the toolstack, not by Xen: `xl create` leaves a daemon per domain for that.
 *   Here the connection that created (or restored) a domain carries them out while it is
 *   open (destroy, restart with the same configuration and uuid, preserve). Coredump
 *   actions destroy/restart without writing a core; `soft-reset` preserves the domain.
 * - Events come from comparing libxl's domain list with the previous one, every
 *   `pollMs` (250) while anyone listens, a console is open or a domain awaits its
 *   shutdown action, and at once after this connection's own operations. libxl's death
 *   watches and xenstored's `@introduceDomain`/`@releaseDomain` watches would report
 *   sooner but keep the process alive, which the contract forbids for a subscription;
 *   the poll runs on an unref'd timer.
 * - `save` writes a small header (the domain's libxl configuration, as `xl save` does in
 *   its own header) before libxl's stream; `restore` reads it back. The format is
 *   xenode's own: `xl restore` cannot read it, nor this `xl save` files.
 * - A migration's halves (lib/native/migration.ts) stream the same image through a pipe
 *   instead of a temporary file; the protocol around them is lib/migration.ts.
 * Error codes are those of the contract (lib/backend-toolstack.ts): libxl's
 * `ERROR_DOMAIN_NOTFOUND` becomes `ESRCH`, `ERROR_NOMEM` `ENOMEM`.
 * @internal
 */
import { randomUUID } from 'node:crypto';
import { constants as fsc, createReadStream, open as openCb } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { ReadStream as TtyReadStream } from 'node:tty';
import type { XenStoreConnection } from '../backend.js';
import type {
  DeviceInfo,
  DeviceKind,
  DeviceSpec,
  DiskServer,
  DiskSnapshot,
  DomainEvent,
  DomainInfo,
  DomainState,
  HostInfo,
  ShutdownReason,
  ServedDiskHandle,
  ShutdownRequest,
  ToolstackCallOptions,
  ToolstackConnection,
  XenbusState,
} from '../backend-toolstack.js';
import type { DiskConfig, DomainAction, DomainConfig, NicConfig, PciConfig } from '../config/domain-config.js';
import { diskToLibxl, fromLibxlConfig, nicToLibxl, pciToLibxl, toLibxlConfig } from '../config/libxl-json.js';
import type { LibxlDomainConfig } from '../config/libxl-types.gen.js';
import { XenError, abortError, closedError } from '../errors.js';
import { vdevToDevid } from '../mock/devices.js';
import { BLOCK_BACKEND_TYPE } from '../blkback/block-backend.js';
import { requestSnapshot } from '../blkback/remote-snapshot.js';
import { VirtualDisk } from '../vhd/disk.js';
import type { LibxlConnection, LibxlDomInfo, LibxlJson } from './libxl.js';
import { SAVE_MAGIC, liveMigrationObstacle, readImageHeader, restoreFrom, resumeIfSuspended, suspendInto } from './migration.js';
import type { XenCtrl } from './xenctrl.js';

/** What the toolstack uses of a libxl context (a fake in the unit tests). */
export type LibxlPort = Pick<
  LibxlConnection,
  | 'xenVersion'
  | 'createDomain'
  | 'restoreDomain'
  | 'destroyDomain'
  | 'shutdownDomain'
  | 'rebootDomain'
  | 'pauseDomain'
  | 'unpauseDomain'
  | 'listDomains'
  | 'domainInfo'
  | 'domainConfig'
  | 'setMemoryTarget'
  | 'setMaxMemory'
  | 'setVcpuCount'
  | 'addDevice'
  | 'removeDevice'
  | 'suspendDomain'
  | 'resumeDomain'
  | 'makePipe'
  | 'consoleTty'
  | 'renameDomain'
  | 'close'
>;
/** What the toolstack uses of libxenctrl. */
export type XenCtrlPort = Pick<XenCtrl, 'version' | 'physinfo' | 'setVcpuAffinity' | 'close'>;
/** What the toolstack uses of a xenstore connection (dom0's). */
export type XenStorePort = Pick<XenStoreConnection, 'read' | 'directory' | 'close'> & Partial<Pick<XenStoreConnection, 'write' | 'rm'>>;

/** Tuning of a {@link NativeToolstack}. */
export interface NativeToolstackOptions {
  /** How often the domain list is compared for events, in ms (250). */
  pollMs?: number;
  /**
   * How long `attachDevice` waits for a running guest's frontend to connect a new disk or
   * NIC, in ms (60 000): a guest that is still booting connects it once its driver loads.
   */
  connectWaitMs?: number;
}

export { SAVE_MAGIC } from './migration.js';

const REASONS: ShutdownReason[] = ['poweroff', 'reboot', 'suspend', 'crash', 'watchdog', 'soft_reset'];
const XENBUS: XenbusState[] = ['unknown', 'initialising', 'initwait', 'initialised', 'connected', 'closing', 'closed', 'reconfiguring', 'reconfigured'];
const KINDS: DeviceKind[] = ['vbd', 'vif', 'pci'];

/** libxl's shutdown reason (a name or the enum's number) as the contract's name. */
export function shutdownReason(raw: string | number | undefined): ShutdownReason {
  if (raw === undefined) return 'poweroff';
  if (typeof raw === 'number') return REASONS[raw] ?? 'unknown';
  const name = raw.toLowerCase() as ShutdownReason;
  return REASONS.includes(name) ? name : 'unknown';
}

/** The run state of a libxl dominfo, as `xl list` shows it. */
export function domainState(info: LibxlDomInfo): DomainState {
  if (info.dying) return 'dying';
  if (info.shutdown) return shutdownReason(info.shutdown_reason) === 'crash' ? 'crashed' : 'shutdown';
  if (info.paused) return 'paused';
  if (info.running) return 'running';
  return 'blocked';
}

/** Maps a libxl/xenctrl failure to the contract's codes. */
export function toolstackError(err: unknown, op: string, domid?: number): unknown {
  if (!(err instanceof XenError)) return err;
  if (err.code === 'XEN_ERROR_DOMAIN_NOTFOUND' || err.code === 'ESRCH') return XenError.fromErrno('ESRCH', { op, domid: domid ?? err.domid });
  if (err.code === 'XEN_ERROR_NOMEM') return XenError.fromErrno('ENOMEM', { op, domid: domid ?? err.domid });
  return err;
}

function inval(op: string, message: string, domid?: number): XenError {
  return new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: ${message} (${op})`, { op, domid });
}

const kib = (mib: number): number => Math.round(mib * 1024);
const mibOf = (kb: number | undefined): number => Math.floor((kb ?? 0) / 1024);

/** A console pty as a Duplex that ends (rather than fails) when the pty's master goes. */
class ConsoleStream extends Duplex {
  private ended = false;

  constructor(
    private readonly tty: TtyReadStream,
    readonly domid: number,
    private readonly onGone: (s: ConsoleStream) => void,
  ) {
    super();
    tty.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) tty.pause();
    });
    tty.on('end', () => this.finish());
    tty.on('close', () => this.finish());
    tty.on('error', (err: NodeJS.ErrnoException) => {
      // A pty whose master closed (the domain died, xenconsoled let it go) reads EIO.
      if (err.code === 'EIO' || err.code === 'ENXIO') this.finish();
      else this.destroy(err);
    });
  }

  /** Ends what is read (the domain is gone, or the connection closed). */
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.push(null);
    this.onGone(this);
  }

  override _read(): void {
    this.tty.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.tty.destroyed) return cb(new XenError('EIO', 'EIO: the console is closed (domain.console)', { op: 'domain.console', domid: this.domid }));
    this.tty.write(chunk, (err) => cb(err ?? null));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.tty.destroy();
    this.onGone(this);
    cb(err);
  }
}

interface Known {
  name: string;
  down: boolean;
  dying: boolean;
  reason: string | number | undefined;
}

export class NativeToolstack implements ToolstackConnection {
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly listeners = new Set<(event: DomainEvent) => void>();
  private readonly consoles = new Set<ConsoleStream>();
  /** Domains this connection created or restored: their configs, for on_* actions. */
  private readonly managed = new Map<number, true>();
  /** What the last comparison saw. */
  private known: Map<number, Known> | undefined;
  private watching: Promise<void> | undefined;
  private syncing: Promise<void> | undefined;
  private again = false;
  private retry: NodeJS.Timeout | undefined;
  private diskServer: DiskServer | undefined;
  /** Disks served through `diskServer`, by domid. */
  private readonly served = new Map<number, Map<string, ServedDiskHandle>>();
  /** The vdevs of each created domain's disks in the order of its configuration. */
  private readonly diskOrder = new Map<number, string[]>();

  constructor(
    private readonly libxl: LibxlPort,
    private readonly xc: XenCtrlPort,
    private readonly xs: XenStorePort,
    options: NativeToolstackOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 250;
    this.connectWaitMs = options.connectWaitMs ?? 60_000;
  }

  private readonly pollMs: number;
  private readonly connectWaitMs: number;

  private check(op: string): void {
    if (this.closed) throw closedError(op);
  }

  private async run<T>(op: string, domid: number | undefined, fn: () => Promise<T>): Promise<T> {
    this.check(op);
    try {
      return await fn();
    } catch (err) {
      if (this.closed && err instanceof XenError && err.code !== 'XEN_CLOSED') throw closedError(op);
      throw toolstackError(err, op, domid);
    }
  }

  private async xsRead(path: string): Promise<string | undefined> {
    try {
      return (await this.xs.read(0, path)).toString('utf8');
    } catch {
      return undefined;
    }
  }

  private async xsDir(path: string): Promise<string[]> {
    try {
      return await this.xs.directory(0, path);
    } catch {
      return [];
    }
  }

  // ---- host ----

  hostInfo(): Promise<HostInfo> {
    return this.run('host.info', undefined, async () => {
      const [v, p] = await Promise.all([this.xc.version(), this.xc.physinfo()]);
      const threads = p.threadsPerCore || 1;
      return {
        xenVersion: v.version,
        capabilities: v.capabilities,
        cpus: p.nrCpus,
        cores: Math.floor(p.nrCpus / threads),
        sockets: p.sockets,
        threadsPerCore: threads,
        numaNodes: p.nrNodes,
        totalMemory: mibOf(p.totalMemoryKb),
        freeMemory: mibOf(p.freeMemoryKb),
        // Neither libxl's physinfo nor xenctrl's tells the default scheduler; the
        // hypervisor's command line does, which dom0 cannot read portably.
        scheduler: 'unknown',
      };
    });
  }

  // ---- domains ----

  private async describe(info: LibxlDomInfo): Promise<DomainInfo> {
    const home = `/local/domain/${info.domid}`;
    const [name, target, staticMax, vm, cpus] = await Promise.all([
      this.xsRead(`${home}/name`),
      this.xsRead(`${home}/memory/target`),
      this.xsRead(`${home}/memory/static-max`),
      this.xsRead(`${home}/vm`),
      this.xsDir(`${home}/cpu`),
    ]);
    // libxl's dominfo JSON leaves the uuid out; the domain's /vm/<uuid> path has it.
    let uuid = /^\/vm\/([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})/i.exec(vm ?? '')?.[1] ?? info.uuid;
    if (uuid === undefined && info.domid !== 0) uuid = ((await this.libxl.domainConfig(info.domid).catch(() => undefined)) as LibxlDomainConfig | undefined)?.c_info?.uuid;
    // vCPUs the toolstack set online (cpu/N/availability, as libxl_set_vcpuonline writes
    // it): what Xen counts as up lags until the guest kernel has brought them up.
    const avail = cpus.length ? (await Promise.all(cpus.map((n) => this.xsRead(`${home}/cpu/${n}/availability`)))).filter((a) => a === 'online').length : 0;
    const state = domainState(info);
    const out: DomainInfo = {
      domid: info.domid,
      name: name ?? (info.domid === 0 ? 'Domain-0' : ''),
      uuid: uuid ?? '00000000-0000-0000-0000-000000000000',
      state,
      memory: {
        current: mibOf(info.current_memkb),
        target: target === undefined ? mibOf(info.current_memkb) : mibOf(Number(target)),
        max: staticMax === undefined ? mibOf(info.max_memkb) : mibOf(Number(staticMax)),
      },
      vcpus: { online: avail || (info.vcpu_online ?? 0), max: (info.vcpu_max_id ?? 0) + 1 },
      cpuTime: (info.cpu_time ?? 0) / 1e9,
    };
    if (state === 'shutdown' || state === 'crashed') out.shutdownReason = shutdownReason(info.shutdown_reason);
    return out;
  }

  listDomains(): Promise<DomainInfo[]> {
    return this.run('domains.list', undefined, async () => {
      const list = (await this.libxl.listDomains()).sort((a, b) => a.domid - b.domid);
      return Promise.all(list.map((d) => this.describe(d)));
    });
  }

  domainInfo(domid: number): Promise<DomainInfo> {
    return this.run('domain.info', domid, async () => this.describe(await this.existing(domid, 'domain.info')));
  }

  domidByName(name: string): Promise<number> {
    return this.run('domains.get', undefined, async () => {
      const found = (await this.listDomains()).find((d) => d.name === name);
      if (found === undefined) throw XenError.fromErrno('ESRCH', { op: 'domains.get', path: name });
      return found.domid;
    });
  }

  domainConfig(domid: number): Promise<DomainConfig> {
    return this.run('domain.config', domid, async () => {
      const config = fromLibxlConfig((await this.libxl.domainConfig(domid)) as LibxlDomainConfig);
      const mine = this.served.get(domid);
      if (mine === undefined || mine.size === 0) return config;
      // libxl knows nothing of the disks served here: add them, naming the image served now.
      const served = this.servedConfigs(domid);
      const order = this.diskOrder.get(domid) ?? [];
      const rank = (d: DiskConfig) => {
        const i = order.indexOf(d.vdev);
        return i < 0 ? order.length : i;
      };
      config.disks = [...(config.disks ?? []), ...served].map((d, i) => ({ d, i })).sort((a, b) => rank(a.d) - rank(b.d) || a.i - b.i).map(({ d }) => d);
      return config;
    });
  }

  private async nameTaken(name: string, except?: number): Promise<boolean> {
    return (await this.listDomains()).some((d) => d.name === name && d.domid !== except);
  }

  createDomain(config: DomainConfig, options: ToolstackCallOptions = {}): Promise<number> {
    return this.run('domains.create', undefined, async () => {
      const { signal } = options;
      if (signal?.aborted) throw abortError(signal);
      const own = options.serveVhd === true ? (config.disks ?? []).filter((d) => this.servesItself(d)) : [];
      const forLibxl: DomainConfig = own.length === 0 ? config : { ...config, disks: (config.disks ?? []).filter((d) => !own.includes(d)) };
      // xl, not libxl, makes up a domain's uuid: without one libxl creates the domain with
      // the nil uuid, dom0's, and nothing could tell the two apart.
      const json = toLibxlConfig({ ...forLibxl, uuid: config.uuid ?? randomUUID() });
      if (await this.nameTaken(config.name)) throw inval('domains.create', `a domain called '${config.name}' exists already`);
      const free = (await this.xc.physinfo()).freeMemoryKb;
      if (kib(config.memory) > free) throw XenError.fromErrno('ENOMEM', { op: 'domains.create', path: config.name });
      await this.startWatching().catch(() => undefined);
      const order = own.length > 0 ? (config.disks ?? []).map((d) => d.vdev) : undefined;
      try {
        return await this.buildServing(json as LibxlJson, own, order, signal);
      } finally {
        this.kick();
      }
    });
  }

  /**
   * Builds the domain `json` paused, serves it `disks` (the ones libxl is not given; `order`
   * is the vdev order of its whole configuration), then unpauses it. A missing image or one
   * that is no VHD fails before any domain exists; a later failure (or `signal`) destroys
   * the domain and closes every image. Resolves with the new domid.
   */
  private async buildServing(json: LibxlJson, disks: readonly DiskConfig[], order: string[] | undefined, signal?: AbortSignal): Promise<number> {
    const images = await openImages(disks);
    let domid: number;
    try {
      domid = await this.libxl.createDomain(json, { paused: true });
    } catch (err) {
      await closeImages(images);
      throw err;
    }
    this.managed.set(domid, true);
    if (order !== undefined) this.diskOrder.set(domid, order);
    try {
      await this.serveDisks(domid, disks, images, signal);
      if (signal?.aborted) throw abortError(signal);
      await this.libxl.unpauseDomain(domid);
    } catch (err) {
      this.managed.delete(domid);
      await this.libxl.destroyDomain(domid).catch(() => undefined);
      await this.endServed(domid);
      throw err;
    }
    return domid;
  }

  /** The disks served here for `domid`, as configuration naming the image each serves now. */
  private servedConfigs(domid: number): DiskConfig[] {
    return [...(this.served.get(domid)?.values() ?? [])].map((h) => ({ target: h.path, vdev: h.vdev, format: 'vhd', ...(h.readOnly ? { access: 'ro' as const } : {}) }));
  }

  /** See {@link ToolstackConnection.useDiskServer}. */
  useDiskServer(server: DiskServer): void {
    this.diskServer = server;
  }

  /** Whether `disk` is served through the lent {@link DiskServer} rather than by libxl. */
  private servesItself(disk: DiskConfig): boolean {
    if (this.diskServer === undefined || disk.format !== 'vhd' || disk.devtype === 'cdrom' || disk.backendType !== undefined) return false;
    return disk.backendDomain === undefined || disk.backendDomain === '0' || disk.backendDomain === 'Domain-0';
  }

  /**
   * Serves each of `disks` (opened as `images`) to the paused domain. Every image is
   * either handed to a served disk or closed here; the served ones end with the domain.
   */
  private async serveDisks(domid: number, disks: readonly DiskConfig[], images: VirtualDisk[], signal?: AbortSignal): Promise<void> {
    const server = this.diskServer;
    for (let i = 0; i < disks.length; i++) {
      const disk = disks[i] as DiskConfig;
      try {
        if (server === undefined) throw closedError('domains.create');
        if (signal?.aborted) throw abortError(signal);
        this.remember(domid, await server.serve(domid, disk.vdev, images[i] as VirtualDisk, { readOnly: disk.access === 'ro' }));
      } catch (err) {
        await closeImages(images.slice(i));
        throw err;
      }
    }
  }

  private remember(domid: number, handle: ServedDiskHandle): void {
    let mine = this.served.get(domid);
    if (mine === undefined) this.served.set(domid, (mine = new Map()));
    mine.set(handle.vdev, handle);
    // It ends by itself when the domain dies (xenstored's @releaseDomain) or is detached.
    void handle.closed.then(() => {
      if (mine.get(handle.vdev) === handle) mine.delete(handle.vdev);
      if (mine.size === 0 && this.served.get(domid) === mine) this.served.delete(domid);
    });
  }

  /** Stops serving the domain's disks (it is gone, or never ran) and waits until their images are closed. */
  private async endServed(domid: number): Promise<void> {
    const mine = this.served.get(domid);
    this.served.delete(domid);
    this.diskOrder.delete(domid);
    if (mine !== undefined) await Promise.allSettled([...mine.values()].map((h) => h.close()));
  }

  /**
   * libxl's dominfo of `domid`; ESRCH when there is none. (The binding has been seen to
   * answer a domid above every domain's with another domain's info: check the id.)
   */
  private async existing(domid: number, op: string): Promise<LibxlDomInfo> {
    const info = await this.libxl.domainInfo(domid);
    if (info.domid !== domid) throw XenError.fromErrno('ESRCH', { op, domid });
    return info;
  }

  private notDom0(domid: number, op: string): void {
    if (domid === 0) throw inval(op, 'dom0 cannot be paused, shut down or destroyed', 0);
  }

  pause(domid: number): Promise<void> {
    return this.run('domain.pause', domid, async () => {
      this.notDom0(domid, 'domain.pause');
      // Xen counts controller pauses (each needs its unpause); the contract does not.
      if ((await this.existing(domid, 'domain.pause')).paused) return;
      await this.libxl.pauseDomain(domid);
    });
  }

  unpause(domid: number): Promise<void> {
    return this.run('domain.unpause', domid, async () => {
      await this.libxl.unpauseDomain(domid);
    });
  }

  shutdown(domid: number, request: ShutdownRequest): Promise<void> {
    return this.run('domain.shutdown', domid, async () => {
      this.notDom0(domid, 'domain.shutdown');
      await this.existing(domid, 'domain');
      if (request === 'reboot') await this.libxl.rebootDomain(domid);
      else await this.libxl.shutdownDomain(domid);
    });
  }

  destroy(domid: number): Promise<void> {
    return this.run('domain.destroy', domid, async () => {
      this.notDom0(domid, 'domain.destroy');
      await this.libxl.destroyDomain(domid);
      await this.endServed(domid);
      this.kick();
    });
  }

  setMemoryTarget(domid: number, mib: number): Promise<void> {
    return this.run('domain.setMemoryTarget', domid, async () => {
      const info = await this.domainInfo(domid);
      if (mib > info.memory.max) throw inval('domain.setMemoryTarget', `${mib} MiB is above the maximum of ${info.memory.max} MiB`, domid);
      await this.libxl.setMemoryTarget(domid, kib(mib), { enforce: true });
    });
  }

  setMaxMemory(domid: number, mib: number): Promise<void> {
    return this.run('domain.setMaxMemory', domid, async () => {
      const info = await this.domainInfo(domid);
      if (mib < info.memory.target) throw inval('domain.setMaxMemory', `${mib} MiB is below the target of ${info.memory.target} MiB`, domid);
      await this.libxl.setMaxMemory(domid, kib(mib));
    });
  }

  setVcpus(domid: number, count: number): Promise<void> {
    return this.run('domain.setVcpus', domid, async () => {
      const info = await this.domainInfo(domid);
      if (count < 1 || count > info.vcpus.max) throw inval('domain.setVcpus', `${count} vCPUs: the domain has at most ${info.vcpus.max}`, domid);
      await this.libxl.setVcpuCount(domid, count);
    });
  }

  pinVcpu(domid: number, vcpu: number, cpus: readonly number[]): Promise<void> {
    return this.run('domain.pinVcpu', domid, async () => {
      const [info, phys] = await Promise.all([this.domainInfo(domid), this.xc.physinfo()]);
      if (vcpu >= info.vcpus.max) throw inval('domain.pinVcpu', `vCPU ${vcpu} does not exist (the domain has ${info.vcpus.max})`, domid);
      const bad = cpus.find((c) => c > phys.maxCpuId);
      if (bad !== undefined) throw inval('domain.pinVcpu', `physical CPU ${bad} does not exist (the host has ${phys.nrCpus})`, domid);
      await this.xc.setVcpuAffinity(domid, vcpu, { hard: cpus });
    });
  }

  rename(domid: number, name: string): Promise<void> {
    return this.run('domain.rename', domid, async () => {
      await this.existing(domid, 'domain');
      if (await this.nameTaken(name, domid)) throw inval('domain.rename', `a domain called '${name}' exists already`, domid);
      await this.libxl.renameDomain(domid, name);
      const known = this.known?.get(domid);
      if (known !== undefined) known.name = name;
    });
  }

  // ---- devices ----

  private async device(domid: number, kind: DeviceKind, devid: string): Promise<DeviceInfo | undefined> {
    const fe = `/local/domain/${domid}/device/${kind}/${devid}`;
    const [bePath, beId, feState] = await Promise.all([this.xsRead(`${fe}/backend`), this.xsRead(`${fe}/backend-id`), this.xsRead(`${fe}/state`)]);
    if (bePath === undefined) return undefined;
    const read = (key: string) => this.xsRead(`${bePath}/${key}`);
    const beState = await read('state');
    let config: DiskConfig | NicConfig | PciConfig;
    if (kind === 'vbd') {
      const [params, dev, mode, devtype, type] = await Promise.all([read('params'), read('dev'), read('mode'), read('device-type'), read('type')]);
      const disk: DiskConfig = { target: params ?? '', vdev: dev ?? '' };
      if (mode === 'r') disk.access = 'ro';
      if (devtype === 'cdrom') disk.devtype = 'cdrom';
      if (type === 'phy' || type === 'qdisk' || type === 'tap' || type === 'standalone') disk.backendType = type;
      config = disk;
    } else if (kind === 'vif') {
      const [mac, bridge, script, ip, vifname, mtu, queues] = await Promise.all([
        read('mac'),
        read('bridge'),
        read('script'),
        read('ip'),
        read('vifname'),
        read('mtu'),
        this.xsRead(`${fe}/multi-queue-num-queues`),
      ]);
      const nic: NicConfig = {};
      if (mac) nic.mac = mac;
      if (bridge) nic.bridge = bridge;
      if (script) nic.script = script;
      if (ip) nic.ip = ip;
      if (vifname) nic.vifname = vifname;
      if (mtu) nic.mtu = Number(mtu);
      // The queues netfront set up (netback offers multi-queue-max-queues, the frontend
      // picks up to that): a frontend past initwait without the key uses one.
      if (queues) nic.queues = Number(queues);
      else if (Number(feState ?? 0) >= 3 && Number(feState ?? 0) <= 4) nic.queues = 1;
      config = nic;
    } else {
      const bdf = await read('dev-0');
      config = { bdf: bdf ?? '' };
    }
    return {
      kind,
      devid: Number(devid),
      backendDomid: Number(beId ?? 0),
      frontendPath: fe,
      backendPath: bePath,
      frontendState: XENBUS[Number(feState ?? 0)] ?? 'unknown',
      backendState: XENBUS[Number(beState ?? 0)] ?? 'unknown',
      config,
    };
  }

  /**
   * Possible only for a disk that xenode serves itself (`xen.blockBackend`, in this process
   * or another, e.g. `xenode blkback serve`): the request goes to the serving process
   * through xenstore. For any other disk, not possible on the Xen this backend drives: a
   * live snapshot must repoint the running disk's backend at the new child image, and Xen
   * 4.17 as Debian ships it has no backend that can do that for a VHD: blktap2 (tapdisk,
   * `tap-ctl pause`/`unpause -a`) is gone from Xen since 4.13, blkback serves block devices
   * only, and QEMU's qdisk cannot open a differencing VHD (qemu's vpc driver ignores
   * parents). So for a VHD disk that libxl serves this rejects with
   * `XEN_LIVE_SNAPSHOT_UNSUPPORTED`, having changed nothing; for a disk that is not a VHD
   * (libxl's `format` is not `vhd`, e.g. a `phy` block device) with `XEN_DISK_NOT_VHD`,
   * and for no disk `vdev` with `XEN_ERROR_NOTFOUND`, as every backend does.
   */
  snapshotDisk(domid: number, vdev: string, childPath: string): Promise<DiskSnapshot> {
    const op = 'domain.snapshotDisk';
    return this.run(op, domid, async () => {
      await this.existing(domid, op);
      const devid = /^(xvd|hd|sd)[a-z]+\d*$/.test(vdev) ? vdevToDevid(vdev) : undefined;
      const be = devid === undefined ? undefined : await this.xsRead(`/local/domain/${domid}/device/vbd/${devid}/backend`);
      if (be === undefined) throw new XenError('XEN_ERROR_NOTFOUND', `XEN_ERROR_NOTFOUND: domain ${domid} has no disk ${vdev} (${op})`, { op, domid });
      const { write, rm } = this.xs;
      if (be.startsWith(`/local/domain/0/backend/${BLOCK_BACKEND_TYPE}/`) && write && rm) {
        return requestSnapshot(
          {
            read: (path) => this.xsRead(path),
            write: (path, value) => write.call(this.xs, 0, path, Buffer.from(value)),
            remove: (path) => rm.call(this.xs, 0, path),
          },
          be,
          childPath,
          op,
          domid,
        );
      }
      const disk = fromLibxlConfig((await this.libxl.domainConfig(domid)) as LibxlDomainConfig).disks?.find((d) => d.vdev === vdev);
      if (disk?.format !== 'vhd') {
        const image = disk?.target ?? (await this.xsRead(`${be}/params`)) ?? vdev;
        throw new XenError('XEN_DISK_NOT_VHD', `XEN_DISK_NOT_VHD: ${image} is not a VHD image: libxl serves ${vdev} as ${disk?.format ?? 'raw'} (${op})`, { op, domid, path: image });
      }
      throw new XenError(
        'XEN_LIVE_SNAPSHOT_UNSUPPORTED',
        `XEN_LIVE_SNAPSHOT_UNSUPPORTED: cannot snapshot ${vdev} into ${childPath} live: Xen 4.17 has no blktap2, and qdisk cannot open a differencing VHD, so no backend can be switched to the child; create the domain (or attach the disk) with { serveVhd: true }, or serve it with xen.blockBackend (xenode blkback serve), instead (${op})`,
        { op, domid, path: childPath },
      );
    });
  }

  listDevices(domid: number): Promise<DeviceInfo[]> {
    return this.run('domain.listDevices', domid, async () => {
      await this.existing(domid, 'domain');
      const out: DeviceInfo[] = [];
      for (const kind of KINDS) {
        for (const devid of await this.xsDir(`/local/domain/${domid}/device/${kind}`)) {
          const dev = await this.device(domid, kind, devid);
          if (dev !== undefined) out.push(dev);
        }
      }
      return out;
    });
  }

  attachDevice(domid: number, device: DeviceSpec, options: ToolstackCallOptions = {}): Promise<DeviceInfo> {
    return this.run('domain.attachDevice', domid, async () => {
      if (options.signal?.aborted) throw abortError(options.signal);
      const before = await this.listDevices(domid);
      const exists = (what: string) => new XenError('XEN_ERROR_DEVICE_EXISTS', `XEN_ERROR_DEVICE_EXISTS: ${what} is attached already (domain.attachDevice)`, { op: 'domain.attachDevice', domid });
      let find: (d: DeviceInfo) => boolean;
      if (device.kind === 'disk') {
        const devid = vdevToDevid(device.disk.vdev);
        if (before.some((d) => d.kind === 'vbd' && d.devid === devid)) throw exists(device.disk.vdev);
        if (options.serveVhd === true && this.servesItself(device.disk)) await this.serveDisks(domid, [device.disk], await openImages([device.disk]), options.signal);
        else await this.libxl.addDevice(domid, 'disk', diskToLibxl(device.disk) as LibxlJson);
        find = (d) => d.kind === 'vbd' && d.devid === devid;
      } else if (device.kind === 'nic') {
        const mac = device.nic.mac?.toLowerCase();
        if (mac !== undefined && before.some((d) => d.kind === 'vif' && (d.config as NicConfig).mac === mac)) throw exists(mac);
        await this.libxl.addDevice(domid, 'nic', nicToLibxl(device.nic) as LibxlJson);
        find = (d) => d.kind === 'vif' && !before.some((b) => b.kind === 'vif' && b.devid === d.devid);
      } else {
        const bdf = device.pci.bdf;
        if (before.some((d) => d.kind === 'pci' && (d.config as PciConfig).bdf.endsWith(bdf.replace(/^0000:/, '')))) throw exists(bdf);
        await this.libxl.addDevice(domid, 'pci', pciToLibxl(device.pci) as LibxlJson);
        find = (d) => d.kind === 'pci';
      }
      const dev = await this.handshake(domid, find, options.signal);
      if (dev === undefined) throw new XenError('XEN_ERROR_FAIL', 'XEN_ERROR_FAIL: libxl attached the device but xenstore does not show it (domain.attachDevice)', { op: 'domain.attachDevice', domid });
      if (device.kind === 'disk') dev.config = { ...device.disk, ...dev.config, vdev: device.disk.vdev };
      if (device.kind === 'nic') {
        // what the frontend negotiated, not what was asked (netfront decides: see handshake)
        const { queues: _asked, ...asked } = device.nic;
        dev.config = { ...asked, ...dev.config };
      }
      if (device.kind === 'pci') dev.config = { ...device.pci };
      return dev;
    });
  }

  /**
   * The new disk, NIC or PCI function once the guest's frontend has connected to it. libxl
   * returns when the backend waits for the frontend (initwait) and its hotplug script has
   * run, or, for a PCI function, once pciback has it; the guest's driver connects in its
   * own time. This waits for both ends to be `connected`,
   * either end to give up (`closing`, `closed`), the domain to be paused (its frontend
   * cannot act) or `connectWaitMs`, and returns the device as it then stands. An abort
   * ends the wait with AbortError; the device stays attached (listDevices shows it).
   */
  private async handshake(domid: number, find: (d: DeviceInfo) => boolean, signal: AbortSignal | undefined): Promise<DeviceInfo | undefined> {
    const deadline = Date.now() + this.connectWaitMs;
    const settled = new Set<XenbusState>(['connected', 'closing', 'closed']);
    for (;;) {
      const dev = (await this.listDevices(domid)).find(find);
      if (dev === undefined || (dev.frontendState === 'connected' && dev.backendState === 'connected')) return dev;
      if ((settled.has(dev.frontendState) && dev.frontendState !== 'connected') || (settled.has(dev.backendState) && dev.backendState !== 'connected')) return dev;
      if (Date.now() >= deadline || (await this.existing(domid, 'domain.attachDevice')).paused) return dev;
      if (signal?.aborted) throw abortError(signal);
      await new Promise((r) => setTimeout(r, Math.min(200, this.connectWaitMs)));
    }
  }

  detachDevice(domid: number, kind: DeviceKind, devid: number, options: ToolstackCallOptions = {}): Promise<void> {
    return this.run('domain.detachDevice', domid, async () => {
      if (options.signal?.aborted) throw abortError(options.signal);
      const dev = (await this.listDevices(domid)).find((d) => d.kind === kind && d.devid === devid);
      if (dev === undefined) throw new XenError('XEN_ERROR_NOTFOUND', `XEN_ERROR_NOTFOUND: no ${kind} ${devid} is attached (domain.detachDevice)`, { op: 'domain.detachDevice', domid });
      const mine = kind === 'vbd' ? [...(this.served.get(domid)?.values() ?? [])].find((h) => vdevToDevid(h.vdev) === devid) : undefined;
      if (mine !== undefined) await mine.close();
      else if (kind === 'vbd') {
        // libxl finds the device from its backend as well as its vdev (as xl block-detach
        // fills them in from xenstore): without one it refuses "Unrecognized disk backend type".
        const disk = dev.config as DiskConfig;
        const json: LibxlJson = { vdev: disk.vdev, backend_domid: dev.backendDomid };
        if (disk.backendType !== undefined) json.backend = disk.backendType;
        await this.libxl.removeDevice(domid, 'disk', json);
      }
      else if (kind === 'vif') await this.libxl.removeDevice(domid, 'nic', { devid });
      else await this.libxl.removeDevice(domid, 'pci', pciToLibxl(dev.config as PciConfig) as LibxlJson);
    });
  }

  // ---- events and on_* actions ----

  subscribe(listener: (event: DomainEvent) => void): () => void {
    if (this.closed) return () => {};
    this.listeners.add(listener);
    void this.startWatching().catch(() => undefined);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private emit(event: DomainEvent): void {
    if (this.closed) return;
    for (const l of [...this.listeners]) l(event);
  }

  /** Snapshots the domain list and starts comparing it with later ones. */
  private startWatching(): Promise<void> {
    this.watching ??= (async () => {
      this.known = await this.snapshot(new Map());
      this.schedule();
    })().catch((err: unknown) => {
      this.watching = undefined;
      throw err;
    });
    return this.watching;
  }

  /** The next comparison, unless nobody needs events any more. */
  private schedule(): void {
    clearTimeout(this.retry);
    if (this.closed) return;
    if (this.listeners.size === 0 && this.managed.size === 0 && this.consoles.size === 0) {
      this.watching = undefined;
      this.known = undefined;
      return;
    }
    this.retry = setTimeout(() => this.kick(), this.pollMs).unref();
  }

  /** The domain list; names are read from xenstore for domains not seen before. */
  private async snapshot(previous: Map<number, Known>): Promise<Map<number, Known>> {
    const map = new Map<number, Known>();
    for (const d of await this.libxl.listDomains()) {
      const name = previous.get(d.domid)?.name ?? (await this.xsRead(`/local/domain/${d.domid}/name`)) ?? (d.domid === 0 ? 'Domain-0' : '');
      const state = domainState(d);
      map.set(d.domid, { name, down: state === 'shutdown' || state === 'crashed', dying: state === 'dying', reason: d.shutdown_reason });
    }
    return map;
  }

  /** Compares the domain list with the last one (serialised; a kick during one runs another). */
  private kick(): void {
    if (this.closed || this.known === undefined) return;
    if (this.syncing !== undefined) {
      this.again = true;
      return;
    }
    this.syncing = this.resync()
      .catch(() => undefined)
      .finally(() => {
        this.syncing = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        } else this.schedule();
      });
  }

  private async resync(): Promise<void> {
    const before = this.known;
    if (before === undefined || this.closed) return;
    const now = await this.snapshot(before);
    if (this.closed) return;
    this.known = now;
    const actions: Promise<void>[] = [];
    // Deaths first: a restarted domain's death comes before its successor's creation.
    for (const [domid, d] of before) {
      if (now.has(domid)) continue;
      this.managed.delete(domid);
      this.emit({ type: 'death', domid, name: d.name });
      for (const c of this.consoles) if (c.domid === domid) c.finish();
    }
    for (const [domid, d] of now) {
      const old = before.get(domid);
      if (old === undefined) this.emit({ type: 'created', domid, name: d.name });
      if (d.down && !old?.down) {
        const reason = shutdownReason(d.reason);
        this.emit({ type: 'shutdown', domid, name: d.name, reason });
        if (this.managed.has(domid)) actions.push(this.onShutdown(domid, reason).catch(() => undefined));
      }
    }
    await Promise.all(actions);
  }

  /** What xl's per-domain daemon does when a domain shuts down. */
  private async onShutdown(domid: number, reason: ShutdownReason): Promise<void> {
    if (reason === 'suspend') return;
    const json = (await this.libxl.domainConfig(domid)) as LibxlDomainConfig;
    const field = ({ poweroff: 'onPoweroff', reboot: 'onReboot', crash: 'onCrash', watchdog: 'onWatchdog', soft_reset: 'onSoftReset' } as const)[reason as Exclude<ShutdownReason, 'suspend' | 'unknown'>] ?? 'onPoweroff';
    const action: DomainAction = fromLibxlConfig(json)[field] ?? (reason === 'reboot' ? 'restart' : reason === 'soft_reset' ? 'soft-reset' : 'destroy');
    if (action === 'preserve' || action === 'soft-reset') return;
    this.managed.delete(domid);
    // The disks served here go with the domain and, on a restart, come back on the image
    // they serve now (a live snapshot's child).
    const own = this.servedConfigs(domid);
    const order = this.diskOrder.get(domid);
    await this.libxl.destroyDomain(domid);
    await this.endServed(domid);
    if (action === 'restart' || action === 'rename-restart' || action === 'coredump-restart') await this.buildServing(json as LibxlJson, own, order);
    this.kick();
  }

  // ---- console ----

  openConsole(domid: number): Promise<Duplex> {
    return this.run('domain.console', domid, async () => {
      await this.existing(domid, 'domain');
      const path = await this.libxl.consoleTty(domid);
      const fd = await new Promise<number>((resolve, reject) =>
        openCb(path, fsc.O_RDWR | fsc.O_NOCTTY | fsc.O_NONBLOCK, (err, fd) => (err ? reject(XenError.fromErrno(err.code ?? 'EIO', { op: 'domain.console', path, domid })) : resolve(fd))),
      );
      const stream = new ConsoleStream(new TtyReadStream(fd), domid, (s) => this.consoles.delete(s));
      this.consoles.add(stream);
      await this.startWatching().catch(() => undefined);
      return stream;
    });
  }

  // ---- save and restore ----

  save(domid: number, out: Writable, options: ToolstackCallOptions = {}): Promise<void> {
    return this.run('domain.save', domid, async () => {
      this.notDom0(domid, 'domain.save');
      if (options.signal?.aborted) throw abortError(options.signal);
      const config = Buffer.from(JSON.stringify(await this.libxl.domainConfig(domid)));
      const dir = await mkdtemp(join(tmpdir(), 'xenode-save-'));
      const file = join(dir, 'image');
      try {
        const fh = await open(file, 'w+');
        try {
          await this.libxl.suspendDomain(domid, fh.fd);
        } finally {
          await fh.close();
        }
        try {
          const len = Buffer.alloc(4);
          len.writeUInt32BE(config.length);
          await writeChunk(out, Buffer.concat([SAVE_MAGIC, len, config]));
          for await (const chunk of createReadStream(file)) await writeChunk(out, chunk as Buffer);
        } catch (err) {
          // The stream failed: bring the domain back from the image (as a new domid).
          await this.libxl.destroyDomain(domid).catch(() => undefined);
          await this.restoreFile(JSON.parse(config.toString()) as LibxlJson, file).catch(() => undefined);
          throw err;
        }
        await this.libxl.destroyDomain(domid);
        this.kick();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  private async restoreFile(config: LibxlJson, file: string): Promise<number> {
    await this.startWatching().catch(() => undefined);
    const fh = await open(file, 'r');
    try {
      const domid = await this.libxl.restoreDomain(config, fh.fd);
      this.managed.set(domid, true);
      this.kick();
      return domid;
    } finally {
      await fh.close();
    }
  }

  restore(input: Readable, options: ToolstackCallOptions = {}): Promise<number> {
    return this.run('domains.restore', undefined, async () => {
      const { signal } = options;
      if (signal?.aborted) throw abortError(signal);
      const dir = await mkdtemp(join(tmpdir(), 'xenode-restore-'));
      const file = join(dir, 'image');
      try {
        const notImage = () => inval('domains.restore', 'the stream is not a xenode save image');
        const { config, rest } = await readImageHeader(input, notImage, signal);
        const fh = await open(file, 'w');
        try {
          for await (const chunk of rest) await fh.write(chunk);
        } finally {
          await fh.close();
        }
        if (signal?.aborted) throw abortError(signal);
        return await this.restoreFile(config, file);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  // ---- migration ----

  migrateSuspend(domid: number, out: Writable, options: ToolstackCallOptions & { live?: boolean } = {}): Promise<void> {
    const op = 'domain.migrate';
    return this.run(op, domid, async () => {
      if (domid === 0) throw inval(op, 'dom0 cannot be migrated', 0);
      await this.existing(domid, op);
      const live = options.live ?? false;
      if (live) {
        const why = await liveMigrationObstacle(this.libxl, this.xc, domid);
        if (why !== undefined) throw new XenError('XEN_MIGRATION_UNSUPPORTED', `XEN_MIGRATION_UNSUPPORTED: cannot migrate domain ${domid} live: ${why} (${op})`, { op, domid });
      }
      await suspendInto(this.libxl, domid, out, { live, signal: options.signal });
      this.kick();
    });
  }

  migrateResume(domid: number): Promise<void> {
    return this.run('domain.migrate', domid, async () => {
      await resumeIfSuspended(this.libxl, domid);
      this.kick();
    });
  }

  migrateRestore(input: Readable, options: ToolstackCallOptions & { name: string }): Promise<number> {
    const op = 'domains.receiveMigration';
    return this.run(op, undefined, async () => {
      await this.startWatching().catch(() => undefined);
      const domid = await restoreFrom(this.libxl, input, { name: options.name, signal: options.signal, notImage: () => inval(op, 'the stream is not a xenode save image') });
      this.managed.set(domid, true);
      this.kick();
      return domid;
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.listeners.clear();
      clearTimeout(this.retry);
      for (const c of [...this.consoles]) c.finish();
      await Promise.allSettled([this.libxl.close(), this.xc.close(), this.xs.close()]);
    })();
    return this.closing;
  }
}

/** Opens each disk's image as a VHD (read-only for an `ro` disk); on a failure closes those opened and rethrows. */
async function openImages(disks: readonly DiskConfig[]): Promise<VirtualDisk[]> {
  const images: VirtualDisk[] = [];
  try {
    for (const d of disks) images.push(await VirtualDisk.open(d.target, { readOnly: d.access === 'ro' }));
  } catch (err) {
    await closeImages(images);
    throw err;
  }
  return images;
}

async function closeImages(images: readonly VirtualDisk[]): Promise<void> {
  await Promise.allSettled(images.map((i) => i.close()));
}

function writeChunk(out: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const ok = out.write(data, (err) => {
      if (err) reject(err);
      else if (ok) resolve();
    });
    if (!ok) {
      const onDrain = () => {
        out.off('error', onError);
        resolve();
      };
      const onError = (err: Error) => {
        out.off('drain', onDrain);
        reject(err);
      };
      out.once('drain', onDrain);
      out.once('error', onError);
    }
  });
}
