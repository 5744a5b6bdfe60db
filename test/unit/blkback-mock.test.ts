/**
 * xenode's block backend serving a guest's disk on the mock host, driven by a test
 * frontend that acts as the guest (its own xenstore connection, grant devices and event
 * channel): the xenbus handshake, reads, writes and flushes checked against a model disk
 * through a VHD chain, live snapshots under load, detach, and the guest going away.
 */
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockBackends } from '../../lib/blkback/block-backend.js';
import { BlkifOp, BlkifStatus } from '../../lib/blkback/ring.js';
import { requestSnapshot } from '../../lib/blkback/remote-snapshot.js';
import { type Domain, MockHost, VirtualDisk, type Xen, XenError, connect } from '../../lib/index.js';
import { TestBlkfront } from '../helpers/blkfront.js';

const MiB = 1024 * 1024;
const XVDB = 51728;
let dir: string;
let host: MockHost;
let xen: Xen;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-blkback-'));
  host = await MockHost.create({ timing: 'instant' });
  xen = await connect({ backend: host });
});
afterEach(async () => {
  await xen.close();
  await host.close();
  await rm(dir, { recursive: true, force: true });
});

async function newVhd(name: string, size = 4 * MiB): Promise<string> {
  const path = join(dir, name);
  await (await VirtualDisk.create(path, { size, type: 'dynamic' })).close();
  return path;
}

async function guest(name = 'g'): Promise<Domain> {
  return xen.domains.create({ name, type: 'pvh', kernel: '/boot/vmlinuz', memory: 64, vcpus: 1 });
}

function pattern(sectors: number, seed: number): Buffer {
  const b = Buffer.alloc(sectors * 512);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed * 17) & 0xff;
  return b;
}

