import type { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { NO_TRANSACTION, type XenStoreConnection } from '../backend.js';
import { XenError, abortError, closedError } from '../errors.js';
import type { XsPermission } from './wire.js';
import { WatchQueue } from './watch-queue.js';

const debug = debuglog('xenode:xenstore');

/** One watch event: the path that changed (or the watched path itself, for the first event). */
export interface WatchEvent {
  path: string;
}

/** Options of {@link XenStore.watch}. */
export interface WatchOptions {
  /** Ends the watch: a pending `next()` rejects with an `AbortError` and the watch is removed. */
  signal?: AbortSignal;
}

/** Options of {@link XenStore.transaction}. */
export interface TransactionOptions {
  /** How many times a commit that fails with EAGAIN is retried before EAGAIN is thrown. Default 8. */
  retries?: number;
  /** Stops retrying; the attempt under way is discarded. */
  signal?: AbortSignal;
}

/** The operations available inside {@link XenStore.transaction} and on {@link XenStore} itself. */
export interface XenStoreOps {
  /** The value of a node, as UTF-8 text. ENOENT if it does not exist. */
  read(path: string): Promise<string>;
  /** The value of a node, as raw bytes. */
  readBytes(path: string): Promise<Buffer>;
  /** Creates or replaces a node (and any missing parents). */
  write(path: string, value: string | Uint8Array): Promise<void>;
  /** Creates an empty node if it does not exist; leaves an existing one alone. */
  mkdir(path: string): Promise<void>;
  /** Removes a node and everything below it. */
  remove(path: string): Promise<void>;
  /** The names of a node's children. */
  list(path: string): Promise<string[]>;
  /** Whether the node exists (false for ENOENT; other errors, e.g. EACCES, are thrown). */
  exists(path: string): Promise<boolean>;
  /** The node's permissions, owner entry first. */
  getPermissions(path: string): Promise<XsPermission[]>;
  /** Replaces the node's permissions; the first entry names the owner and the default for others. */
  setPermissions(path: string, perms: readonly XsPermission[]): Promise<void>;
}

function checkPath(path: unknown, op: string): asserts path is string {
  if (typeof path !== 'string') throw new TypeError(`xenstore.${op}: path must be a string, got ${typeof path}`);
}

function toBytes(value: unknown, op: string): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`xenstore.${op}: value must be a string or a Uint8Array, got ${typeof value}`);
}

function checkPerms(perms: unknown): asserts perms is readonly XsPermission[] {
  if (!Array.isArray(perms) || perms.length === 0) {
    throw new TypeError('xenstore.setPermissions: perms must be a non-empty array of { domid, read, write }');
  }
  for (const p of perms as unknown[]) {
    const e = p as Partial<XsPermission> | null;
    if (e === null || typeof e !== 'object' || typeof e.read !== 'boolean' || typeof e.write !== 'boolean') {
      throw new TypeError('xenstore.setPermissions: each entry must be { domid: number, read: boolean, write: boolean }');
    }
    if (!Number.isInteger(e.domid) || (e.domid as number) < 0 || (e.domid as number) > 0xffff) {
      throw new RangeError(`xenstore.setPermissions: domid must be an integer in 0..65535, got ${String(e.domid)}`);
    }
  }
}

/** Shared implementation of the node operations, bound to a transaction id. */
class Ops implements XenStoreOps {
  constructor(
    protected readonly conn: XenStoreConnection,
    protected readonly tx: number,
  ) {}

  async read(path: string): Promise<string> {
    checkPath(path, 'read');
    return (await this.conn.read(this.tx, path)).toString('utf8');
  }

  async readBytes(path: string): Promise<Buffer> {
    checkPath(path, 'readBytes');
    return this.conn.read(this.tx, path);
  }

  async write(path: string, value: string | Uint8Array): Promise<void> {
    checkPath(path, 'write');
    return this.conn.write(this.tx, path, toBytes(value, 'write'));
  }

  async mkdir(path: string): Promise<void> {
    checkPath(path, 'mkdir');
    return this.conn.mkdir(this.tx, path);
  }

  async remove(path: string): Promise<void> {
    checkPath(path, 'remove');
    return this.conn.rm(this.tx, path);
  }

