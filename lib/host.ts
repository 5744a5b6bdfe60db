import { readFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { HostInfo } from './backend-toolstack.js';
import type { ToolstackSession } from './domains.js';

/** What {@link detectXen} found about the machine this code runs on. */
export interface XenDetection {
  /** `/sys/hypervisor/type`: `'xen'` under Xen, another name under another hypervisor, undefined when absent. */
  hypervisor: string | undefined;
  /** Running as a Xen guest or dom0. */
  isXen: boolean;
  /** `control_d` in `/proc/xen/capabilities`: this is dom0, the control domain. */
  isDom0: boolean;
  /** The guest type the kernel reports (`/sys/hypervisor/guest_type`: `PV`, `PVH`, `HVM`), when it does. */
  guestType: string | undefined;
  /**
   * A PVOps kernel (mainline Linux with Xen support, as Debian ships) rather than an old
   * XenLinux fork: it exposes `/sys/hypervisor/guest_type` or mounts `/proc/xen` as xenfs.
   */
  pvops: boolean;
  /** Whether `/proc/xen` is there (xenfs mounted, or a XenLinux kernel). */
  xenfs: boolean;
  /** The lines of `/proc/xen/capabilities` (empty when absent). */
  capabilities: string[];
}

/** Options of {@link detectXen}. */
export interface DetectXenOptions {
  /** The file system root to look under (tests pass a fake tree). Default `/`. */
  root?: string;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Looks at the machine this code runs on (not at a backend): is it a Xen guest, is it
 * dom0, is its kernel PVOps. Reads `/sys/hypervisor/type`, `/sys/hypervisor/guest_type`,
 * `/proc/xen/capabilities` and `/proc/filesystems`; never fails (absent files mean "no").
 *
 * @example
 * ```ts
 * import { detectXen } from 'xenode';
 * const here = await detectXen();
 * console.log(here.isDom0 ? 'dom0: use the native backend' : 'not dom0: use { backend: "mock" }');
 * ```
 */
export async function detectXen(options: DetectXenOptions = {}): Promise<XenDetection> {
  const root = options.root ?? '/';
  if (typeof root !== 'string') throw new TypeError('detectXen: root must be a path');
  const [type, guestType, caps, filesystems, xenfs] = await Promise.all([
    readText(join(root, 'sys/hypervisor/type')),
    readText(join(root, 'sys/hypervisor/guest_type')),
    readText(join(root, 'proc/xen/capabilities')),
    readText(join(root, 'proc/filesystems')),
    exists(join(root, 'proc/xen')),
  ]);
  const capabilities = caps === undefined || caps === '' ? [] : caps.split(/\s+/);
  const isXen = type === 'xen' || xenfs;
  const xenfsKnown = filesystems !== undefined && /\bxenfs\b/.test(filesystems);
  return {
    hypervisor: type,
    isXen,
    isDom0: capabilities.includes('control_d'),
    guestType,
    pvops: isXen && (guestType !== undefined || xenfsKnown),
    xenfs,
    capabilities,
  };
}

/**
 * The host as a whole: `xen.host`.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * const info = await xen.host.info();
 * console.log(info.xenVersion, info.cpus, info.scheduler);   // 4.17.3 8 credit2
 * console.log(await xen.host.freeMemory() <= info.totalMemory); // true
 * await xen.close();
 * ```
 */
export class Host {
  /** @internal Use `xen.host`. */
  constructor(
    private readonly session: ToolstackSession,
    private readonly backendName: string,
  ) {}

  /** Version, capabilities, CPU topology, memory (MiB) and scheduler, as `xl info`. */
  async info(): Promise<HostInfo> {
    return (await this.session.get()).hostInfo();
  }

  /** Memory in MiB not given to any domain (`xl info` free_memory). */
  async freeMemory(): Promise<number> {
    return (await this.info()).freeMemory;
  }

  /**
   * Whether the backend acts as dom0. The mock host's backend always does; the native one
   * does when the machine this runs on is dom0 ({@link detectXen}).
   */
  async isDom0(): Promise<boolean> {
    if (this.backendName === 'native') return (await detectXen()).isDom0;
    return true;
  }
}
