import { createReadStream } from 'node:fs';
import type { Duplex, Readable } from 'node:stream';
import { Readable as ReadableStream } from 'node:stream';
import type { DiskServer, DiskSnapshot, DomainEvent, DomainInfo, ToolstackConnection } from './backend-toolstack.js';
import type { XenBackend } from './backend.js';
import type { DomainConfig } from './config/domain-config.js';
import { validateDomainConfig } from './config/validate.js';
import { parseXlConfig } from './config/xlcfg.js';
import { Domain } from './domain.js';
import { closedError } from './errors.js';
import { EventQueue } from './event-queue.js';
import { type ReceiveMigrationOptions, receiveMigration } from './migration.js';

/** Options of {@link Domains.create} and {@link Domains.restore}. */
export interface CreateOptions {
  /** Aborts the creation: what was built is destroyed and the call rejects with AbortError. */
  signal?: AbortSignal;
  /** For xl.cfg text: the file name its errors mention. */
  filename?: string;
  /**
   * Serve the domain's `format: 'vhd'` disks so that {@link Domain.snapshotDisk} can
   * snapshot them live. On the native backend xenode then serves them itself, through
   * {@link Xen.blockBackend} in this process, rather than handing them to libxl (Xen 4.17
   * has no backend that can switch a VHD to its child): keep this `Xen` object open while
   * the domain runs — closing it, or the process ending, detaches those disks from the
   * guest. Ignored by `restore()` and by the mock host, whose simulated backend can
   * always do it. Default `false`. See docs/blkback.md.
   */
  serveVhd?: boolean;
}

/** Options of the event iterators. */
export interface DomainEventsOptions {
  /** Ends the iteration: a pending `next()` rejects with an AbortError. */
  signal?: AbortSignal;
}

/**
 * @internal The toolstack session a `Xen` object shares between `xen.domains` and
 * `xen.host`: opened on first use (so a backend without one fails only when domains are
 * used), closed with the `Xen` object.
 */
export class ToolstackSession {
  private opening: Promise<ToolstackConnection> | undefined;
  private closed = false;
  /** Disks this connection serves itself (`xen.blockBackend`): their live snapshots are taken here. */
  servedDisk: ((domid: number, vdev: string) => { snapshot(childPath: string): Promise<DiskSnapshot> } | undefined) | undefined;
  /** Lent to the toolstack when it opens, for the VHD disks it cannot serve itself. */
  diskServer: DiskServer | undefined;

  constructor(private readonly backend: XenBackend) {}

  get(): Promise<ToolstackConnection> {
    if (this.closed) return Promise.reject(closedError('xen.domains'));
    // A custom backend written before domains existed fails here, not at connect().
    if (typeof this.backend.openToolstack !== 'function') return Promise.reject(new TypeError(`backend '${this.backend.name}' has no openToolstack(): it offers no domains`));
    this.opening ??= this.backend.openToolstack().then((ts) => {
      if (this.diskServer !== undefined) ts.useDiskServer?.(this.diskServer);
      return ts;
    });
    // A failed open is retried by the next call rather than remembered.
    this.opening.catch(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const ts = await this.opening?.catch(() => undefined);
    await ts?.close();
  }
}

function checkName(name: unknown, op: string): asserts name is string {
  if (typeof name !== 'string' || name === '') throw new TypeError(`${op}: name must be a non-empty string`);
}

/**
 * The domains of a host: `xen.domains`. Creates domains (from a {@link DomainConfig} or the
 * text of an xl.cfg file), finds them, restores saved ones, and reports their events.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * const web = await xen.domains.create(`
 *   name = "web1"
 *   kernel = "/boot/vmlinuz"
 *   memory = 256
 *   vcpus = 2
 * `);
 * console.log((await web.info()).state);                 // 'running'
 * console.log((await xen.domains.list()).map((d) => d.name)); // ['Domain-0', 'web1']
 * await web.destroy();
 * await xen.close();
 * ```
 */
export class Domains {
  /** @internal Use `xen.domains`. */
  constructor(private readonly session: ToolstackSession) {}

