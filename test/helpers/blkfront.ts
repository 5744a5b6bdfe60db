/**
 * A block frontend as a guest's kernel runs one (Linux's xen-blkfront), on a mock host:
 * it acts as domain `domid` through that domain's own xenstore connection, grant devices
 * and event channel device, shares a ring page and data pages with dom0, binds an event
 * channel, goes through the xenbus handshake, and puts requests on the ring. Tests use it
 * to drive xenode's block backend exactly as a guest would, and to misbehave on purpose.
 */
import type { MockHost, XenStore } from '../../lib/index.js';
import type { MockGrantConnection } from '../../lib/mock/grant-tables.js';
import type { MockEventChannelConnection } from '../../lib/mock/event-channels.js';
import {
  BlkifOp,
  RING_SIZE,
  RingIndices,
  SECTOR_SIZE,
  needsNotify,
  readResponse,
  writeRequest,
  type BlkifRequest,
  type BlkifResponse,
} from '../../lib/blkback/ring.js';

const PAGE = 4096;

interface Shared {
  id: number;
  refs: number[];
  bytes: Uint8Array;
}

export class TestBlkfront {
  readonly xs: XenStore;
  readonly grants: MockGrantConnection;
  readonly evtchn: MockEventChannelConnection;
  ring: Shared | undefined;
  port = 0;
  private idx: RingIndices | undefined;
  private reqProdPvt = 0;
  private rspCons = 0;
  private nextId = 1n;
  private readonly waiting = new Map<bigint, (rsp: BlkifResponse) => void>();
  /** Responses whose id no request of ours had (a hostile test's raw requests land here). */
  readonly stray: BlkifResponse[] = [];

  private constructor(
    readonly host: MockHost,
    readonly domid: number,
    readonly devid: number,
    xs: XenStore,
  ) {
    this.xs = xs;
    this.grants = host.openGrants({ domid });
    this.evtchn = host.openEventChannels({ domid });
    this.evtchn.onEvent = () => this.collect();
  }

  static async open(host: MockHost, domid: number, devid: number): Promise<TestBlkfront> {
    return new TestBlkfront(host, domid, devid, await host.openXenStore({ domid }));
  }

  get frontendPath(): string {
    return `/local/domain/${this.domid}/device/vbd/${this.devid}`;
  }

  async backendPath(): Promise<string> {
    return this.xs.read(`${this.frontendPath}/backend`);
  }

  /** Waits until `path` reads `want` (or `want` returns true for it); undefined means absent. */
  async waitFor(path: string, want: string | ((v: string | undefined) => boolean), timeoutMs = 5000): Promise<string | undefined> {
    const ok = typeof want === 'string' ? (v: string | undefined) => v === want : want;
    const signal = AbortSignal.timeout(timeoutMs);
    for await (const _ of this.xs.watch(path, { signal })) {
      const v = await this.xs.read(path).catch(() => undefined);
      if (ok(v)) return v;
    }
    return undefined;
  }

  /** The handshake: wait for the backend's InitWait, share the ring, bind, Initialised, then Connected. */
  async connect(options: { protocol?: string; extra?: Record<string, string> } = {}): Promise<void> {
    const be = await this.backendPath();
    await this.waitFor(`${be}/state`, '2');
    const shared = await this.grants.share(0, 1, true);
    this.ring = { id: shared.id, refs: shared.refs, bytes: new Uint8Array(shared.buffer, shared.byteOffset, PAGE) };
    this.idx = new RingIndices(this.ring.bytes);
    // SHARED_RING_INIT
    this.idx.reqEvent = 1;
    this.idx.rspEvent = 1;
    this.port = await this.evtchn.bindUnbound(0);
    const fe = this.frontendPath;
    await this.xs.write(`${fe}/ring-ref`, String(shared.refs[0]));
    await this.xs.write(`${fe}/event-channel`, String(this.port));
    await this.xs.write(`${fe}/protocol`, options.protocol ?? 'x86_64-abi');
    for (const [k, v] of Object.entries(options.extra ?? {})) await this.xs.write(`${fe}/${k}`, v);
    await this.xs.write(`${fe}/state`, '3');
    await this.waitFor(`${be}/state`, (v) => v === '4' || v === '5' || v === '6');
    if ((await this.xs.read(`${be}/state`)) === '4') await this.xs.write(`${fe}/state`, '4');
    void this.followBackend(be);
  }

  private readonly stop = new AbortController();

  /** As blkfront: when the backend goes Closing, let go (Closed). */
  private async followBackend(be: string): Promise<void> {
    try {
      for await (const _ of this.xs.watch(`${be}/state`, { signal: this.stop.signal })) {
        if ((await this.xs.read(`${be}/state`).catch(() => undefined)) === '5' && this.autoClose) {
          await this.xs.write(`${this.frontendPath}/state`, '6').catch(() => undefined);
        }
      }
    } catch {
      // stopped, or the connection closed
    }
  }

