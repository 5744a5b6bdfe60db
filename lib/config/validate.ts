import { isIP } from 'node:net';
import { XenError } from '../errors.js';
import type { DiskConfig, DomainConfig, NicConfig, PciConfig } from './domain-config.js';
import { MAC_RE, UUID_RE, parseBdf, parseCpuList, parseRate, vdevDisk, type Bdf } from './syntax.js';

/** The error every configuration fault raises: `XEN_INVALID_CONFIG` naming the field. */
export function configError(field: string, reason: string, details: { line?: number; path?: string; prefix?: string } = {}): XenError {
  const where = details.prefix ?? 'invalid domain configuration';
  return new XenError('XEN_INVALID_CONFIG', `${where}: ${field}: ${reason}`, { op: 'config', field, line: details.line, path: details.path });
}

const DOMAIN_TYPES = ['pv', 'pvh', 'hvm'];
const ACTIONS = ['destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset'];
const FORMATS = ['raw', 'qcow', 'qcow2', 'vhd', 'qed'];
const BACKEND_TYPES = ['phy', 'qdisk', 'tap', 'standalone'];
const PASSTHROUGH = ['enabled', 'disabled', 'sync_pt', 'share_pt'];
const TOP_FIELDS = new Set([
  'name', 'type', 'uuid', 'memory', 'maxMemory', 'vcpus', 'maxVcpus', 'cpus', 'vcpuAffinity', 'kernel', 'ramdisk', 'cmdline',
  'bootloader', 'disks', 'nics', 'pcis', 'passthrough', 'onPoweroff', 'onReboot', 'onCrash', 'onWatchdog', 'onSoftReset',
]);
const DISK_FIELDS = new Set(['target', 'vdev', 'format', 'access', 'devtype', 'backendType', 'backendDomain', 'script']);
const NIC_FIELDS = new Set(['mac', 'bridge', 'model', 'ip', 'script', 'vifname', 'backendDomain', 'rate', 'queues', 'type', 'mtu']);
const PCI_FIELDS = new Set(['bdf', 'vslot', 'permissive', 'seize', 'msitranslate', 'powerMgmt', 'rdmPolicy']);

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));

function check(ok: boolean, field: string, reason: string): void {
  if (!ok) throw configError(field, reason);
}

function optString(obj: Record<string, unknown>, key: string, field: string): void {
  if (obj[key] !== undefined) check(typeof obj[key] === 'string', field, `expected a string, got ${show(obj[key])}`);
}

function optOneOf(obj: Record<string, unknown>, key: string, field: string, allowed: readonly string[]): void {
  if (obj[key] !== undefined) check(allowed.includes(obj[key] as string), field, `expected one of ${allowed.join(', ')}, got ${show(obj[key])}`);
}

function optBool(obj: Record<string, unknown>, key: string, field: string): void {
  if (obj[key] !== undefined) check(typeof obj[key] === 'boolean', field, `expected true or false, got ${show(obj[key])}`);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

function noUnknown(obj: object, known: Set<string>, prefix: string): void {
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) throw configError(`${prefix}${key}`, `unknown field (known: ${[...known].join(', ')})`);
  }
}

function record(v: unknown, field: string): Record<string, unknown> {
  check(typeof v === 'object' && v !== null && !Array.isArray(v), field, `expected an object, got ${show(v)}`);
  return v as Record<string, unknown>;
}

function list(v: unknown, field: string): unknown[] {
  check(Array.isArray(v), field, `expected an array, got ${show(v)}`);
  return v as unknown[];
}

/**
 * xl's rule for names, tightened where xl would get confused: not empty, at most 64
 * characters, no whitespace, control characters, `/` or quotes (xenstore and xl.cfg
 * quoting), not all digits (`xl` would take it for a domid), not `Domain-0` (dom0's name).
 */
