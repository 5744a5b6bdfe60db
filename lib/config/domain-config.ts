/**
 * The friendly domain configuration that scripts write: what `xen.domains.create()`
 * takes, what `parseXlConfig()` returns and what `domain.config()` gives back. Each
 * backend turns it into what it needs — the native backend into libxl's JSON
 * (`libxl_domain_config`), the mock host into its simulated domain.
 *
 * Units follow xl.cfg(5): memory in MiB, everything else as xl writes it.
 */

/** How the guest is virtualised (xl.cfg `type`). */
export type DomainType = 'pv' | 'pvh' | 'hvm';

/** What Xen does when the guest powers off, reboots, crashes, … (xl.cfg `on_*`). */
export type DomainAction =
  | 'destroy'
  | 'restart'
  | 'rename-restart'
  | 'preserve'
  | 'coredump-destroy'
  | 'coredump-restart'
  | 'soft-reset';

/** A virtual disk (xl-disk-configuration(5)). */
export interface DiskConfig {
  /** The backing file, block device or VirtualDisk path (xl `target`). Empty for an empty CD-ROM drive. */
  target: string;
  /** The device name the guest sees: `xvda`, `hda`, `sdb`, … (xl `vdev`). */
  vdev: string;
  /** Image format (xl `format`); default `raw`. */
  format?: 'raw' | 'qcow' | 'qcow2' | 'vhd' | 'qed';
  /** `rw` (default) or `ro` (xl `access`). */
  access?: 'rw' | 'ro';
  /** `disk` (default) or `cdrom` (xl `devtype`). */
  devtype?: 'disk' | 'cdrom';
  /** Backend implementation (xl `backendtype`); chosen by the toolstack when absent. */
  backendType?: 'phy' | 'qdisk' | 'tap' | 'standalone';
  /** The domain (name or domid) that runs the backend (xl `backend`); dom0 when absent. */
  backendDomain?: string;
  /** Hotplug script (xl `script`). */
  script?: string;
}

/** A virtual network interface (xl-network-configuration(5)). */
export interface NicConfig {
  /** MAC address `xx:xx:xx:xx:xx:xx`; the toolstack picks one under 00:16:3e when absent. */
  mac?: string;
  /** Bridge the backend vif joins (xl `bridge`). */
  bridge?: string;
  /** Emulated NIC model for HVM guests (xl `model`, e.g. `e1000`). */
  model?: string;
  /** IP address(es) for the hotplug script, space separated (xl `ip`). */
  ip?: string;
  /** Hotplug script (xl `script`). */
  script?: string;
  /** Backend interface name (xl `vifname`). */
  vifname?: string;
  /** The domain (name or domid) that runs the backend (xl `backend`); dom0 when absent. */
  backendDomain?: string;
  /** Rate limit as xl writes it (`10Mb/s`, `1MB/s@20ms`). */
  rate?: string;
  /** Queues for multi-queue netback/netfront; the backend's maximum when absent. */
  queues?: number;
  /** `vif` (PV only) or `ioemu` (emulated plus PV) (xl `type`); chosen by the toolstack when absent. Added for xl.cfg. */
  type?: 'vif' | 'ioemu';
  /** MTU of the backend interface (xl `mtu`); the bridge's when absent. Added for xl.cfg. */
  mtu?: number;
}

/** How a domain's IOMMU mappings are kept: {@link DomainConfig.passthrough} (xl `passthrough`). */
export type Passthrough = 'enabled' | 'disabled' | 'sync_pt' | 'share_pt';

/** A PCI device passed through to the guest, SR-IOV virtual functions included. */
export interface PciConfig {
  /** Host address `[DDDD:]BB:DD.F` (xl `pci` BDF). */
  bdf: string;
  /** Virtual slot and function in the guest (xl `vslot`), when fixed. */
  vslot?: number;
  /** Pass through writes to unknown config space (xl `permissive`). */
  permissive?: boolean;
  /** Assign even if not assignable yet (xl `seize`). */
  seize?: boolean;
  /** Allow MSI translation (xl `msitranslate`). */
  msitranslate?: boolean;
  /** Power management pass-through (xl `power_mgmt`). */
  powerMgmt?: boolean;
  /** Reserved device memory policy (xl `rdm_policy`), HVM on x86. Added for xl.cfg. */
  rdmPolicy?: 'strict' | 'relaxed';
}

