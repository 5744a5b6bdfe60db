/**
 * Watch registration and matching (xenstored_watch.c of Xen 4.17): which watches a change
 * fires, in which order, for whom the permissions allow it, and the path each reports.
 */
import { forEachAncestorOrSelf, parentPath } from './paths.js';
import { canRead, type Principal } from './permissions.js';
import type { Store, StoreEvent } from './store.js';
import type { XsPermission } from './wire.js';

/** The side of a watch that receives its events: a connection. */
export interface WatchOwner extends Principal {
  /** Orders connections as xenstored's connection list does: oldest first. */
  readonly seq: number;
  /** Hands one event to the connection. */
  deliver(path: string, token: string): void;
}

/** One registered watch. */
export class Watch {
  /** False once unregistered: a pending first event must not be sent after that. */
  active = true;

  constructor(
    readonly owner: WatchOwner,
    /** Canonical path, or the special name. */
    readonly node: string,
    readonly token: string,
    /** Characters to strip from event paths: the owner's home and `/` for a relative watch. */
    readonly strip: number,
    /** Registration order. */
    readonly seq: number,
  ) {}

  /** The path an event on `path` is reported with: relative when the watch was registered so. */
  report(path: string): string {
    return this.strip === 0 ? path : path.slice(this.strip);
  }
}

/** A special event (`@introduceDomain`, `@releaseDomain`), invented by xenstored. */
export interface SpecialEvent {
  readonly special: string;
  /** The permissions of the special name: who may hear of it. */
  readonly perms: readonly XsPermission[];
}

function byOwnerThenAge(a: Watch, b: Watch): number {
  return a.owner.seq - b.owner.seq || a.seq - b.seq;
}

/**
 * `watch_permitted`: whether `who` may hear of a change. It may when it could read the node
 * before (`oldPerms`), can read it now, or can read its parent: that is how a watcher learns
 * that a node it could read was removed.
 */
function permitted(who: Principal, event: StoreEvent, store: Store): boolean {
  if (who.privileged) return true;
  if (event.oldPerms !== undefined && canRead(who, event.oldPerms)) return true;
  const perms = event.perms ?? store.get(event.path)?.perms;
  if (perms === undefined) return false;
  if (canRead(who, perms)) return true;
  const parentPerms = event.parentPerms ?? store.get(parentPath(event.path))?.perms;
  return parentPerms !== undefined && canRead(who, parentPerms);
}

/** Every watch of an engine, indexed by the path it watches. */
export class WatchRegistry {
  private readonly byPath = new Map<string, Watch[]>();
  private count = 0;

  /** Number of registered watches. */
  get size(): number {
    return this.count;
  }

  /** Registers a watch. */
  add(watch: Watch): void {
    const list = this.byPath.get(watch.node);
    if (list === undefined) this.byPath.set(watch.node, [watch]);
    else list.push(watch);
    this.count++;
  }

  /** Unregisters a watch; it fires no more, not even a pending first event. */
  remove(watch: Watch): void {
    watch.active = false;
    const list = this.byPath.get(watch.node);
    if (list === undefined) return;
    const i = list.indexOf(watch);
    if (i === -1) return;
    this.count--;
    if (list.length === 1) this.byPath.delete(watch.node);
    else list.splice(i, 1);
  }

  /** Delivers a change in the store to every watch it fires whose owner may see it. */
  fire(event: StoreEvent, store: Store): void {
    if (this.count === 0) return;
    const matched: Watch[] = [];
    if (event.exact) {
      const list = this.byPath.get(event.path);
      if (list !== undefined) matched.push(...list);
    } else {
      forEachAncestorOrSelf(event.path, (p) => {
        const list = this.byPath.get(p);
        if (list !== undefined) matched.push(...list);
      });
    }
    if (matched.length === 0) return;
    if (matched.length > 1) matched.sort(byOwnerThenAge);
    let lastOwner: WatchOwner | undefined;
    let allowed = false;
    for (const w of matched) {
      if (w.owner !== lastOwner) {
        lastOwner = w.owner;
        allowed = permitted(w.owner, event, store);
      }
      if (allowed && w.active) w.owner.deliver(w.report(event.path), w.token);
    }
  }

  /**
   * Delivers a special event to the watches on its name and, as 4.17 matches the name like a
   * path below `/`, to the watches on `/`, for owners the special name's permissions let read.
   */
  fireSpecial(event: SpecialEvent): void {
    const matched = [...(this.byPath.get(event.special) ?? []), ...(this.byPath.get('/') ?? [])];
    if (matched.length > 1) matched.sort(byOwnerThenAge);
    for (const w of matched) {
      if (w.active && canRead(w.owner, event.perms)) w.owner.deliver(event.special, w.token);
    }
  }
}
