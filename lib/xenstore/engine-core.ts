/**
 * The state one mock xenstored holds besides its connections' own: the store, the
 * watches, the domains it knows, the permissions of the special watch names, the quotas,
 * and the delivery of watch events. Domain lifecycle (introduce, release, shutdown,
 * resume, target) follows xenstored_domain.c of Xen 4.17.
 */
import { removeExisting } from './operations.js';
import { childPath } from './paths.js';
import { DOM0_ONLY, withOwner, withoutDomain } from './permissions.js';
import type { XenStoreQuota } from './quota.js';
import { Store, fail } from './store.js';
import { WatchRegistry, type SpecialEvent } from './watches.js';
import type { XsPermission } from './wire.js';

/** The special watch names xenstored fires events on. */
export const SPECIAL_NAMES = ['@introduceDomain', '@releaseDomain'] as const;

/** What xenstored knows about one domain. */
export interface DomainState {
  readonly domid: number;
  /** Introduced and not yet released. */
  introduced: boolean;
  /** Shutdown already announced through @releaseDomain (cleared by resume). */
  shutdown: boolean;
  /** The domain it targets (XS_SET_TARGET): it shares that domain's rights. */
  target: number | undefined;
}

/** What the core needs of a connection. */
export interface CoreConnection {
  readonly domid: number;
  readonly privileged: boolean;
  /** Drops the connection's watches and transactions. */
  reset(): void;
  readonly watchCount: number;
  readonly transactionCount: number;
}

/** The shared state of a {@link XenStoreEngine}. */
export class EngineCore {
  readonly store = new Store();
  readonly watches = new WatchRegistry();
  readonly connections = new Set<CoreConnection>();
  private readonly domains = new Map<number, DomainState>();
  private readonly special = new Map<string, readonly XsPermission[]>(SPECIAL_NAMES.map((n) => [n, DOM0_ONLY]));
  private readonly specialQueue: SpecialEvent[] = [];
  private delivering = false;
  private seq = 0;

  constructor(
    public quota: XenStoreQuota,
    /** C xenstored's `--keep-orphans`: a released domain's nodes go to dom0 instead of away. */
    readonly keepOrphans: boolean,
  ) {
    // As a fresh xenstored (/, /tool, /tool/xenstored) once xen-init-dom0 has made dom0's home.
    const s = this.store;
    s.seed('/', undefined, DOM0_ONLY);
    s.seed('/tool', '/', DOM0_ONLY);
    s.seed('/tool/xenstored', '/tool', DOM0_ONLY);
    s.seed('/local', '/', DOM0_ONLY);
    s.seed('/local/domain', '/local', DOM0_ONLY);
    s.seed('/local/domain/0', '/local/domain', DOM0_ONLY);
    // dom0 is the master domain: introduced at start, without an @introduceDomain event.
    this.domain(0).introduced = true;
  }

  /** A fresh number for ordering connections and watches. */
  nextSeq(): number {
    return ++this.seq;
  }

  /** The state of `domid`, created on first use. */
  domain(domid: number): DomainState {
    let d = this.domains.get(domid);
    if (d === undefined) {
      d = { domid, introduced: false, shutdown: false, target: undefined };
      this.domains.set(domid, d);
    }
    return d;
  }

  /** Whether `domid` is known to the engine at all (introduced now or before, owner or target of something). */
  knows(domid: number): boolean {
    return this.domains.has(domid) || this.store.ownedBy(domid) > 0;
  }

  /** Whether `domid` is introduced and not released. */
  isIntroduced(domid: number): boolean {
    return this.domains.get(domid)?.introduced ?? false;
  }

  /** The permissions of a special watch name; undefined for a name xenstored does not fire. */
  specialPermissions(name: string): readonly XsPermission[] | undefined {
    return this.special.get(name);
  }

  /** Replaces the permissions of a special watch name (checks are the caller's). */
  setSpecialPermissions(name: string, perms: readonly XsPermission[]): void {
    this.special.set(name, perms);
  }