  async list(path: string): Promise<string[]> {
    checkPath(path, 'list');
    return this.conn.directory(this.tx, path);
  }

  async exists(path: string): Promise<boolean> {
    checkPath(path, 'exists');
    try {
      await this.conn.read(this.tx, path);
      return true;
    } catch (err) {
      if (err instanceof XenError && err.code === 'ENOENT') return false;
      throw err;
    }
  }

  async getPermissions(path: string): Promise<XsPermission[]> {
    checkPath(path, 'getPermissions');
    return this.conn.getPermissions(this.tx, path);
  }

  async setPermissions(path: string, perms: readonly XsPermission[]): Promise<void> {
    checkPath(path, 'setPermissions');
    checkPerms(perms);
    return this.conn.setPermissions(this.tx, path, perms.map((p) => ({ domid: p.domid, read: p.read, write: p.write })));
  }
}

/** The view of the store inside {@link XenStore.transaction}: isolated until the commit. */
export class XenStoreTransaction extends Ops {
  /** The transaction id xenstored gave this attempt. */
  get id(): number {
    return this.tx;
  }
}

let tokenCounter = 0;

/**
 * XenStore, the configuration database of a Xen host: a tree of small values with
 * per-node permissions, transactions and watches. Get one from `connect()` as
 * `xen.xenstore`, from `MockHost#openXenStore`, or with {@link XenStore.connect} over a
 * socket or any duplex stream.
 *
 * Paths are absolute (`/local/domain/0/name`) or relative to the connection's domain home
 * (`name` is `/local/domain/<domid>/name`). The daemon validates them: a bad path rejects
 * with `XenError` `EINVAL`.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * const xs = xen.xenstore;
 * await xs.write('/vm/web/memory', '512');
 * console.log(await xs.read('/vm/web/memory'));   // '512'
 * console.log(await xs.list('/vm/web'));          // ['memory']
 * await xs.transaction(async (tx) => {
 *   const n = Number(await tx.read('/vm/web/memory'));
 *   await tx.write('/vm/web/memory', String(n * 2));
 * });
 * await xen.close();
 * ```
 */
export class XenStore extends Ops {
  private readonly watches = new Map<string, WatchQueue>();
  private closed = false;
  private closing: Promise<void> | undefined;

  /** Wraps a backend connection. Most code gets a XenStore from `connect()` instead. */
  constructor(conn: XenStoreConnection) {
    super(conn, NO_TRANSACTION);
    conn.onWatchEvent = (path, token) => this.watches.get(token)?.push({ path });
    conn.onDisconnect = (reason) => {
      debug('disconnected: %s', reason.message);
      this.closed = true;
      for (const q of this.watches.values()) q.fail(reason);
      this.watches.clear();
    };
  }

  /**
   * Connects the TypeScript client to a xenstored: a unix socket path (default
   * `$XENSTORED_PATH`, else `/var/run/xenstored/socket`) or any connected duplex stream.
   *
   * @example
   * ```ts
   * import { MockHost, XenStore } from 'xenode';
   * import { tmpdir } from 'node:os';
   * import { join } from 'node:path';
   * const socket = join(tmpdir(), `xs-${process.pid}.sock`);
   * const host = await MockHost.create({ xenstoreSocket: socket });
   * const xs = await XenStore.connect(socket);
   * console.log(await xs.list('/local/domain'));    // ['0']
   * await xs.close();
   * await host.close();
   * ```
   */
  static async connect(target?: string | Duplex): Promise<XenStore> {
    const { connectXenStore } = await import('./client.js');
    return new XenStore(await connectXenStore(target));
  }

  /** The domain this connection acts as, when known (0 for dom0). */
  get domid(): number | undefined {
    return this.conn.domid;
  }

