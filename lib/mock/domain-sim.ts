/**
 * One simulated domain: its hypervisor-side record (state, memory, vCPUs, devices), the
 * xenstore home libxl writes for it, and the simulated guest inside it (a console that
 * prints a boot log and echoes input, a balloon driver, a PV shutdown handler).
 */
import type { DomainInfo, DomainState, ShutdownReason } from '../backend-toolstack.js';
import type { DomainConfig } from '../config/domain-config.js';
import { ConsoleRing } from './console.js';
import type { SimDevice } from './devices.js';
import type { XsWriter } from './xs-writer.js';

/** How a simulated host paces what takes time on a real one. */
export type MockTiming = 'instant' | 'realistic';

/** Delays in ms of each simulated step. `instant` runs every step on the next turn of the event loop. */
export interface StepDelays {
  /** Building the domain (memory, page tables, kernel load), before it is unpaused. */
  build: number;
  /** One step of a device handshake (the backend or the guest moving one state). */
  device: number;
  /** The guest's reaction to `control/shutdown` (its shutdown scripts). */
  shutdown: number;
  /** From dying to gone (the hypervisor freeing the last pages). */
  dying: number;
  /** The balloon driver reaching its target. */
  balloon: number;
}

export const TIMINGS: Record<MockTiming, StepDelays> = {
  instant: { build: 0, device: 0, shutdown: 0, dying: 0, balloon: 0 },
  realistic: { build: 120, device: 15, shutdown: 250, dying: 40, balloon: 80 },
};

/** Share of one physical CPU each online vCPU of a running simulated guest uses. */
const GUEST_LOAD = 0.03;

/** The hypervisor's record of a domain and the guest in it. */
export class SimDomain {
  /** `building` while libxl constructs it (listed as paused). */
  phase: 'building' | 'up' | DomainState = 'building';
  paused = false;
  shutdownReason: ShutdownReason | undefined;
  memCurrent: number;
  memTarget: number;
  memMax: number;
  vcpusOnline: number;
  readonly maxVcpus: number;
  readonly affinity: number[][];
  readonly devices = new Map<string, SimDevice>();
  readonly console: ConsoleRing;
  /** Guest work that waits for the domain to run (a paused guest does nothing). */
  private readonly deferred: (() => void)[] = [];
  private cpuSeconds = 0;
  private runningSince: number | undefined;
  private inputLine = '';

  constructor(
    readonly domid: number,
    readonly uuid: string,
    public config: DomainConfig,
    hostCpus: number,
  ) {
    this.memTarget = config.memory;
    this.memCurrent = config.memory;
    this.memMax = config.maxMemory ?? config.memory;
    this.maxVcpus = config.maxVcpus ?? config.vcpus;
    this.vcpusOnline = config.vcpus;
    const all = Array.from({ length: hostCpus }, (_, i) => i);
    this.affinity = Array.from({ length: this.maxVcpus }, () => [...all]);
    this.console = new ConsoleRing((data) => this.guestInput(data));
  }

  get name(): string {
    return this.config.name;
  }

  /**
   * Whether the guest waits for an event (a test control, MockHost.guestIdle): Xen then
   * shows it `blocked` rather than `running`. The simulated guest still answers requests.
   */
  idle = false;

  /** Whether the guest's code runs now. */
  get runnable(): boolean {
    return this.phase === 'up' && !this.paused;
  }

  /** The state `xl list` would show. */
  get state(): DomainState {
    if (this.phase === 'building') return 'paused';
    if (this.phase !== 'up') return this.phase;
    if (this.paused) return 'paused';
    return this.idle ? 'blocked' : 'running';
  }

  /** Runs `fn` as the guest: now if it runs, else once it is unpaused. */
  asGuest(fn: () => void): void {
    if (this.runnable) fn();
    else this.deferred.push(fn);
  }

  /** The accounting side of a state change: CPU time runs only while the guest does. */
  setRunning(running: boolean): void {
    const now = performance.now();
    if (this.runningSince !== undefined) this.cpuSeconds += ((now - this.runningSince) / 1000) * this.vcpusOnline * GUEST_LOAD;
    this.runningSince = running ? now : undefined;
    if (running) for (const fn of this.deferred.splice(0)) fn();
  }

  cpuTime(): number {
    const extra = this.runningSince === undefined ? 0 : ((performance.now() - this.runningSince) / 1000) * this.vcpusOnline * GUEST_LOAD;
    return Math.round((this.cpuSeconds + extra) * 1000) / 1000;
  }

  /** Restores the counters a save image carried. */
  restoreCounters(cpuSeconds: number): void {
    this.cpuSeconds = cpuSeconds;
  }

  info(): DomainInfo {
    const info: DomainInfo = {
      domid: this.domid,
      name: this.name,
      uuid: this.uuid,
      state: this.state,
      memory: { current: this.memCurrent, target: this.memTarget, max: this.memMax },
      vcpus: { online: this.vcpusOnline, max: this.maxVcpus },
      cpuTime: this.cpuTime(),
    };
    if (this.shutdownReason !== undefined) info.shutdownReason = this.shutdownReason;
    return info;
  }

  /** The configuration as it stands now: memory, vCPUs, name and devices as changed since creation. */
  currentConfig(): DomainConfig {
    const c: DomainConfig = structuredClone(this.config);
    c.uuid = this.uuid;
    c.memory = this.memTarget;
    c.maxMemory = this.memMax;
    c.vcpus = this.vcpusOnline;
    c.maxVcpus = this.maxVcpus;
    const devs = [...this.devices.values()];
    const disks = devs.filter((d) => d.kind === 'vbd').map((d) => d.config) as DomainConfig['disks'];
    const nics = devs.filter((d) => d.kind === 'vif').map((d) => d.config) as DomainConfig['nics'];
    const pcis = devs.filter((d) => d.kind === 'pci').map((d) => d.config) as DomainConfig['pcis'];
    if (disks?.length) c.disks = disks;
    else delete c.disks;
    if (nics?.length) c.nics = nics;
    else delete c.nics;
    if (pcis?.length) c.pcis = pcis;
    else delete c.pcis;
    return c;
  }