  /**
   * Delivers the changes recorded in the store and the special events to the watches they
   * fire. A change made by a watch handler is queued and delivered after the current ones.
   */
  flush(): void {
    if (this.delivering) return;
    const store = this.store;
    if (store.events.length === 0 && this.specialQueue.length === 0) return;
    this.delivering = true;
    try {
      for (;;) {
        if (store.events.length > 0) {
          const events = store.events;
          store.events = [];
          for (const e of events) this.watches.fire(e, store);
        } else {
          const special = this.specialQueue.shift();
          if (special === undefined) break;
          this.watches.fireSpecial(special);
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  private fireSpecial(name: string): void {
    this.specialQueue.push({ special: name, perms: this.special.get(name) ?? DOM0_ONLY });
  }

  /**
   * XS_INTRODUCE: starts talking to `domid`. The first time fires @introduceDomain; again
   * (as on resume from suspend) it resets the domain's connections instead.
   */
  introduce(domid: number): void {
    const d = this.domain(domid);
    if (!d.introduced) {
      d.introduced = true;
      d.shutdown = false;
      this.fireSpecial('@introduceDomain');
    } else {
      for (const c of this.connections) if (c.domid === domid && !c.privileged) c.reset();
    }
    this.flush();
  }

  /**
   * XS_RELEASE: forgets `domid` (EINVAL for dom0, ENOENT when not introduced). Its
   * connections lose their watches and transactions, the nodes it owns are removed with
   * their subtrees (given to dom0 with keepOrphans), its entries in other nodes'
   * permissions are dropped, and @releaseDomain fires.
   */
  release(domid: number): void {
    if (domid === 0) fail('EINVAL');
    const d = this.domains.get(domid);
    if (d === undefined || !d.introduced) fail('ENOENT');
    // Before removing its nodes, so the domain hears nothing of that.
    for (const c of this.connections) if (c.domid === domid) c.reset();
    this.removeDomainNodes(domid);
    d.introduced = false;
    d.shutdown = false;
    d.target = undefined;
    for (const other of this.domains.values()) if (other.target === domid) other.target = undefined;
    this.fireSpecial('@releaseDomain');
    this.flush();
  }

  /** The domain shut down (or crashed): fires @releaseDomain once, until resumed. */
  shutdown(domid: number): void {
    const d = this.domains.get(domid);
    if (d === undefined || !d.introduced) fail('ENOENT');
    if (d.shutdown) return;
    d.shutdown = true;
    this.fireSpecial('@releaseDomain');
    this.flush();
  }

  /** XS_RESUME: a later shutdown fires @releaseDomain again. */
  resume(domid: number): void {
    if (domid === 0) fail('EINVAL');
    const d = this.domains.get(domid);
    if (d === undefined || !d.introduced) fail('ENOENT');
    d.shutdown = false;
  }

  /** XS_SET_TARGET: `domid` gets the rights of `target` (a device model for its guest). */
  setTarget(domid: number, target: number): void {
    if (!this.isIntroduced(domid) || !this.isIntroduced(target)) fail('ENOENT');
    this.domain(domid).target = target;
  }

  /** `domain_tree_remove` and the revocation of a released domain's rights. */
  private removeDomainNodes(domid: number): void {
    const store = this.store;
    const owned: string[] = [];
    const walk = (path: string): void => {
      const node = store.get(path);
      if (node === undefined) return;
      if (path !== '/' && node.perms[0].domid === domid) {
        owned.push(path);
        if (!this.keepOrphans) return;
      }
      for (const name of node.children) walk(childPath(path, name));
    };
    if (store.ownedBy(domid) > 0) walk('/');
    for (const path of owned) {
      const node = store.get(path);
      if (node === undefined) continue;
      if (this.keepOrphans) {
        store.put(path, { ...node, perms: withOwner(node.perms, 0) });
        store.addOwned(domid, -1);
        store.addOwned(0, 1);
      } else {
        removeExisting(store, path, node);
      }
    }
    for (const [path, node] of store.nodes) {
      const perms = withoutDomain(node.perms, domid);
      if (perms !== node.perms) store.put(path, { ...node, perms });
    }
    for (const [name, perms] of this.special) this.special.set(name, withoutDomain(perms, domid));
  }
}
