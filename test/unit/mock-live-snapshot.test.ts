/**
 * The mock host's block backend serves a simulated guest's disk I/O from the VirtualDisk
 * attached to it, and takes live snapshots of it: what is written before is in the parent,
 * what comes after in the child, nothing is lost with requests in flight, and bad requests
 * change nothing.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Domain, MockHost, VirtualDisk, type Xen, connect } from '../../lib/index.js';

const MiB = 1024 * 1024;
let dir: string;
let host: MockHost;
let xen: Xen;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-live-'));
  host = await MockHost.create({ timing: 'instant' });
  xen = await connect({ backend: host });
});
afterEach(async () => {
  await xen.close();
  await host.close();
  await rm(dir, { recursive: true, force: true });
});

async function newVhd(name: string, size = 16 * MiB): Promise<string> {
  const path = join(dir, name);
  await (await VirtualDisk.create(path, { size, type: 'dynamic' })).close();
  return path;
}

async function withRoot(name = 'live'): Promise<{ dom: Domain; root: string }> {
  const root = await newVhd(`${name}-root.vhd`);
  const dom = await xen.domains.create({ name, type: 'pvh', kernel: '/boot/vmlinuz', memory: 64, vcpus: 1, disks: [{ target: root, vdev: 'xvda', format: 'vhd' }] });
  return { dom, root };
}

async function readImage(path: string, offset: number, length: number): Promise<Buffer> {
  const disk = await VirtualDisk.open(path, { readOnly: true });
  try {
    return await disk.read(offset, length);
  } finally {
    await disk.close();
  }
}

const sha = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');
const pattern = (i: number) => Buffer.alloc(4096, `w${i}-`);

describe('the mock block backend', () => {
  it('serves the guest from a VirtualDisk attached to the domain', async () => {
    const { dom } = await withRoot();
    const data = await VirtualDisk.create(join(dir, 'data.vhd'), { size: 8 * MiB, type: 'dynamic' });
    await data.write(0, Buffer.from('from the host'));
    const dev = await dom.attachDisk(data, { vdev: 'xvdb' });
    expect(dev.config).toMatchObject({ format: 'vhd', target: data.path });
    await data.close();
    // The guest sees what the host wrote before attaching (attachDisk flushed it) …
    expect((await host.guestDiskRead(dom.domid, 'xvdb', 0, 13)).toString()).toBe('from the host');
    // … and what it writes is in the image, across a block boundary.
    await host.guestDiskWrite(dom.domid, 'xvdb', 2 * MiB - 3, Buffer.from('guest!'));
    await host.guestDiskWrite(dom.domid, 'xvda', 512, Buffer.from('root'));
    await dom.detachDevice(dev);
    expect((await readImage(data.path, 2 * MiB - 3, 6)).toString()).toBe('guest!');
    await dom.destroy();
    await host.close();
    expect((await readImage(join(dir, 'live-root.vhd'), 512, 4)).toString()).toBe('root');
  });

  it('attaches a raw VirtualDisk as raw, and refuses a missing VHD as tapdisk would', async () => {
    const { dom } = await withRoot();
    const raw = await VirtualDisk.create(join(dir, 'data.raw'), { size: MiB, type: 'raw' });
    const dev = await dom.attachDisk(raw, { vdev: 'xvdc' });
    expect(dev.config).toMatchObject({ format: 'raw' });
    await host.guestDiskWrite(dom.domid, 'xvdc', 100, Buffer.from('raw bytes'));
    expect((await raw.read(100, 9)).toString()).toBe('raw bytes');
    await raw.close();
    await expect(dom.attachDisk({ target: join(dir, 'absent.vhd'), vdev: 'xvdd', format: 'vhd' })).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await dom.listDevices()).map((d) => d.devid).sort()).toEqual([51712, 51744]);
  });

  it('holds a paused guest\'s I/O until it runs again', async () => {
    const { dom } = await withRoot();
    await dom.pause();
    let done = false;
    const write = host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('later')).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    await dom.unpause();
    await write;
    expect((await host.guestDiskRead(dom.domid, 'xvda', 0, 5)).toString()).toBe('later');
  });
});

describe('Domain.snapshotDisk on the mock host', () => {
  it('puts earlier writes in the parent and later ones in the child, and repoints the backend', async () => {
    const { dom, root } = await withRoot();
    await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('before snapshot'));
    await host.guestDiskWrite(dom.domid, 'xvda', 3 * MiB, pattern(1));
    const childPath = join(dir, 'root-1.vhd');
    const snap = await dom.snapshotDisk('xvda', childPath);
    expect(snap).toMatchObject({ vdev: 'xvda', parent: root, child: childPath });
    expect(snap.pausedMs).toBeGreaterThanOrEqual(0);
    expect(snap.pausedMs).toBeLessThan(5000);
    const parentHash = await sha(root);

    await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('AFTER'));
    await host.guestDiskWrite(dom.domid, 'xvda', 5 * MiB, pattern(2));
    expect((await host.guestDiskRead(dom.domid, 'xvda', 0, 15)).toString()).toBe('AFTERe snapshot');
    expect(await host.guestDiskRead(dom.domid, 'xvda', 3 * MiB, 4096)).toEqual(pattern(1));

    // xenstore and the configuration name the child.
    const xs = await host.openXenStore();
    expect(await xs.read(`/local/domain/0/backend/vbd/${dom.domid}/51712/params`)).toBe(`vhd:${childPath}`);
    await xs.close();
    expect((await dom.config()).disks?.[0]).toMatchObject({ target: childPath, format: 'vhd' });

    await dom.destroy();
    await host.close();
    // The parent was not written after the snapshot; it is hidden and holds the old data only.
    expect(await sha(root)).toBe(parentHash);
    const parent = await VirtualDisk.open(root, { readOnly: true });
    expect(parent.info().hidden).toBe(true);
    expect((await parent.read(0, 15)).toString()).toBe('before snapshot');
    expect(await parent.read(5 * MiB, 4096)).toEqual(Buffer.alloc(4096));
    expect(await parent.check()).toEqual([]);
    await parent.close();
    const child = await VirtualDisk.open(childPath, { readOnly: true });
    expect(child.info()).toMatchObject({ type: 'differencing', parent: root, chainDepth: 2 });
    expect((await child.read(0, 15)).toString()).toBe('AFTERe snapshot');
    expect(await child.read(3 * MiB, 4096)).toEqual(pattern(1));
    expect(await child.read(5 * MiB, 4096)).toEqual(pattern(2));
    expect(child.info().allocatedBytes).toBe(4 * MiB); // blocks 0 and 2: only what came after
    expect(await child.check()).toEqual([]);
    await child.close();
  });

  it('loses nothing with guest writes in flight, and each lands whole on one side of the pause', async () => {
    const { dom, root } = await withRoot();
    const N = 60;
    // 3 rounds of N writes of 4 KiB at distinct offsets over 6 blocks.
    const offset = (i: number) => (i % 64) * 8192 + Math.floor(i / 64) * 2 * MiB + (i % 2) * 6 * MiB;
    expect(new Set(Array.from({ length: 3 * N }, (_, i) => offset(i))).size).toBe(3 * N);
    const completed = new Set<number>();
    const write = (i: number) => host.guestDiskWrite(dom.domid, 'xvda', offset(i), pattern(i)).then(() => void completed.add(i));
    // Round 1 completes before the snapshot is asked for.
    await Promise.all(Array.from({ length: N }, (_, i) => write(i)));
    // Round 2 is in flight around the snapshot: issued just before and just after asking.
    const inFlight: Promise<void>[] = [];
    for (let i = N; i < N + N / 2; i++) inFlight.push(write(i));
    const snapshot = dom.snapshotDisk('xvda', join(dir, 'child.vhd'));
    for (let i = N + N / 2; i < 2 * N; i++) inFlight.push(write(i));
    const snap = await snapshot;
    const doneAtSnapshot = new Set(completed);
    // Round 3 is issued once the snapshot is done.
    await Promise.all([...inFlight, ...Array.from({ length: N }, (_, i) => write(2 * N + i))]);
    expect(completed.size).toBe(3 * N);

    await dom.destroy();
    await host.close();
    const parent = await VirtualDisk.open(root, { readOnly: true });
    const child = await VirtualDisk.open(snap.child, { readOnly: true });
    const sides = { parent: 0, child: 0 };
    for (let i = 0; i < 3 * N; i++) {
      // Nothing is lost: the guest's disk (the child, through the chain) has every write.
      expect(await child.read(offset(i), 4096)).toEqual(pattern(i));
      const p = await parent.read(offset(i), 4096);
      if (i < N || doneAtSnapshot.has(i)) expect(p).toEqual(pattern(i));
      else if (i >= 2 * N) expect(p).toEqual(Buffer.alloc(4096));
      else if (p.equals(pattern(i))) sides.parent++;
      else {
        // Whole in the child, not torn across the switch.
        expect(p).toEqual(Buffer.alloc(4096));
        sides.child++;
      }
    }
    expect(sides.parent + sides.child + [...doneAtSnapshot].filter((i) => i >= N && i < 2 * N).length).toBe(N);
    expect(await parent.check()).toEqual([]);
    expect(await child.check()).toEqual([]);
    await child.close();
    await parent.close();
  });

  it('snapshots a snapshot: the chain grows and the guest reads through it', async () => {
    const { dom, root } = await withRoot();
    await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('one'));
    const a = await dom.snapshotDisk('xvda', join(dir, 'a.vhd'));
    await host.guestDiskWrite(dom.domid, 'xvda', 512, Buffer.from('two'));
    const b = await dom.snapshotDisk('xvda', join(dir, 'b.vhd'));
    expect(b.parent).toBe(a.child);
    await host.guestDiskWrite(dom.domid, 'xvda', 1024, Buffer.from('three'));
    const all = await host.guestDiskRead(dom.domid, 'xvda', 0, 1029);
    expect([all.subarray(0, 3), all.subarray(512, 515), all.subarray(1024, 1029)].map(String)).toEqual(['one', 'two', 'three']);
    await dom.destroy();
    await host.close();
    const child = await VirtualDisk.open(b.child, { readOnly: true });
    expect(child.info()).toMatchObject({ chainDepth: 3 });
    await child.close();
    expect((await readImage(root, 512, 3)).equals(Buffer.alloc(3))).toBe(true);
  });

  it('runs two snapshots asked at once one after the other, and survives a destroy under way', async () => {
    const { dom, root } = await withRoot();
    await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('zero'));
    const [a, b] = await Promise.all([dom.snapshotDisk('xvda', join(dir, 'a.vhd')), dom.snapshotDisk('xvda', join(dir, 'b.vhd'))]);
    // Whichever went second took the first one's child as its parent.
    expect(new Set([a.parent, b.parent])).toEqual(new Set([root, a.parent === root ? a.child : b.child]));
    const last = a.parent === root ? b : a;
    expect((await dom.config()).disks?.[0]?.target).toBe(last.child);
    const racing = dom.snapshotDisk('xvda', join(dir, 'c.vhd')).then(
      (snap) => snap,
      (err: unknown) => err,
    );
    await dom.destroy();
    await racing;
    await host.close();
    // Whatever the race gave, every image left is sound and the data is there.
    for (const name of await readdir(dir)) {
      const disk = await VirtualDisk.open(join(dir, name), { readOnly: true });
      expect(await disk.check(), name).toEqual([]);
      await disk.close();
    }
    expect((await readImage(last.child, 0, 4)).toString()).toBe('zero');
  });

  describe('bad requests change nothing', () => {
    async function expectUnchanged(dom: Domain, root: string, files: string[]): Promise<void> {
      // The guest still writes to the same, writable image, and no stray file appeared.
      await host.guestDiskWrite(dom.domid, 'xvda', 0, Buffer.from('still here'));
      const xs = await host.openXenStore();
      expect(await xs.read(`/local/domain/0/backend/vbd/${dom.domid}/51712/params`)).toBe(`vhd:${root}`);
      await xs.close();
      expect((await readdir(dir)).sort()).toEqual(files.sort());
      const disk = await VirtualDisk.open(root, { readOnly: true });
      expect(disk.info().hidden).toBe(false);
      expect((await disk.read(0, 10)).toString()).toBe('still here');
      await disk.close();
    }

    it('an unknown vdev, a malformed one, a disk that is not a VHD', async () => {
      const { dom, root } = await withRoot();
      await dom.attachDisk({ target: '/srv/not-here.img', vdev: 'xvdb' });
      const files = await readdir(dir);
      await expect(dom.snapshotDisk('xvdz', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'XEN_ERROR_NOTFOUND', domid: dom.domid });
      await expect(dom.snapshotDisk('xvdb', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'XEN_DISK_NOT_VHD', path: '/srv/not-here.img' });
      expect(() => dom.snapshotDisk('nvme0', join(dir, 'c.vhd'))).toThrow(RangeError);
      expect(() => dom.snapshotDisk('xvda', '')).toThrow(TypeError);
      await expectUnchanged(dom, root, files);
    });

    it('serveVhd that is not a boolean, before anything is made', async () => {
      const root = await newVhd('opt-root.vhd');
      const cfg = { name: 'opt', type: 'pvh' as const, kernel: '/boot/vmlinuz', memory: 64, vcpus: 1, disks: [{ target: root, vdev: 'xvda', format: 'vhd' as const }] };
      await expect(xen.domains.create(cfg, { serveVhd: 'yes' as unknown as boolean })).rejects.toThrow(TypeError);
      expect((await xen.domains.list()).map((d) => d.name)).toEqual(['Domain-0']);
      // the mock's simulated backend snapshots any VHD disk: the option changes nothing there
      const dom = await xen.domains.create(cfg, { serveVhd: true });
      await expect(dom.attachDisk(await newVhd('opt-data.vhd'), { serveVhd: 1 as unknown as boolean })).rejects.toThrow(TypeError);
      expect((await dom.listDevices()).map((d) => d.devid)).toEqual([51712]);
      await dom.snapshotDisk('xvda', join(dir, 'opt-child.vhd'));
    });

    it('a child path that exists, or whose directory does not', async () => {
      const { dom, root } = await withRoot();
      const taken = await newVhd('taken.vhd');
      const before = await sha(taken);
      const files = await readdir(dir);
      await expect(dom.snapshotDisk('xvda', taken)).rejects.toMatchObject({ code: 'EEXIST', path: taken });
      expect(await sha(taken)).toBe(before);
      await expect(dom.snapshotDisk('xvda', join(dir, 'no', 'such', 'c.vhd'))).rejects.toMatchObject({ code: 'ENOENT' });
      await expectUnchanged(dom, root, files);
    });

    it('a domain that is not running, dom0, a domain that does not exist', async () => {
      const { dom, root } = await withRoot('preserved');
      const files = await readdir(dir);
      const dom0 = await xen.domains.get(0);
      await expect(dom0.snapshotDisk('xvda', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
      const other = await xen.domains.create({ name: 'down', type: 'pvh', kernel: '/k', memory: 64, vcpus: 1, onPoweroff: 'preserve', disks: [{ target: await newVhd('down.vhd'), vdev: 'xvda', format: 'vhd' }] });
      host.guestShutdown(other.domid, 'poweroff');
      await other.waitFor('shutdown', { timeoutMs: 2000 });
      await expect(other.snapshotDisk('xvda', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
      await other.destroy();
      await expect(other.snapshotDisk('xvda', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'ESRCH' });
      await expectUnchanged(dom, root, [...files, 'down.vhd']);
    });

    it('a disk attached read-only cannot become a parent (VHD_READ_ONLY), and stays in use', async () => {
      const { dom, root } = await withRoot();
      const ro = await newVhd('ro.vhd');
      await dom.attachDisk({ target: ro, vdev: 'xvdb', format: 'vhd', access: 'ro' });
      const files = await readdir(dir);
      await expect(dom.snapshotDisk('xvdb', join(dir, 'c.vhd'))).rejects.toMatchObject({ code: 'VHD_READ_ONLY' });
      expect((await host.guestDiskRead(dom.domid, 'xvdb', 0, 4)).equals(Buffer.alloc(4))).toBe(true);
      await expect(host.guestDiskWrite(dom.domid, 'xvdb', 0, Buffer.from('x'))).rejects.toMatchObject({ code: 'VHD_READ_ONLY' });
      await expectUnchanged(dom, root, files);
    });
  });
});
