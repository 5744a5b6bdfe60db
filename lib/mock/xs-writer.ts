/**
 * The simulated hypervisor's and toolstack's hands on xenstore: a privileged engine
 * connection with the few synchronous helpers libxl-style code needs. Writing through the
 * engine (not beside it) is what makes every change fire watches and show up in the real
 * xenstore-* tools pointed at the host.
 */
import { NO_TRANSACTION } from '../backend.js';
import { XenError } from '../errors.js';
import type { EngineConnection, XenStoreEngine } from '../xenstore/engine.js';
import type { XsPermission } from '../xenstore/wire.js';

export class XsWriter {
  readonly conn: EngineConnection;

  constructor(engine: XenStoreEngine) {
    this.conn = engine.connect(0);
  }

  write(path: string, value: string): void {
    this.conn.write(NO_TRANSACTION, path, Buffer.from(value, 'utf8'));
  }

  /** Writes `dir/key = value` for every entry. */
  writeAll(dir: string, values: Record<string, string>): void {
    for (const [k, v] of Object.entries(values)) this.write(`${dir}/${k}`, v);
  }

  /** Creates an empty node (kept if it exists) and sets its permissions when given. */
  mkdir(path: string, perms?: readonly XsPermission[]): void {
    this.conn.mkdir(NO_TRANSACTION, path);
    if (perms) this.conn.setPermissions(NO_TRANSACTION, path, perms);
  }

  setPermissions(path: string, perms: readonly XsPermission[]): void {
    this.conn.setPermissions(NO_TRANSACTION, path, perms);
  }

  /** Removes a subtree; a missing one is fine. */
  rm(path: string): void {
    try {
      this.conn.rm(NO_TRANSACTION, path);
    } catch (err) {
      if (!(err instanceof XenError && err.code === 'ENOENT')) throw err;
    }
  }

  /** The node's value, or `fallback` when it does not exist. */
  readOr(path: string, fallback: string): string {
    try {
      return this.conn.read(NO_TRANSACTION, path).toString('utf8');
    } catch (err) {
      if (err instanceof XenError && err.code === 'ENOENT') return fallback;
      throw err;
    }
  }

  close(): void {
    this.conn.close();
  }
}