  /** @internal A disk of `domid` that this connection serves itself, for {@link Domain.snapshotDisk}. */
  servedDisk(domid: number, vdev: string): { snapshot(childPath: string): Promise<DiskSnapshot> } | undefined {
    return this.session.servedDisk?.(domid, vdev);
  }

  /** @internal The toolstack session, for {@link Domain}. */
  toolstack(): Promise<ToolstackConnection> {
    return this.session.get();
  }

  /**
   * Creates and starts a domain; resolves once it runs with its devices connected.
   * A string is read as xl.cfg text ({@link parseXlConfig}); an object is checked with
   * {@link validateDomainConfig}. Either throws before anything is created when the
   * configuration is wrong. Rejects with XenError `ENOMEM` when the host lacks the memory,
   * `XEN_ERROR_INVAL` when the name is taken.
   *
   * With `serveVhd` on the native backend, each disk of `format: 'vhd'` is served by
   * {@link Xen.blockBackend} in this process, not by libxl (Xen 4.17 has nothing that can
   * snapshot it live): its image is opened before the domain is built (a missing file
   * rejects with `ENOENT`, one that is not a VHD with its `VHD_…` code, and no domain is
   * made), and the disk ends with the domain or when this `Xen` object closes. See
   * docs/blkback.md.
   *
   * @example
   * ```ts
   * import { mkdtemp, rm } from 'node:fs/promises';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * import { VirtualDisk, connect } from 'xenode';
   *
   * const dir = await mkdtemp(join(tmpdir(), 'xenode-db-'));
   * const root = join(dir, 'db.vhd');
   * await (await VirtualDisk.create(root, { size: 64 * 2 ** 20, type: 'dynamic' })).close();
   * const xen = await connect({ backend: 'mock' });   // on a Xen host: connect()
   * const dom = await xen.domains.create(
   *   { name: 'db', type: 'pvh', memory: 1024, vcpus: 2, kernel: '/boot/vmlinuz',
   *     disks: [{ target: root, vdev: 'xvda', format: 'vhd' }] },
   *   { serveVhd: true },                            // keep `xen` open while it runs
   * );
   * const snap = await dom.snapshotDisk('xvda', join(dir, 'db-1.vhd')); // the guest keeps running
   * console.log(snap.child === join(dir, 'db-1.vhd'));                 // true
   * await dom.destroy();
   * await xen.close();
   * await rm(dir, { recursive: true });
   * ```
   */
  async create(config: DomainConfig | string, options: CreateOptions = {}): Promise<Domain> {
    let cfg: DomainConfig;
    if (typeof config === 'string') {
      cfg = parseXlConfig(config, options.filename === undefined ? {} : { filename: options.filename });
    } else {
      validateDomainConfig(config);
      cfg = config;
    }
    const ts = await this.toolstack();
    if (options.serveVhd !== undefined && typeof options.serveVhd !== 'boolean') throw new TypeError('domains.create: serveVhd must be a boolean');
    const domid = await ts.createDomain(cfg, { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.serveVhd === true ? { serveVhd: true } : {}) });
    return this.byDomid(domid);
  }

  /** Every domain on the host, dom0 first. */
  async list(): Promise<DomainInfo[]> {
    return (await this.toolstack()).listDomains();
  }

  /** The domain with this domid or name; rejects with XenError `ESRCH` when there is none. */
  async get(domidOrName: number | string): Promise<Domain> {
    if (typeof domidOrName === 'number') {
      if (!Number.isInteger(domidOrName) || domidOrName < 0 || domidOrName >= 0x7ff0) throw new RangeError(`domains.get: domid must be an integer in 0..32751, got ${domidOrName}`);
      return this.byDomid(domidOrName);
    }
    checkName(domidOrName, 'domains.get');
    // A number given as text (from a command line) is a domid, as xl reads it.
    if (/^\d+$/.test(domidOrName)) return this.byDomid(Number(domidOrName));
    return this.byDomid(await (await this.toolstack()).domidByName(domidOrName));
  }

