/**
 * Hypervisor control through libxenctrl: a typed internal API over the addon's XcHandle,
 * for the public host and domain classes to build on. Only dom0 (as root) can open it.
 * Arguments are checked here (TypeError / RangeError); failures are {@link XenError}s
 * with `op` `xenctrl.<method>` and the errno of the hypercall.
 *
 * Opening fails with `XEN_UNAVAILABLE` when libxenctrl or /dev/xen/privcmd is missing,
 * and with `XEN_VERSION_MISMATCH` when the host's Xen is another release than the
 * addon was built for (libxenctrl's ABI and hypercall interfaces change every release).
 */
import { XenError } from '../errors.js';
import type { NativeAddon, RawDomainInfo, XcHandle } from './addon.js';
import { fromNative } from './errors.js';
import { loadAddon } from './load.js';

/** The hypervisor's version, as `xl info` shows it. */
export interface XenVersion {
  major: number;
  minor: number;
  /** `'4.17.7'`: major.minor and the extra version. */
  version: string;
  /** The guest ABIs the hypervisor runs: `['xen-3.0-x86_64', 'hvm-3.0-x86_32', …]` (`xen_caps`). */
  capabilities: string[];
  changeset: string;
}

/** Capabilities of the machine (XEN_SYSCTL_PHYSCAP_*), by name, as `xl info`'s virt_caps. */
export type PhysCapability = 'hvm' | 'pv' | 'directio' | 'hap' | 'shadow' | 'iommu_hap_pt_share' | 'vmtrace' | 'vpmu' | 'gnttab-v1' | 'gnttab-v2';

const physCaps: PhysCapability[] = ['hvm', 'pv', 'directio', 'hap', 'shadow', 'iommu_hap_pt_share', 'vmtrace', 'vpmu', 'gnttab-v1', 'gnttab-v2'];

/** The physical machine, from `xc_physinfo`. Memory in KiB (pages are 4 KiB). */
export interface PhysInfo {
  nrCpus: number;
  maxCpuId: number;
  threadsPerCore: number;
  coresPerSocket: number;
  /** nrCpus / (threadsPerCore × coresPerSocket), as `xl info` computes it. */
  sockets: number;
  nrNodes: number;
  maxNodeId: number;
  cpuMhz: number;
  totalMemoryKb: number;
  freeMemoryKb: number;
  /** Memory freed but not scrubbed yet. */
  scrubMemoryKb: number;
  outstandingClaimsKb: number;
  capabilities: PhysCapability[];
  hwCap: number[];
}

/** One domain as the hypervisor sees it (`xc_domain_getinfolist`). Memory in KiB. */
export interface DomainInfo extends Omit<RawDomainInfo, 'totPages' | 'maxPages' | 'outstandingPages' | 'sharedPages' | 'pagedPages'> {
  memoryKb: number;
  maxMemoryKb: number;
  outstandingKb: number;
  sharedKb: number;
  pagedKb: number;
}

/** One entry of a machine-check telemetry record (struct mcinfo_common and what follows). */
export interface MachineCheckEntry {
  /** MC_TYPE_GLOBAL (0), MC_TYPE_BANK (1), MC_TYPE_EXTENDED (2), MC_TYPE_RECOVERY (3). */
  type: number;
  /** The entry's bytes, its header included. */
  bytes: Buffer;
}

/** What `XEN_MC_fetch` returned. */
export interface MachineCheckFetch {
  /** False when Xen had no telemetry (XEN_MC_NODATA) or could not fetch it. */
  ok: boolean;
  /** XEN_MC_OK (0), XEN_MC_FETCHFAILED (1), XEN_MC_NODATA (2), XEN_MC_NOMATCH (4). */
  flags: number;
  /** The id to acknowledge once the telemetry is handled. */
  fetchId: number;
  entries: MachineCheckEntry[];
}

const PAGE_KB = 4;
const XEN_MC_NODATA = 0x2;
const XEN_MC_FETCHFAILED = 0x1;

function checkDomid(domid: unknown, op: string): number {
  if (typeof domid !== 'number') throw new TypeError(`${op}: domid must be a number`);
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new RangeError(`${op}: domid must be an integer in 0..32751, got ${domid}`);
  return domid;
}

function checkIndex(value: unknown, what: string, op: string, max = 0xffffffff): number {
  if (typeof value !== 'number') throw new TypeError(`${op}: ${what} must be a number`);
  if (!Number.isInteger(value) || value < 0 || value > max) throw new RangeError(`${op}: ${what} must be an integer in 0..${max}, got ${value}`);
  return value;
}

