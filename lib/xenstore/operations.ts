/**
 * The tree requests of xenstored (do_read, do_write, do_mkdir, do_rm, get/set perms,
 * directory and directory-part in xenstored_core.c of Xen 4.17), over a {@link NodeView}:
 * the store itself or a transaction. Paths here are already canonical (absolute).
 * Failures are thrown with {@link fail}.
 */
import { baseName, childPath, isValidNodePath, parentPath } from './paths.js';
import { PERM_OWNER, PERM_READ, PERM_WRITE, permFor, withOwner, type Principal } from './permissions.js';
import type { XenStoreQuota } from './quota.js';
import { EMPTY, fail, storedSize, withChild, withoutChild, type NodeView, type XsNode } from './store.js';
import { PAYLOAD_MAX, type XsPermission } from './wire.js';

/** One XS_DIRECTORY_PART reply: the node's generation and the names from the requested byte offset. */
export interface DirectoryPart {
  /** The node's generation count, in decimal: equal across parts means the list did not change. */
  generation: string;
  /** Child names starting at the offset (a name cut by a misplaced offset comes out cut). */
  children: string[];
  /** True when the list continues past these names: ask again at offset + their bytes. */
  more: boolean;
}

/**
 * What the permission bits of the nearest existing ancestor of `path` grant: C xenstored
 * answers EACCES rather than ENOENT when those would not let the caller see the node.
 */
function askParents(view: NodeView, who: Principal, path: string): number {
  let p = path;
  do {
    p = parentPath(p);
    const node = view.get(p);
    if (node !== undefined) return permFor(who, node.perms);
  } while (p !== '/');
  return 0;
}

/**
 * `get_node`: the node at `path` if `who` holds all of `need` on it; undefined if it is
 * absent and the nearest ancestor grants any of `need` (so the caller may learn it is
 * absent). EINVAL for a bad path, EACCES otherwise.
 */
export function lookup(view: NodeView, who: Principal, path: string, need: number): XsNode | undefined {
  if (!isValidNodePath(path)) fail('EINVAL');
  const node = view.get(path);
  if (node !== undefined) {
    if ((permFor(who, node.perms) & need) === need) return node;
    fail('EACCES');
  }
  if ((askParents(view, who, path) & need) === 0) fail('EACCES');
  return undefined;
}

/** {@link lookup}, with ENOENT for an absent node. */
export function getNode(view: NodeView, who: Principal, path: string, need: number): XsNode {
  return lookup(view, who, path, need) ?? fail('ENOENT');
}

/** The node-size quota, checked where C xenstored's write_node checks it. */
function checkSize(view: NodeView, who: Principal, quota: XenStoreQuota, node: XsNode): void {
  if (who.privileged || quota.nodeSize === 0 || storedSize(node) < quota.nodeSize) return;
  view.doom();
  fail('ENOSPC');
}

/**
 * `create_node`: creates `path` with `value` and every missing ancestor (empty). New nodes
 * copy the permissions of the nearest existing ancestor; an unprivileged creator becomes
 * their owner. Quotas are checked for every new node, leaf first, as C xenstored does.
 */
function createNode(view: NodeView, who: Principal, quota: XenStoreQuota, path: string, value: Buffer): XsNode {
  const missing = [path];
  let parentName = parentPath(path);
  let parent = view.get(parentName);
  // The root always exists, so this ends.
  while (parent === undefined) {
    missing.push(parentName);
    parentName = parentPath(parentName);
    parent = view.get(parentName);
  }
  const perms = who.privileged ? parent.perms : withOwner(parent.perms, who.domid);
  const limitOwned = !who.privileged && quota.nodes !== 0;

  const built: XsNode[] = [];
  let child: string | undefined;
  for (let i = 0; i < missing.length; i++) {
    // C xenstored undoes nodes already written here, which it cannot do inside a transaction.
    if (limitOwned && view.ownedBy(who.domid) + i >= quota.nodes) {
      if (i > 0) view.doom();
      fail('ENOSPC');
    }
    const node: XsNode = {
      value: i === 0 ? value : EMPTY,
      perms,
      children: child === undefined ? [] : [child],
      childLen: child === undefined ? 0 : child.length + 1,
      generation: 0,
    };
    checkSize(view, who, quota, node);
    built.push(node);
    child = baseName(missing[i]);
  }
  const grown = withChild(parent, child as string, 0);
  checkSize(view, who, quota, grown);

  // Written leaf first, as C xenstored does, so generations grow towards the root.
  for (let i = 0; i < built.length; i++) view.put(missing[i], { ...built[i], generation: view.nextGeneration() });
  view.put(parentName, { ...grown, generation: view.nextGeneration() });
  view.addOwned(perms[0].domid, built.length);
  view.created();
  return built[0];
}

/** XS_READ. */
export function readNode(view: NodeView, who: Principal, path: string): Buffer {
  return getNode(view, who, path, PERM_READ).value;
}

