import type { DiskConfig, DomainAction, DomainConfig, DomainType, NicConfig, PciConfig } from './domain-config.js';
import type {
  LibxlActionOnShutdown,
  LibxlDeviceDisk,
  LibxlDeviceNic,
  LibxlDevicePci,
  LibxlDiskBackend,
  LibxlDomainBuildInfo,
  LibxlDomainConfig,
} from './libxl-types.gen.js';
import { formatBdf, formatCpuList, formatRate, parseBdf, parseCpuList, parseRate } from './syntax.js';
import { configError, validateDomainConfig } from './validate.js';

/** xl.cfg action names ↔ libxl_action_on_shutdown's JSON names. */
const ACTION_TO_LIBXL: Record<DomainAction, LibxlActionOnShutdown> = {
  destroy: 'destroy',
  restart: 'restart',
  'rename-restart': 'restart_rename',
  preserve: 'preserve',
  'coredump-destroy': 'coredump_destroy',
  'coredump-restart': 'coredump_restart',
  'soft-reset': 'soft_reset',
};
const ACTION_FROM_LIBXL = Object.fromEntries(Object.entries(ACTION_TO_LIBXL).map(([k, v]) => [v, k])) as Record<LibxlActionOnShutdown, DomainAction>;

/** The `on_*` keys, their DomainConfig fields and xl's defaults (libxl's own default is `destroy` for all). */
const ACTIONS = [
  ['on_poweroff', 'onPoweroff', 'destroy'],
  ['on_reboot', 'onReboot', 'restart'],
  ['on_watchdog', 'onWatchdog', 'destroy'],
  ['on_crash', 'onCrash', 'destroy'],
  ['on_soft_reset', 'onSoftReset', 'soft-reset'],
] as const;

/** libxl's LIBXL_PCI_FUNC_ALL: the vfunc_mask of a `BB:DD.*` device. */
const PCI_FUNC_ALL = 0xffffffff;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** @internal One device as toLibxlConfig writes it (also used to hot-plug). */
export function diskToLibxl(d: DiskConfig): LibxlDeviceDisk {
  const cdrom = d.devtype === 'cdrom';
  const out: LibxlDeviceDisk = {};
  if (d.backendDomain !== undefined) out.backend_domname = d.backendDomain;
  if (d.target !== '') out.pdev_path = d.target;
  out.vdev = d.vdev;
  if (d.backendType !== undefined) out.backend = d.backendType;
  out.format = cdrom && d.target === '' ? 'empty' : (d.format ?? 'raw');
  if (d.script !== undefined) out.script = d.script;
  // xl makes a CD-ROM removable and read-only whatever `access` says.
  if (cdrom) out.removable = 1;
  if (!cdrom && d.access !== 'ro') out.readwrite = 1;
  if (cdrom) out.is_cdrom = 1;
  return out;
}

/** @internal One device as toLibxlConfig writes it (also used to hot-plug). */
export function nicToLibxl(n: NicConfig): LibxlDeviceNic {
  const out: LibxlDeviceNic = {};
  if (n.backendDomain !== undefined) out.backend_domname = n.backendDomain;
  if (n.mtu !== undefined) out.mtu = n.mtu;
  if (n.model !== undefined) out.model = n.model;
  if (n.mac !== undefined) out.mac = n.mac.toLowerCase();
  if (n.ip !== undefined) out.ip = n.ip;
  if (n.bridge !== undefined) out.bridge = n.bridge;
  if (n.vifname !== undefined) out.ifname = n.vifname;
  if (n.script !== undefined) out.script = n.script;
  if (n.type !== undefined) out.nictype = n.type === 'ioemu' ? 'vif_ioemu' : 'vif';
  if (n.rate !== undefined) {
    const rate = parseRate(n.rate);
    out.rate_bytes_per_interval = rate.bytesPerInterval;
    out.rate_interval_usecs = rate.intervalUsecs;
  }
  // `queues` has no libxl field: netback takes its queue count from its own module
  // parameter (max_queues), so it is not part of libxl_device_nic.
  return out;
}

/** @internal One device as toLibxlConfig writes it (also used to hot-plug). */
export function pciToLibxl(p: PciConfig): LibxlDevicePci {
  const bdf = parseBdf(p.bdf);
  // Zero is libxl's default for these and its writer leaves them out; so does this one.
  const out: LibxlDevicePci = {};
  if (bdf.func !== '*' && bdf.func !== 0) out.func = bdf.func;
  if (bdf.dev !== 0) out.dev = bdf.dev;
  if (bdf.bus !== 0) out.bus = bdf.bus;
  if (bdf.domain !== 0) out.domain = bdf.domain;
  if (p.vslot) out.vdevfn = p.vslot << 3;
  out.vfunc_mask = bdf.func === '*' ? PCI_FUNC_ALL : 1;
  if (p.msitranslate) out.msitranslate = true;
  if (p.powerMgmt) out.power_mgmt = true;
  if (p.permissive) out.permissive = true;
  if (p.seize) out.seize = true;
  if (p.rdmPolicy !== undefined) out.rdm_policy = p.rdmPolicy;
  return out;
}

