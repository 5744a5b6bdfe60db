/**
 * One connection to the mock xenstored: the requests of docs/misc/xenstore.txt as
 * synchronous methods, acting as one domain.
 */
import { XenError, closedError } from '../errors.js';
import type { CoreConnection, DomainState, EngineCore } from './engine-core.js';
import {
  getPermissions,
  listNode,
  listNodePart,
  makeNode,
  readNode,
  removeNode,
  setPermissions,
  writeNode,
  type DirectoryPart,
} from './operations.js';
import { DOMID_FIRST_RESERVED, DOMID_SELF, canonicalPath, domainPath, isSpecialPath, isValidNodePath } from './paths.js';
import { PERM_OWNER, PERM_WRITE, freezePermissions, isPermission, permFor, permissionsWireSize } from './permissions.js';
import { XsFail, fail, type NodeView } from './store.js';
import { Transaction } from './transactions.js';
import { Watch, type WatchOwner } from './watches.js';
import { PAYLOAD_MAX, REL_PATH_MAX, type XsPermission } from './wire.js';

function checkTx(op: string, tx: unknown): asserts tx is number {
  if (!Number.isInteger(tx) || (tx as number) < 0 || (tx as number) > 0xffffffff) {
    throw new TypeError(`${op}: tx must be a transaction id (an integer 0..4294967295), got ${String(tx)}`);
  }
}

