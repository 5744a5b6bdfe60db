/**
 * `xen.blockBackend`: xenode's own block backend. It serves a guest's virtual disk from a
 * {@link VirtualDisk} (any VHD chain, or a raw image) over the Xen block-device protocol,
 * from this Node process, through xenode's grant tables, event channels and xenstore:
 * what blktap2's tapdisk did in userspace. Because it owns the disk's I/O path, it can
 * take a live snapshot of a running guest's disk, which no backend of Xen 4.17 can.
 */
import { VirtualDisk } from '../vhd/disk.js';
import { XenError } from '../errors.js';
import type { EventChannels } from '../event-channel.js';
import type { GrantTable } from '../grant-table.js';
import type { XenStore } from '../xenstore/xenstore.js';
import { vdevToDevid } from '../mock/devices.js';
import { ServedDisk, type ServedDiskHost } from './served-disk.js';

export { ServedDisk, type ServedDiskEnd } from './served-disk.js';

/** The backend type under `/local/domain/0/backend/` that xenode's served disks use. */
export const BLOCK_BACKEND_TYPE = 'xenode-vbd';

/** Options of {@link BlockBackends.serve}. */
export interface ServeDiskOptions {
  /** The guest sees the disk read-only (default false); a path is then opened read-only. */
  readOnly?: boolean;
  /** How a path is opened: `vhd` (the default, any VHD chain) or `raw`. */
  format?: 'vhd' | 'raw';
  /** How long {@link ServedDisk.close} waits for the frontend to let go (default 5000 ms). */
  closeTimeoutMs?: number;
}

/** What {@link BlockBackends} needs of its connection. */
export interface BlockBackendDeps {
  xenstore: XenStore;
  grants: GrantTable;
  eventChannels: EventChannels;
  /** Whether a domain exists; rejects only when that cannot be told. */
  domainExists(domid: number): Promise<boolean>;
}

/**
 * The disks this connection serves to guests. Get it as `xen.blockBackend`.
 *
 * The process that serves a disk IS the disk's backend: while it runs, the guest's disk
 * requests are answered; if it exits (or closes its `Xen`), the disk is detached and a
 * guest that still uses it sees I/O errors. Keep it alive as long as the guest needs the
 * disk (the `xenode blkback serve` command stays in the foreground for that).
 *
 * @example
 * ```ts
 * import { mkdtemp, rm } from 'node:fs/promises';
 * import { tmpdir } from 'node:os';
 * import { join } from 'node:path';
 * import { MockHost, VirtualDisk, connect } from 'xenode';
 *
 * const dir = await mkdtemp(join(tmpdir(), 'xenode-serve-'));
 * const host = await MockHost.create({ timing: 'instant' });
 * const xen = await connect({ backend: host });
 * await (await VirtualDisk.create(join(dir, 'data.vhd'), { size: 16 * 1024 * 1024, type: 'dynamic' })).close();
 * const dom = await xen.domains.create({ name: 'db', type: 'pvh', kernel: '/boot/vmlinuz', memory: 256, vcpus: 1 });
 * const disk = await xen.blockBackend.serve(dom.domid, 'xvdb', join(dir, 'data.vhd'));
 * console.log(disk.backendPath); // /local/domain/0/backend/xenode-vbd/1/51728
 * const snap = await dom.snapshotDisk('xvdb', join(dir, 'data-1.vhd')); // served here: live
 * console.log(disk.path === snap.child); // true
 * await disk.close();
 * await xen.close();
 * await host.close();
 * await rm(dir, { recursive: true });
 * ```
 */
export class BlockBackends {
  private readonly served = new Map<string, ServedDisk>();
  private closing = false;

  /** @internal Use `xen.blockBackend`. */
  constructor(private readonly deps: BlockBackendDeps) {}

  /**
   * Serves `disk` (a {@link VirtualDisk}, or the path of an image to open) to domain
   * `domid` as its virtual disk `vdev`: writes the device's frontend node
   * (`/local/domain/<domid>/device/vbd/<devid>`) and backend node (under
   * `/local/domain/0/backend/xenode-vbd/`, so the kernel's blkback leaves it alone), and
   * answers the guest's frontend from then on. The returned {@link ServedDisk} owns the
   * disk and closes it when the device goes away. Rejects with `ESRCH` (no such domain),
   * `XEN_ERROR_DEVICE_EXISTS` (the domain has a disk `vdev` already), or the disk's own
   * errors when a path does not open.
   */
  async serve(domid: number, vdev: string, disk: VirtualDisk | string, options: ServeDiskOptions = {}): Promise<ServedDisk> {
    const op = 'blockBackend.serve';
    if (!Number.isInteger(domid) || domid < 1 || domid >= 0x7ff0) throw new RangeError(`${op}: domid must be an integer in 1..32751, got ${String(domid)}`);
    if (typeof vdev !== 'string' || !/^(xvd|hd|sd)[a-z]+\d*$/.test(vdev)) throw new RangeError(`${op}: vdev must name a virtual disk (xvda, hdc, sdb…), got ${JSON.stringify(vdev)}`);
    if (!(disk instanceof VirtualDisk) && (typeof disk !== 'string' || disk === '')) throw new TypeError(`${op}: disk must be a VirtualDisk or a non-empty path`);
    if (options === null || typeof options !== 'object') throw new TypeError(`${op}: options must be an object`);
    const { readOnly = false, format = 'vhd', closeTimeoutMs = 5000 } = options;
    if (typeof readOnly !== 'boolean') throw new TypeError(`${op}: readOnly must be a boolean`);
    if (format !== 'vhd' && format !== 'raw') throw new TypeError(`${op}: format must be 'vhd' or 'raw'`);
    if (!Number.isInteger(closeTimeoutMs) || closeTimeoutMs < 0) throw new RangeError(`${op}: closeTimeoutMs must be a non-negative integer`);
    const devid = vdevToDevid(vdev);
    const key = `${domid}/${vdev}`;
    if (this.closing) throw new XenError('XEN_CLOSED', `XEN_CLOSED: the connection is closed (${op})`, { op });
    if (this.served.has(key)) throw new XenError('XEN_ERROR_DEVICE_EXISTS', `XEN_ERROR_DEVICE_EXISTS: ${vdev} of domain ${domid} is served already (${op})`, { op, domid });
    if (!(await this.deps.domainExists(domid))) throw XenError.fromErrno('ESRCH', { op, domid });
    const image = typeof disk === 'string' ? await VirtualDisk.open(disk, { readOnly, format }) : disk;
    const host: ServedDiskHost = this.deps;
    const served = new ServedDisk(host, { domid, vdev, devid, backendType: BLOCK_BACKEND_TYPE, readOnly, closeTimeoutMs }, image);
    this.served.set(key, served);
    served.onEnd = () => {
      if (this.served.get(key) === served) this.served.delete(key);
    };
    try {
      await served.start();
    } catch (err) {
      this.served.delete(key);
      // The nodes were not written (or are removed again); the image is the caller's to close if it was theirs.
      if (typeof disk === 'string') await image.close();
      throw err;
    }
    return served;
  }

  /** The disk `vdev` of domain `domid`, if this connection serves it. */
  find(domid: number, vdev: string): ServedDisk | undefined {
    return this.served.get(`${domid}/${vdev}`);
  }

  /** Every disk this connection serves. */
  list(): ServedDisk[] {
    return [...this.served.values()];
  }

  /** @internal Detaches every served disk (when the connection closes). */
  async closeAll(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.served.values()].map((d) => d.close()));
  }
}