/** XS_WRITE: replaces the value, or creates the node and missing ancestors. */
export function writeNode(view: NodeView, who: Principal, quota: XenStoreQuota, path: string, value: Buffer): void {
  const node = lookup(view, who, path, PERM_WRITE);
  let written: XsNode;
  if (node === undefined) {
    written = createNode(view, who, quota, path, value);
  } else {
    written = { value, perms: node.perms, children: node.children, childLen: node.childLen, generation: 0 };
    checkSize(view, who, quota, written);
    view.put(path, { ...written, generation: view.nextGeneration() });
  }
  view.changed({ path, exact: false, perms: written.perms });
}

/** XS_MKDIR: creates the node (and ancestors) unless it exists, which is fine. */
export function makeNode(view: NodeView, who: Principal, quota: XenStoreQuota, path: string): void {
  if (lookup(view, who, path, PERM_WRITE) !== undefined) return;
  const created = createNode(view, who, quota, path, EMPTY);
  view.changed({ path, exact: false, perms: created.perms });
}

/**
 * Removes `node` at `path` and its subtree, children first (xenstored's post-order walk).
 * Watches fire for every removed node: for `root` at or above it, for the others only on
 * exactly their path.
 */
function removeTree(view: NodeView, path: string, node: XsNode, parentPerms: readonly XsPermission[], root: string): void {
  for (const name of node.children) {
    const cp = childPath(path, name);
    const child = view.get(cp);
    if (child !== undefined) removeTree(view, cp, child, node.perms, root);
  }
  view.remove(path);
  view.addOwned(node.perms[0].domid, -1);
  view.changed({ path, exact: path !== root, perms: node.perms, parentPerms });
}

/** `rm_node`: removes an existing node without checking permissions. */
export function removeExisting(view: NodeView, path: string, node: XsNode): void {
  const parentName = parentPath(path);
  const parent = view.get(parentName);
  if (parent === undefined) fail('EINVAL');
  removeTree(view, path, node, parent.perms, path);
  view.put(parentName, withoutChild(parent, baseName(path), view.nextGeneration()));
}

/**
 * XS_RM: removes the node and everything below it. Needs write permission on the node
 * itself. An absent node is fine when its parent exists; ENOENT when that is absent too.
 */
export function removeNode(view: NodeView, who: Principal, path: string): void {
  const node = lookup(view, who, path, PERM_WRITE);
  if (node === undefined) {
    if (view.get(parentPath(path)) !== undefined) return;
    fail('ENOENT');
  }
  if (path === '/') fail('EINVAL');
  removeExisting(view, path, node);
}

/** XS_DIRECTORY: the child names. */
export function listNode(view: NodeView, who: Principal, path: string): readonly string[] {
  return getNode(view, who, path, PERM_READ).children;
}

/**
 * XS_DIRECTORY_PART: the names from byte `offset` of the NUL-separated list, as many as
 * fit one reply next to the generation (C xenstored's send_directory_part).
 */
export function listNodePart(view: NodeView, who: Principal, path: string, offset: number): DirectoryPart {
  const node = getNode(view, who, path, PERM_READ);
  const generation = String(node.generation);
  if (offset >= node.childLen) return { generation, children: [], more: false };
  // Names are ASCII (path rules), so string indices are byte offsets.
  const all = `${node.children.join('\0')}\0`;
  const maxlen = PAYLOAD_MAX - (generation.length + 1) - 1;
  let len = 0;
  let at = offset;
  for (;;) {
    const nul = all.indexOf('\0', at);
    if (len + (nul - at) >= maxlen) break;
    len += nul - at + 1;
    at = nul + 1;
    if (offset + len === node.childLen) break;
  }
  const children = len === 0 ? [] : all.slice(offset, offset + len - 1).split('\0');
  return { generation, children, more: offset + len !== node.childLen };
}

/** XS_GET_PERMS. */
export function getPermissions(view: NodeView, who: Principal, path: string): readonly XsPermission[] {
  return getNode(view, who, path, PERM_READ).perms;
}

/**
 * XS_SET_PERMS on a node: only its owner or a privileged connection may, and an
 * unprivileged owner may not give the node away (EPERM). `perms` is already frozen.
 */
export function setPermissions(
  view: NodeView,
  who: Principal,
  quota: XenStoreQuota,
  path: string,
  perms: readonly XsPermission[],
): void {
  const node = getNode(view, who, path, PERM_WRITE | PERM_OWNER);
  if (!who.privileged && perms[0].domid !== node.perms[0].domid) fail('EPERM');
  const updated: XsNode = { value: node.value, perms, children: node.children, childLen: node.childLen, generation: 0 };
  checkSize(view, who, quota, updated);
  view.put(path, { ...updated, generation: view.nextGeneration() });
  view.addOwned(node.perms[0].domid, -1);
  view.addOwned(perms[0].domid, 1);
  view.changed({ path, exact: false, perms, oldPerms: node.perms });
}
