/**
 * One virtual disk that xenode serves to a guest itself: the xenbus side of a block
 * backend. It writes the device's frontend and backend nodes as a toolstack does, follows
 * the frontend through the xenbus handshake (InitWait → Initialised → Connected, Closing →
 * Closed), maps the ring and binds the event channel the frontend offers, and runs a
 * {@link RingEngine} over them. A live snapshot pauses that engine.
 */
import { access } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { debuglog } from 'node:util';
import type { DiskSnapshot } from '../backend-toolstack.js';
import { XenError } from '../errors.js';
import type { EventChannel, EventChannels } from '../event-channel.js';
import type { GrantRegionHandle, GrantTable } from '../grant-table.js';
import type { VirtualDisk } from '../vhd/disk.js';
import type { XenStore } from '../xenstore/xenstore.js';
import { RingEngine, type RingStats } from './engine.js';
import { SECTOR_SIZE } from './ring.js';

const debug = debuglog('xenode:blkback');

/** XenbusState (xen/io/xenbus.h). */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;

/** blkif.h's VDISK_* bits of the backend's `info` node. */
const VDISK_READONLY = 4;

/** What a {@link ServedDisk} needs of the host it runs on. */
export interface ServedDiskHost {
  xenstore: XenStore;
  grants: GrantTable;
  eventChannels: EventChannels;
  /** Whether the domain still exists (asked when xenstored reports a domain released). */
  domainExists(domid: number): Promise<boolean>;
}

/** Where a served disk lives in xenstore, and what it serves. */
export interface ServedDiskSetup {
  domid: number;
  vdev: string;
  devid: number;
  backendType: string;
  readOnly: boolean;
  closeTimeoutMs: number;
}

/** Why a served disk stopped (see {@link ServedDisk.closed}). */
export type ServedDiskEnd = 'closed' | 'frontend-closed' | 'domain-gone' | 'removed' | 'fault';

/**
 * One disk that `xen.blockBackend.serve()` serves to a guest: its xenstore paths, the
 * image it serves now (`path`, the child after a live snapshot), the frontend's state,
 * counters, {@link snapshot} and {@link close}. `closed` resolves when the service ends,
 * whoever ended it. See docs/blkback.md.
 */
export class ServedDisk {
  /** The guest's domain id. */
  readonly domid: number;
  /** The disk's name in the guest (`xvdb`). */
  readonly vdev: string;
  /** The vbd's device number (`xvdb` is 51728). */
  readonly devid: number;
  /** `/local/domain/<domid>/device/vbd/<devid>`. */
  readonly frontendPath: string;
  /** `/local/domain/0/backend/<type>/<domid>/<devid>`. */
  readonly backendPath: string;
  /** Whether the guest sees the disk read-only. */
  readonly readOnly: boolean;
  /** Resolves once the disk stops being served, with why. Never rejects. */
  readonly closed: Promise<ServedDiskEnd>;
  /** @internal Told when the disk stops being served (the registry forgets it). */
  onEnd: (() => void) | undefined;
  private disk: VirtualDisk;
  private engine: RingEngine | undefined;
  private ring: GrantRegionHandle | undefined;
  private channel: EventChannel | undefined;
  private readonly pages = new Set<GrantRegionHandle>();
  private readonly abort = new AbortController();
  private backendState: number = XenbusState.Initialising;
  private ended: ServedDiskEnd | undefined;
  private endClosed!: (why: ServedDiskEnd) => void;
  private closing: Promise<void> | undefined;
  private snapshotting: Promise<unknown> = Promise.resolve();
  private frontendWaiters = new Set<() => void>();
  private frontendState: number = XenbusState.Unknown;
  private lastStats: RingStats = { requests: 0, errors: 0, mappedPages: 0 };
  private work: Promise<void> = Promise.resolve();
  private readonly closeTimeoutMs: number;

  /** @internal Use `xen.blockBackend.serve()`. */
  constructor(
    private readonly host: ServedDiskHost,
    setup: ServedDiskSetup,
    disk: VirtualDisk,
  ) {
    this.domid = setup.domid;
    this.vdev = setup.vdev;
    this.devid = setup.devid;
    this.readOnly = setup.readOnly;
    this.closeTimeoutMs = setup.closeTimeoutMs;
    this.frontendPath = `/local/domain/${setup.domid}/device/vbd/${setup.devid}`;
    this.backendPath = `/local/domain/0/backend/${setup.backendType}/${setup.domid}/${setup.devid}`;
    this.disk = disk;
    this.closed = new Promise((r) => (this.endClosed = r));
  }

  /** The image the guest's disk reads and writes now (the child, after a snapshot). */
  get path(): string {
    return this.disk.path;
  }