  /** Whether the frontend answers the backend's Closing with Closed (true, as blkfront does). */
  autoClose = true;

  /** Shares `count` pages with dom0 (writable: the backend writes reads into them). */
  async sharePages(count: number): Promise<Shared> {
    const s = await this.grants.share(0, count, true);
    return { id: s.id, refs: s.refs, bytes: new Uint8Array(s.buffer, s.byteOffset, count * PAGE) };
  }

  unshare(pages: Shared): void {
    this.grants.unmap(pages.id);
  }

  /** Puts requests on the ring (ids assigned unless given), bumps req_prod, notifies if asked to. */
  async push(reqs: (Omit<BlkifRequest, 'id'> & { id?: bigint })[]): Promise<Promise<BlkifResponse>[]> {
    const ring = this.ring as Shared;
    const idx = this.idx as RingIndices;
    const out: Promise<BlkifResponse>[] = [];
    for (const r of reqs) {
      const id = r.id ?? this.nextId++;
      writeRequest(ring.bytes, this.reqProdPvt, { ...r, id });
      this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
      out.push(new Promise((res) => this.waiting.set(id, res)));
    }
    const old = idx.reqProd;
    idx.reqProd = this.reqProdPvt;
    if (needsNotify(old, this.reqProdPvt, idx.reqEvent)) await this.evtchn.notify(this.port);
    return out;
  }

  /** Sets req_prod to anything (a hostile frontend) and notifies. */
  async setReqProd(value: number): Promise<void> {
    (this.idx as RingIndices).reqProd = value;
    await this.evtchn.notify(this.port);
  }

  private collect(): void {
    const ring = this.ring;
    const idx = this.idx;
    if (ring === undefined || idx === undefined) return;
    for (;;) {
      const prod = idx.rspProd;
      while (this.rspCons !== prod) {
        const rsp = readResponse(ring.bytes, this.rspCons);
        this.rspCons = (this.rspCons + 1) >>> 0;
        const wake = this.waiting.get(rsp.id);
        this.waiting.delete(rsp.id);
        if (wake) wake(rsp);
        else this.stray.push(rsp);
      }
      // RING_FINAL_CHECK_FOR_RESPONSES
      idx.rspEvent = (this.rspCons + 1) >>> 0;
      if (idx.rspProd === this.rspCons) return;
    }
  }

  /** One request for `sectors` sectors at `sector`, through freshly shared pages; returns the status and the bytes. */
  async io(op: number, sector: number, sectors: number, data?: Uint8Array): Promise<{ status: number; data: Buffer }> {
    const pages = Math.max(1, Math.ceil(sectors / (PAGE / SECTOR_SIZE)));
    const shared = await this.sharePages(pages);
    try {
      if (data) shared.bytes.set(data.subarray(0, sectors * SECTOR_SIZE));
      const segments = [];
      for (let i = 0, left = sectors; left > 0; i++, left -= 8) segments.push({ gref: shared.refs[i] as number, firstSect: 0, lastSect: Math.min(left, 8) - 1 });
      const [pending] = await this.push([{ operation: op, nrSegments: segments.length, handle: 0, sectorNumber: BigInt(sector), segments }]);
      const rsp = await (pending as Promise<BlkifResponse>);
      return { status: rsp.status, data: Buffer.from(shared.bytes.subarray(0, sectors * SECTOR_SIZE)) };
    } finally {
      this.unshare(shared);
    }
  }

  read(sector: number, sectors: number): Promise<{ status: number; data: Buffer }> {
    return this.io(BlkifOp.READ, sector, sectors);
  }

  async write(sector: number, data: Uint8Array): Promise<number> {
    return (await this.io(BlkifOp.WRITE, sector, data.byteLength / SECTOR_SIZE, data)).status;
  }

  async flush(): Promise<number> {
    const [p] = await this.push([{ operation: BlkifOp.FLUSH_DISKCACHE, nrSegments: 0, handle: 0, sectorNumber: 0n, segments: [] }]);
    return (await (p as Promise<BlkifResponse>)).status;
  }

  /** Requests on the ring not answered yet. */
  get outstanding(): number {
    return this.waiting.size;
  }

  /** The guest's driver closes the device (Closing, then Closed once the backend follows). */
  async disconnect(): Promise<void> {
    const be = await this.backendPath();
    await this.xs.write(`${this.frontendPath}/state`, '5');
    await this.waitFor(`${be}/state`, (v) => v === undefined || Number(v) >= 5);
    await this.xs.write(`${this.frontendPath}/state`, '6').catch(() => undefined);
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.grants.close();
    await this.evtchn.close();
    await this.xs.close();
  }
}

export { RING_SIZE };
