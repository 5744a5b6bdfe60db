/**
 * Transactions as C xenstored 4.17 runs them (xenstored_transaction.c): every node a
 * transaction touches is recorded with the generation it had at that first access, and
 * from then on the transaction works on its own version of the node. Its changes reach the
 * store only on commit, and only if every recorded node still has the generation the
 * transaction saw; otherwise the commit fails with EAGAIN. Watches for its changes fire on
 * commit, never before, never for an aborted transaction.
 */
import { NO_GENERATION, fail, type NodeView, type Store, type StoreEvent, type XsNode } from './store.js';
import type { XsPermission } from './wire.js';

/** What a transaction knows about one node it touched. */
interface Access {
  /** The transaction's version: the snapshot taken on first access, or its own change. */
  node: XsNode | undefined;
  /** Generation at first access, NO_GENERATION when the node was absent. */
  readonly generation: number;
  /** Permissions at first access: a watcher who could read the node then hears of the change. */
  readonly firstPerms: readonly XsPermission[] | undefined;
  modified: boolean;
  fire: boolean;
  exact: boolean;
}

/** Limits a transaction of an unprivileged connection is held to; 0 disables one. */
export interface TransactionLimits {
  /** Nodes it may touch (quota `transactionNodes`). */
  readonly nodes: number;
  /** Nodes a domain may own, checked again on commit when the transaction created nodes. */
  readonly owned: number;
}

/** One open transaction of a connection. */
export class Transaction implements NodeView {
  private readonly accessed = new Map<string, Access>();
  private readonly ownedDelta = new Map<number, number>();
  private doomed = false;
  private nodeCreated = false;

  constructor(
    /** The id the connection knows it by (never 0). */
    readonly id: number,
    private readonly store: Store,
    private readonly limits: TransactionLimits,
  ) {}

  get(path: string): XsNode | undefined {
    return (this.accessed.get(path) ?? this.access(path)).node;
  }

  put(path: string, node: XsNode): void {
    const a = this.accessed.get(path) ?? this.access(path);
    a.node = node;
    a.modified = true;
  }

  remove(path: string): void {
    const a = this.accessed.get(path) ?? this.access(path);
    a.node = undefined;
    a.modified = true;
  }

  nextGeneration(): number {
    return this.store.nextGeneration();
  }

  ownedBy(domid: number): number {
    return this.store.ownedBy(domid) + (this.ownedDelta.get(domid) ?? 0);
  }

  addOwned(domid: number, delta: number): void {
    this.ownedDelta.set(domid, (this.ownedDelta.get(domid) ?? 0) + delta);
  }

  changed(event: StoreEvent): void {
    const a = this.accessed.get(event.path);
    // Every changed node was read first; if not, the bookkeeping is broken: refuse the commit.
    if (a === undefined) {
      this.doomed = true;
      return;
    }
    // A change of the whole subtree (non-exact) supersedes one of the node only.
    if (!a.fire) {
      a.fire = true;
      a.exact = event.exact;
    } else if (!event.exact) {
      a.exact = false;
    }
  }

  created(): void {
    this.nodeCreated = true;
  }

  doom(): void {
    this.doomed = true;
  }

  /**
   * Applies the transaction to the store and queues its watch events there. Throws (via
   * {@link fail}) ENOMEM for a doomed transaction, ENOSPC when the nodes it created take an
   * unprivileged domain to its quota, EAGAIN when a node it touched changed meanwhile; the
   * store is untouched then.
   */
  commit(checkOwned: boolean): void {
    if (this.doomed) fail('ENOMEM');
    const { store } = this;
    // As C xenstored (acc_fix_domains): the count after commit must stay below the quota.
    if (checkOwned && this.nodeCreated && this.limits.owned !== 0) {
      for (const [domid, delta] of this.ownedDelta) {
        if (domid !== 0 && store.ownedBy(domid) + delta >= this.limits.owned) fail('ENOSPC');
      }
    }
    for (const [path, a] of this.accessed) {
      const now = store.get(path);
      if ((now === undefined ? NO_GENERATION : now.generation) !== a.generation) fail('EAGAIN');
    }
    for (const [path, a] of this.accessed) {
      if (!a.modified) continue;
      if (a.node !== undefined) store.put(path, { ...a.node, generation: store.nextGeneration() });
      else store.remove(path);
      if (a.fire) store.changed({ path, exact: a.exact, oldPerms: a.firstPerms });
    }
    for (const [domid, delta] of this.ownedDelta) if (delta !== 0) store.addOwned(domid, delta);
  }

  private access(path: string): Access {
    if (this.limits.nodes !== 0 && this.accessed.size >= this.limits.nodes) {
      this.doomed = true;
      fail('ENOSPC');
    }
    const node = this.store.get(path);
    const a: Access = {
      node,
      generation: node === undefined ? NO_GENERATION : node.generation,
      firstPerms: node?.perms,
      modified: false,
      fire: false,
      exact: false,
    };
    this.accessed.set(path, a);
    return a;
  }
}