  /** The frontend's xenbus state as last seen (`4` once the guest connected). */
  get state(): number {
    return this.frontendState;
  }

  /** Requests served so far, those answered with an error, and data pages mapped now. */
  get stats(): RingStats {
    return { ...(this.engine?.stats ?? this.lastStats) };
  }

  /** Whether the ring page is mapped and the event channel bound (the device is connected). */
  get connected(): boolean {
    return this.engine !== undefined;
  }

  /** @internal Writes the device's nodes and starts following the frontend. */
  async start(): Promise<void> {
    const xs = this.host.xenstore;
    const { domid, devid } = this;
    const fe = this.frontendPath;
    const be = this.backendPath;
    const sectors = Math.floor(this.disk.size / SECTOR_SIZE);
    await xs.transaction(async (tx) => {
      if (await tx.exists(fe)) throw new XenError('XEN_ERROR_DEVICE_EXISTS', `XEN_ERROR_DEVICE_EXISTS: domain ${domid} already has a disk ${devid} (${fe}) (blockBackend.serve)`, { op: 'blockBackend.serve', domid, path: fe });
      // Each directory first, with its permissions, so that the nodes below inherit them.
      await tx.mkdir(fe);
      // The guest owns its frontend's nodes (it writes ring-ref, event-channel, state); dom0 reads them.
      await tx.setPermissions(fe, [{ domid, read: false, write: false }, { domid: 0, read: true, write: false }]);
      await tx.write(`${fe}/backend`, be);
      await tx.write(`${fe}/backend-id`, '0');
      await tx.write(`${fe}/state`, String(XenbusState.Initialising));
      await tx.write(`${fe}/virtual-device`, String(devid));
      await tx.write(`${fe}/device-type`, 'disk');
      await tx.mkdir(be);
      await tx.setPermissions(be, [{ domid: 0, read: false, write: false }, { domid, read: true, write: false }]);
      const nodes: Record<string, string> = {
        frontend: fe,
        'frontend-id': String(domid),
        online: '1',
        removable: '0',
        bootable: '1',
        state: String(XenbusState.Initialising),
        dev: this.vdev,
        type: 'xenode',
        mode: this.readOnly ? 'r' : 'w',
        'device-type': 'disk',
        params: this.disk.path,
        sectors: String(sectors),
        info: String(this.readOnly ? VDISK_READONLY : 0),
        'sector-size': String(SECTOR_SIZE),
        'physical-sector-size': String(SECTOR_SIZE),
        'feature-flush-cache': '1',
      };
      for (const [k, v] of Object.entries(nodes)) await tx.write(`${be}/${k}`, v);
    });
    await this.setState(XenbusState.InitWait);
    void this.follow(`${fe}/state`, () => this.frontendChanged());
    void this.follow(`${be}/online`, () => this.onlineChanged());
    void this.follow('@releaseDomain', () => this.released());
    void this.follow(`${be}/snapshot-request`, () => this.snapshotRequests());
  }

  /** Snapshot requests of other processes (see remote-snapshot.ts): take each, answer each. */
  private async snapshotRequests(): Promise<void> {
    const xs = this.host.xenstore;
    const dir = `${this.backendPath}/snapshot-request`;
    for (const id of await xs.list(dir).catch(() => [])) {
      const child = await xs.read(`${dir}/${id}`).catch(() => undefined);
      await xs.remove(`${dir}/${id}`).catch(() => undefined);
      if (child === undefined) continue;
      // Not awaited here: the snapshot itself queues behind this reaction.
      void this.snapshot(child).then(
        (ok) => ({ ok }),
        (err: unknown) => ({ error: { code: (err as XenError).code ?? 'EIO', message: (err as Error).message } }),
      ).then((answer) => xs.write(`${this.backendPath}/snapshot-result/${id}`, JSON.stringify(answer)).catch(() => undefined));
    }
  }

  /** Runs `fn` (serialised with every other reaction) on each change of `path`, until the end. */
  private async follow(path: string, fn: () => Promise<void>): Promise<void> {
    try {
      for await (const _ of this.host.xenstore.watch(path, { signal: this.abort.signal })) {
        this.work = this.work.then(fn).catch((err: unknown) => debug('%s: %s', path, (err as Error).message));
      }
    } catch (err) {
      if (!this.abort.signal.aborted) debug('watch %s ended: %s', path, (err as Error).message);
    }
  }

  private async setState(state: number): Promise<void> {
    this.backendState = state;
    await this.host.xenstore.write(`${this.backendPath}/state`, String(state));
  }

