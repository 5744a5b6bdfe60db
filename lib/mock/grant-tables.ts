/**
 * The mock host's grant tables: each domain's granted pages, which other mock domains
 * map. A share's pages are one SharedArrayBuffer, which every mapping of them views, so
 * bytes written through one side are read through the other, as with real shared
 * memory. One limit: a mapping of several pages must name consecutive references of one
 * share, in order (the pages must be contiguous in one buffer); a real host has none.
 */
import type { GrantConnection, GrantRegion } from '../backend.js';
import { XenError, closedError } from '../errors.js';

export const PAGE_SIZE = 4096;

interface Grant {
  grantee: number;
  writable: boolean;
  memory: SharedArrayBuffer;
  page: number;
}

/** The grant table part of a mock hypervisor. */
export class MockGrantTables {
  private readonly tables = new Map<number, Map<number, Grant>>();
  private readonly nextRef = new Map<number, number>();

  constructor(private readonly domainExists: (domid: number) => boolean) {}

  /** A connection acting as `domid`'s grant devices. */
  open(domid: number): MockGrantConnection {
    return new MockGrantConnection(this, domid);
  }

  /** @internal */
  table(domid: number): Map<number, Grant> {
    let t = this.tables.get(domid);
    if (t === undefined) {
      t = new Map();
      this.tables.set(domid, t);
    }
    return t;
  }

  /** @internal Linux reserves the first 8 references of a domain for itself. */
  allocateRef(domid: number): number {
    const ref = this.nextRef.get(domid) ?? 8;
    this.nextRef.set(domid, ref + 1);
    return ref;
  }

  /** @internal */
  checkDomain(domid: number, op: string): void {
    if (!this.domainExists(domid)) throw XenError.fromErrno('ESRCH', { op, domid });
  }
}

interface Region {
  shared: boolean;
  refs: number[];
}

/** One domain's grant devices on the mock host. */
export class MockGrantConnection implements GrantConnection {
  private closed = false;
  private nextId = 1;
  private readonly regions = new Map<number, Region>();

  /** @internal Use {@link MockGrantTables.open}. */
  constructor(
    private readonly hv: MockGrantTables,
    readonly domid: number,
  ) {}

  async share(domid: number, count: number, writable: boolean): Promise<GrantRegion & { refs: number[] }> {
    const op = 'grants.share';
    this.checkOpen(op);
    // As gntalloc, the grantee is not looked up: a grant to no domain is simply never mapped.
    const memory = new SharedArrayBuffer(count * PAGE_SIZE);
    const table = this.hv.table(this.domid);
    const refs: number[] = [];
    for (let page = 0; page < count; page++) {
      const ref = this.hv.allocateRef(this.domid);
      table.set(ref, { grantee: domid, writable, memory, page });
      refs.push(ref);
    }
    const id = this.nextId++;
    this.regions.set(id, { shared: true, refs });
    return { id, refs, buffer: memory, byteOffset: 0, byteLength: memory.byteLength };
  }

  async map(domid: number, refs: readonly number[], writable: boolean): Promise<GrantRegion> {
    const op = 'grants.map';
    this.checkOpen(op);
    this.hv.checkDomain(domid, op);
    const table = this.hv.table(domid);
    const grants = refs.map((ref) => {
      const g = table.get(ref);
      if (g === undefined || g.grantee !== this.domid || (writable && !g.writable)) throw XenError.fromErrno('EINVAL', { op, domid });
      return g;
    });
    const first = grants[0] as Grant;
    if (grants.some((g, i) => g.memory !== first.memory || g.page !== first.page + i)) {
      throw new XenError('ENOSYS', `ENOSYS: the mock host maps several pages only as consecutive references of one share (${op})`, { op, domid });
    }
    const id = this.nextId++;
    this.regions.set(id, { shared: false, refs: [...refs] });
    return { id, buffer: first.memory, byteOffset: first.page * PAGE_SIZE, byteLength: grants.length * PAGE_SIZE };
  }

  unmap(id: number): boolean {
    const region = this.regions.get(id);
    if (region === undefined || this.closed) return false;
    this.regions.delete(id);
    if (region.shared) {
      // Ending a share revokes its references; mappings made already keep the memory.
      const table = this.hv.table(this.domid);
      for (const ref of region.refs) table.delete(ref);
    }
    return true;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const id of [...this.regions.keys()]) this.unmap(id);
    this.closed = true;
  }

  private checkOpen(op: string): void {
    if (this.closed) throw closedError(op);
  }
}
