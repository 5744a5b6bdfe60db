import type { XenBackend } from './backend.js';
import { MockHost } from './mock/host.js';
import { XenStore } from './xenstore/xenstore.js';
import { Domains, ToolstackSession } from './domains.js';
import { Host } from './host.js';
import { EventChannels } from './event-channel.js';
import { GrantTable } from './grant-table.js';
import { BlockBackends } from './blkback/block-backend.js';
import { XenError } from './errors.js';

/** Which backend {@link connect} uses. */
export type BackendChoice = 'mock' | 'native' | MockHost | XenBackend;

/** Options of {@link connect}. */
export interface ConnectOptions {
  /**
   * `'native'`: the Xen libraries of the host this runs on (dom0, as root).
   * `'mock'`: a new simulated host of its own, closed with the `Xen` object.
   * A `MockHost`: that simulated host, which stays open after `xen.close()`.
   * Defaults to `$XENODE_BACKEND`, else `'native'`. There is no fallback: when the
   * native backend cannot work, `connect` fails and says why.
   */
  backend?: BackendChoice;
}

/**
 * A connection to a Xen host. Get one from {@link connect}.
 */
export class Xen {
  /** The backend in use; its `name` is `'native'` or `'mock'`. */
  readonly backend: XenBackend;
  /** The host's configuration database. */
  readonly xenstore: XenStore;
  /** The host's domains: create, find, restore, and their events. */
  readonly domains: Domains;
  /** The host itself: version, CPUs, memory, scheduler. */
  readonly host: Host;
  /** Event channels: bind ports, notify, receive events. The device opens on first use. */
  readonly eventChannels: EventChannels;
  /** Grant tables: share pages with other domains and map theirs. The devices open on first use. */
  readonly grants: GrantTable;
  /**
   * xenode's own block backend: serve a guest's disk from a {@link VirtualDisk} in this
   * process, and snapshot it live. See {@link BlockBackends}.
   */
  readonly blockBackend: BlockBackends;
  private readonly ownedHost: MockHost | undefined;
  private closing: Promise<void> | undefined;
  private readonly toolstack: ToolstackSession;

  /** @internal Use {@link connect}. */
  constructor(backend: XenBackend, xenstore: XenStore, ownedHost?: MockHost) {
    this.backend = backend;
    this.xenstore = xenstore;
    this.ownedHost = ownedHost;
    this.toolstack = new ToolstackSession(backend);
    this.domains = new Domains(this.toolstack);
    this.host = new Host(this.toolstack, backend.name);
    this.eventChannels = new EventChannels(backend);
    this.grants = new GrantTable(backend);
    this.blockBackend = new BlockBackends({
      xenstore,
      grants: this.grants,
      eventChannels: this.eventChannels,
      domainExists: async (domid) => {
        try {
          await (await this.toolstack.get()).domainInfo(domid);
          return true;
        } catch (err) {
          if (err instanceof XenError && err.code === 'ESRCH') return false;
          throw err;
        }
      },
    });
    this.toolstack.servedDisk = (domid, vdev) => this.blockBackend.find(domid, vdev);
    // VHD disks of domains this connection creates, where the host's backends cannot serve
    // them live (the native backend on Xen 4.17), are served here: see docs/blkback.md.
    this.toolstack.diskServer = { serve: (domid, vdev, disk, { readOnly }) => this.blockBackend.serve(domid, vdev, disk, { readOnly }) };
  }

  /** Closes every handle, and the simulated host if `connect` created it. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.blockBackend.closeAll();
      await this.xenstore.close();
      await this.toolstack.close();
      await this.eventChannels.close();
      await this.grants.close();
      await this.backend.close();
      await this.ownedHost?.close();
    })();
    return this.closing;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function isBackend(value: unknown): value is XenBackend {
  const b = value as XenBackend | null;
  return typeof b === 'object' && b !== null && typeof b.name === 'string' && typeof b.openXenStore === 'function' && typeof b.close === 'function';
}

function defaultBackend(): BackendChoice {
  const env = process.env.XENODE_BACKEND;
  if (env === undefined || env === '') return 'native';
  if (env === 'mock' || env === 'native') return env;
  throw new TypeError(`XENODE_BACKEND must be 'mock' or 'native', got '${env}'`);
}

/**
 * Connects to a Xen host through the chosen backend.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * await xen.xenstore.write('/local/domain/0/name', 'Domain-0');
 * console.log(await xen.xenstore.read('/local/domain/0/name'));  // 'Domain-0'
 * await xen.close();
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<Xen> {
  if (options === null || typeof options !== 'object') throw new TypeError('connect: options must be an object');
  const choice = options.backend ?? defaultBackend();
  let backend: XenBackend;
  let owned: MockHost | undefined;
  if (choice === 'mock') {
    owned = await MockHost.create();
    backend = owned.backend();
  } else if (choice === 'native') {
    const { createNativeBackend } = await import('./native/backend.js');
    backend = await createNativeBackend();
  } else if (choice instanceof MockHost) {
    backend = choice.backend();
  } else if (isBackend(choice)) {
    backend = choice;
  } else {
    throw new TypeError(`connect: backend must be 'mock', 'native', a MockHost or a XenBackend, got ${String(choice)}`);
  }
  try {
    const xenstore = new XenStore(await backend.openXenStore());
    return new Xen(backend, xenstore, owned);
  } catch (err) {
    await backend.close();
    await owned?.close();
    throw err;
  }
}