  private async frontendChanged(): Promise<void> {
    if (this.ended !== undefined) return;
    const raw = await this.host.xenstore.read(`${this.frontendPath}/state`).catch(() => undefined);
    if (raw === undefined) {
      // The frontend's nodes were removed: the domain died, or a toolstack removed the device.
      const alive = await this.host.domainExists(this.domid).catch(() => true);
      void this.end(alive ? 'removed' : 'domain-gone');
      return;
    }
    const state = Number(raw);
    this.frontendState = state;
    for (const wake of this.frontendWaiters) wake();
    if (state === XenbusState.Initialised || state === XenbusState.Connected) {
      if (this.engine === undefined && this.backendState === XenbusState.InitWait) await this.connect();
    } else if (state === XenbusState.Closing) {
      await this.disconnect();
      if (this.backendState !== XenbusState.Closed) await this.setState(XenbusState.Closing);
    } else if (state === XenbusState.Closed) {
      await this.disconnect();
      await this.setState(XenbusState.Closed);
      if (this.closing === undefined && !(await this.online())) void this.end('frontend-closed');
    } else if ((state === XenbusState.Initialising || state === XenbusState.InitWait) && this.backendState === XenbusState.Closed) {
      // The guest reconnects (its driver reloaded, or it kexec'd): start the handshake again.
      await this.setState(XenbusState.InitWait);
    }
  }

  private async online(): Promise<boolean> {
    return (await this.host.xenstore.read(`${this.backendPath}/online`).catch(() => '0')) === '1';
  }

  /** A toolstack (libxl's device removal, `xl destroy`) set `online` to 0: go away. */
  private async onlineChanged(): Promise<void> {
    if (this.ended !== undefined || this.closing !== undefined) return;
    if (!(await this.host.xenstore.exists(this.backendPath))) {
      void this.end('removed');
      return;
    }
    if (!(await this.online())) void this.end('removed');
  }

  private async released(): Promise<void> {
    if (this.ended !== undefined) return;
    if (!(await this.host.domainExists(this.domid))) void this.end('domain-gone');
  }

  private async connect(): Promise<void> {
    const fe = this.frontendPath;
    const xs = this.host.xenstore;
    const read = (name: string) => xs.read(`${fe}/${name}`).catch(() => undefined);
    const protocol = await read('protocol');
    if (protocol !== undefined && protocol !== 'x86_64-abi') return this.refuse(`the frontend's protocol ${protocol} is not served (only x86_64-abi)`);
    const order = await read('ring-page-order');
    if (order !== undefined && order !== '0') return this.refuse(`the frontend asked for a ring of 2^${order} pages; this backend offers one page`);
    const ref = Number(await read('ring-ref'));
    const port = Number(await read('event-channel'));
    if (!Number.isInteger(ref) || ref < 0 || ref > 0xffffffff) return this.refuse('the frontend wrote no valid ring-ref');
    if (!Number.isInteger(port) || port <= 0) return this.refuse('the frontend wrote no valid event-channel');
    try {
      this.ring = await this.host.grants.map(this.domid, [ref], { writable: true });
      this.channel = await this.host.eventChannels.bindInterdomain(this.domid, port);
    } catch (err) {
      await this.unmapAll();
      return this.refuse(`mapping the ring or binding the event channel failed: ${(err as Error).message}`);
    }
    const channel = this.channel;
    const engine = new RingEngine(
      {
        page: this.ring.bytes,
        mapPage: async (gref, writable) => {
          const h = await this.host.grants.map(this.domid, [gref], { writable });
          this.pages.add(h);
          return {
            bytes: h.bytes,
            unmap: () => {
              this.pages.delete(h);
              h.unmap();
            },
          };
        },
        notify: () => channel.notify(),
      },
      this.disk,
      this.readOnly,
      (reason) => void this.fail(reason),
    );
    this.engine = engine;
    channel.on('event', () => engine.kick());
    await this.setState(XenbusState.Connected);
    engine.kick();
  }

  /** Writes the reason where xenbus drivers put theirs, and closes the device (as Linux's xenbus_dev_fatal). */
  private async refuse(reason: string): Promise<void> {
    debug('%s: %s', this.backendPath, reason);
    await this.host.xenstore.write(`/local/domain/0/error${this.backendPath}/error`, reason).catch(() => undefined);
    await this.setState(XenbusState.Closing);
  }

  private async fail(reason: string): Promise<void> {
    this.work = this.work.then(async () => {
      await this.disconnect();
      await this.refuse(reason);
    });
    await this.work;
    void this.end('fault');
  }

  /** Stops the ring and lets go of every page and the event channel. */
  private async disconnect(): Promise<void> {
    const engine = this.engine;
    this.engine = undefined;
    if (engine !== undefined) {
      await engine.stop();
      this.lastStats = { ...engine.stats };
    }
    await this.unmapAll();
  }