function checkCpus(cpus: unknown, what: string, op: string): readonly number[] | null {
  if (cpus === undefined || cpus === null) return null;
  if (!Array.isArray(cpus)) throw new TypeError(`${op}: ${what} must be an array of CPU numbers`);
  for (const cpu of cpus) checkIndex(cpu, `${what} CPU`, op, 65535);
  return cpus as number[];
}

/** Splits a struct mc_info (u32 mi_nentries, u32 flags, then entries) into its entries. */
export function parseMcInfo(data: Buffer): MachineCheckEntry[] {
  if (data.length < 8) return [];
  const n = data.readUInt32LE(0);
  const out: MachineCheckEntry[] = [];
  let at = 8;
  for (let i = 0; i < n && at + 4 <= data.length; i++) {
    const type = data.readUInt16LE(at);
    const size = data.readUInt16LE(at + 2);
    if (size < 4 || at + size > data.length) break;
    out.push({ type, bytes: Buffer.from(data.subarray(at, at + size)) });
    at += size;
  }
  return out;
}

/** libxenctrl, open. Get one from {@link XenCtrl.open}; close it when done. */
export class XenCtrl {
  private constructor(private readonly handle: XcHandle) {}

  /** Opens the hypervisor interface (through the addon, loaded now if it was not). */
  static async open(addon: NativeAddon = loadAddon()): Promise<XenCtrl> {
    try {
      return new XenCtrl(await addon.openXenCtrl());
    } catch (err) {
      throw fromNative(err, 'xenctrl.open');
    }
  }

  /** True once closed. */
  get closed(): boolean {
    return this.handle.closed;
  }

  /** The hypervisor's version and guest ABIs. */
  async version(): Promise<XenVersion> {
    const v = await this.call('xenctrl.version', () => this.handle.version());
    return {
      major: v.major,
      minor: v.minor,
      version: `${v.major}.${v.minor}${v.extra}`,
      capabilities: v.capabilities.split(/\s+/).filter(Boolean),
      changeset: v.changeset,
    };
  }

  /** CPUs, NUMA nodes and memory of the machine. */
  async physinfo(): Promise<PhysInfo> {
    const p = await this.call('xenctrl.physinfo', () => this.handle.physinfo());
    const perSocket = p.threadsPerCore * p.coresPerSocket;
    return {
      nrCpus: p.nrCpus,
      maxCpuId: p.maxCpuId,
      threadsPerCore: p.threadsPerCore,
      coresPerSocket: p.coresPerSocket,
      sockets: perSocket > 0 ? Math.floor(p.nrCpus / perSocket) : 0,
      nrNodes: p.nrNodes,
      maxNodeId: p.maxNodeId,
      cpuMhz: Math.floor(p.cpuKhz / 1000),
      totalMemoryKb: p.totalPages * PAGE_KB,
      freeMemoryKb: p.freePages * PAGE_KB,
      scrubMemoryKb: p.scrubPages * PAGE_KB,
      outstandingClaimsKb: p.outstandingPages * PAGE_KB,
      capabilities: physCaps.filter((_, bit) => (p.capabilities & (1 << bit)) !== 0),
      hwCap: p.hwCap,
    };
  }

  /** Every domain, in domid order (`xc_domain_getinfolist`, 1024 at a time). */
  async listDomains(): Promise<DomainInfo[]> {
    const out: DomainInfo[] = [];
    for (let first = 0; first < 0x7ff0; ) {
      const batch = await this.call('xenctrl.listDomains', () => this.handle.domainList(first, 1024));
      for (const d of batch) {
        const { totPages, maxPages, outstandingPages, sharedPages, pagedPages, ...rest } = d;
        out.push({
          ...rest,
          memoryKb: totPages * PAGE_KB,
          maxMemoryKb: maxPages * PAGE_KB,
          outstandingKb: outstandingPages * PAGE_KB,
          sharedKb: sharedPages * PAGE_KB,
          pagedKb: pagedPages * PAGE_KB,
        });
      }
      if (batch.length < 1024) break;
      first = (batch[batch.length - 1] as RawDomainInfo).domid + 1;
    }
    return out;
  }

  /** One domain's info; ESRCH when there is no such domain. */
  async domainInfo(domid: number): Promise<DomainInfo> {
    checkDomid(domid, 'xenctrl.domainInfo');
    const all = await this.listDomains();
    const d = all.find((x) => x.domid === domid);
    if (d === undefined) throw XenError.fromErrno('ESRCH', { op: 'xenctrl.domainInfo', domid });
    return d;
  }

  /** Pauses every vCPU of the domain (`xl pause`). */
  pause(domid: number): Promise<void> {
    checkDomid(domid, 'xenctrl.pause');
    return this.call('xenctrl.pause', () => this.handle.pause(domid));
  }

