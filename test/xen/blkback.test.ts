/**
 * xenode's own block backend on real Xen: the tier's PV guest (whose initramfs loads
 * xen-blkfront) is given a dynamic VHD served by `xen.blockBackend` from this process,
 * over the native grant tables, event channels and xenstored. Its blkfront connects
 * (state 4) and reads the partition table the VHD carries (the guest's kernel, booted with
 * `loglevel=7`, reports `xvdb1` on its console); then a live snapshot switches the
 * backend to a differencing child while the guest stays connected, and after the guest
 * lets go of the disk, serving the child (a chain of two) connects it again.
 *
 * One guest boot for the whole file: about 60-90 s under TCG.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Domain, VirtualDisk, type Xen, connect } from '../../lib/index.js';
import { run } from '../helpers/run.js';
import { guest, waitUntil } from './tier.js';

const NAME = 'xenode-blkback';
const MiB = 1024 * 1024;
let xen: Xen;
let dom: Domain;
let dir: string;

/** A master boot record with one Linux partition from sector 2048 to the end. */
function mbr(sectors: number): Buffer {
  const b = Buffer.alloc(512);
  const p = 446;
  b[p + 4] = 0x83;
  b.writeUInt32LE(2048, p + 8);
  b.writeUInt32LE(sectors - 2048, p + 12);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

async function console(): Promise<string> {
  return readFile(guest.consoleLog(NAME), 'utf8').catch(() => '');
}

function count(text: string, re: RegExp): number {
  return text.match(new RegExp(re.source, 'g'))?.length ?? 0;
}

beforeAll(async () => {
  xen = await connect({ backend: 'native' });
  dir = await mkdtemp(join(tmpdir(), 'xenode-blkback-'));
  const disk = await VirtualDisk.create(join(dir, 'disk.vhd'), { size: 32 * MiB, type: 'dynamic' });
  await disk.write(0, mbr((32 * MiB) / 512));
  await disk.close();
  dom = await xen.domains.create({ name: NAME, type: 'pv', kernel: guest.kernel, ramdisk: guest.ramdisk, cmdline: 'console=hvc0 loglevel=7', memory: 128, vcpus: 1 });
  // The guest's init loads xen-blkfront before it writes data/xenode/ready.
  await waitUntil(
    async () => (await run('xenstore-read', [`/local/domain/${dom.domid}/data/xenode/ready`], { timeout: 30_000 })).stdout.trim() === '1',
    'the guest to boot',
    120_000,
    500,
  );
});

afterAll(async () => {
  await dom?.destroy().catch(() => undefined);
  await xen?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('xenode block backend on real Xen', () => {
  it('serves a VHD to the guest, snapshots it live, and serves the chain again', async () => {
    const served = await xen.blockBackend.serve(dom.domid, 'xvdb', join(dir, 'disk.vhd'), { closeTimeoutMs: 30_000 });
    expect(served.backendPath).toBe(`/local/domain/0/backend/xenode-vbd/${dom.domid}/51728`);
    await waitUntil(() => served.state === 4, 'the guest’s blkfront to connect', 60_000);
    expect(served.connected).toBe(true);
    // blkfront reads the partition table as soon as the disk is added.
    await waitUntil(async () => count(await console(), /xvdb: xvdb1/) >= 1, 'the guest to report xvdb1', 60_000, 500);
    expect(served.stats.requests).toBeGreaterThan(0);
    expect(served.stats.errors).toBe(0);

    const snap = await dom.snapshotDisk('xvdb', join(dir, 'disk-1.vhd'));
    expect(snap).toMatchObject({ vdev: 'xvdb', parent: join(dir, 'disk.vhd'), child: join(dir, 'disk-1.vhd') });
    expect(served.path).toBe(snap.child);
    expect(served.connected).toBe(true);
    expect((await run('xenstore-read', [`${served.backendPath}/params`])).stdout.trim()).toBe(snap.child);
    const parent = await VirtualDisk.open(snap.parent, { readOnly: true });
    expect(parent.info().hidden).toBe(true);
    await parent.close();

    // The guest lets go when asked (Closing → Closed), and the child (through its parent) serves again.
    await served.close();
    expect(await served.closed).toBe('closed');
    expect((await run('xenstore-exists', [served.backendPath])).code).not.toBe(0);
    const again = await xen.blockBackend.serve(dom.domid, 'xvdb', snap.child, { closeTimeoutMs: 30_000 });
    await waitUntil(() => again.state === 4, 'the guest’s blkfront to connect to the child', 60_000);
    await waitUntil(async () => count(await console(), /xvdb: xvdb1/) >= 2, 'the guest to read the child’s partition table', 60_000, 500);
    expect(again.stats.requests).toBeGreaterThan(0);
    expect(again.stats.errors).toBe(0);
    await again.close();
  });
});
