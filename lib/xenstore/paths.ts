/**
 * XenStore path rules, as C xenstored 4.17 applies them (`is_valid_nodename`,
 * `canonicalize`, `get_parent`, `is_child` in xenstored_core.c / xenstored_watch.c).
 */
import { REL_PATH_MAX } from './wire.js';

/** `[A-Za-z0-9-/_@]`: the only characters xenstored accepts in a node path. */
const VALID_CHARS = /^[A-Za-z0-9\-/_@]+$/;
/** What `sscanf(path, "/local/domain/%5u/%n")` consumes when it matches. */
const DOMAIN_PREFIX = /^\/local\/domain\/\d{1,5}\//;

/** `DOMID_SELF`: IS_DOMAIN_INTRODUCED answers T for it. */
export const DOMID_SELF = 0x7ff0;
/** `DOMID_FIRST_RESERVED`: real domain ids are below it. */
export const DOMID_FIRST_RESERVED = 0x7ff0;

/** The home of a domain, the base of its relative paths: `/local/domain/<domid>`. */
export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/**
 * Resolves a path sent by a connection whose home is `home`: absolute paths and special
 * (`@…`) names are returned as they are, anything else is taken relative to the home.
 * The result still has to pass {@link isValidNodePath}.
 */
export function canonicalPath(path: string, home: string): string {
  const c = path.charCodeAt(0);
  if (c === 47 /* / */ || c === 64 /* @ */) return path;
  return `${home}/${path}`;
}

/**
 * Whether `path` names a node: it starts with `/`, has no trailing `/` (except the root),
 * no `//`, only `[A-Za-z0-9-/_@]`, and is at most 2048 characters once a leading
 * `/local/domain/<domid>/` is discounted (4.17 replaced the 3072-byte absolute limit by this
 * one, so a domain reaches its whole subtree through relative paths).
 */
export function isValidNodePath(path: string): boolean {
  const len = path.length;
  if (len === 0 || path.charCodeAt(0) !== 47) return false;
  if (len > 1 && path.charCodeAt(len - 1) === 47) return false;
  if (path.includes('//')) return false;
  if (len > REL_PATH_MAX) {
    const prefix = DOMAIN_PREFIX.exec(path);
    if (len > (prefix === null ? 0 : prefix[0].length) + REL_PATH_MAX) return false;
  }
  return VALID_CHARS.test(path);
}

/** Whether `path` is a special watch name (`@introduceDomain`, `@releaseDomain`, …). */
export function isSpecialPath(path: string): boolean {
  return path.charCodeAt(0) === 64;
}

/** The parent of a node path; the parent of `/` is `/`. */
export function parentPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash <= 0 ? '/' : path.slice(0, slash);
}

/** The last component of a node path other than `/`. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The path of child `name` of `parent`. */
export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

/** Whether `child` is `parent` itself or lies below it (every path is below `/`). */
export function isAtOrBelow(child: string, parent: string): boolean {
  if (parent === '/' || child === parent) return true;
  return child.length > parent.length && child.charCodeAt(parent.length) === 47 && child.startsWith(parent);
}

/** Calls `visit` with `/`, then every ancestor of `path` from the top, then `path` itself. */
export function forEachAncestorOrSelf(path: string, visit: (ancestor: string) => void): void {
  visit('/');
  if (path === '/') return;
  for (let slash = path.indexOf('/', 1); slash !== -1; slash = path.indexOf('/', slash + 1)) {
    visit(path.slice(0, slash));
  }
  visit(path);
}
