/**
 * The simulated host's block backend (blkback/tapdisk) for one vbd: it opens the disk's
 * image as a {@link VirtualDisk} and serves the simulated guest's reads and writes from it,
 * so what a guest writes really is in the image. A `vhd` image is opened when the device is
 * plugged (as tapdisk opens it, so a missing or damaged image fails the attach); a `raw`
 * target is opened on the guest's first request, since a mock guest's root disk is often a
 * path that does not exist on the machine running the mock.
 *
 * A live snapshot is blktap2's `tap-ctl pause` / `tap-ctl unpause -a CHILD`: the backend
 * stops taking requests off the guest's ring (they wait; the guest keeps running), the
 * requests it already took finish, the image is flushed and snapshotted, the backend
 * switches to the child and takes requests again.
 */
import { access } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { DiskConfig } from '../config/domain-config.js';
import { XenError } from '../errors.js';
import { VirtualDisk } from '../vhd/disk.js';

/** What a live snapshot reports (the contract's `DiskSnapshot`, less the vdev). */
export interface BackendSnapshot {
  parent: string;
  child: string;
  pausedMs: number;
}

export class SimBlockBackend {
  private disk: VirtualDisk | undefined;
  private opening: Promise<VirtualDisk> | undefined;
  /** Set while the backend is paused: requests wait for it. */
  private gate: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly config: DiskConfig,
    private readonly domid: number,
  ) {}

  get isVhd(): boolean {
    return this.config.format === 'vhd';
  }

  /** The image path the backend serves now (the child, after a snapshot). */
  get target(): string {
    return this.config.target;
  }

  /** Opens a `vhd` image now (tapdisk does it when the device is plugged); a raw one waits for the first request. */
  async plug(): Promise<void> {
    if (this.isVhd) await this.image();
  }

  private image(): Promise<VirtualDisk> {
    if (this.disk) return Promise.resolve(this.disk);
    this.opening ??= VirtualDisk.open(this.config.target, { readOnly: this.config.access === 'ro', format: this.isVhd ? 'vhd' : 'raw' }).then(
      (disk) => {
        if (this.closed) {
          void disk.close();
          throw this.goneError();
        }
        this.disk = disk;
        return disk;
      },
      (err: unknown) => {
        this.opening = undefined;
        throw err;
      },
    );
    return this.opening;
  }

  private goneError(): XenError {
    return new XenError('ENXIO', `ENXIO: the disk ${this.config.vdev} of domain ${this.domid} is unplugged (device.io)`, { op: 'device.io', domid: this.domid, errno: 6 });
  }

  /** One request from the guest's ring: waits while the backend is paused. */
  private async request<T>(fn: (disk: VirtualDisk) => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    if (this.closed) throw this.goneError();
    const disk = this.disk ?? (await this.image());
    // Taken off the ring now: it reaches the image before anything queued after it (a pause's flush included).
    return fn(disk);
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request((disk) => disk.read(offset, length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.request((disk) => disk.write(offset, data));
  }

  flush(): Promise<void> {
    return this.request((disk) => disk.flush());
  }

  /**
   * Pauses, flushes, snapshots the image into `childPath`, switches to the child and resumes;
   * `onSwitch` runs while still paused (the toolstack repoints xenstore's `params` there).
   * On any failure the backend resumes on its old image, and no child is left behind.
   */
  async snapshot(childPath: string, onSwitch: (child: string) => void): Promise<BackendSnapshot> {
    const child = resolve(childPath);
    const op = 'domain.snapshotDisk';
    // Checked before pausing, so that a wrong path costs the guest nothing.
    if (await access(child).then(() => true, () => false)) throw XenError.fromErrno('EEXIST', { op, path: child });
    await access(dirname(child)).catch((err: unknown) => {
      throw XenError.fromErrno((err as NodeJS.ErrnoException).code ?? 'ENOENT', { op, path: dirname(child) });
    });
    while (this.gate) await this.gate;
    if (this.closed) throw this.goneError();
    const parentDisk = this.disk ?? (await this.image());
    let release = () => undefined as void;
    this.gate = new Promise<void>((r) => (release = r));
    const started = performance.now();
    let pausedMs: number;
    let next: VirtualDisk | undefined;
    try {
      // Requests already taken are ahead of these in the disk's queue: they land in the parent.
      await parentDisk.flush();
      next = await parentDisk.snapshot(child);
      this.disk = next;
      this.opening = Promise.resolve(next);
      this.config.target = next.path;
      onSwitch(next.path);
    } finally {
      pausedMs = performance.now() - started;
      this.gate = undefined;
      release();
    }
    // The child reads the parent through handles of its own. It is made durable now, out of
    // the pause window, as a guest's flush would (snapshot() leaves that to the first flush).
    await parentDisk.close();
    await next.flush().catch((err: unknown) => {
      if (!this.closed) throw err; // unplugged meanwhile: nothing more to make durable
    });
    return { parent: parentDisk.path, child: this.config.target, pausedMs };
  }

  /** Unplugs: waits for a snapshot under way, then closes the image. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.gate) await this.gate;
    const disk = this.disk ?? (await this.opening?.catch(() => undefined));
    this.disk = undefined;
    await disk?.close();
  }
}