/**
 * Turns a {@link DomainConfig} into libxl's `libxl_domain_config` JSON, as
 * `libxl_domain_config_from_json` reads it and as xl would build it from the equivalent
 * xl.cfg (memory in KiB, vCPU bitmaps, xl's defaults for `on_reboot`/`on_soft_reset`
 * written out because libxl's own default is `destroy`). The config is validated first
 * (`XEN_INVALID_CONFIG`). `nics[].queues` has no libxl field and is left out.
 *
 * @example
 * ```ts
 * import { toLibxlConfig } from 'xenode';
 * const json = toLibxlConfig({ name: 'web', type: 'pvh', memory: 512, vcpus: 2, kernel: '/boot/vmlinuz' });
 * console.log(json.b_info?.target_memkb, json.c_info?.type); // 524288 pvh
 * ```
 */
export function toLibxlConfig(config: DomainConfig): LibxlDomainConfig {
  validateDomainConfig(config);
  const maxVcpus = config.maxVcpus ?? config.vcpus;
  const b: LibxlDomainBuildInfo = { max_vcpus: maxVcpus, avail_vcpus: range(config.vcpus) };
  if (config.cpus !== undefined) {
    const cpus = typeof config.cpus === 'string' ? parseCpuList(config.cpus) : [...new Set(config.cpus)].sort((x, y) => x - y);
    if (cpus !== undefined) b.vcpu_hard_affinity = range(maxVcpus).map(() => [...cpus]);
  } else if (config.vcpuAffinity !== undefined) {
    b.vcpu_hard_affinity = config.vcpuAffinity.map((list) => parseCpuList(list) ?? []);
  }
  b.max_memkb = (config.maxMemory ?? config.memory) * 1024;
  b.target_memkb = config.memory * 1024;
  if (config.kernel !== undefined) b.kernel = config.kernel;
  if (config.cmdline !== undefined) b.cmdline = config.cmdline;
  if (config.ramdisk !== undefined) b.ramdisk = config.ramdisk;
  if (config.bootloader !== undefined) b.bootloader = config.bootloader;
  b[`type.${config.type}`] = {};

  const out: LibxlDomainConfig = {
    c_info: {
      type: config.type,
      name: config.name,
      ...(config.uuid === undefined ? {} : { uuid: config.uuid.toLowerCase() }),
      ...(config.passthrough === undefined ? {} : { passthrough: config.passthrough }),
    },
    b_info: b,
  };
  if (config.disks?.length) out.disks = config.disks.map(diskToLibxl);
  if (config.nics?.length) out.nics = config.nics.map(nicToLibxl);
  if (config.pcis?.length) out.pcidevs = config.pcis.map(pciToLibxl);
  for (const [key, field, xlDefault] of ACTIONS) {
    const action = ACTION_TO_LIBXL[config[field] ?? xlDefault];
    if (action !== 'destroy') out[key] = action;
  }
  return out;
}

const DISK_BACKENDS: Partial<Record<LibxlDiskBackend, DiskConfig['backendType']>> = { phy: 'phy', qdisk: 'qdisk', tap: 'tap', standalone: 'standalone' };

function diskFromLibxl(d: LibxlDeviceDisk, i: number): DiskConfig {
  if (d.vdev === undefined) throw configError(`disks[${i}].vdev`, 'libxl configuration has a disk without vdev', { prefix: 'invalid libxl configuration' });
  const cdrom = Boolean(d.is_cdrom);
  const out: DiskConfig = { target: d.pdev_path ?? '', vdev: d.vdev };
  if (d.format !== undefined && d.format !== 'raw' && d.format !== 'empty' && d.format !== 'unknown') out.format = d.format;
  if (!cdrom && !d.readwrite) out.access = 'ro';
  if (cdrom) out.devtype = 'cdrom';
  const backend = d.backend === undefined ? undefined : DISK_BACKENDS[d.backend];
  if (backend !== undefined) out.backendType = backend;
  const backendDomain = d.backend_domname ?? (d.backend_domid ? String(d.backend_domid) : undefined);
  if (backendDomain !== undefined) out.backendDomain = backendDomain;
  if (d.script !== undefined) out.script = d.script;
  return out;
}

function nicFromLibxl(n: LibxlDeviceNic): NicConfig {
  const out: NicConfig = {};
  if (n.mac !== undefined && n.mac !== '00:00:00:00:00:00') out.mac = n.mac;
  if (n.bridge !== undefined) out.bridge = n.bridge;
  if (n.model !== undefined) out.model = n.model;
  if (n.ip !== undefined) out.ip = n.ip;
  if (n.script !== undefined) out.script = n.script;
  if (n.ifname !== undefined) out.vifname = n.ifname;
  const backendDomain = n.backend_domname ?? (n.backend_domid ? String(n.backend_domid) : undefined);
  if (backendDomain !== undefined) out.backendDomain = backendDomain;
  if (n.rate_bytes_per_interval && n.rate_interval_usecs) out.rate = formatRate({ bytesPerInterval: n.rate_bytes_per_interval, intervalUsecs: n.rate_interval_usecs });
  if (n.nictype === 'vif' || n.nictype === 'vif_ioemu') out.type = n.nictype === 'vif' ? 'vif' : 'ioemu';
  if (n.mtu) out.mtu = n.mtu;
  return out;
}