describe('xen.blockBackend on the mock host', () => {
  it('writes the device nodes as a toolstack does, and connects through the handshake', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('d.vhd'));
    const be = `/local/domain/0/backend/xenode-vbd/${dom.domid}/${XVDB}`;
    expect(served.backendPath).toBe(be);
    expect(await xen.xenstore.read(`${served.frontendPath}/backend`)).toBe(be);
    expect(await xen.xenstore.read(`${be}/sectors`)).toBe(String((4 * MiB) / 512));
    expect(await xen.xenstore.read(`${be}/feature-flush-cache`)).toBe('1');
    expect(await xen.xenstore.read(`${be}/mode`)).toBe('w');
    expect(await xen.xenstore.read(`${be}/state`)).toBe('2');
    const perms = await xen.xenstore.getPermissions(served.frontendPath);
    expect(perms[0]).toEqual({ domid: dom.domid, read: false, write: false });
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect();
      expect(await xen.xenstore.read(`${be}/state`)).toBe('4');
      expect(served.connected).toBe(true);
      await expect(xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('e.vhd'))).rejects.toMatchObject({ code: 'XEN_ERROR_DEVICE_EXISTS' });
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('serves reads, writes and flushes like an in-memory disk, through a chain and across live snapshots', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('write' as const), sector: fc.nat({ max: 8191 - 24 }), sectors: fc.integer({ min: 1, max: 24 }), seed: fc.nat({ max: 255 }) }),
            fc.record({ kind: fc.constant('read' as const), sector: fc.nat({ max: 8191 - 24 }), sectors: fc.integer({ min: 1, max: 24 }) }),
            fc.constant({ kind: 'flush' as const }),
            fc.constant({ kind: 'snapshot' as const }),
          ),
          { minLength: 1, maxLength: 14 },
        ),
        async (ops) => {
          const dom = await guest(`m${Math.random().toString(36).slice(2, 8)}`);
          // A chain already: the served image is a child of a base holding data.
          const base = await VirtualDisk.create(join(dir, `${dom.domid}-base.vhd`), { size: 4 * MiB, type: 'dynamic' });
          const model = Buffer.alloc(4 * MiB);
          pattern(16, 99).copy(model, 4096);
          await base.write(4096, pattern(16, 99));
          const child = await base.snapshot(join(dir, `${dom.domid}-c0.vhd`));
          await base.close();
          const served = await xen.blockBackend.serve(dom.domid, 'xvdb', child);
          const fe = await TestBlkfront.open(host, dom.domid, XVDB);
          let n = 0;
          try {
            await fe.connect();
            for (const op of ops) {
              if (op.kind === 'write') {
                const data = pattern(op.sectors, op.seed);
                expect(await fe.write(op.sector, data)).toBe(BlkifStatus.OKAY);
                data.copy(model, op.sector * 512);
              } else if (op.kind === 'read') {
                const got = await fe.read(op.sector, op.sectors);
                expect(got.status).toBe(BlkifStatus.OKAY);
                expect(got.data.equals(model.subarray(op.sector * 512, (op.sector + op.sectors) * 512))).toBe(true);
              } else if (op.kind === 'flush') {
                expect(await fe.flush()).toBe(BlkifStatus.OKAY);
              } else {
                const snap = await dom.snapshotDisk('xvdb', join(dir, `${dom.domid}-s${++n}.vhd`));
                expect(served.path).toBe(snap.child);
              }
            }
            const all = await fe.read(0, 16);
            expect(all.data.equals(model.subarray(0, 16 * 512))).toBe(true);
          } finally {
            await served.close();
            await fe.close();
            await dom.destroy();
          }
          // What the guest wrote is in the images: the chain, opened afresh, reads as the model.
          const reopened = await VirtualDisk.open(served.path, { readOnly: true });
          expect((await reopened.read(0, 8192 * 512)).equals(model.subarray(0, 8192 * 512))).toBe(true);
          await reopened.close();
        },
      ),
      { numRuns: 12 },
    );
  }, 60_000);

  it('takes a live snapshot with requests in flight: earlier writes in the parent, later ones in the child', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('live.vhd'));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect();
      expect(await fe.write(0, pattern(8, 1))).toBe(0);
      const before = fe.write(8, pattern(8, 2)); // on the ring when the snapshot starts
      const snap = await dom.snapshotDisk('xvdb', join(dir, 'live-1.vhd'));
      expect(await before).toBe(0);
      expect(await fe.write(0, pattern(8, 3))).toBe(0);
      expect(snap).toMatchObject({ vdev: 'xvdb', parent: join(dir, 'live.vhd'), child: join(dir, 'live-1.vhd') });
      expect(snap.pausedMs).toBeGreaterThanOrEqual(0);
      expect(await xen.xenstore.read(`${served.backendPath}/params`)).toBe(snap.child);
      const parent = await VirtualDisk.open(snap.parent, { readOnly: true });
      expect((await parent.read(0, 4096)).equals(pattern(8, 1))).toBe(true);
      await parent.close();
      expect((await fe.read(0, 16)).data.equals(Buffer.concat([pattern(8, 3), pattern(8, 2)]))).toBe(true);
      await expect(dom.snapshotDisk('xvdb', join(dir, 'live-1.vhd'))).rejects.toMatchObject({ code: 'EEXIST' });
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('takes snapshot requests of other processes through xenstore (what the native toolstack sends)', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('far.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    const store = {
      read: (p: string) => xen.xenstore.read(p).catch(() => undefined),
      write: (p: string, v: string) => xen.xenstore.write(p, v),
      remove: (p: string) => xen.xenstore.remove(p),
    };
    try {
      await fe.connect();
      expect(await fe.write(0, pattern(1, 4))).toBe(0);
      const snap = await requestSnapshot(store, served.backendPath, join(dir, 'far-1.vhd'), 'domain.snapshotDisk', dom.domid);
      expect(snap).toMatchObject({ vdev: 'xvdb', parent: join(dir, 'far.vhd'), child: join(dir, 'far-1.vhd') });
      expect(served.path).toBe(snap.child);
      expect((await fe.read(0, 1)).data.equals(pattern(1, 4))).toBe(true);
      await expect(requestSnapshot(store, served.backendPath, join(dir, 'far-1.vhd'), 'domain.snapshotDisk', dom.domid)).rejects.toMatchObject({ code: 'EEXIST', domid: dom.domid });
      expect(await xen.xenstore.list(`${served.backendPath}/snapshot-request`).catch(() => [])).toEqual([]);
      expect(await xen.xenstore.list(`${served.backendPath}/snapshot-result`).catch(() => [])).toEqual([]);
      await expect(requestSnapshot(store, '/local/domain/0/backend/xenode-vbd/99/1', join(dir, 'x.vhd'), 'domain.snapshotDisk', 99, 200)).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    } finally {
      await xen.blockBackend.closeAll();
      await fe.close();
    }
  });

  it('answers bad requests with errors and stays up; a ring overrun closes the device', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('bad.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect();
      expect((await fe.read(2047, 1)).status).toBe(0);
      expect((await fe.read(2047, 2)).status).toBe(BlkifStatus.ERROR); // past the end
      const [discard, bogus] = await fe.push([
        { operation: BlkifOp.DISCARD, nrSegments: 0, handle: 0, sectorNumber: 0n, segments: [] },
        { operation: BlkifOp.READ, nrSegments: 1, handle: 0, sectorNumber: 0n, segments: [{ gref: 999_999, firstSect: 0, lastSect: 0 }] },
      ]);
      expect((await discard)?.status).toBe(BlkifStatus.EOPNOTSUPP);
      expect((await bogus)?.status).toBe(BlkifStatus.ERROR);
      expect(served.stats.errors).toBe(3);
      await fe.setReqProd(1000);
      expect(await served.closed).toBe('fault');
      expect(await xen.xenstore.exists(served.backendPath)).toBe(false);
      expect(xen.blockBackend.find(dom.domid, 'xvdb')).toBeUndefined();
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('refuses a frontend speaking another ABI or asking for a multi-page ring', async () => {
    const dom = await guest();
    await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('abi.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect({ protocol: 'x86_32-abi' });
      expect(await xen.xenstore.read(`/local/domain/0/backend/xenode-vbd/${dom.domid}/${XVDB}/state`)).toBe('5');
      expect(await xen.xenstore.read(`/local/domain/0/error/local/domain/0/backend/xenode-vbd/${dom.domid}/${XVDB}/error`)).toMatch(/x86_32-abi/);
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('detaches: Closing, the frontend lets go, Closed, every page unmapped, the nodes removed', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('det.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect();
      expect(await fe.write(0, pattern(1, 5))).toBe(0);
      const be = served.backendPath;
      const states: string[] = [];
      const ac = new AbortController();
      const seen = (async () => {
        for await (const _ of fe.xs.watch(`${be}/state`, { signal: ac.signal })) {
          const s = await fe.xs.read(`${be}/state`).catch(() => 'gone');
          if (states.at(-1) !== s) states.push(s);
          if (s === '5') await fe.xs.write(`${fe.frontendPath}/state`, '6'); // blkfront lets go
        }
      })().catch(() => undefined);
      await served.close();
      ac.abort();
      await seen;
      expect(states).toContain('5');
      expect(await served.closed).toBe('closed');
      expect(served.stats.mappedPages).toBe(0);
      expect(await xen.xenstore.exists(be)).toBe(false);
      expect(await xen.xenstore.exists(served.frontendPath)).toBe(false);
      // The ring's grant is no longer mapped by dom0: the guest can end its share and share again.
      await expect(served.snapshot(join(dir, 'after.vhd'))).rejects.toMatchObject({ code: 'XEN_CLOSED' });
      await served.close();
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('the guest closing its frontend (Closing, Closed) disconnects the ring, and a reconnect works', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('re.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    try {
      await fe.connect();
      expect(await fe.write(0, pattern(1, 7))).toBe(0);
      await fe.disconnect();
      await fe.waitFor(`${served.backendPath}/state`, '6');
      expect(served.connected).toBe(false);
      await fe.xs.write(`${fe.frontendPath}/state`, '1');
      await fe.waitFor(`${served.backendPath}/state`, '2');
      const again = await TestBlkfront.open(host, dom.domid, XVDB);
      await again.connect();
      expect((await again.read(0, 1)).data.equals(pattern(1, 7))).toBe(true);
      await xen.blockBackend.closeAll();
      await again.close();
    } finally {
      await xen.blockBackend.closeAll(); // while the frontend still answers
      await fe.close();
    }
  });

  it('the guest dying ends the service: @releaseDomain, everything unmapped and removed', async () => {
    let alive = true;
    const backends = new BlockBackends({ xenstore: xen.xenstore, grants: xen.grants, eventChannels: xen.eventChannels, domainExists: async () => alive });
    const fe = await TestBlkfront.open(host, 7, XVDB); // introduces domain 7
    const served = await backends.serve(7, 'xvdb', await newVhd('dead.vhd', MiB));
    await fe.connect();
    expect(await fe.write(0, pattern(1, 9))).toBe(0);
    alive = false;
    host.releaseDomain(7);
    expect(await served.closed).toBe('domain-gone');
    expect(served.connected).toBe(false);
    expect(await xen.xenstore.exists(served.backendPath)).toBe(false);
    expect(await xen.xenstore.exists(served.frontendPath)).toBe(false);
    await fe.close();
  });

  it('a destroyed domain ends the service too', async () => {
    const dom = await guest();
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', await newVhd('gone.vhd', MiB));
    const fe = await TestBlkfront.open(host, dom.domid, XVDB);
    await fe.connect();
    await dom.destroy();
    expect(['domain-gone', 'removed']).toContain(await served.closed);
    expect(await xen.xenstore.exists(served.backendPath)).toBe(false);
    await fe.close();
  });

  it('checks its arguments', async () => {
    const dom = await guest();
    await expect(xen.blockBackend.serve(0, 'xvdb', 'x')).rejects.toThrow(RangeError);
    await expect(xen.blockBackend.serve(dom.domid, 'eth0', 'x')).rejects.toThrow(RangeError);
    await expect(xen.blockBackend.serve(dom.domid, 'xvdb', '')).rejects.toThrow(TypeError);
    await expect(xen.blockBackend.serve(4000, 'xvdb', await newVhd('n.vhd'))).rejects.toMatchObject({ code: 'ESRCH' });
    await expect(xen.blockBackend.serve(dom.domid, 'xvdb', join(dir, 'missing.vhd'))).rejects.toBeInstanceOf(XenError);
    expect(await xen.xenstore.exists(`/local/domain/${dom.domid}/device/vbd/${XVDB}`)).toBe(false);
  });
});