  /** Undoes one {@link pause}. */
  unpause(domid: number): Promise<void> {
    checkDomid(domid, 'xenctrl.unpause');
    return this.call('xenctrl.unpause', () => this.handle.unpause(domid));
  }

  /** The most memory the domain may have (`xl mem-max`; not its balloon target). */
  setMaxMemory(domid: number, maxMemoryKb: number): Promise<void> {
    checkDomid(domid, 'xenctrl.setMaxMemory');
    if (typeof maxMemoryKb !== 'number') throw new TypeError('xenctrl.setMaxMemory: maxMemoryKb must be a number');
    if (!Number.isSafeInteger(maxMemoryKb) || maxMemoryKb < 0) throw new RangeError('xenctrl.setMaxMemory: maxMemoryKb must be a non-negative integer');
    return this.call('xenctrl.setMaxMemory', () => this.handle.setMaxMem(domid, maxMemoryKb));
  }

  /** The physical CPUs a vCPU may run on (hard) and prefers (soft). */
  getVcpuAffinity(domid: number, vcpu: number): Promise<{ hard: number[]; soft: number[] }> {
    checkDomid(domid, 'xenctrl.getVcpuAffinity');
    checkIndex(vcpu, 'vcpu', 'xenctrl.getVcpuAffinity', 4095);
    return this.call('xenctrl.getVcpuAffinity', () => this.handle.getVcpuAffinity(domid, vcpu));
  }

  /** Sets a vCPU's hard and/or soft affinity (`xl vcpu-pin`); an omitted one is left alone. */
  async setVcpuAffinity(domid: number, vcpu: number, affinity: { hard?: readonly number[]; soft?: readonly number[] }): Promise<void> {
    const op = 'xenctrl.setVcpuAffinity';
    checkDomid(domid, op);
    checkIndex(vcpu, 'vcpu', op, 4095);
    if (affinity === null || typeof affinity !== 'object') throw new TypeError(`${op}: affinity must be an object`);
    const hard = checkCpus(affinity.hard, 'hard', op);
    const soft = checkCpus(affinity.soft, 'soft', op);
    if (hard === null && soft === null) throw new TypeError(`${op}: give hard or soft`);
    const { maxCpuId } = await this.call(op, () => this.handle.physinfo());
    for (const cpu of [...(hard ?? []), ...(soft ?? [])]) {
      if (cpu > maxCpuId) throw new RangeError(`${op}: CPU ${cpu} does not exist (the last is ${maxCpuId})`);
    }
    return this.call(op, () => this.handle.setVcpuAffinity(domid, vcpu, hard, soft, maxCpuId + 1));
  }

  /** Turns memory sharing on or off for a domain (`xc_memshr_control`). EXDEV when the domain has passthrough devices. */
  setMemorySharing(domid: number, enable: boolean): Promise<void> {
    checkDomid(domid, 'xenctrl.setMemorySharing');
    if (typeof enable !== 'boolean') throw new TypeError('xenctrl.setMemorySharing: enable must be a boolean');
    return this.call('xenctrl.setMemorySharing', () => this.handle.memshrControl(domid, enable));
  }

  /** Host-wide page sharing: pages saved by sharing, and frames in use for shared pages. */
  async sharingStats(): Promise<{ freedKb: number; usedKb: number; freedPages: number; usedFrames: number }> {
    const s = await this.call('xenctrl.sharingStats', () => this.handle.sharingStats());
    return { ...s, freedKb: s.freedPages * PAGE_KB, usedKb: s.usedFrames * PAGE_KB };
  }

  /**
   * Fetches machine-check telemetry (`XEN_MC_fetch`), urgent or not (default), and
   * acknowledges `ack` (a previous fetchId) in the same call when given.
   */
  async fetchMachineChecks(options: { urgent?: boolean; ack?: number } = {}): Promise<MachineCheckFetch> {
    const op = 'xenctrl.fetchMachineChecks';
    if (options === null || typeof options !== 'object') throw new TypeError(`${op}: options must be an object`);
    if (options.ack !== undefined) checkIndex(options.ack, 'ack', op, Number.MAX_SAFE_INTEGER);
    const r = await this.call(op, () => this.handle.mcaFetch(options.urgent === true, options.ack ?? null));
    const ok = (r.flags & (XEN_MC_NODATA | XEN_MC_FETCHFAILED)) === 0;
    return { ok, flags: r.flags, fetchId: r.fetchId, entries: ok ? parseMcInfo(r.data) : [] };
  }

  /** Closes the interface; pending calls reject with XEN_CLOSED. Safe to call twice. */
  close(): Promise<void> {
    return this.handle.close();
  }

  private async call<T>(op: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw fromNative(err, op);
    }
  }
}
