/**
 * The in-process transport: the {@link XenStoreConnection} contract served straight by a
 * {@link XenStoreEngine}, without a socket. Requests run synchronously in the engine; the
 * promises only carry their outcome.
 */
import type { XenStoreConnection, XsPermission } from '../backend.js';
import type { EngineConnection, XenStoreEngine } from './engine.js';

class LocalConnection implements XenStoreConnection {
  readonly domid: number;
  onWatchEvent: ((path: string, token: string) => void) | undefined;
  // Never called: an in-process connection only ends when closed.
  onDisconnect: ((reason: Error) => void) | undefined;
  private readonly conn: EngineConnection;

  constructor(engine: XenStoreEngine, domid: number) {
    this.domid = domid;
    this.conn = engine.connect(domid);
    // The engine delivers from inside the call that made the change; a client of the
    // contract expects events to arrive later, as they would from a socket.
    this.conn.onWatchEvent = (path, token) => {
      queueMicrotask(() => {
        if (!this.conn.closed) this.onWatchEvent?.(path, token);
      });
    };
  }

  read(tx: number, path: string): Promise<Buffer> {
    return this.call(() => this.conn.read(tx, path));
  }

  write(tx: number, path: string, value: Uint8Array): Promise<void> {
    return this.call(() => this.conn.write(tx, path, value));
  }

  mkdir(tx: number, path: string): Promise<void> {
    return this.call(() => this.conn.mkdir(tx, path));
  }

  rm(tx: number, path: string): Promise<void> {
    return this.call(() => this.conn.rm(tx, path));
  }

  directory(tx: number, path: string): Promise<string[]> {
    return this.call(() => this.conn.directory(tx, path));
  }

  getPermissions(tx: number, path: string): Promise<XsPermission[]> {
    return this.call(() => this.conn.getPermissions(tx, path));
  }

  setPermissions(tx: number, path: string, perms: readonly XsPermission[]): Promise<void> {
    return this.call(() => this.conn.setPermissions(tx, path, perms));
  }

  transactionStart(): Promise<number> {
    return this.call(() => this.conn.transactionStart());
  }

  transactionEnd(tx: number, commit: boolean): Promise<void> {
    return this.call(() => this.conn.transactionEnd(tx, commit));
  }

  watch(path: string, token: string): Promise<void> {
    return this.call(() => this.conn.watch(path, token));
  }

  unwatch(path: string, token: string): Promise<void> {
    return this.call(() => this.conn.unwatch(path, token));
  }

  getDomainPath(domid: number): Promise<string> {
    return this.call(() => this.conn.getDomainPath(domid));
  }

  close(): Promise<void> {
    this.conn.close();
    return Promise.resolve();
  }

  /** Runs a request; the engine checks its arguments, then whether the connection is closed. */
  private call<T>(body: () => T): Promise<T> {
    try {
      return Promise.resolve(body());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/**
 * A {@link XenStoreConnection} to `engine`, acting as `domid` (privileged for dom0 only).
 * Failures reject with the engine's {@link XenError}; watch events reach `onWatchEvent`
 * asynchronously, in order; after `close()` every call rejects with `XEN_CLOSED`.
 *
 * @example
 * ```ts
 * import { XenStoreEngine, openLocalConnection } from 'xenode';
 * const engine = new XenStoreEngine();
 * const xs = openLocalConnection(engine, 0);
 * await xs.write(0, '/local/domain/0/name', Buffer.from('Domain-0'));
 * console.log((await xs.read(0, 'name')).toString()); // 'Domain-0'
 * await xs.close();
 * ```
 */
export function openLocalConnection(engine: XenStoreEngine, domid: number): XenStoreConnection {
  return new LocalConnection(engine, domid);
}
