/**
 * The mock xenstored: a XenStore that behaves as C xenstored of Xen 4.17 does
 * (docs/misc/xenstore.txt), in this process. The tree, permissions, transactions, watches
 * and quotas live here; {@link XenStoreServer} serves it on a socket and
 * {@link openLocalConnection} hands it out as a {@link XenStoreConnection}.
 */
import { XenError } from '../errors.js';
import { EngineConnection } from './engine-connection.js';
import { EngineCore } from './engine-core.js';
import { DOMID_FIRST_RESERVED, domainPath } from './paths.js';
import { DEFAULT_QUOTA, mergeQuota, type XenStoreQuota } from './quota.js';
import { XsFail } from './store.js';

export { EngineConnection } from './engine-connection.js';
export type { DirectoryPart } from './operations.js';
export { DEFAULT_QUOTA, type XenStoreQuota } from './quota.js';

/** Options of {@link XenStoreEngine}. */
export interface XenStoreEngineOptions {
  /** Quotas for unprivileged domains; unset ones keep C xenstored's defaults ({@link DEFAULT_QUOTA}). */
  quota?: Partial<XenStoreQuota>;
  /**
   * As xenstored's `--keep-orphans`: when a domain is released, the nodes it owns are given
   * to dom0 instead of being removed. Off by default, as in xenstored.
   */
  keepOrphans?: boolean;
}

/** Options of {@link XenStoreEngine.connect}. */
export interface EngineConnectOptions {
  /** Whether the connection bypasses permissions and quotas. Defaults to `domid === 0`. */
  privileged?: boolean;
}

/** What one domain uses, as `XS_CONTROL quota <domid>` reports it. */
export interface DomainUsage {
  /** Nodes the domain owns. */
  nodes: number;
  /** Watches of its connections. */
  watches: number;
  /** Transactions open on its connections. */
  transactions: number;
}

function checkDomid(op: string, domid: unknown): asserts domid is number {
  if (!Number.isInteger(domid) || (domid as number) < 0 || (domid as number) >= DOMID_FIRST_RESERVED) {
    throw new RangeError(`${op}: domid must be an integer 0..${DOMID_FIRST_RESERVED - 1}, got ${String(domid)}`);
  }
}

function guard<T>(op: string, domid: number, body: () => T): T {
  try {
    return body();
  } catch (err) {
    if (err instanceof XsFail) throw XenError.fromErrno(err.code, { op, domid });
    throw err;
  }
}

/**
 * A simulated xenstored. Each engine is independent. It starts as a freshly booted host's
 * does: `/`, `/tool`, `/tool/xenstored`, `/local`, `/local/domain` and dom0's home
 * `/local/domain/0`, all owned by dom0 with permissions `n0`; dom0 is introduced.
 *
 * @example
 * ```ts
 * import { XenStoreEngine } from 'xenode';
 * const engine = new XenStoreEngine({ quota: { nodes: 100 } });
 * const dom0 = engine.connect(0);
 * dom0.write(0, '/local/domain/0/name', Buffer.from('Domain-0'));
 * engine.introduceDomain(5);
 * const guest = engine.connect(5);
 * try {
 *   guest.read(0, '/local/domain/0/name');
 * } catch (err) {
 *   console.log((err as { code: string }).code); // 'EACCES'
 * }
 * ```
 */
export class XenStoreEngine {
  private readonly core: EngineCore;

  constructor(options: XenStoreEngineOptions = {}) {
    const op = 'XenStoreEngine';
    if (options === null || typeof options !== 'object') throw new TypeError(`${op}: options must be an object`);
    this.core = new EngineCore(mergeQuota(DEFAULT_QUOTA, options.quota, op), options.keepOrphans === true);
  }

  /** The quotas in force (a copy). */
  get quota(): Readonly<XenStoreQuota> {
    return { ...this.core.quota };
  }