/**
 * A domain's configuration.
 *
 * @example
 * ```ts
 * import type { DomainConfig } from 'xenode';
 * const web: DomainConfig = {
 *   name: 'web1', type: 'pvh', memory: 512, vcpus: 2,
 *   kernel: '/boot/vmlinuz', cmdline: 'console=hvc0 root=/dev/xvda1',
 *   disks: [{ target: '/srv/web1.img', vdev: 'xvda' }],
 *   nics: [{ bridge: 'xenbr0', queues: 2 }],
 * };
 * console.log(web.name);  // 'web1'
 * ```
 */
export interface DomainConfig {
  /** Unique name on the host (xl `name`). */
  name: string;
  /** Virtualisation mode (xl `type`; `builder="hvm"` in old files). */
  type: DomainType;
  /** Fixed UUID; generated when absent. */
  uuid?: string;
  /** Initial memory in MiB (xl `memory`). */
  memory: number;
  /** Maximum memory in MiB for ballooning up (xl `maxmem`); equal to `memory` when absent. */
  maxMemory?: number;
  /** vCPUs online at boot (xl `vcpus`). */
  vcpus: number;
  /** vCPUs the guest may bring online later (xl `maxvcpus`); equal to `vcpus` when absent. */
  maxVcpus?: number;
  /** Physical CPUs the vCPUs may run on (xl `cpus`), e.g. `"0-3,^1"` or `[0, 2]`. */
  cpus?: string | number[];
  /**
   * Per-vCPU hard affinity: entry `i` is the CPU list (`"2"`, `"3-8,^5"`) of vCPU `i`, as xl
   * `cpus` given as a list. Exclusive with `cpus`. Added for xl.cfg.
   */
  vcpuAffinity?: string[];
  /** Guest kernel in dom0's file system (PV, PVH direct boot). */
  kernel?: string;
  /** Initial ramdisk. */
  ramdisk?: string;
  /** Kernel command line (xl `extra`/`cmdline`, with `root` folded in). */
  cmdline?: string;
  /** PV bootloader, e.g. `pygrub` (xl `bootloader`). */
  bootloader?: string;
  disks?: DiskConfig[];
  nics?: NicConfig[];
  pcis?: PciConfig[];
  /**
   * IOMMU mappings for the domain, so that PCI functions can be passed through to it (xl
   * `passthrough`): `enabled` lets libxl choose, `sync_pt` keeps separate IOMMU page tables
   * (the only kind a PV guest can have), `share_pt` shares an HVM guest's HAP tables,
   * `disabled` gives it none. When absent, libxl enables it if `pcis` lists devices and
   * disables it otherwise, and a domain created without it cannot take a PCI function
   * later: give `enabled` to a domain that {@link Domain.attachPci} is to be used on.
   * libxl on x86 refuses it for a PVH guest, and a host without an IOMMU (`xl info`
   * virt_caps without `directio`) passes no function through. A running domain's
   * {@link Domain.config} reports the mode libxl chose (`sync_pt` for a PV guest asked
   * for `enabled`), and nothing for `disabled`.
   */
  passthrough?: Passthrough;
  /** xl `on_poweroff`, default `destroy`. */
  onPoweroff?: DomainAction;
  /** xl `on_reboot`, default `restart`. */
  onReboot?: DomainAction;
  /** xl `on_crash`, default `destroy`. */
  onCrash?: DomainAction;
  /** xl `on_watchdog`, default `destroy`. */
  onWatchdog?: DomainAction;
  /** xl `on_soft_reset`, default `soft-reset`. */
  onSoftReset?: DomainAction;
}
