/**
 * Node permissions as C xenstored evaluates them (`perm_for_conn`): the first entry names
 * the owner and, through its flags, what everyone not listed later may do; later entries
 * apply to one domain each, first match wins; the owner, the domain targeting the owner
 * (SET_TARGET) and privileged connections may do everything.
 */
import { formatPermission, parsePermission, type XsPermission } from './wire.js';

/** Permission bit of {@link permFor}: may read the node (value, children, permissions). */
export const PERM_READ = 1;
/** Permission bit of {@link permFor}: may write or remove the node, or create below it. */
export const PERM_WRITE = 2;
/** Only the owner (or a privileged connection) holds it: needed to change permissions. */
export const PERM_OWNER = 4;
const PERM_ALL = PERM_READ | PERM_WRITE | PERM_OWNER;

/** Who asks: the identity permission checks need. */
export interface Principal {
  /** The domain the connection acts as. */
  readonly domid: number;
  /** dom0 (or a connection given its rights): every check passes, no quota applies. */
  readonly privileged: boolean;
  /** The domain this one targets (XS_SET_TARGET), whose rights it shares. */
  readonly target: number | undefined;
}

/** The permission list every initial node and special watch name starts with: `n0`. */
export const DOM0_ONLY: readonly XsPermission[] = Object.freeze([Object.freeze({ domid: 0, read: false, write: false })]);

function bits(p: XsPermission): number {
  return (p.read ? PERM_READ : 0) | (p.write ? PERM_WRITE : 0);
}

/** The {@link PERM_READ} / {@link PERM_WRITE} / {@link PERM_OWNER} bits `who` holds on a node with `perms`. */
export function permFor(who: Principal, perms: readonly XsPermission[]): number {
  const owner = perms[0];
  if (who.privileged || owner.domid === who.domid || (who.target !== undefined && owner.domid === who.target)) {
    return PERM_ALL;
  }
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i];
    if (p.domid === who.domid || (who.target !== undefined && p.domid === who.target)) return bits(p);
  }
  return bits(owner);
}

/** Whether `who` may read a node with `perms`. */
export function canRead(who: Principal, perms: readonly XsPermission[]): boolean {
  return (permFor(who, perms) & PERM_READ) !== 0;
}

/** A frozen copy, so a list handed out or taken in can never change a stored node. */
export function freezePermissions(perms: readonly XsPermission[]): readonly XsPermission[] {
  return Object.freeze(perms.map((p) => Object.freeze({ domid: p.domid, read: p.read, write: p.write })));
}

/** The list a node created by an unprivileged domain gets: its parent's, with that domain as owner. */
export function withOwner(perms: readonly XsPermission[], domid: number): readonly XsPermission[] {
  if (perms[0].domid === domid) return perms;
  const out = perms.slice();
  out[0] = Object.freeze({ domid, read: perms[0].read, write: perms[0].write });
  return Object.freeze(out);
}

/** The list without later entries for `domid` (its rights end when it is released). */
export function withoutDomain(perms: readonly XsPermission[], domid: number): readonly XsPermission[] {
  for (let i = 1; i < perms.length; i++) {
    if (perms[i].domid === domid) return Object.freeze(perms.filter((p, j) => j === 0 || p.domid !== domid));
  }
  return perms;
}

/** Whether `value` is a well-formed permission entry (domid 0..65535). */
export function isPermission(value: unknown): value is XsPermission {
  if (value === null || typeof value !== 'object') return false;
  const p = value as XsPermission;
  return Number.isInteger(p.domid) && p.domid >= 0 && p.domid <= 0xffff && typeof p.read === 'boolean' && typeof p.write === 'boolean';
}

/** Parses the `<perm-as-string>` list of XS_SET_PERMS; undefined when any entry is malformed. */
export function parsePermissionList(texts: readonly string[]): XsPermission[] | undefined {
  const out: XsPermission[] = [];
  for (const t of texts) {
    const p = parsePermission(t);
    if (p === undefined) return undefined;
    out.push(p);
  }
  return out;
}

/** Bytes the list takes in an XS_GET_PERMS / XS_SET_PERMS payload: each string and its NUL. */
export function permissionsWireSize(perms: readonly XsPermission[]): number {
  let n = 0;
  for (const p of perms) n += formatPermission(p).length + 1;
  return n;
}
