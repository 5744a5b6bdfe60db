/**
 * The node database of the mock xenstored: nodes keyed by absolute path, a global
 * generation counter, and the per-domain node counts quotas are checked against.
 *
 * Nodes are immutable: every change stores a new node object. A transaction can then keep
 * a reference to the version it first saw (its snapshot of that node) at no cost.
 */
import type { XsErrorName, XsPermission } from './wire.js';

/** One node. Never mutated once stored. */
export interface XsNode {
  readonly value: Buffer;
  /** Owner first; never empty. */
  readonly perms: readonly XsPermission[];
  /** Child names in creation order. */
  readonly children: readonly string[];
  /** Bytes the child list takes as xenstored stores it: every name plus its NUL. */
  readonly childLen: number;
  /** The value of the global counter when the node was last written. */
  readonly generation: number;
}

/** Generation recorded for a node a transaction found absent. */
export const NO_GENERATION = -1;

/** Size of C xenstored's `struct xs_tdb_record_hdr`; the node-size quota counts it. */
const RECORD_HEADER_SIZE = 24;
/** Size of `struct xs_permissions`. */
const PERMISSION_RECORD_SIZE = 8;

/** The size xenstored accounts a node at: header, permissions, value and child list. */
export function storedSize(node: XsNode): number {
  return RECORD_HEADER_SIZE + PERMISSION_RECORD_SIZE * node.perms.length + node.value.length + node.childLen;
}

/** A failure with an errno name, thrown inside the engine and turned into a XenError at its edge. */
export class XsFail {
  constructor(readonly code: XsErrorName) {}
}

/** Throws {@link XsFail}. */
export function fail(code: XsErrorName): never {
  throw new XsFail(code);
}

/**
 * A change watches may fire for. `perms` and `parentPerms` are captured when the node is
 * removed (it can no longer be read afterwards); otherwise they are read from the store
 * when the event is delivered. `oldPerms` lets a watcher that could read the node before a
 * permission change (or before a transaction rewrote it) hear about it.
 */
export interface StoreEvent {
  readonly path: string;
  /** Only watches on exactly this path fire (nodes below a removed one); otherwise watches at or above it. */
  readonly exact: boolean;
  readonly perms?: readonly XsPermission[];
  readonly parentPerms?: readonly XsPermission[];
  readonly oldPerms?: readonly XsPermission[];
}

/**
 * What the tree operations read and write through: the global store itself, or a
 * transaction layered over it.
 */
export interface NodeView {
  /** The node at `path`; in a transaction, the access is recorded for conflict checks. */
  get(path: string): XsNode | undefined;
  /** Stores `node` at `path`. */
  put(path: string, node: XsNode): void;
  /** Removes the node at `path` (not its children). */
  remove(path: string): void;
  /** The next value of the global generation counter. */
  nextGeneration(): number;
  /** Nodes `domid` owns, as this view sees them. */
  ownedBy(domid: number): number;
  /** Records that `domid` owns `delta` more (or fewer) nodes. */
  addOwned(domid: number, delta: number): void;
  /** Records a change watches fire for: at once for the store, on commit for a transaction. */
  changed(event: StoreEvent): void;
  /** Marks that a node was created (a transaction checks node quotas again on commit). */
  created(): void;
  /**
   * A write failed part-way: C xenstored cannot undo it inside a transaction and dooms the
   * transaction instead. No-op for the store.
   */
  doom(): void;
}

/** The global database. */
export class Store implements NodeView {
  readonly nodes = new Map<string, XsNode>();
  /** Changes not yet delivered to watches. */
  events: StoreEvent[] = [];
  private generation = 0;
  private readonly owned = new Map<number, number>();

  get(path: string): XsNode | undefined {
    return this.nodes.get(path);
  }

  put(path: string, node: XsNode): void {
    this.nodes.set(path, node);
  }

  remove(path: string): void {
    this.nodes.delete(path);
  }

  nextGeneration(): number {
    return ++this.generation;
  }

  ownedBy(domid: number): number {
    return this.owned.get(domid) ?? 0;
  }

  addOwned(domid: number, delta: number): void {
    const n = (this.owned.get(domid) ?? 0) + delta;
    if (n > 0) this.owned.set(domid, n);
    else this.owned.delete(domid);
  }

  changed(event: StoreEvent): void {
    this.events.push(event);
  }

  created(): void {}

  doom(): void {}

  /** Creates a node outside any connection (the initial tree). */
  seed(path: string, parent: string | undefined, perms: readonly XsPermission[]): void {
    this.put(path, { value: EMPTY, perms, children: [], childLen: 0, generation: this.nextGeneration() });
    this.addOwned(perms[0].domid, 1);
    if (parent !== undefined) {
      const p = this.nodes.get(parent);
      const name = path.slice(path.lastIndexOf('/') + 1);
      if (p !== undefined) this.put(parent, withChild(p, name, p.generation));
    }
  }
}

/** The empty value. Shared: stored values are never mutated. */
export const EMPTY: Buffer = Buffer.alloc(0);

/** `node` with child `name` appended (as xenstored's add_child does). */
export function withChild(node: XsNode, name: string, generation: number): XsNode {
  return {
    value: node.value,
    perms: node.perms,
    children: [...node.children, name],
    childLen: node.childLen + name.length + 1,
    generation,
  };
}

/** `node` without child `name`. */
export function withoutChild(node: XsNode, name: string, generation: number): XsNode {
  const i = node.children.indexOf(name);
  if (i === -1) return { ...node, generation };
  const children = node.children.slice();
  children.splice(i, 1);
  return { value: node.value, perms: node.perms, children, childLen: node.childLen - name.length - 1, generation };
}
