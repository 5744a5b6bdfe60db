/**
 * Grant tables: memory shared between domains. `xen.grants.share()` grants pages of
 * this domain to another; `xen.grants.map()` maps pages another domain granted to this
 * one. Both give the shared memory itself (zero-copy) as `bytes`.
 */
import type { GrantConnection, GrantRegion, XenBackend } from './backend.js';
import { XenError, closedError } from './errors.js';

/** Bytes in a grant page. */
export const GRANT_PAGE_SIZE = 4096;

/** Options of {@link GrantTable.share}. */
export interface ShareOptions {
  /** How many pages (1..1024). Default 1. */
  pages?: number;
  /** Whether the other domain may write them. Default true. */
  writable?: boolean;
}

/** Options of {@link GrantTable.map}. */
export interface MapOptions {
  /** Map them writable (the grant must allow it). Default true. */
  writable?: boolean;
}

function checkDomid(domid: unknown, op: string): number {
  if (typeof domid !== 'number') throw new TypeError(`${op}: domid must be a number`);
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new RangeError(`${op}: domid must be an integer in 0..32751, got ${domid}`);
  return domid;
}

function checkOptions<T extends object>(options: T | undefined, op: string): T | Record<string, never> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: options must be an object`);
  return options;
}

function checkWritable(value: unknown, op: string): boolean {
  if (value === undefined) return true;
  if (typeof value !== 'boolean') throw new TypeError(`${op}: writable must be a boolean`);
  return value;
}

/**
 * Pages granted or mapped: `bytes` is the shared memory. After {@link unmap} (or closing
 * the connection) `bytes` is empty; on a real host every view made of it becomes empty
 * too (its ArrayBuffer is detached), so a stale view can never touch unmapped memory.
 */
export class GrantRegionHandle {
  /** The other domain. */
  readonly domid: number;
  /** The grant references, in page order. */
  readonly refs: readonly number[];
  private view: Uint8Array;
  private released = false;

  /** @internal */
  constructor(
    domid: number,
    refs: readonly number[],
    region: GrantRegion,
    private readonly release: () => void,
  ) {
    this.domid = domid;
    this.refs = Object.freeze([...refs]);
    this.view = new Uint8Array(region.buffer, region.byteOffset, region.byteLength);
  }

  /** The shared memory: 4096 bytes a page. Empty once unmapped. */
  get bytes(): Uint8Array {
    return this.released ? new Uint8Array(0) : this.view;
  }

  /** True once unmapped. */
  get unmapped(): boolean {
    return this.released;
  }

  /** Unmaps the pages (a share also ends: its references are revoked). Safe to call twice. */
  unmap(): void {
    if (this.released) return;
    this.released = true;
    this.view = new Uint8Array(0);
    this.release();
  }

  /** Same as {@link unmap}, for `using`. */
  [Symbol.dispose](): void {
    this.unmap();
  }

  /** @internal The connection closed: the memory is gone. */
  markUnmapped(): void {
    this.released = true;
    this.view = new Uint8Array(0);
  }
}

/**
 * The grant tables of a connection to a Xen host. The grant devices are opened on first
 * use (`XEN_UNAVAILABLE` there when the host has none; XenStore keeps working); closing
 * the `Xen` object unmaps every region.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * // Grant a page to dom0 itself and map it back: the same memory, seen twice.
 * const shared = await xen.grants.share(0, { pages: 1 });
 * const mapped = await xen.grants.map(0, shared.refs);
 * shared.bytes.set([1, 2, 3]);
 * console.log(mapped.bytes.subarray(0, 3)); // Uint8Array(3) [ 1, 2, 3 ]
 * mapped.unmap();
 * shared.unmap();
 * await xen.close();
 * ```
 */
export class GrantTable {
  private conn: Promise<GrantConnection> | undefined;
  private readonly regions = new Set<GrantRegionHandle>();
  private closing: Promise<void> | undefined;

  /** @internal Use `xen.grants`. */
  constructor(private readonly backend: XenBackend) {}

  /** Grants new zeroed pages to `domid`; give it `refs` (e.g. through XenStore) to map them. */
  async share(domid: number, options?: ShareOptions): Promise<GrantRegionHandle> {
    const op = 'grants.share';
    checkDomid(domid, op);
    const o = checkOptions(options, op) as ShareOptions;
    const pages = o.pages ?? 1;
    if (typeof pages !== 'number') throw new TypeError(`${op}: pages must be a number`);
    if (!Number.isInteger(pages) || pages < 1 || pages > 1024) throw new RangeError(`${op}: pages must be an integer in 1..1024, got ${pages}`);
    const writable = checkWritable(o.writable, op);
    const conn = await this.connection(op);
    const region = await conn.share(domid, pages, writable);
    return this.adopt(conn, domid, region.refs, region);
  }

  /** Maps pages that `domid` granted to this domain, in the order of `refs`. */
  async map(domid: number, refs: readonly number[], options?: MapOptions): Promise<GrantRegionHandle> {
    const op = 'grants.map';
    checkDomid(domid, op);
    if (!Array.isArray(refs)) throw new TypeError(`${op}: refs must be an array of grant references`);
    if (refs.length < 1 || refs.length > 1024) throw new RangeError(`${op}: refs must hold 1..1024 references`);
    for (const ref of refs) {
      if (typeof ref !== 'number') throw new TypeError(`${op}: refs must be numbers`);
      if (!Number.isInteger(ref) || ref < 0 || ref > 0xffffffff) throw new RangeError(`${op}: a grant reference must be an integer in 0..4294967295, got ${ref}`);
    }
    const writable = checkWritable((checkOptions(options, op) as MapOptions).writable, op);
    const conn = await this.connection(op);
    const region = await conn.map(domid, refs, writable);
    return this.adopt(conn, domid, refs, region);
  }

  /** Unmaps every region and closes the devices. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const conn = await this.conn?.catch(() => undefined);
      for (const r of this.regions) r.markUnmapped();
      this.regions.clear();
      await conn?.close();
    })();
    return this.closing;
  }

  private adopt(conn: GrantConnection, domid: number, refs: readonly number[], region: GrantRegion): GrantRegionHandle {
    const handle: GrantRegionHandle = new GrantRegionHandle(domid, refs, region, () => {
      this.regions.delete(handle);
      conn.unmap(region.id);
    });
    this.regions.add(handle);
    return handle;
  }

  private connection(op: string): Promise<GrantConnection> {
    if (this.closing !== undefined) return Promise.reject(closedError(op));
    if (this.conn === undefined) {
      const open = this.backend.openGrants?.bind(this.backend);
      if (open === undefined) return Promise.reject(new XenError('XEN_UNAVAILABLE', `the ${this.backend.name} backend has no grant tables`, { op }));
      const opening = open();
      this.conn = opening;
      opening.catch(() => {
        this.conn = undefined;
      });
    }
    return this.conn;
  }
}