  /** Changes some quotas; they apply to later requests (`XS_CONTROL quota set` does the same). */
  setQuota(quota: Partial<XenStoreQuota>): void {
    this.core.quota = mergeQuota(this.core.quota, quota, 'XenStoreEngine.setQuota');
  }

  /** Opens a connection acting as `domid`, privileged by default only for dom0. */
  connect(domid: number, options: EngineConnectOptions = {}): EngineConnection {
    checkDomid('XenStoreEngine.connect', domid);
    return new EngineConnection(this.core, domid, options.privileged ?? domid === 0);
  }

  /**
   * Announces a domain, as `XS_INTRODUCE` does: the first time fires `@introduceDomain`; for
   * a domain already introduced it resets the domain's (unprivileged) connections instead:
   * their watches and transactions are dropped.
   */
  introduceDomain(domid: number): void {
    const op = 'xenstore.introduceDomain';
    checkDomid(op, domid);
    guard(op, domid, () => this.core.introduce(domid));
  }

  /**
   * Forgets a domain, as `XS_RELEASE` (or the domain's destruction) does. Its connections
   * lose their watches and transactions; the nodes it owns are removed with everything below
   * them (watches fire), unless the engine keeps orphans, which gives them to dom0; its
   * entries in other nodes' permission lists are dropped, so a later domain with the same id
   * inherits nothing; then `@releaseDomain` fires. EINVAL for dom0, ENOENT when the domain
   * is not introduced.
   */
  releaseDomain(domid: number): void {
    const op = 'xenstore.releaseDomain';
    checkDomid(op, domid);
    guard(op, domid, () => this.core.release(domid));
  }

  /**
   * The domain shut down or crashed: fires `@releaseDomain` (once, until
   * {@link resumeDomain}) without forgetting the domain. ENOENT when not introduced.
   */
  shutdownDomain(domid: number): void {
    const op = 'xenstore.shutdownDomain';
    checkDomid(op, domid);
    guard(op, domid, () => this.core.shutdown(domid));
  }

  /** `XS_RESUME`: a later shutdown fires `@releaseDomain` again. EINVAL for dom0, ENOENT when not introduced. */
  resumeDomain(domid: number): void {
    const op = 'xenstore.resumeDomain';
    checkDomid(op, domid);
    guard(op, domid, () => this.core.resume(domid));
  }

  /**
   * `XS_SET_TARGET`: `domid` (typically a device-model stub domain) gets the rights of
   * `target`: it counts as owner of the nodes `target` owns and holds the entries granted to
   * it. ENOENT unless both are introduced.
   */
  setTarget(domid: number, target: number): void {
    const op = 'xenstore.setTarget';
    checkDomid(op, domid);
    checkDomid(op, target);
    guard(op, domid, () => this.core.setTarget(domid, target));
  }

  /** Whether `domid` has been introduced and not released. dom0 always is. */
  isDomainIntroduced(domid: number): boolean {
    checkDomid('XenStoreEngine.isDomainIntroduced', domid);
    return this.core.isIntroduced(domid);
  }

  /** The home of a domain: `/local/domain/<domid>`. */
  getDomainPath(domid: number): string {
    checkDomid('XenStoreEngine.getDomainPath', domid);
    return domainPath(domid);
  }

  /** What `domid` uses: nodes owned, watches and open transactions of its connections. */
  domainUsage(domid: number): DomainUsage {
    checkDomid('XenStoreEngine.domainUsage', domid);
    const usage: DomainUsage = { nodes: this.core.store.ownedBy(domid), watches: 0, transactions: 0 };
    for (const c of this.core.connections) {
      if (c.domid !== domid) continue;
      usage.watches += c.watchCount;
      usage.transactions += c.transactionCount;
    }
    return usage;
  }

  /** Whether the engine has heard of `domid`: introduced now or before, or owning nodes. */
  knowsDomain(domid: number): boolean {
    checkDomid('XenStoreEngine.knowsDomain', domid);
    return this.core.knows(domid);
  }
}