function checkName(name: unknown): void {
  check(typeof name === 'string', 'name', `expected a string, got ${show(name)}`);
  const n = name as string;
  check(n.length > 0, 'name', 'must not be empty');
  check(n.length <= 64, 'name', `at most 64 characters, got ${n.length}`);
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  check(!/[\s\x00-\x1f\x7f/'"\\]/.test(n), 'name', `must not contain whitespace, control characters, / \\ or quotes, got ${show(n)}`);
  check(!/^\d+$/.test(n), 'name', `must not be all digits (xl would read it as a domid), got ${show(n)}`);
  check(n !== 'Domain-0', 'name', 'Domain-0 is the name of dom0');
}

function checkCpus(config: Record<string, unknown>): void {
  const { cpus, vcpuAffinity } = config;
  if (cpus !== undefined) {
    if (typeof cpus === 'string') {
      try {
        parseCpuList(cpus);
      } catch (err) {
        throw configError('cpus', (err as Error).message);
      }
    } else {
      const arr = list(cpus, 'cpus');
      check(arr.length > 0, 'cpus', 'an empty CPU list pins the domain nowhere');
      arr.forEach((c, i) => check(Number.isSafeInteger(c) && (c as number) >= 0, `cpus[${i}]`, `expected a CPU number, got ${show(c)}`));
    }
  }
  if (vcpuAffinity !== undefined) {
    check(cpus === undefined, 'vcpuAffinity', 'give either cpus (all vCPUs) or vcpuAffinity (per vCPU), not both');
    const arr = list(vcpuAffinity, 'vcpuAffinity');
    const max = (config.maxVcpus ?? config.vcpus) as number;
    check(arr.length <= max, 'vcpuAffinity', `${arr.length} entries for ${max} vCPUs`);
    arr.forEach((c, i) => {
      check(typeof c === 'string', `vcpuAffinity[${i}]`, `expected a CPU list string, got ${show(c)}`);
      try {
        parseCpuList(c as string);
      } catch (err) {
        throw configError(`vcpuAffinity[${i}]`, (err as Error).message);
      }
    });
  }
}

function checkDisk(v: unknown, i: number, seen: Map<string, string>): void {
  const f = `disks[${i}]`;
  const d = record(v, f) as Partial<DiskConfig> & Record<string, unknown>;
  noUnknown(d, DISK_FIELDS, `${f}.`);
  optOneOf(d, 'devtype', `${f}.devtype`, ['disk', 'cdrom']);
  check(typeof d.target === 'string', `${f}.target`, `expected a path, got ${show(d.target)}`);
  check(d.target !== '' || d.devtype === 'cdrom', `${f}.target`, 'only a CD-ROM drive may be empty');
  check(typeof d.vdev === 'string', `${f}.vdev`, `expected a device name such as xvda, got ${show(d.vdev)}`);
  const disk = vdevDisk(d.vdev as string);
  check(disk !== undefined, `${f}.vdev`, `"${d.vdev}" is not a virtual disk name (xvdX, hdX, sdX, dN, optionally with a partition number; see xen-vbd-interface(7))`);
  const other = seen.get(disk as string);
  check(other === undefined, `${f}.vdev`, `"${d.vdev}" is the same disk as "${other}" of an earlier entry`);
  seen.set(disk as string, d.vdev as string);
  optOneOf(d, 'format', `${f}.format`, FORMATS);
  optOneOf(d, 'access', `${f}.access`, ['rw', 'ro']);
  optOneOf(d, 'backendType', `${f}.backendType`, BACKEND_TYPES);
  optString(d, 'backendDomain', `${f}.backendDomain`);
  optString(d, 'script', `${f}.script`);
}

function checkNic(v: unknown, i: number, macs: Map<string, number>): void {
  const f = `nics[${i}]`;
  const n = record(v, f) as Partial<NicConfig> & Record<string, unknown>;
  noUnknown(n, NIC_FIELDS, `${f}.`);
  if (n.mac !== undefined) {
    check(typeof n.mac === 'string' && MAC_RE.test(n.mac), `${f}.mac`, `expected xx:xx:xx:xx:xx:xx, got ${show(n.mac)}`);
    const mac = (n.mac as string).toLowerCase();
    check(mac !== '00:00:00:00:00:00', `${f}.mac`, 'the all-zero MAC is not an address (leave mac out to get one generated)');
    check((parseInt(mac.slice(0, 2), 16) & 1) === 0, `${f}.mac`, `${mac} is a multicast address; a NIC needs a unicast one`);
    const other = macs.get(mac);
    check(other === undefined, `${f}.mac`, `${mac} is already the MAC of nics[${other}]`);
    macs.set(mac, i);
  }
  for (const key of ['bridge', 'model', 'script', 'backendDomain'] as const) optString(n, key, `${f}.${key}`);
  if (n.vifname !== undefined) {
    check(typeof n.vifname === 'string' && /^[^\s/:]{1,15}$/.test(n.vifname), `${f}.vifname`, `expected an interface name of 1 to 15 characters without spaces, / or :, got ${show(n.vifname)}`);
  }
  if (n.ip !== undefined) {
    check(typeof n.ip === 'string', `${f}.ip`, `expected a string, got ${show(n.ip)}`);
    const ips = (n.ip as string).trim().split(/\s+/);
    for (const ip of ips) check(isIP(ip.replace(/\/\d+$/, '')) !== 0, `${f}.ip`, `"${ip}" is not an IP address`);
  }
  if (n.rate !== undefined) {
    check(typeof n.rate === 'string', `${f}.rate`, `expected a string such as "10Mb/s", got ${show(n.rate)}`);
    try {
      parseRate(n.rate as string);
    } catch (err) {
      throw configError(`${f}.rate`, (err as Error).message);
    }
  }
  if (n.queues !== undefined) check(isCount(n.queues), `${f}.queues`, `expected a positive integer, got ${show(n.queues)}`);
  if (n.mtu !== undefined) check(isCount(n.mtu) && n.mtu >= 68 && n.mtu <= 65535, `${f}.mtu`, `expected an MTU from 68 to 65535, got ${show(n.mtu)}`);
  optOneOf(n, 'type', `${f}.type`, ['vif', 'ioemu']);
}

function checkPci(v: unknown, i: number, seen: Map<string, Set<number | '*'>>): void {
  const f = `pcis[${i}]`;
  const p = record(v, f) as Partial<PciConfig> & Record<string, unknown>;
  noUnknown(p, PCI_FIELDS, `${f}.`);
  check(typeof p.bdf === 'string', `${f}.bdf`, `expected a PCI address [DDDD:]BB:DD.F, got ${show(p.bdf)}`);
  let bdf: Bdf;
  try {
    bdf = parseBdf(p.bdf as string);
  } catch (err) {
    throw configError(`${f}.bdf`, (err as Error).message);
  }
  // A function may be passed through once; `*` (every function) clashes with any of them.
  const device = `${bdf.domain}:${bdf.bus}:${bdf.dev}`;
  const funcs = seen.get(device) ?? new Set<number | '*'>();
  const clash = bdf.func === '*' ? funcs.size > 0 : funcs.has('*') || funcs.has(bdf.func);
  check(!clash, `${f}.bdf`, `${p.bdf} is already passed through by an earlier entry`);
  funcs.add(bdf.func);
  seen.set(device, funcs);
  if (p.vslot !== undefined) check(Number.isSafeInteger(p.vslot) && (p.vslot as number) >= 0 && (p.vslot as number) <= 0x1f, `${f}.vslot`, `expected a slot from 0 to 0x1f, got ${show(p.vslot)}`);
  for (const key of ['permissive', 'seize', 'msitranslate', 'powerMgmt'] as const) optBool(p, key, `${f}.${key}`);
  optOneOf(p, 'rdmPolicy', `${f}.rdmPolicy`, ['strict', 'relaxed']);
}

/**
 * Checks a domain configuration before anything is created, and throws a
 * {@link XenError} with code `XEN_INVALID_CONFIG` for the first fault: `field` names it
 * (`memory`, `disks[1].vdev`, …) and the message says why. A `config` that is not an
 * object at all is a `TypeError`.
 *
 * Checked: the name (xl's rules), type, uuid format, memory and maxMemory (positive
 * integers of MiB, maxMemory ≥ memory), vcpus and maxVcpus (maxVcpus ≥ vcpus), the
 * `cpus` CPU-list syntax, that a PV or PVH guest has a kernel or a bootloader, every
 * disk (vdev syntax, one vdev per disk, format, access), NIC (MAC, IPs, rate, queues)
 * and PCI device (BDF, no device twice), the `on*` actions, and that no field is unknown.
 *
 * @example
 * ```ts
 * import { validateDomainConfig, XenError } from 'xenode';
 * try {
 *   validateDomainConfig({ name: 'web', type: 'pv', memory: 512, maxMemory: 256, vcpus: 1, kernel: '/boot/vmlinuz' });
 * } catch (err) {
 *   if (err instanceof XenError && err.code === 'XEN_INVALID_CONFIG') console.log(err.field, '-', err.message);
 *   // maxMemory - invalid domain configuration: maxMemory: must be at least memory (512 MiB), got 256
 * }
 * ```
 */
export function validateDomainConfig(config: unknown): asserts config is DomainConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new TypeError(`a domain configuration must be an object, got ${config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config}`);
  }
  const c = config as Record<string, unknown>;
  noUnknown(c, TOP_FIELDS, '');
  checkName(c.name);
  check(DOMAIN_TYPES.includes(c.type as string), 'type', `expected pv, pvh or hvm, got ${show(c.type)}`);
  if (c.uuid !== undefined) {
    check(typeof c.uuid === 'string' && UUID_RE.test(c.uuid), 'uuid', `expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got ${show(c.uuid)}`);
    check(!/^[0-]+$/.test(c.uuid as string), 'uuid', 'the nil UUID is not a domain UUID (leave uuid out to get one generated)');
  }
  check(isCount(c.memory), 'memory', `expected a positive integer number of MiB, got ${show(c.memory)}`);
  if (c.maxMemory !== undefined) {
    check(isCount(c.maxMemory), 'maxMemory', `expected a positive integer number of MiB, got ${show(c.maxMemory)}`);
    check((c.maxMemory as number) >= (c.memory as number), 'maxMemory', `must be at least memory (${c.memory} MiB), got ${c.maxMemory}`);
  }
  check(isCount(c.vcpus), 'vcpus', `expected a positive integer, got ${show(c.vcpus)}`);
  if (c.maxVcpus !== undefined) {
    check(isCount(c.maxVcpus), 'maxVcpus', `expected a positive integer, got ${show(c.maxVcpus)}`);
    check((c.maxVcpus as number) >= (c.vcpus as number), 'maxVcpus', `must be at least vcpus (${c.vcpus}), got ${c.maxVcpus}`);
  }
  checkCpus(c);
  for (const key of ['kernel', 'ramdisk', 'cmdline', 'bootloader']) optString(c, key, key);
  optOneOf(c, 'passthrough', 'passthrough', PASSTHROUGH);
  // libxl's own checks: a PV guest has no HAP tables to share, and devices need an IOMMU
  check(!(c.passthrough === 'share_pt' && c.type === 'pv'), 'passthrough', 'share_pt is not valid for a PV guest (it has no HAP page tables to share): use enabled or sync_pt');
  check(c.passthrough === undefined || c.passthrough === 'disabled' || c.type !== 'pvh', 'passthrough', 'libxl does not pass PCI devices through to a PVH guest on x86: use pv or hvm');
  check(!(c.passthrough === 'disabled' && Array.isArray(c.pcis) && c.pcis.length > 0), 'passthrough', 'disabled, but pcis lists devices to pass through');
  if (c.type !== 'hvm') {
    check(c.kernel !== undefined || c.bootloader !== undefined, 'kernel', `a ${c.type} guest needs a kernel or a bootloader`);
  }
  check(c.ramdisk === undefined || c.kernel !== undefined, 'ramdisk', 'a ramdisk needs a kernel');
  const vdevs = new Map<string, string>();
  if (c.disks !== undefined) list(c.disks, 'disks').forEach((d, i) => checkDisk(d, i, vdevs));
  const macs = new Map<string, number>();
  if (c.nics !== undefined) list(c.nics, 'nics').forEach((n, i) => checkNic(n, i, macs));
  const bdfs = new Map<string, Set<number | '*'>>();
  if (c.pcis !== undefined) list(c.pcis, 'pcis').forEach((p, i) => checkPci(p, i, bdfs));
  for (const key of ['onPoweroff', 'onReboot', 'onCrash', 'onWatchdog', 'onSoftReset']) optOneOf(c, key, key, ACTIONS);
}
