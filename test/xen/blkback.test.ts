/**
 * xenode's own block backend on real Xen: the tier's PV guest (whose initramfs loads
 * xen-blkfront) is given a dynamic VHD served by `xen.blockBackend` from this process,
 * over the native grant tables, event channels and xenstored. Its blkfront connects
 * (state 4) and reads the partition table the VHD carries (the guest's kernel, booted with
 * `loglevel=7`, reports `xvdb1` on its console); then a live snapshot switches the
 * backend to a differencing child while the guest stays connected. After the guest lets
 * go of the disk, `xenode blkback serve` serves the child (a chain of two) from another
 * process, the guest connects again, and a live snapshot asked from this process reaches
 * that one through xenstore.
 *
 * One guest boot for the whole file: about 60-90 s under TCG.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Domain, VirtualDisk, type Xen, connect } from '../../lib/index.js';
import { LineProcess, cliPath, run } from '../helpers/run.js';
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

    // The guest lets go when asked (Closing → Closed). Then the operator's form: the
    // command serves the chain in the foreground, and a live snapshot asked from this
    // process goes to it through xenstore (the native toolstack's snapshotDisk).
    await served.close();
    expect(await served.closed).toBe('closed');
    expect((await run('xenstore-exists', [served.backendPath])).code).not.toBe(0);
    const cli = new LineProcess(process.execPath, [cliPath, 'blkback', 'serve', NAME, 'xvdb', snap.child], { timeout: 300_000 });
    try {
      expect(await cli.nextLine(60_000)).toMatch(/^xenode blkback: serving .*disk-1\.vhd to xenode-blkback/);
      const state = async () => (await run('xenstore-read', [`${served.frontendPath}/state`])).stdout.trim();
      await waitUntil(async () => (await state()) === '4', 'the guest’s blkfront to connect to the command', 60_000, 250);
      await waitUntil(async () => count(await console(), /xvdb: xvdb1/) >= 2, 'the guest to read the child’s partition table', 60_000, 500);
      const far = await dom.snapshotDisk('xvdb', join(dir, 'disk-2.vhd'));
      expect(far).toMatchObject({ vdev: 'xvdb', parent: snap.child, child: join(dir, 'disk-2.vhd') });
      expect((await run('xenstore-read', [`${served.backendPath}/params`])).stdout.trim()).toBe(far.child);
      expect(await cli.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await cli.nextLine(5_000)).toMatch(/detached \(SIGTERM\); last image .*disk-2\.vhd/);
    } finally {
      await cli.stop('SIGKILL');
    }
    expect((await run('xenstore-exists', [served.backendPath])).code).not.toBe(0);
    const chain = await VirtualDisk.open(join(dir, 'disk-2.vhd'), { readOnly: true });
    expect(chain.info().chainDepth).toBe(3);
    expect((await chain.read(0, 512)).equals(mbr((32 * MiB) / 512))).toBe(true);
    await chain.close();
  });
});
