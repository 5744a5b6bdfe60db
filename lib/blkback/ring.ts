/**
 * The Xen block-device ring (`xen/io/blkif.h` over `xen/io/ring.h`), as the x86_64 ABI lays
 * it out in the one shared page a frontend grants: a 64-byte header (`req_prod`, `req_event`,
 * `rsp_prod`, `rsp_event`, padding), then 32 slots of 112 bytes, each holding a request
 * until the backend replaces it with its response. Everything read from the page is the
 * frontend's to change at any time, so it is copied out once and checked, never trusted.
 */

/** A ring page is one 4 KiB page; xenode declines multi-page rings. */
export const RING_PAGE_SIZE = 4096;
/** Offset of the first slot: after four 32-bit indices and 48 bytes of padding. */
export const RING_HEADER = 64;
/** One slot: the size of the larger of a request (112 bytes) and a response (16). */
export const SLOT_SIZE = 112;
/** Slots in a one-page ring: (4096 - 64) / 112 = 36, rounded down to a power of two. */
export const RING_SIZE = 32;
/** Segments a direct request may carry (BLKIF_MAX_SEGMENTS_PER_REQUEST). */
export const MAX_SEGMENTS = 11;
/** The unit of `sector_number`, `first_sect` and `last_sect`, whatever the disk's sector size. */
export const SECTOR_SIZE = 512;
/** Sectors in one granted page: a segment's `last_sect` is at most 7. */
export const SECTORS_PER_PAGE = RING_PAGE_SIZE / SECTOR_SIZE;

/** Request operations (BLKIF_OP_*). */
export const BlkifOp = {
  READ: 0,
  WRITE: 1,
  WRITE_BARRIER: 2,
  FLUSH_DISKCACHE: 3,
  DISCARD: 5,
  INDIRECT: 6,
} as const;

/** Response statuses (BLKIF_RSP_*). */
export const BlkifStatus = {
  OKAY: 0,
  ERROR: -1,
  EOPNOTSUPP: -2,
} as const;

/** One segment of a request: a granted page and the sectors of it the request uses. */
export interface Segment {
  gref: number;
  firstSect: number;
  lastSect: number;
}

/** A request as copied out of a slot; `segments` holds `min(nrSegments, 11)` entries. */
export interface BlkifRequest {
  operation: number;
  nrSegments: number;
  handle: number;
  /** The frontend's id, echoed in the response: kept as a bigint, all 64 bits of it. */
  id: bigint;
  sectorNumber: bigint;
  segments: Segment[];
}

/** A response as a frontend reads it from a slot. */
export interface BlkifResponse {
  id: bigint;
  operation: number;
  status: number;
}

function view(page: Uint8Array): DataView {
  if (page.byteLength < RING_PAGE_SIZE) throw new RangeError(`a ring page holds ${RING_PAGE_SIZE} bytes, got ${page.byteLength}`);
  return new DataView(page.buffer, page.byteOffset, RING_PAGE_SIZE);
}

function slotOffset(index: number): number {
  return RING_HEADER + (index % RING_SIZE) * SLOT_SIZE;
}

/** Copies the request in slot `index` (taken modulo the ring size) out of the page. */
export function readRequest(page: Uint8Array, index: number): BlkifRequest {
  const dv = view(page);
  const at = slotOffset(index);
  const nrSegments = dv.getUint8(at + 1);
  const segments: Segment[] = [];
  for (let i = 0; i < Math.min(nrSegments, MAX_SEGMENTS); i++) {
    const s = at + 24 + i * 8;
    segments.push({ gref: dv.getUint32(s, true), firstSect: dv.getUint8(s + 4), lastSect: dv.getUint8(s + 5) });
  }
  return {
    operation: dv.getUint8(at),
    nrSegments,
    handle: dv.getUint16(at + 2, true),
    id: dv.getBigUint64(at + 8, true),
    sectorNumber: dv.getBigUint64(at + 16, true),
    segments,
  };
}