  private async unmapAll(): Promise<void> {
    for (const h of this.pages) h.unmap();
    this.pages.clear();
    this.ring?.unmap();
    this.ring = undefined;
    const ch = this.channel;
    this.channel = undefined;
    await ch?.close().catch((err: unknown) => debug('unbind: %s', (err as Error).message));
  }

  /**
   * The live snapshot: stop taking requests off the ring, let those taken finish, flush,
   * make `childPath` the disk's new differencing child, switch to it, take requests again.
   */
  snapshot(childPath: string): Promise<DiskSnapshot> {
    if (typeof childPath !== 'string' || childPath === '') return Promise.reject(new TypeError('snapshot: childPath must be a non-empty string'));
    const run = this.snapshotting.catch(() => undefined).then(() => this.snapshotNow(resolve(childPath)));
    this.snapshotting = run;
    return run;
  }

  private async snapshotNow(child: string): Promise<DiskSnapshot> {
    const op = 'domain.snapshotDisk';
    if (this.ended !== undefined || this.closing !== undefined) throw new XenError('XEN_CLOSED', `XEN_CLOSED: ${this.vdev} of domain ${this.domid} is no longer served (${op})`, { op, domid: this.domid });
    if (this.disk.info().type === 'raw') throw new XenError('XEN_DISK_NOT_VHD', `XEN_DISK_NOT_VHD: ${this.disk.path} is not a VHD image (${op})`, { op, domid: this.domid, path: this.disk.path });
    if (await access(child).then(() => true, () => false)) throw XenError.fromErrno('EEXIST', { op, path: child });
    await access(dirname(child)).catch((err: unknown) => {
      throw XenError.fromErrno((err as NodeJS.ErrnoException).code ?? 'ENOENT', { op, path: dirname(child) });
    });
    // Serialised with the xenbus reactions, so the ring cannot connect or go away meanwhile.
    const result = this.work.then(async () => {
      const parent = this.disk;
      const engine = this.engine;
      const started = performance.now();
      let next: VirtualDisk;
      try {
        await engine?.pause();
        await parent.flush();
        next = await parent.snapshot(child);
        this.disk = next;
      } finally {
        engine?.resume(this.disk);
      }
      const pausedMs = performance.now() - started;
      await this.host.xenstore.write(`${this.backendPath}/params`, next.path).catch(() => undefined);
      await parent.close();
      // Made durable out of the pause window, as a guest's flush would.
      await next.flush();
      return { vdev: this.vdev, parent: parent.path, child: next.path, pausedMs };
    });
    this.work = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /**
   * Detaches the disk: the backend goes Closing, the frontend is given `closeTimeoutMs` to
   * let go, then every page is unmapped, the channel unbound, the backend goes Closed, the
   * device's nodes are removed and the image closed. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.ended === undefined) {
        await this.work;
        if (this.engine !== undefined || this.frontendState === XenbusState.Initialised) {
          await this.setState(XenbusState.Closing).catch(() => undefined);
          await this.waitFrontend((s) => s === XenbusState.Closing || s === XenbusState.Closed, this.closeTimeoutMs);
        }
      }
      await this.end('closed');
    })();
    return this.closing;
  }

  private waitFrontend(ok: (state: number) => boolean, timeoutMs: number): Promise<void> {
    return new Promise((done) => {
      const check = () => {
        if (ok(this.frontendState) || this.ended !== undefined) finish();
      };
      const timer = setTimeout(() => finish(), timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.frontendWaiters.delete(check);
        done();
      };
      this.frontendWaiters.add(check);
      check();
    });
  }

  private endRun: Promise<void> | undefined;

  /** Tears everything down once, whatever the reason. */
  private end(why: ServedDiskEnd): Promise<void> {
    this.endRun ??= (async () => {
      this.ended = why;
      for (const wake of this.frontendWaiters) wake();
      this.abort.abort();
      await this.work.catch(() => undefined);
      await this.snapshotting.catch(() => undefined);
      await this.disconnect();
      const xs = this.host.xenstore;
      if (why !== 'domain-gone') await this.setState(XenbusState.Closed).catch(() => undefined);
      // As a toolstack removing a device: both halves go (a dead domain's too).
      await xs.remove(this.frontendPath).catch(() => undefined);
      await xs.remove(this.backendPath).catch(() => undefined);
      await this.disk.close().catch((err: unknown) => debug('closing %s: %s', this.disk.path, (err as Error).message));
      this.onEnd?.();
      this.endClosed(why);
    })();
    return this.endRun;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
