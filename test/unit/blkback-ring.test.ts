/**
 * The block ring's codec and request loop, without xenstore: requests round-trip through a
 * slot, the loop answers every request it takes (well-formed ones from the disk, the rest
 * with an error status), and a hostile frontend (garbage slots, a req_prod far ahead, grants
 * that do not map) gets error responses or a fault, never a crash or a hang.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RingEngine, type BlockTarget, type RingTransport } from '../../lib/blkback/engine.js';
import {
  BlkifOp,
  BlkifStatus,
  MAX_SEGMENTS,
  RING_HEADER,
  RING_PAGE_SIZE,
  RING_SIZE,
  RingIndices,
  SECTOR_SIZE,
  SLOT_SIZE,
  checkRequest,
  needsNotify,
  readRequest,
  readResponse,
  writeRequest,
  writeResponse,
  type BlkifRequest,
} from '../../lib/blkback/ring.js';

const DISK_SECTORS = 256;

const segmentArb = fc.record({ gref: fc.nat({ max: 0xffffffff }), firstSect: fc.nat({ max: 255 }), lastSect: fc.nat({ max: 255 }) });
const requestArb = fc.nat({ max: 255 }).chain((nrSegments) =>
  fc.record({
    operation: fc.nat({ max: 255 }),
    nrSegments: fc.constant(nrSegments),
    handle: fc.nat({ max: 0xffff }),
    id: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    sectorNumber: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    segments: fc.array(segmentArb, { minLength: Math.min(nrSegments, MAX_SEGMENTS), maxLength: Math.min(nrSegments, MAX_SEGMENTS) }),
  }),
);
const smallRequestArb = fc.nat({ max: 12 }).chain((nrSegments) =>
  fc.record({
    operation: fc.nat({ max: 6 }),
    nrSegments: fc.constant(nrSegments),
    handle: fc.constant(0),
    id: fc.bigInt({ min: 0n, max: 1000n }),
    sectorNumber: fc.bigInt({ min: 0n, max: 300n }),
    segments: fc.array(fc.record({ gref: fc.nat({ max: 20 }), firstSect: fc.nat({ max: 8 }), lastSect: fc.nat({ max: 8 }) }), {
      minLength: Math.min(nrSegments, MAX_SEGMENTS),
      maxLength: Math.min(nrSegments, MAX_SEGMENTS),
    }),
  }),
);

function page(): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(RING_PAGE_SIZE));
}

describe('ring codec', () => {
  it('has the x86_64 layout of blkif.h: 64-byte header, 112-byte slots, 32 of them', () => {
    expect(RING_HEADER + RING_SIZE * SLOT_SIZE).toBeLessThanOrEqual(RING_PAGE_SIZE);
    expect(RING_HEADER + 2 * RING_SIZE * SLOT_SIZE).toBeGreaterThan(RING_PAGE_SIZE);
    const p = page();
    writeRequest(p, 33, { operation: 1, nrSegments: 2, handle: 0x1234, id: 0x0102030405060708n, sectorNumber: 99n, segments: [{ gref: 7, firstSect: 1, lastSect: 6 }, { gref: 8, firstSect: 0, lastSect: 7 }] });
    const at = RING_HEADER + SLOT_SIZE; // slot 33 is slot 1
    expect([...p.subarray(at, at + 4)]).toEqual([1, 2, 0x34, 0x12]);
    expect(p[at + 8]).toBe(0x08); // id, little-endian, 8-aligned
    expect(p[at + 16]).toBe(99); // sector_number
    expect([...p.subarray(at + 24, at + 30)]).toEqual([7, 0, 0, 0, 1, 6]); // seg[0]: gref, first_sect, last_sect
    expect(p[at + 32]).toBe(8);
    writeResponse(p, 2, { id: 5n, operation: 3, status: BlkifStatus.EOPNOTSUPP });
    const r = RING_HEADER + 2 * SLOT_SIZE;
    expect(p[r]).toBe(5);
    expect(p[r + 8]).toBe(3);
    expect([p[r + 10], p[r + 11]]).toEqual([0xfe, 0xff]); // int16 -2 at offset 10
  });

  it('round-trips any request and response through a slot', () => {
    fc.assert(
      fc.property(requestArb, fc.nat(), (req, index) => {
        const p = page();
        writeRequest(p, index, req);
        expect(readRequest(p, index)).toEqual(req);
        writeResponse(p, index, { id: req.id, operation: req.operation, status: -1 });
        expect(readResponse(p, index)).toEqual({ id: req.id, operation: req.operation, status: -1 });
      }),
    );
  });

  it('notifies exactly when the event index lies in (old, new], across wrap-around', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 64 }), fc.integer({ min: -64, max: 64 }), (old, added, delta) => {
        const next = (old + added) >>> 0;
        const event = (old + delta) >>> 0;
        expect(needsNotify(old, next, event)).toBe(delta > 0 && delta <= added);
      }),
    );
  });

  it('accepts exactly the requests a disk of 256 sectors can serve', () => {
    fc.assert(
      fc.property(requestArb, fc.boolean(), (req, readOnly) => {
        const bad = checkRequest(req, BigInt(DISK_SECTORS), readOnly);
        const sectors = req.segments.reduce((n, s) => n + (s.lastSect - s.firstSect + 1), 0);
        const segsOk = req.segments.every((s) => s.firstSect <= s.lastSect && s.lastSect < 8);
        const inRange = req.sectorNumber + BigInt(sectors) <= BigInt(DISK_SECTORS);
        let ok: boolean;
        if (req.operation === BlkifOp.FLUSH_DISKCACHE) ok = req.nrSegments === 0;
        else if (req.operation === BlkifOp.READ) ok = req.nrSegments >= 1 && req.nrSegments <= MAX_SEGMENTS && segsOk && inRange;
        else if (req.operation === BlkifOp.WRITE) ok = !readOnly && req.nrSegments >= 1 && req.nrSegments <= MAX_SEGMENTS && segsOk && inRange;
        else if (req.operation === BlkifOp.WRITE_BARRIER) ok = !readOnly && (req.nrSegments === 0 || (req.nrSegments <= MAX_SEGMENTS && segsOk && inRange));
        else ok = false;
        expect(bad === undefined).toBe(ok);
        if (bad && ![BlkifOp.READ, BlkifOp.WRITE, BlkifOp.WRITE_BARRIER, BlkifOp.FLUSH_DISKCACHE].includes(req.operation as 0)) expect(bad.status).toBe(BlkifStatus.EOPNOTSUPP);
      }),
    );
  });
});

/** A frontend and a disk in memory around one RingEngine. */
function rig(options: { readOnly?: boolean } = {}) {
  const ring = page();
  const idx = new RingIndices(ring);
  idx.reqEvent = 1;
  idx.rspEvent = 1;
  const grants = new Map<number, Uint8Array>();
  let mapped = 0;
  let notified = 0;
  const transport: RingTransport = {
    page: ring,
    async mapPage(gref) {
      const bytes = grants.get(gref);
      if (bytes === undefined) throw new Error(`grant ${gref} does not map`);
      mapped++;
      return { bytes, unmap: () => void mapped-- };
    },
    async notify() {
      notified++;
    },
  };
  const store = new Uint8Array(DISK_SECTORS * SECTOR_SIZE);
  let flushes = 0;
  const disk: BlockTarget = {
    size: store.byteLength,
    async read(offset, length) {
      return store.slice(offset, offset + length);
    },
    async write(offset, data) {
      store.set(data, offset);
    },
    async flush() {
      flushes++;
    },
  };
  const faults: string[] = [];
  const engine = new RingEngine(transport, disk, options.readOnly === true, (r) => faults.push(r));
  let prod = 0;
  return {
    ring,
    idx,
    grants,
    store,
    engine,
    faults,
    get mapped() {
      return mapped;
    },
    get notified() {
      return notified;
    },
    get flushes() {
      return flushes;
    },
    push(req: BlkifRequest) {
      writeRequest(ring, prod, req);
      prod = (prod + 1) >>> 0;
      idx.reqProd = prod;
    },
  };
}

