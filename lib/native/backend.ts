/**
 * The native backend: Xen's own C libraries, through the addon. Only dom0 (as root) of a
 * Xen host has what it needs; anywhere else its calls reject with `XEN_UNAVAILABLE`
 * saying what is missing and how to fix it. There is no fallback to the mock.
 */
import type { EventChannelConnection, GrantConnection, ToolstackConnection, XenBackend, XenStoreConnection } from '../backend.js';
import { closedError } from '../errors.js';
import type { NativeAddon } from './addon.js';
import { LibxlConnection } from './libxl.js';
import { loadAddon } from './load.js';
import { NativeXenStoreConnection } from './xenstore.js';
import { NativeEventChannelConnection } from './event-channels.js';
import { NativeGrantConnection } from './grants.js';
import { NativeToolstack } from './toolstack.js';
import { XenCtrl } from './xenctrl.js';

/** @internal Use {@link createNativeBackend}; tests construct it with a fake addon. */
export class NativeBackend implements XenBackend {
  readonly name = 'native';
  private readonly connections = new Set<NativeXenStoreConnection>();
  private readonly libxlConnections = new Set<LibxlConnection>();
  private closing: Promise<void> | undefined;

  constructor(private readonly addon: NativeAddon) {}

  async openXenStore(): Promise<XenStoreConnection> {
    if (this.closing !== undefined) throw closedError('native.openXenStore');
    const conn: NativeXenStoreConnection = await NativeXenStoreConnection.open(this.addon, () => this.connections.delete(conn));
    if (this.closing !== undefined) {
      await conn.close();
      throw closedError('native.openXenStore');
    }
    this.connections.add(conn);
    return conn;
  }

  /**
   * The toolstack (lib/native/toolstack.ts) over a libxl context, libxenctrl and dom0's
   * xenstore connection; closed with the backend. XEN_UNAVAILABLE off a dom0 (saying
   * which library or device is missing); XEN_VERSION_MISMATCH on another Xen release.
   */
  openToolstack(): Promise<ToolstackConnection> {
    return this.track('native.openToolstack', async (done) => {
      const libxl = await LibxlConnection.open(this.addon);
      // A libxl disaster leaves the context unable to report events: nothing to do but
      // let later calls fail; swallow it so the EventEmitter does not throw.
      libxl.on('error', () => undefined);
      const opened: { close(): Promise<void> }[] = [libxl];
      try {
        const xc = await XenCtrl.open(this.addon);
        opened.push(xc);
        const xs = await NativeXenStoreConnection.open(this.addon);
        const ts = new NativeToolstack(libxl, xc, xs);
        const close = ts.close.bind(ts);
        ts.close = () => close().finally(done);
        return ts;
      } catch (err) {
        await Promise.allSettled(opened.map((c) => c.close()));
        throw err;
      }
    });
  }

  /**
   * A libxl context (the toolstack: domains, devices, save/restore, Remus), closed with
   * the backend. XEN_UNAVAILABLE off a dom0; XEN_VERSION_MISMATCH on another Xen.
   */
  async openLibxl(): Promise<LibxlConnection> {
    if (this.closing !== undefined) throw closedError('native.openLibxl');
    const conn = await LibxlConnection.open(this.addon);
    if (this.closing !== undefined) {
      await conn.close();
      throw closedError('native.openLibxl');
    }
    this.libxlConnections.add(conn);
    return conn;
  }

  /** Closes every connection this backend opened. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= Promise.all([...this.connections, ...this.hvConnections, ...this.libxlConnections].map((c) => c.close())).then(() => undefined);
    return this.closing;
  }

  // ---- The hypervisor interfaces: event channels and grant tables ----

  private readonly hvConnections = new Set<{ close(): Promise<void> }>();

  openEventChannels(): Promise<EventChannelConnection> {
    return this.track('native.openEventChannels', (done) => NativeEventChannelConnection.open(this.addon, done));
  }

  openGrants(): Promise<GrantConnection> {
    return this.track('native.openGrants', (done) => NativeGrantConnection.open(this.addon, done));
  }

  /** Opens a connection that closing the backend closes too. */
  private async track<C extends { close(): Promise<void> }>(op: string, open: (onClose: () => void) => Promise<C>): Promise<C> {
    if (this.closing !== undefined) throw closedError(op);
    const holder: { conn?: C } = {};
    const conn = await open(() => {
      if (holder.conn) this.hvConnections.delete(holder.conn);
    });
    holder.conn = conn;
    if (this.closing !== undefined) {
      await conn.close();
      throw closedError(op);
    }
    this.hvConnections.add(conn);
    return conn;
  }
}

/**
 * The backend over Xen's C libraries. Rejects with `XEN_UNAVAILABLE` when the addon is
 * not built (Xen headers were missing at install); a missing Xen library or xenstored is
 * reported by the call that needs it, e.g. {@link XenBackend.openXenStore}.
 */
export async function createNativeBackend(): Promise<XenBackend> {
  return new NativeBackend(loadAddon());
}
