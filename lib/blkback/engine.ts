/**
 * The request loop of one connected block device: takes requests off the shared ring,
 * serves them from a disk one at a time, in ring order, and puts the responses back. It
 * knows nothing of xenstore; {@link ServedDisk} connects it and hands it the ring page,
 * a way to map the frontend's data pages and a way to notify the frontend.
 *
 * A frontend that breaks the ring's rules (more requests outstanding than the ring holds)
 * stops the loop: `onFault` is told, and the device is closed. A request that is merely
 * wrong (unknown operation, bad segment, sectors past the end, a grant that does not map)
 * gets an error response and the loop carries on.
 */
import { debuglog } from 'node:util';
import {
  BlkifOp,
  BlkifStatus,
  RING_SIZE,
  RingIndices,
  SECTOR_SIZE,
  checkRequest,
  needsNotify,
  readRequest,
  requestSectors,
  writeResponse,
  type BlkifRequest,
} from './ring.js';

const debug = debuglog('xenode:blkback');

/** A frontend's granted page, mapped into this process. */
export interface MappedPage {
  readonly bytes: Uint8Array;
  unmap(): void;
}

/** What the loop needs of the connection: the ring, the frontend's pages, its event channel. */
export interface RingTransport {
  /** The ring page, mapped writable. */
  readonly page: Uint8Array;
  /** Maps one granted data page of the frontend (writable to serve a read into it). */
  mapPage(gref: number, writable: boolean): Promise<MappedPage>;
  /** Tells the frontend that responses are ready. */
  notify(): Promise<void>;
}

/** What the loop needs of a disk: {@link VirtualDisk} fits. */
export interface BlockTarget {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

/** Counters of what the loop served (for tests and operators). */
export interface RingStats {
  requests: number;
  errors: number;
  /** Data pages mapped right now (0 whenever no request is being served). */
  mappedPages: number;
}

export class RingEngine {
  private readonly idx: RingIndices;
  private reqCons: number;
  private rspProdPvt: number;
  private tail: Promise<void> = Promise.resolve();
  private paused = false;
  private stopped = false;
  private kicking = false;
  private kickAgain = false;
  readonly stats: RingStats = { requests: 0, errors: 0, mappedPages: 0 };

  constructor(
    private readonly transport: RingTransport,
    private target: BlockTarget,
    private readonly readOnly: boolean,
    private readonly onFault: (reason: string) => void,
  ) {
    this.idx = new RingIndices(transport.page);
    // The frontend initialised the ring (SHARED_RING_INIT): start where its indices are.
    this.reqCons = this.idx.rspProd;
    this.rspProdPvt = this.reqCons;
  }

  /** The disk requests are served from. */
  get disk(): BlockTarget {
    return this.target;
  }

  /** The frontend notified us (or we resumed): take whatever is on the ring. */
  kick(): void {
    if (this.stopped) return;
    if (this.kicking || this.paused) {
      this.kickAgain = true;
      return;
    }
    this.kicking = true;
    try {
      do {
        this.kickAgain = false;
        this.take();
      } while (this.kickAgain && !this.paused && !this.stopped);
    } finally {
      this.kicking = false;
    }
  }

  private take(): void {
    for (;;) {
      const prod = this.idx.reqProd;
      // RING_REQUEST_PROD_OVERFLOW: the frontend claims more requests than there are free slots.
      if ((prod - this.rspProdPvt) >>> 0 > RING_SIZE) {
        this.fault(`the frontend's req_prod ${prod} is more than ${RING_SIZE} ahead of the responses (${this.rspProdPvt})`);
        return;
      }
      while (this.reqCons !== prod) {
        if (this.paused || this.stopped) return;
        const req = readRequest(this.transport.page, this.reqCons);
        this.reqCons = (this.reqCons + 1) >>> 0;
        this.tail = this.tail.then(() => this.serve(req)).catch((err: unknown) => this.fault(`serving a request failed: ${(err as Error).message}`));
      }
      // RING_FINAL_CHECK_FOR_REQUESTS: ask for an event on the next request, then look again.
      this.idx.reqEvent = (this.reqCons + 1) >>> 0;
      if (this.idx.reqProd === this.reqCons) return;
    }
  }