describe('RingEngine', () => {
  it('serves writes, reads and flushes from the disk and answers each with its id', async () => {
    const r = rig();
    const data = new Uint8Array(4096).map((_, i) => i & 0xff);
    r.grants.set(10, data);
    r.grants.set(11, new Uint8Array(4096));
    r.push({ operation: BlkifOp.WRITE, nrSegments: 1, handle: 0, id: 1n, sectorNumber: 8n, segments: [{ gref: 10, firstSect: 2, lastSect: 3 }] });
    r.push({ operation: BlkifOp.FLUSH_DISKCACHE, nrSegments: 0, handle: 0, id: 2n, sectorNumber: 0n, segments: [] });
    r.push({ operation: BlkifOp.READ, nrSegments: 1, handle: 0, id: 3n, sectorNumber: 8n, segments: [{ gref: 11, firstSect: 5, lastSect: 6 }] });
    r.engine.kick();
    await r.engine.drain();
    expect(r.idx.rspProd).toBe(3);
    expect([0, 1, 2].map((i) => readResponse(r.ring, i))).toEqual([
      { id: 1n, operation: BlkifOp.WRITE, status: 0 },
      { id: 2n, operation: BlkifOp.FLUSH_DISKCACHE, status: 0 },
      { id: 3n, operation: BlkifOp.READ, status: 0 },
    ]);
    expect(Buffer.from(r.store.subarray(8 * 512, 10 * 512)).equals(Buffer.from(data.subarray(1024, 2048)))).toBe(true);
    expect(Buffer.from((r.grants.get(11) as Uint8Array).subarray(5 * 512, 7 * 512)).equals(Buffer.from(data.subarray(1024, 2048)))).toBe(true);
    expect(r.flushes).toBe(1);
    expect(r.mapped).toBe(0);
    expect(r.notified).toBeGreaterThan(0);
    expect(r.idx.reqEvent).toBe(4);
  });

  it('refuses writes to a read-only disk, unknown operations and discard', async () => {
    const r = rig({ readOnly: true });
    r.grants.set(1, new Uint8Array(4096));
    r.push({ operation: BlkifOp.WRITE, nrSegments: 1, handle: 0, id: 1n, sectorNumber: 0n, segments: [{ gref: 1, firstSect: 0, lastSect: 0 }] });
    r.push({ operation: BlkifOp.DISCARD, nrSegments: 0, handle: 0, id: 2n, sectorNumber: 0n, segments: [] });
    r.push({ operation: BlkifOp.INDIRECT, nrSegments: 1, handle: 0, id: 3n, sectorNumber: 0n, segments: [] });
    r.push({ operation: 200, nrSegments: 0, handle: 0, id: 4n, sectorNumber: 0n, segments: [] });
    r.engine.kick();
    await r.engine.drain();
    expect([0, 1, 2, 3].map((i) => readResponse(r.ring, i).status)).toEqual([BlkifStatus.ERROR, BlkifStatus.EOPNOTSUPP, BlkifStatus.EOPNOTSUPP, BlkifStatus.EOPNOTSUPP]);
    expect(r.store.every((b) => b === 0)).toBe(true);
  });

  it('answers a grant that does not map with an error, and unmaps what it mapped', async () => {
    const r = rig();
    r.grants.set(1, new Uint8Array(4096));
    r.push({ operation: BlkifOp.READ, nrSegments: 2, handle: 0, id: 9n, sectorNumber: 0n, segments: [{ gref: 1, firstSect: 0, lastSect: 7 }, { gref: 404, firstSect: 0, lastSect: 7 }] });
    r.engine.kick();
    await r.engine.drain();
    expect(readResponse(r.ring, 0)).toEqual({ id: 9n, operation: BlkifOp.READ, status: BlkifStatus.ERROR });
    expect(r.mapped).toBe(0);
  });

  it('faults on a req_prod more than a ring ahead, and takes nothing after', async () => {
    const r = rig();
    r.idx.reqProd = RING_SIZE + 1;
    r.engine.kick();
    await r.engine.drain();
    expect(r.faults).toHaveLength(1);
    expect(r.idx.rspProd).toBe(0);
    r.idx.reqProd = 1;
    r.engine.kick();
    await r.engine.drain();
    expect(r.idx.rspProd).toBe(0);
  });

  it('holds requests while paused, answers them on resume, from the new disk', async () => {
    const r = rig();
    r.grants.set(1, new Uint8Array(4096));
    await r.engine.pause();
    r.push({ operation: BlkifOp.READ, nrSegments: 1, handle: 0, id: 1n, sectorNumber: 0n, segments: [{ gref: 1, firstSect: 0, lastSect: 0 }] });
    r.engine.kick();
    await r.engine.drain();
    expect(r.idx.rspProd).toBe(0);
    const other = new Uint8Array(DISK_SECTORS * SECTOR_SIZE).fill(0xab);
    r.engine.resume({ size: other.byteLength, read: async (o, l) => other.slice(o, o + l), write: async () => undefined, flush: async () => undefined });
    await r.engine.drain();
    expect(r.idx.rspProd).toBe(1);
    expect((r.grants.get(1) as Uint8Array)[0]).toBe(0xab);
  });

  it('survives any hostile ring: garbage slots and indices give responses or a fault, never a throw or a hang', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(requestArb, smallRequestArb, smallRequestArb), { maxLength: 40 }),
        fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        async (reqs, wildProd, junk) => {
          const r = rig();
          for (let g = 0; g < 16; g++) r.grants.set(g, new Uint8Array(4096));
          let pushed = 0;
          for (const q of reqs.slice(0, RING_SIZE)) {
            r.push(q);
            pushed++;
          }
          // Junk over the last slot's tail and a wild producer index, as a broken guest might leave.
          r.ring.set(junk, RING_HEADER + (RING_SIZE - 1) * SLOT_SIZE + SLOT_SIZE - 64);
          if (wildProd !== undefined) r.idx.reqProd = wildProd;
          r.engine.kick();
          await r.engine.drain();
          const prod = r.idx.reqProd;
          if (prod > RING_SIZE) {
            expect(r.faults.length).toBe(1);
            expect(r.idx.rspProd).toBe(0);
          } else {
            expect(r.faults).toEqual([]);
            expect(r.idx.rspProd).toBe(prod);
            for (let i = 0; i < prod; i++) expect([0, -1, -2]).toContain(readResponse(r.ring, i).status);
          }
          expect(r.mapped).toBe(0);
          void pushed;
        },
      ),
      { numRuns: 200 },
    );
  });
});
