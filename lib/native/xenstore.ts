/**
 * The {@link XenStoreConnection} contract over libxenstore, through the addon's XsHandle.
 * The addon does the C work; this adapter names operations as the other backends do,
 * re-creates errors as {@link XenError}s and turns a lost connection into `onDisconnect`.
 */
import { debuglog } from 'node:util';
import type { XenStoreConnection, XsPermission } from '../backend.js';
import { XenError } from '../errors.js';
import { invokeCallback } from '../callback.js';
import type { NativeAddon, RawXenError, XsHandle } from './addon.js';
import { fromNative } from './errors.js';

const debug = debuglog('xenode:native');

export class NativeXenStoreConnection implements XenStoreConnection {
  /** 0 through xenstored's socket (a dom0 privilege); unknown through the xenbus device. */
  readonly domid: number | undefined;
  onWatchEvent: ((path: string, token: string) => void) | undefined;
  onDisconnect: ((reason: Error) => void) | undefined;

  private closeCalled = false;
  private releasing: Promise<void> | undefined;
  private lost: XenError | undefined;

  private constructor(
    private readonly handle: XsHandle,
    private readonly onClose: () => void,
  ) {
    this.domid = handle.transport === 'socket' ? 0 : undefined;
  }

  /**
   * Opens a connection; XEN_UNAVAILABLE when libxenstore.so.4 is missing or no xenstored
   * can be reached. `onClose` runs once the connection is closed.
   */
  static async open(addon: NativeAddon, onClose: () => void = () => {}): Promise<NativeXenStoreConnection> {
    // Nothing can arrive before the handle is used, so the callbacks find `conn` set.
    const self: { conn?: NativeXenStoreConnection } = {};
    let handle: XsHandle;
    try {
      handle = await addon.openXenStore(
        (path, token) => self.conn?.dispatch(path, token),
        (err) => self.conn?.disconnected(err),
      );
    } catch (err) {
      throw fromNative(err, 'xenstore.connect');
    }
    const conn = new NativeXenStoreConnection(handle, onClose);
    self.conn = conn;
    debug('xenstore connection open (%s)', handle.transport);
    return conn;
  }

  read(tx: number, path: string): Promise<Buffer> {
    return this.call('xenstore.read', path, () => this.handle.read(tx, path));
  }

  write(tx: number, path: string, value: Uint8Array): Promise<void> {
    return this.call('xenstore.write', path, () => this.handle.write(tx, path, value));
  }

  mkdir(tx: number, path: string): Promise<void> {
    return this.call('xenstore.mkdir', path, () => this.handle.mkdir(tx, path));
  }

  rm(tx: number, path: string): Promise<void> {
    return this.call('xenstore.rm', path, () => this.handle.rm(tx, path));
  }

  directory(tx: number, path: string): Promise<string[]> {
    return this.call('xenstore.directory', path, () => this.handle.directory(tx, path));
  }

  getPermissions(tx: number, path: string): Promise<XsPermission[]> {
    return this.call('xenstore.getPermissions', path, () => this.handle.getPermissions(tx, path));
  }

  setPermissions(tx: number, path: string, perms: readonly XsPermission[]): Promise<void> {
    return this.call('xenstore.setPermissions', path, () => this.handle.setPermissions(tx, path, perms));
  }

  transactionStart(): Promise<number> {
    return this.call('xenstore.transactionStart', undefined, () => this.handle.transactionStart());
  }

  transactionEnd(tx: number, commit: boolean): Promise<void> {
    return this.call('xenstore.transactionEnd', undefined, () => this.handle.transactionEnd(tx, commit));
  }

  watch(path: string, token: string): Promise<void> {
    return this.call('xenstore.watch', path, () => this.handle.watch(path, token), token);
  }

  unwatch(path: string, token: string): Promise<void> {
    return this.call('xenstore.unwatch', path, () => this.handle.unwatch(path, token), token);
  }

  getDomainPath(domid: number): Promise<string> {
    return this.call('xenstore.getDomainPath', undefined, () => this.handle.getDomainPath(domid));
  }

  close(): Promise<void> {
    this.closeCalled = true;
    return this.release();
  }

  /** Closes the native handle, once. */
  private release(): Promise<void> {
    this.releasing ??= this.handle.close().then(this.onClose);
    return this.releasing;
  }

  private async call<T>(op: string, path: string | undefined, run: () => Promise<T>, token?: string): Promise<T> {
    // C would read a NUL as the end of the string: refuse it as the daemon would.
    if (path?.includes('\0')) throw new XenError('EINVAL', `EINVAL: ${op}: the path contains a NUL byte`, { op, path });
    if (token?.includes('\0')) throw new XenError('EINVAL', `EINVAL: ${op}: the token contains a NUL byte`, { op, path });
    if (this.lost !== undefined && !this.closeCalled) {
      throw new XenError('XEN_CLOSED', `${op}: ${this.lost.message}`, { op, path, cause: this.lost });
    }
    try {
      return await run();
    } catch (err) {
      throw fromNative(err, op, path);
    }
  }

  private dispatch(path: string, token: string): void {
    invokeCallback(this.onWatchEvent, path, token);
  }

  private disconnected(raw: RawXenError): void {
    if (this.lost !== undefined || this.closeCalled) return;
    this.lost = new XenError('XEN_CLOSED', 'the connection to xenstored was lost', { op: 'xenstore.connection', errno: raw.errno });
    debug('xenstore connection lost: %s', raw.message);
    // Callers now get `lost` without reaching the addon, which can let go of the handle.
    void this.release();
    invokeCallback(this.onDisconnect, this.lost);
  }
}