  private async byDomid(domid: number): Promise<Domain> {
    const info = await (await this.toolstack()).domainInfo(domid);
    return new Domain(this, info.domid, info.uuid, info.name);
  }

  /**
   * Domain events from now on — `created`, `shutdown` (with its reason) and `death` — for
   * every domain, as an async iterator. Breaking out of the loop or aborting `signal` ends
   * it; closing the `Xen` object ends it too. It does not keep the process alive by itself.
   *
   * @example
   * ```ts
   * import { MockHost, connect } from 'xenode';
   * const host = await MockHost.create({ timing: 'instant' });
   * const xen = await connect({ backend: host });
   * const events = xen.domains.events({ signal: AbortSignal.timeout(5000) });
   * const dom = await xen.domains.create({ name: 'db', type: 'pvh', kernel: '/k', memory: 128, vcpus: 1 });
   * host.crashDomain(dom.domid);                     // a test control: the guest panics
   * for await (const ev of events) {
   *   console.log(ev.type, ev.name, ev.type === 'shutdown' ? ev.reason : '');  // created, shutdown crash, death
   *   if (ev.type === 'death') break;
   * }
   * await xen.close();
   * await host.close();
   * ```
   */
  events(options: DomainEventsOptions = {}): AsyncIterableIterator<DomainEvent> {
    return this.eventStream(options, () => true);
  }

  /** @internal Events passing `filter`, for {@link Domain.events}. */
  eventStream(options: DomainEventsOptions, filter: (ev: DomainEvent) => boolean): EventQueue<DomainEvent> {
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('events: signal must be an AbortSignal');
    let unsubscribe: (() => void) | undefined;
    let stopped = false;
    const queue = new EventQueue<DomainEvent>(() => {
      stopped = true;
      unsubscribe?.();
    }, signal);
    // Subscribing is synchronous on a connection already open, so no event is missed then.
    this.toolstack().then(
      (ts) => {
        if (stopped) return;
        unsubscribe = ts.subscribe((ev) => {
          if (filter(ev)) queue.push(ev);
        });
      },
      (err: unknown) => queue.fail(err),
    );
    return queue;
  }

  /**
   * Restores a domain saved by {@link Domain.save}, from a file path or a readable stream;
   * resolves with the running domain (a new domid, the same name and uuid).
   * XenError `XEN_ERROR_INVAL` when the data is not a save image.
   */
  async restore(pathOrReadable: string | Readable, options: CreateOptions = {}): Promise<Domain> {
    let input: Readable;
    if (typeof pathOrReadable === 'string') input = createReadStream(pathOrReadable);
    else if (pathOrReadable instanceof ReadableStream || typeof (pathOrReadable as Readable)?.[Symbol.asyncIterator] === 'function') input = pathOrReadable;
    else throw new TypeError('domains.restore: expected a file path or a Readable');
    const ts = await this.toolstack();
    const domid = await ts.restore(input, options.signal === undefined ? {} : { signal: options.signal });
    return this.byDomid(domid);
  }

  /**
   * Receives a domain that another host (or this one) sends with {@link Domain.migrate}
   * through `stream`, the other end of the sender's Duplex. Resolves with the domain once
   * it runs here (a new domid, the same uuid; paused with `options.paused`). Before
   * anything is sent, the offer is refused — the sender gets `XEN_MIGRATION_REFUSED`, this
   * call rejects with it too — when the name is in use by another domain (one with a
   * different uuid: on the same host the source holds it until the hand-over) or the host
   * has less free memory than the domain has. A broken stream, a failed restore or an
   * abort before the hand-over rejects with `XEN_MIGRATION_FAILED` (or an AbortError),
   * leaving nothing behind; the source then runs on. The stream is left open.
   */
  async receiveMigration(stream: Duplex, options: ReceiveMigrationOptions = {}): Promise<Domain> {
    const ts = await this.toolstack();
    const domid = await receiveMigration(ts, stream, options);
    return this.byDomid(domid);
  }
}