  /**
   * The domain's home and `/vm/<uuid>` as libxl__domain_make and libxl__build_post write
   * them (see docs/misc/xenstore-paths): read-only to the guest except `data`, `drivers`,
   * `feature`, `attr`, `error` and `control/shutdown`-style nodes it must answer on.
   */
  writeHome(xs: XsWriter, started: number): void {
    const home = `/local/domain/${this.domid}`;
    const vm = `/vm/${this.uuid}`;
    const ro = [{ domid: 0, read: false, write: false }, { domid: this.domid, read: true, write: false }];
    const rw = [{ domid: this.domid, read: false, write: false }];
    xs.mkdir(home, ro);
    xs.mkdir(vm, ro);
    for (const dir of ['device', 'control', 'memory', 'cpu', 'console', 'store', 'image']) xs.mkdir(`${home}/${dir}`, ro);
    for (const dir of ['data', 'drivers', 'feature', 'attr', 'error']) xs.mkdir(`${home}/${dir}`, rw);
    xs.writeAll(vm, { uuid: this.uuid, name: this.name, start_time: (started / 1000).toFixed(2) });
    xs.writeAll(`${vm}/image`, { ostype: this.config.type === 'hvm' ? 'hvm' : 'linux', ...(this.config.kernel ? { kernel: this.config.kernel } : {}), ...(this.config.cmdline ? { cmdline: this.config.cmdline } : {}) });
    xs.writeAll(home, { vm, name: this.name, domid: String(this.domid) });
    xs.writeAll(`${home}/memory`, { 'static-max': String(this.memMax * 1024), target: String(this.memTarget * 1024), videoram: this.config.type === 'hvm' ? '8192' : '-1' });
    this.writeVcpus(xs);
    // The nodes a PV guest answers on: control/shutdown and friends are writable by it.
    for (const key of ['shutdown', 'feature-poweroff', 'feature-reboot', 'feature-suspend', 'sysrq']) {
      xs.write(`${home}/control/${key}`, '');
      xs.setPermissions(`${home}/control/${key}`, rw);
    }
    xs.writeAll(`${home}/control`, { 'platform-feature-multiprocessor-suspend': '1', 'platform-feature-xs_reset_watches': '1' });
    xs.writeAll(`${home}/store`, { port: String(1), 'ring-ref': String(0xfeffc + this.domid) });
    xs.writeAll(`${home}/console`, { 'backend-id': '0', limit: '1048576', type: 'xenconsoled', output: 'pty', tty: `/dev/pts/${this.domid + 1}`, port: '2', 'ring-ref': String(0xfeffd + this.domid) });
  }

  /** `cpu/<n>/availability` for every possible vCPU. */
  writeVcpus(xs: XsWriter): void {
    for (let n = 0; n < this.maxVcpus; n++) xs.write(`/local/domain/${this.domid}/cpu/${n}/availability`, n < this.vcpusOnline ? 'online' : 'offline');
  }

  /** The guest's guest-side answer to `control/shutdown`: writes it back empty, as Linux does. */
  acknowledgeShutdown(xs: XsWriter): void {
    xs.write(`/local/domain/${this.domid}/control/shutdown`, '');
  }

  /** The kernel's first words on the console. */
  bootLog(): void {
    const c = this.config;
    this.console.write(
      [
        `[    0.000000] Linux version 6.1.0-xenode-mock (xenode simulated guest)`,
        `[    0.000000] Command line: ${c.cmdline ?? ''}`,
        `[    0.000000] Booting ${c.type === 'hvm' ? 'HVM' : 'paravirtualized'} kernel on Xen`,
        `[    0.000000] Xen version: 4.17 (preserve-AD)`,
        `[    0.010000] Memory: ${c.memory * 1024}K available, ${this.vcpusOnline} vCPU(s)`,
        `[    0.420000] xen_netfront: Initialising Xen virtual ethernet driver`,
        `[    0.430000] blkfront: xvda: flush diskcache: enabled; persistent grants: enabled`,
        '',
        `Debian GNU/Linux 12 ${c.name} hvc0`,
        '',
        `${c.name} login: `,
      ].join('\r\n'),
    );
  }

  /** What the guest prints as it goes down. */
  shutdownLog(reason: ShutdownReason): void {
    const words: Partial<Record<ShutdownReason, string>> = { poweroff: 'reboot: Power down', reboot: 'reboot: Restarting system', suspend: 'PM: suspend entry (s2idle)' };
    this.console.write(`\r\n[  OK  ] Reached target System Shutdown.\r\n${words[reason] ?? 'Kernel panic - not syncing: Fatal exception'}\r\n`);
  }

  /** Keyboard input: echoed; a finished line gets the login prompt back. */
  private guestInput(data: Buffer): void {
    this.asGuest(() => {
      for (const ch of data.toString('latin1')) {
        if (ch === '\r' || ch === '\n') {
          const line = this.inputLine;
          this.inputLine = '';
          this.console.write(line === '' ? `\r\n${this.name} login: ` : `\r\nPassword: `);
        } else {
          this.inputLine += ch;
          this.console.write(ch);
        }
      }
    });
  }
}