  /** The home path of a domain: `/local/domain/<domid>`. */
  async getDomainPath(domid: number): Promise<string> {
    if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) {
      throw new RangeError(`xenstore.getDomainPath: domid must be an integer in 0..65535, got ${String(domid)}`);
    }
    return this.conn.getDomainPath(domid);
  }

  /**
   * Watches a path: an async iterator whose first event is the path itself (as xenstored
   * sends on registration), then one event for every change at or below it. Special
   * paths `@introduceDomain` and `@releaseDomain` report domains appearing and going.
   * Events for the same path that the consumer has not taken yet are merged into one:
   * a watch says "look again", so no information is lost and a slow consumer cannot be
   * flooded. Breaking out of the loop (or aborting `signal`) removes the watch; closing
   * the connection ends the iteration.
   *
   * @example
   * ```ts
   * import { connect } from 'xenode';
   * const xen = await connect({ backend: 'mock' });
   * const ac = new AbortController();
   * setTimeout(() => xen.xenstore.write('/demo/state', 'ready'), 10);
   * for await (const ev of xen.xenstore.watch('/demo', { signal: ac.signal })) {
   *   console.log('changed:', ev.path);             // '/demo', then '/demo/state'
   *   if (ev.path === '/demo/state') break;
   * }
   * await xen.close();
   * ```
   */
  watch(path: string, options: WatchOptions = {}): AsyncIterableIterator<WatchEvent> {
    checkPath(path, 'watch');
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('xenstore.watch: signal must be an AbortSignal');
    const token = `xenode-${process.pid}-${++tokenCounter}`;
    const queue = new WatchQueue(() => this.unregister(path, token));
    if (this.closed) {
      queue.fail(closedError('xenstore.watch'));
      return queue;
    }
    if (signal?.aborted) {
      queue.fail(abortError(signal));
      return queue;
    }
    this.watches.set(token, queue);
    const onAbort = () => {
      queue.fail(abortError(signal as AbortSignal));
      void this.unregister(path, token);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    queue.onEnd = () => signal?.removeEventListener('abort', onAbort);
    this.conn.watch(path, token).catch((err: unknown) => {
      this.watches.delete(token);
      queue.fail(err instanceof Error ? err : new Error(String(err)));
    });
    return queue;
  }

  private async unregister(path: string, token: string): Promise<void> {
    if (!this.watches.delete(token) || this.closed) return;
    try {
      await this.conn.unwatch(path, token);
    } catch (err) {
      // The watch may already be gone (connection closing); nothing is left to undo.
      debug('unwatch %s failed: %s', path, (err as Error).message);
    }
  }

  /**
   * Runs `fn` inside a transaction and commits it. When the commit fails with EAGAIN
   * (another writer changed something the transaction read or wrote) `fn` runs again on a
   * fresh transaction, up to `retries` times; so `fn` must be safe to re-run. If `fn`
   * throws, the transaction is discarded and the error rethrown. Returns `fn`'s result.
   *
   * @example
   * ```ts
   * import { connect } from 'xenode';
   * const xen = await connect({ backend: 'mock' });
   * await xen.xenstore.write('/counter', '0');
   * const next = await xen.xenstore.transaction(async (tx) => {
   *   const n = Number(await tx.read('/counter')) + 1;
   *   await tx.write('/counter', String(n));
   *   return n;
   * });
   * console.log(next);                               // 1
   * await xen.close();
   * ```
   */
  async transaction<T>(fn: (tx: XenStoreTransaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    if (typeof fn !== 'function') throw new TypeError('xenstore.transaction: fn must be a function');
    const retries = options.retries ?? 8;
    if (!Number.isInteger(retries) || retries < 0) throw new RangeError('xenstore.transaction: retries must be a non-negative integer');
    const { signal } = options;
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw abortError(signal);
      const id = await this.conn.transactionStart();
      let result: T;
      try {
        result = await fn(new XenStoreTransaction(this.conn, id));
      } catch (err) {
        await this.conn.transactionEnd(id, false).catch(() => undefined);
        throw err;
      }
      if (signal?.aborted) {
        await this.conn.transactionEnd(id, false).catch(() => undefined);
        throw abortError(signal);
      }
      try {
        await this.conn.transactionEnd(id, true);
        return result;
      } catch (err) {
        if (!(err instanceof XenError && err.code === 'EAGAIN') || attempt >= retries) throw err;
        debug('transaction %d conflicted, retry %d', id, attempt + 1);
        // A short randomised pause keeps two conflicting writers from retrying in lockstep.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 ** attempt)));
      }
    }
  }

  /** Closes the connection. Watches end; later calls reject with `XEN_CLOSED`. Safe to call twice. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      for (const q of this.watches.values()) q.end();
      this.watches.clear();
      this.closing = this.conn.close();
    }
    return this.closing;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
