/**
 * The native backend: Xen's own C libraries, through the addon. Only dom0 (as root) of a
 * Xen host has what it needs; anywhere else its calls reject with `XEN_UNAVAILABLE`
 * saying what is missing and how to fix it. There is no fallback to the mock.
 */
import type { XenBackend, XenStoreConnection } from '../backend.js';
import { closedError } from '../errors.js';
import type { NativeAddon } from './addon.js';
import { LibxlConnection } from './libxl.js';
import { loadAddon } from './load.js';
import { NativeXenStoreConnection } from './xenstore.js';

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
    this.closing ??= Promise.all([...this.connections, ...this.libxlConnections].map((c) => c.close())).then(() => undefined);
    return this.closing;
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