function pciFromLibxl(p: LibxlDevicePci): PciConfig {
  const all = p.vfunc_mask === PCI_FUNC_ALL;
  const out: PciConfig = { bdf: formatBdf({ domain: p.domain ?? 0, bus: p.bus ?? 0, dev: p.dev ?? 0, func: all ? '*' : (p.func ?? 0) }) };
  if (p.vdevfn) out.vslot = p.vdevfn >> 3;
  if (p.permissive) out.permissive = true;
  if (p.seize) out.seize = true;
  if (p.msitranslate) out.msitranslate = true;
  if (p.power_mgmt) out.powerMgmt = true;
  if (p.rdm_policy === 'strict' || p.rdm_policy === 'relaxed') out.rdmPolicy = p.rdm_policy;
  return out;
}

/** The affinity of `b_info` as DomainConfig's `cpus` (one list for all vCPUs) or `vcpuAffinity`. */
function affinityFromLibxl(b: LibxlDomainBuildInfo, out: DomainConfig): void {
  const maps = b.vcpu_hard_affinity;
  if (!maps?.length) return;
  const lists = maps.map((m) => formatCpuList(m));
  if (lists.length === (out.maxVcpus ?? out.vcpus) && lists.every((l) => l === lists[0]) && lists[0] !== '') out.cpus = lists[0] as string;
  else out.vcpuAffinity = lists;
}

/**
 * Reads libxl's `libxl_domain_config` JSON (from `libxl_retrieve_domain_configuration`
 * or {@link toLibxlConfig}) back into a {@link DomainConfig}. Fields at their default
 * are left out (`format` raw, `access` rw, `on_reboot` restart, …); the kernel, ramdisk,
 * command line and bootloader are read from `b_info` or, in older JSON, `b_info["type.pv"]`.
 * A CPU list comes back as an xl CPU-list string. Devices and settings DomainConfig has
 * no field for (vfbs, channels, hvm firmware options, …) are dropped.
 *
 * @example
 * ```ts
 * import { fromLibxlConfig, toLibxlConfig } from 'xenode';
 * const back = fromLibxlConfig(toLibxlConfig({ name: 'db', type: 'hvm', memory: 2048, vcpus: 4, cpus: [0, 1, 2, 3] }));
 * console.log(back.memory, back.cpus); // 2048 0-3
 * ```
 */
export function fromLibxlConfig(json: LibxlDomainConfig): DomainConfig {
  const c = json.c_info ?? {};
  const b = json.b_info ?? {};
  const type = (c.type ?? (['pv', 'pvh', 'hvm'] as const).find((t) => b[`type.${t}`] !== undefined)) as DomainType | undefined;
  if (type !== 'pv' && type !== 'pvh' && type !== 'hvm') throw configError('c_info.type', `expected pv, pvh or hvm, got ${JSON.stringify(type)}`, { prefix: 'invalid libxl configuration' });
  if (c.name === undefined) throw configError('c_info.name', 'missing', { prefix: 'invalid libxl configuration' });
  const targetKb = b.target_memkb ?? b.max_memkb;
  if (targetKb === undefined) throw configError('b_info.target_memkb', 'missing', { prefix: 'invalid libxl configuration' });
  const out: DomainConfig = { name: c.name, type, memory: Math.floor(targetKb / 1024), vcpus: b.avail_vcpus?.length || b.max_vcpus || 1 };
  if (c.uuid !== undefined && !/^[0-]+$/.test(c.uuid)) out.uuid = c.uuid;
  if (b.max_memkb !== undefined && b.max_memkb !== targetKb) out.maxMemory = Math.floor(b.max_memkb / 1024);
  if (b.max_vcpus !== undefined && b.max_vcpus !== out.vcpus) out.maxVcpus = b.max_vcpus;
  affinityFromLibxl(b, out);
  const pv = b['type.pv'] ?? {};
  for (const key of ['kernel', 'ramdisk', 'cmdline', 'bootloader'] as const) {
    const value = b[key] ?? pv[key];
    if (value !== undefined && value !== null) out[key] = value;
  }
  if (json.disks?.length) out.disks = json.disks.map(diskFromLibxl);
  if (json.nics?.length) out.nics = json.nics.map(nicFromLibxl);
  if (json.pcidevs?.length) out.pcis = json.pcidevs.map(pciFromLibxl);
  // libxl stores the mode it chose at creation: `disabled` is what a domain without `pcis`
  // gets when none is asked for, so only a mode that gives the domain an IOMMU is kept
  if (c.passthrough !== undefined && c.passthrough !== 'default' && c.passthrough !== 'disabled') out.passthrough = c.passthrough;
  for (const [key, field, xlDefault] of ACTIONS) {
    const action = ACTION_FROM_LIBXL[json[key] ?? 'destroy'];
    if (action !== undefined && action !== xlDefault) out[field] = action;
  }
  return out;
}
