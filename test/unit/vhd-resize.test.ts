/** resize(): growing keeps the data and adds zeros; shrinking never drops data. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk, XenError } from '../../lib/index.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (name = 'r'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-resize-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const isZero = (b: Buffer) => b.every((x) => x === 0);

async function reopened(path: string, fn: (d: VirtualDisk) => Promise<void>): Promise<void> {
  const d = await VirtualDisk.open(path, { readOnly: true });
  try {
    await fn(d);
  } finally {
    await d.close();
  }
}

describe('resize(): growing', () => {
  it('grows a dynamic disk within its BAT and beyond it (the BAT moves), keeping data', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 6 * MiB, type: 'dynamic' });
    await disk.write(6 * MiB - 5, Buffer.from('tail!'));
    await disk.write(MiB, Buffer.from('middle'));
    await disk.resize(100 * MiB); // 50 blocks: the BAT's sector has room
    expect(disk.size).toBe(100 * MiB);
    expect(isZero(await disk.read(6 * MiB, 4 * MiB))).toBe(true);
    await disk.resize(1000 * MiB); // 500 blocks: the BAT moves to the end
    expect(disk.info()).toMatchObject({ size: 1000 * MiB, allocatedBytes: 2 * 2 * MiB });
    expect((await disk.read(6 * MiB - 5, 5)).toString()).toBe('tail!');
    expect((await disk.read(MiB, 6)).toString()).toBe('middle');
    expect(isZero(await disk.read(999 * MiB, MiB))).toBe(true);
    await disk.write(999 * MiB, Buffer.from('new end'));
    await disk.write(500 * MiB, Buffer.alloc(2 * MiB, 3));
    expect(await disk.check()).toEqual([]);
    await disk.close();
    await reopened(path, async (d) => {
      expect(d.size).toBe(1000 * MiB);
      expect((await d.read(999 * MiB, 7)).toString()).toBe('new end');
      expect((await d.read(MiB, 6)).toString()).toBe('middle');
      expect((await d.read(501 * MiB, 2)).equals(Buffer.from([3, 3]))).toBe(true);
    });
    expect(await VirtualDisk.check(path)).toEqual([]);
  });

  it('grows a dynamic disk to the 2040 GiB limit', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'dynamic' });
    await disk.write(0, Buffer.from('first'));
    await disk.resize(2040 * 1024 ** 3);
    await disk.write(2040 * 1024 ** 3 - 512, Buffer.alloc(512, 1));
    expect((await disk.read(0, 5)).toString()).toBe('first');
    await disk.close();
    expect(await VirtualDisk.check(path)).toEqual([]);
  });

  it('grows a fixed disk: the old footer place reads as zeros', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: MiB, type: 'fixed' });
    await disk.write(0, Buffer.alloc(MiB, 0xaa));
    await disk.resize(3 * MiB + 512);
    expect(disk.info()).toMatchObject({ size: 3 * MiB + 512, type: 'fixed' });
    expect(isZero(await disk.read(MiB, 2 * MiB + 512))).toBe(true);
    expect((await disk.read(MiB - 1, 1))[0]).toBe(0xaa);
    await disk.close();
    expect(await VirtualDisk.check(path)).toEqual([]);
    await reopened(path, async (d) => expect(d.size).toBe(3 * MiB + 512));
  });

  it('grows a differencing disk: zeros past the parent, the parent still showing through', async () => {
    const base = await VirtualDisk.create(fresh('base'), { size: 4 * MiB, type: 'dynamic' });
    await base.write(4 * MiB - 512, Buffer.alloc(512, 5));
    const child = await base.snapshot(fresh('child'));
    await child.resize(8 * MiB);
    expect((await child.read(4 * MiB - 512, 512)).every((x) => x === 5)).toBe(true);
    expect(isZero(await child.read(4 * MiB, 4 * MiB))).toBe(true);
    expect(await child.check()).toEqual([]);
    await child.close();
    await base.close();
  });
});

describe('resize(): shrinking and refusals', () => {
  it('shrinks a dynamic disk when nothing lies past the new end', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 8 * MiB, type: 'dynamic' });
    await disk.write(MiB, Buffer.from('keep'));
    await disk.resize(3 * MiB);
    expect(disk.size).toBe(3 * MiB);
    await disk.resize(8 * MiB);
    expect(isZero(await disk.read(3 * MiB, 5 * MiB))).toBe(true);
    expect((await disk.read(MiB, 4)).toString()).toBe('keep');
    await disk.close();
    expect(await VirtualDisk.check(path)).toEqual([]);
  });

  it('refuses, with VHD_SHRINK_LOSES_DATA, to drop a block, a sector, a fixed disk or a parent', async () => {
    const disk = await VirtualDisk.create(fresh(), { size: 8 * MiB, type: 'dynamic' });
    await disk.write(6 * MiB, Buffer.from('x'));
    await disk.write(2 * MiB + 4096, Buffer.from('y'));
    const refused = async (d: VirtualDisk, size: number) => {
      const err = await d.resize(size).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(XenError);
      expect(err).toMatchObject({ code: 'VHD_SHRINK_LOSES_DATA', path: d.path, op: 'vhd.resize' });
    };
    await refused(disk, 4 * MiB); // block 3 holds data
    await disk.resize(7 * MiB); // block 3 keeps its written sector
    await refused(disk, 6 * MiB);
    await disk.write(6 * MiB, Buffer.alloc(512)); // still data, even if zeros
    await refused(disk, 2 * MiB + 4096); // the sector at 2 MiB + 4096 is set
    expect(disk.size).toBe(7 * MiB);
    await disk.close();

    const fixed = await VirtualDisk.create(fresh(), { size: 2 * MiB, type: 'fixed' });
    await refused(fixed, MiB);
    await fixed.close();

    const base = await VirtualDisk.create(fresh('base'), { size: 4 * MiB, type: 'dynamic' });
    const child = await base.snapshot(fresh('child'));
    await refused(child, 2 * MiB);
    await child.close();
    await base.close();
  });

  it('rejects bad sizes and disks that may not change', async () => {
    const disk = await VirtualDisk.create(fresh(), { size: 4 * MiB, type: 'dynamic' });
    for (const bad of [0, -512, 1000, 1.5, Number.NaN]) await expect(disk.resize(bad)).rejects.toBeInstanceOf(RangeError);
    await expect(disk.resize(2041 * 1024 ** 3)).rejects.toMatchObject({ code: 'VHD_TOO_LARGE' });
    await disk.close();
    await expect(disk.resize(8 * MiB)).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    const ro = await VirtualDisk.open(disk.path, { readOnly: true });
    await expect(ro.resize(8 * MiB)).rejects.toMatchObject({ code: 'VHD_READ_ONLY' });
    await ro.close();
  });
});