function checkString(op: string, what: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${op}: ${what} must be a string, got ${typeof value}`);
}

function checkDomid(op: string, domid: unknown): asserts domid is number {
  if (!Number.isInteger(domid) || (domid as number) < 0 || (domid as number) > 0xffffffff) {
    throw new RangeError(`${op}: domid must be an integer 0..4294967295, got ${String(domid)}`);
  }
}

/**
 * A connection of a {@link XenStoreEngine}, made by {@link XenStoreEngine.connect}. Its
 * methods mirror {@link XenStoreConnection} (paths absolute, relative to the domain's home,
 * or special; `tx` 0 or an open transaction) but run synchronously and throw
 * {@link XenError} with the errno xenstored would answer.
 *
 * Watch events are handed to {@link onWatchEvent} synchronously, from inside the call that
 * made the change, once the change is complete. The first event of a new watch comes after
 * {@link watch} has returned: in a microtask, or before any later event of this connection,
 * whichever is first.
 */
export class EngineConnection implements WatchOwner, CoreConnection {
  /** The domain the connection acts as. */
  readonly domid: number;
  /** Privileged (dom0): no permission check or quota applies. */
  readonly privileged: boolean;
  /** The base of relative paths: `/local/domain/<domid>`. */
  readonly home: string;
  /** @internal Creation order among the engine's connections. */
  readonly seq: number;
  /** Receives watch events: the path (relative if the watch was) and the token. */
  onWatchEvent: ((path: string, token: string) => void) | undefined;

  private readonly core: EngineCore;
  private readonly domain: DomainState;
  private readonly transactions = new Map<number, Transaction>();
  /** Keyed by canonical path, NUL, token. */
  private readonly watches = new Map<string, Watch>();
  private pendingFirst: Watch[] = [];
  private firstScheduled = false;
  private nextTxId = 1;
  private isClosed = false;

  /** @internal Use {@link XenStoreEngine.connect}. */
  constructor(core: EngineCore, domid: number, privileged: boolean) {
    this.core = core;
    this.domid = domid;
    this.privileged = privileged;
    this.home = domainPath(domid);
    this.domain = core.domain(domid);
    this.seq = core.nextSeq();
    core.connections.add(this);
  }

  /** @internal The domain this one targets (XS_SET_TARGET), for permission checks. */
  get target(): number | undefined {
    return this.domain.target;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Watches registered on this connection. */
  get watchCount(): number {
    return this.watches.size;
  }

  /** Transactions open on this connection. */
  get transactionCount(): number {
    return this.transactions.size;
  }

  /** Whether `tx` names a transaction open on this connection (0 never does). */
  hasTransaction(tx: number): boolean {
    return this.transactions.has(tx);
  }

  /** XS_READ: the node's value (a copy). */
  read(tx: number, path: string): Buffer {
    const op = 'xenstore.read';
    checkTx(op, tx);
    checkString(op, 'path', path);
    return this.run(op, path, () => {
      const view = this.pathRequest(tx, path);
      return Buffer.from(readNode(view, this, canonicalPath(path, this.home)));
    });
  }

  /** XS_WRITE: sets the value, creating the node and missing parents. */
  write(tx: number, path: string, value: Uint8Array): void {
    const op = 'xenstore.write';
    checkTx(op, tx);
    checkString(op, 'path', path);
    if (!(value instanceof Uint8Array)) throw new TypeError(`${op}: value must be a Uint8Array`);
    this.run(op, path, () => {
      if (path.length + 1 + value.length > PAYLOAD_MAX) fail('E2BIG');
      const view = this.view(tx);
      writeNode(view, this, this.core.quota, canonicalPath(path, this.home), Buffer.from(value));
    });
  }

  /** XS_MKDIR: creates the node (and parents) unless it exists. */
  mkdir(tx: number, path: string): void {
    const op = 'xenstore.mkdir';
    checkTx(op, tx);
    checkString(op, 'path', path);
    this.run(op, path, () => makeNode(this.pathRequest(tx, path), this, this.core.quota, canonicalPath(path, this.home)));
  }

  /** XS_RM: removes the node and its subtree. */
  rm(tx: number, path: string): void {
    const op = 'xenstore.rm';
    checkTx(op, tx);
    checkString(op, 'path', path);
    this.run(op, path, () => removeNode(this.pathRequest(tx, path), this, canonicalPath(path, this.home)));
  }

  /** XS_DIRECTORY, without the reply size limit: all child names, in creation order. */
  directory(tx: number, path: string): string[] {
    const op = 'xenstore.directory';
    checkTx(op, tx);
    checkString(op, 'path', path);
    return this.run(op, path, () => [...listNode(this.pathRequest(tx, path), this, canonicalPath(path, this.home))]);
  }

  /** XS_DIRECTORY_PART: the names from byte `offset` of the list that fit one reply. */
  directoryPart(tx: number, path: string, offset: number): DirectoryPart {
    const op = 'xenstore.directoryPart';
    checkTx(op, tx);
    checkString(op, 'path', path);
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`${op}: offset must be a non-negative integer`);
    return this.run(op, path, () => listNodePart(this.pathRequest(tx, path), this, canonicalPath(path, this.home), offset));
  }

  /** XS_GET_PERMS: the permission list, owner first. */
  getPermissions(tx: number, path: string): XsPermission[] {
    const op = 'xenstore.getPermissions';
    checkTx(op, tx);
    checkString(op, 'path', path);
    return this.run(op, path, () =>
      getPermissions(this.pathRequest(tx, path), this, canonicalPath(path, this.home)).map((p) => ({ ...p })),
    );
  }

  /**
   * XS_SET_PERMS: replaces the list of a node, or of `@introduceDomain` / `@releaseDomain`
   * (who may watch them). EINVAL for an empty list, ENOSPC past the permissions quota,
   * EACCES unless owner or privileged, EPERM when an unprivileged owner gives the node away.
   */
  setPermissions(tx: number, path: string, perms: readonly XsPermission[]): void {
    const op = 'xenstore.setPermissions';
    checkTx(op, tx);
    checkString(op, 'path', path);
    if (!Array.isArray(perms) || !perms.every(isPermission)) {
      throw new TypeError(`${op}: perms must be an array of { domid: 0..65535, read: boolean, write: boolean }`);
    }
    this.run(op, path, () => {
      if (path.length + 1 + permissionsWireSize(perms) > PAYLOAD_MAX) fail('E2BIG');
      const view = this.view(tx);
      if (perms.length === 0) fail('EINVAL');
      const quota = this.core.quota.permissions;
      if (!this.privileged && quota !== 0 && perms.length > quota) fail('ENOSPC');
      const frozen = freezePermissions(perms);
      if (isSpecialPath(path)) {
        const current = this.core.specialPermissions(path) ?? fail('EINVAL');
        if ((permFor(this, current) & (PERM_WRITE | PERM_OWNER)) !== (PERM_WRITE | PERM_OWNER)) fail('EACCES');
        this.core.setSpecialPermissions(path, frozen);
        return;
      }
      setPermissions(view, this, this.core.quota, canonicalPath(path, this.home), frozen);
    });
  }

  /** XS_TRANSACTION_START: a new transaction id, never 0. */
  transactionStart(): number {
    return this.run('xenstore.transactionStart', undefined, () => {
      const { quota } = this.core;
      if (!this.privileged && quota.transactions !== 0 && this.transactions.size > quota.transactions) fail('ENOSPC');
      let id: number;
      do {
        id = this.nextTxId;
        this.nextTxId = (this.nextTxId + 1) >>> 0;
      } while (id === 0 || this.transactions.has(id));
      const limits = this.privileged ? { nodes: 0, owned: 0 } : { nodes: quota.transactionNodes, owned: quota.nodes };
      this.transactions.set(id, new Transaction(id, this.core.store, limits));
      return id;
    });
  }

  /**
   * XS_TRANSACTION_END: commits or discards. ENOENT for an unknown id; a commit fails with
   * EAGAIN on a conflict (the transaction is gone either way).
   */
  transactionEnd(tx: number, commit: boolean): void {
    const op = 'xenstore.transactionEnd';
    checkTx(op, tx);
    if (typeof commit !== 'boolean') throw new TypeError(`${op}: commit must be a boolean`);
    this.run(op, undefined, () => {
      const t = this.transactions.get(tx) ?? fail('ENOENT');
      this.transactions.delete(tx);
      if (commit) t.commit(!this.privileged);
    });
  }

  /**
   * XS_WATCH: registers a watch on a path (absolute or relative) or a special name.
   * EINVAL for a bad path, EEXIST for a duplicate, E2BIG past the watches quota.
   */
  watch(path: string, token: string): void {
    const op = 'xenstore.watch';
    checkString(op, 'path', path);
    checkString(op, 'token', token);
    this.run(op, path, () => {
      if (path.length + token.length + 2 > PAYLOAD_MAX) fail('E2BIG');
      if (token.includes('\0')) fail('EINVAL');
      let node = path;
      let strip = 0;
      if (isSpecialPath(path)) {
        // 4.17 takes any special name up to REL_PATH_MAX; only the two it fires ever match.
        if (path.length > REL_PATH_MAX || path.includes('\0')) fail('EINVAL');
      } else {
        node = canonicalPath(path, this.home);
        if (!isValidNodePath(node)) fail('EINVAL');
        if (node !== path) strip = this.home.length + 1;
      }
      const key = `${node}\0${token}`;
      if (this.watches.has(key)) fail('EEXIST');
      const quota = this.core.quota.watches;
      if (!this.privileged && quota !== 0 && this.watches.size > quota) fail('E2BIG');
      const w = new Watch(this, node, token, strip, this.core.nextSeq());
      this.watches.set(key, w);
      this.core.watches.add(w);
      this.pendingFirst.push(w);
      this.scheduleFirst();
    });
  }

  /** XS_UNWATCH: ENOENT when no such watch; no event of it is delivered afterwards. */
  unwatch(path: string, token: string): void {
    const op = 'xenstore.unwatch';
    checkString(op, 'path', path);
    checkString(op, 'token', token);
    this.run(op, path, () => {
      const key = `${canonicalPath(path, this.home)}\0${token}`;
      const w = this.watches.get(key) ?? fail('ENOENT');
      this.watches.delete(key);
      this.core.watches.remove(w);
    });
  }

  /** XS_RESET_WATCHES: drops every watch and transaction of this connection. */
  resetWatches(): void {
    this.run('xenstore.resetWatches', undefined, () => this.reset());
  }

  /** XS_GET_DOMAIN_PATH: `/local/domain/<domid>`, for any number. */
  getDomainPath(domid: number): string {
    const op = 'xenstore.getDomainPath';
    checkDomid(op, domid);
    return this.run(op, undefined, () => domainPath(domid));
  }

  /** XS_IS_DOMAIN_INTRODUCED (privileged only; true for DOMID_SELF). */
  isDomainIntroduced(domid: number): boolean {
    const op = 'xenstore.isDomainIntroduced';
    checkDomid(op, domid);
    return this.run(op, undefined, () => {
      this.requirePrivilege();
      return domid === DOMID_SELF || this.core.isIntroduced(domid);
    }, domid);
  }

  /** XS_INTRODUCE (privileged only): see {@link XenStoreEngine.introduceDomain}. */
  introduceDomain(domid: number): void {
    const op = 'xenstore.introduceDomain';
    checkDomid(op, domid);
    this.run(op, undefined, () => {
      this.requirePrivilege();
      if (domid >= DOMID_FIRST_RESERVED) fail('EINVAL');
      this.core.introduce(domid);
    }, domid);
  }

  /** XS_RELEASE (privileged only): see {@link XenStoreEngine.releaseDomain}. */
  releaseDomain(domid: number): void {
    const op = 'xenstore.releaseDomain';
    checkDomid(op, domid);
    this.run(op, undefined, () => {
      this.requirePrivilege();
      if (domid >= DOMID_FIRST_RESERVED) fail('ENOENT');
      this.core.release(domid);
    }, domid);
  }

  /** XS_RESUME (privileged only): see {@link XenStoreEngine.resumeDomain}. */
  resumeDomain(domid: number): void {
    const op = 'xenstore.resumeDomain';
    checkDomid(op, domid);
    this.run(op, undefined, () => {
      this.requirePrivilege();
      if (domid >= DOMID_FIRST_RESERVED) fail('ENOENT');
      this.core.resume(domid);
    }, domid);
  }

  /** XS_SET_TARGET (privileged only): see {@link XenStoreEngine.setTarget}. */
  setTarget(domid: number, target: number): void {
    const op = 'xenstore.setTarget';
    checkDomid(op, domid);
    checkDomid(op, target);
    this.run(op, undefined, () => {
      this.requirePrivilege();
      if (domid >= DOMID_FIRST_RESERVED || target >= DOMID_FIRST_RESERVED) fail('ENOENT');
      this.core.setTarget(domid, target);
    }, domid);
  }

  /** Drops the connection's watches and transactions; later calls throw XEN_CLOSED. Safe to call twice. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.reset();
    this.core.connections.delete(this);
  }

  /** @internal Called by the watch registry for each event this connection may see. */
  deliver(path: string, token: string): void {
    if (this.pendingFirst.length > 0) this.flushFirst();
    this.emit(path, token);
  }

  /** @internal Drops every watch and transaction (XS_RESET_WATCHES, release, re-introduce). */
  reset(): void {
    for (const w of this.watches.values()) this.core.watches.remove(w);
    this.watches.clear();
    this.pendingFirst = [];
    this.transactions.clear();
  }

  private emit(path: string, token: string): void {
    const handler = this.onWatchEvent;
    if (handler === undefined) return;
    try {
      handler(path, token);
    } catch (err) {
      // The handler's failure is its own: surface it without breaking the change that fired it.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private scheduleFirst(): void {
    if (this.firstScheduled) return;
    this.firstScheduled = true;
    queueMicrotask(() => {
      this.firstScheduled = false;
      if (this.pendingFirst.length > 0 && !this.isClosed) this.flushFirst();
    });
  }

  private flushFirst(): void {
    const list = this.pendingFirst;
    this.pendingFirst = [];
    for (const w of list) if (w.active) this.emit(w.report(w.node), w.token);
  }

  private requirePrivilege(): void {
    if (!this.privileged) fail('EACCES');
  }

  private view(tx: number): NodeView {
    if (tx === 0) return this.core.store;
    return this.transactions.get(tx) ?? fail('ENOENT');
  }

  /** The view of a one-path request, after the checks a client makes before sending it. */
  private pathRequest(tx: number, path: string): NodeView {
    if (path.length + 1 > PAYLOAD_MAX) fail('E2BIG');
    return this.view(tx);
  }

  private run<T>(op: string, path: string | undefined, body: () => T, domid?: number): T {
    if (this.isClosed) throw closedError(op);
    try {
      return body();
    } catch (err) {
      if (err instanceof XsFail) throw XenError.fromErrno(err.code, { op, path, domid });
      throw err;
    } finally {
      this.core.flush();
    }
  }
}