  private fault(reason: string): void {
    this.stopped = true;
    debug('ring fault: %s', reason);
    this.onFault(reason);
  }

  private async serve(req: BlkifRequest): Promise<void> {
    if (this.stopped) return;
    this.stats.requests++;
    let status: number = BlkifStatus.OKAY;
    const bad = checkRequest(req, BigInt(Math.floor(this.target.size / SECTOR_SIZE)), this.readOnly);
    if (bad !== undefined) {
      debug('request %s (op %d) refused: %s', req.id, req.operation, bad.reason);
      status = bad.status;
    } else {
      try {
        await this.perform(req);
      } catch (err) {
        debug('request %s (op %d) failed: %s', req.id, req.operation, (err as Error).message);
        status = BlkifStatus.ERROR;
      }
    }
    if (status !== BlkifStatus.OKAY) this.stats.errors++;
    if (this.stopped) return;
    writeResponse(this.transport.page, this.rspProdPvt, { id: req.id, operation: req.operation, status });
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
    // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
    const old = this.idx.rspProd;
    this.idx.rspProd = this.rspProdPvt;
    if (needsNotify(old, this.rspProdPvt, this.idx.rspEvent)) {
      await this.transport.notify().catch((err: unknown) => debug('notify failed: %s', (err as Error).message));
    }
  }

  private async perform(req: BlkifRequest): Promise<void> {
    const offset = Number(req.sectorNumber) * SECTOR_SIZE;
    switch (req.operation) {
      case BlkifOp.FLUSH_DISKCACHE:
        return this.target.flush();
      case BlkifOp.READ: {
        const data = await this.target.read(offset, requestSectors(req) * SECTOR_SIZE);
        let at = 0;
        for (const seg of req.segments) {
          const len = (seg.lastSect - seg.firstSect + 1) * SECTOR_SIZE;
          await this.withPage(seg.gref, true, (bytes) => bytes.set(data.subarray(at, at + len), seg.firstSect * SECTOR_SIZE));
          at += len;
        }
        return;
      }
      default: {
        // WRITE, or WRITE_BARRIER: everything before it is made durable, then it is.
        if (req.operation === BlkifOp.WRITE_BARRIER) await this.target.flush();
        if (req.nrSegments > 0) {
          const data = new Uint8Array(requestSectors(req) * SECTOR_SIZE);
          let at = 0;
          for (const seg of req.segments) {
            const len = (seg.lastSect - seg.firstSect + 1) * SECTOR_SIZE;
            await this.withPage(seg.gref, false, (bytes) => data.set(bytes.subarray(seg.firstSect * SECTOR_SIZE, seg.firstSect * SECTOR_SIZE + len), at));
            at += len;
          }
          await this.target.write(offset, data);
        }
        if (req.operation === BlkifOp.WRITE_BARRIER) await this.target.flush();
      }
    }
  }

  private async withPage(gref: number, writable: boolean, fn: (bytes: Uint8Array) => void): Promise<void> {
    const page = await this.transport.mapPage(gref, writable);
    this.stats.mappedPages++;
    try {
      fn(page.bytes);
    } finally {
      page.unmap();
      this.stats.mappedPages--;
    }
  }

  /** Stops taking requests and waits for those taken to be answered. */
  async pause(): Promise<void> {
    this.paused = true;
    await this.drain();
  }

  /** Takes requests again, from `target` if given (the child of a live snapshot). */
  resume(target?: BlockTarget): void {
    if (target !== undefined) this.target = target;
    this.paused = false;
    this.kick();
  }

  /** Waits until every request taken so far is answered. */
  async drain(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.tail;
      await seen;
    } while (seen !== this.tail);
  }

  /** Stops for good: no request is taken or answered after the ones in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.drain();
  }
}