/** Writes a request into slot `index` (what a frontend does; xenode's tests use it). */
export function writeRequest(page: Uint8Array, index: number, req: BlkifRequest): void {
  const dv = view(page);
  const at = slotOffset(index);
  page.fill(0, at, at + SLOT_SIZE);
  dv.setUint8(at, req.operation);
  dv.setUint8(at + 1, req.nrSegments);
  dv.setUint16(at + 2, req.handle, true);
  dv.setBigUint64(at + 8, req.id, true);
  dv.setBigUint64(at + 16, req.sectorNumber, true);
  req.segments.slice(0, MAX_SEGMENTS).forEach((seg, i) => {
    const s = at + 24 + i * 8;
    dv.setUint32(s, seg.gref, true);
    dv.setUint8(s + 4, seg.firstSect);
    dv.setUint8(s + 5, seg.lastSect);
  });
}

/** Writes a response into slot `index`. */
export function writeResponse(page: Uint8Array, index: number, rsp: BlkifResponse): void {
  const dv = view(page);
  const at = slotOffset(index);
  dv.setBigUint64(at, rsp.id, true);
  dv.setUint8(at + 8, rsp.operation);
  dv.setInt16(at + 10, rsp.status, true);
}

/** Reads the response in slot `index`. */
export function readResponse(page: Uint8Array, index: number): BlkifResponse {
  const dv = view(page);
  const at = slotOffset(index);
  return { id: dv.getBigUint64(at, true), operation: dv.getUint8(at + 8), status: dv.getInt16(at + 10, true) };
}

/** The four indices of the ring's header, read and written with full barriers (Atomics). */
export class RingIndices {
  private readonly words: Uint32Array;

  constructor(page: Uint8Array) {
    view(page);
    if (page.byteOffset % 4 !== 0) throw new RangeError('a ring page must be 4-byte aligned');
    this.words = new Uint32Array(page.buffer, page.byteOffset, 4);
  }

  get reqProd(): number {
    return Atomics.load(this.words, 0);
  }
  set reqProd(v: number) {
    Atomics.store(this.words, 0, v >>> 0);
  }
  get reqEvent(): number {
    return Atomics.load(this.words, 1);
  }
  set reqEvent(v: number) {
    Atomics.store(this.words, 1, v >>> 0);
  }
  get rspProd(): number {
    return Atomics.load(this.words, 2);
  }
  set rspProd(v: number) {
    Atomics.store(this.words, 2, v >>> 0);
  }
  get rspEvent(): number {
    return Atomics.load(this.words, 3);
  }
  set rspEvent(v: number) {
    Atomics.store(this.words, 3, v >>> 0);
  }
}

/** ring.h's test for "the other end asked to be told": the event index lies in (old, new]. */
export function needsNotify(oldIdx: number, newIdx: number, eventIdx: number): boolean {
  return ((newIdx - eventIdx) >>> 0) < ((newIdx - oldIdx) >>> 0);
}

/** Why a request is answered with an error: undefined when it is well formed. */
export function checkRequest(req: BlkifRequest, sectors: bigint, readOnly: boolean): { status: number; reason: string } | undefined {
  const { operation: op, nrSegments: n } = req;
  if (op === BlkifOp.FLUSH_DISKCACHE) return n === 0 ? undefined : { status: BlkifStatus.ERROR, reason: `a flush with ${n} segments` };
  if (op !== BlkifOp.READ && op !== BlkifOp.WRITE && op !== BlkifOp.WRITE_BARRIER) {
    return { status: BlkifStatus.EOPNOTSUPP, reason: `operation ${op} is not offered` };
  }
  if (op !== BlkifOp.READ && readOnly) return { status: BlkifStatus.ERROR, reason: 'a write to a read-only disk' };
  if (n === 0 && op === BlkifOp.WRITE_BARRIER) return undefined;
  if (n === 0 || n > MAX_SEGMENTS) return { status: BlkifStatus.ERROR, reason: `${n} segments (1..${MAX_SEGMENTS})` };
  let count = 0n;
  for (const s of req.segments) {
    if (s.firstSect > s.lastSect || s.lastSect >= SECTORS_PER_PAGE) return { status: BlkifStatus.ERROR, reason: `a segment of sectors ${s.firstSect}..${s.lastSect}` };
    count += BigInt(s.lastSect - s.firstSect + 1);
  }
  if (req.sectorNumber + count > sectors) return { status: BlkifStatus.ERROR, reason: `sectors ${req.sectorNumber}+${count} past the disk's ${sectors}` };
  return undefined;
}

/** The sectors a well-formed request's segments cover, in order. */
export function requestSectors(req: BlkifRequest): number {
  return req.segments.reduce((n, s) => n + s.lastSect - s.firstSect + 1, 0);
}
