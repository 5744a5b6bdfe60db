/**
 * xenode's own block backend on real Xen: the tier's PV guest (whose initramfs loads
 * xen-blkfront) is given a dynamic VHD served by `xen.blockBackend` from this process,
 * over the native grant tables, event channels and xenstored. Its blkfront connects
 * (state 4) and reads the partition table the VHD carries (the guest's kernel, booted with
 * `loglevel=7`, reports `xvdb1` on its console); then a live snapshot switches the
 * backend to a differencing child while the guest stays connected, and the disk is
 * detached (the guest lets go). Meanwhile `xenode blkback serve` serves a second disk,
 * xvdc, from another process; a live snapshot of it asked from this process reaches that
 * one through xenstore, and SIGTERM detaches it.
 *
 * One guest boot for the whole file: about 60-90 s under TCG.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Domain, VirtualDisk, type Xen, connect } from '../../lib/index.js';
import { LineProcess, cliPath, run } from '../helpers/run.js';
import { guest, guestReady, waitUntil, xenstoreRead } from './tier.js';

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
  for (const name of ['disk.vhd', 'other.vhd']) {
    const disk = await VirtualDisk.create(join(dir, name), { size: 32 * MiB, type: 'dynamic' });
    await disk.write(0, mbr((32 * MiB) / 512));
    await disk.close();
  }
  dom = await xen.domains.create({ name: NAME, type: 'pv', kernel: guest.kernel, ramdisk: guest.ramdisk, cmdline: 'console=hvc0 loglevel=7', memory: 128, vcpus: 1 });
  // The guest's init loads xen-blkfront before it writes data/xenode/ready.
  await guestReady(dom.domid, 120_000);
});

afterAll(async () => {
  await dom?.destroy().catch(() => undefined);
  await xen?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('xenode block backend on real Xen', () => {
  it('serves a VHD to the guest and snapshots it live, in this process and from another', async () => {
    // The operator's form starts first, as it takes a while to start under TCG: the
    // command serves a second disk, xvdc, in the foreground from its own process.
    const cli = new LineProcess(process.execPath, [cliPath, 'blkback', 'serve', NAME, 'xvdc', join(dir, 'other.vhd')], { timeout: 400_000 });
    try {
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

      // Detach: the guest lets go when asked (Closing → Closed), the nodes go.
      await served.close();
      expect(await served.closed).toBe('closed');
      expect((await run('xenstore-exists', [served.backendPath])).code).not.toBe(0);

      // A live snapshot asked from this process reaches the command through xenstore.
      expect(await cli.nextLine(300_000)).toMatch(/^xenode blkback: serving .*other\.vhd to xenode-blkback .* as xvdc/);
      const fe = `/local/domain/${dom.domid}/device/vbd/51744`;
      const state = async () => await xenstoreRead(`${fe}/state`);
      await waitUntil(async () => (await state()) === '4', 'the guest’s blkfront to connect to the command', 60_000, 250);
      await waitUntil(async () => count(await console(), /xvdc: xvdc1/) >= 1, 'the guest to report xvdc1', 60_000, 500);
      const far = await dom.snapshotDisk('xvdc', join(dir, 'other-1.vhd'));
      expect(far).toMatchObject({ vdev: 'xvdc', parent: join(dir, 'other.vhd'), child: join(dir, 'other-1.vhd') });
      const be = `/local/domain/0/backend/xenode-vbd/${dom.domid}/51744`;
      expect((await run('xenstore-read', [`${be}/params`])).stdout.trim()).toBe(far.child);
      expect(await cli.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await cli.nextLine(5_000)).toMatch(/detached \(SIGTERM\); last image .*other-1\.vhd/);
      expect((await run('xenstore-exists', [be])).code).not.toBe(0);
    } finally {
      await cli.stop('SIGKILL');
    }
    const chain = await VirtualDisk.open(join(dir, 'other-1.vhd'), { readOnly: true });
    expect(chain.info().chainDepth).toBe(2);
    expect((await chain.read(0, 512)).equals(mbr((32 * MiB) / 512))).toBe(true);
    await chain.close();
  });
});
