/**
 * qemu-img (Debian qemu-utils) against xenode's maintenance operations: images resized
 * (a fixed disk, a dynamic one whose BAT moved), repaired after a lost end footer, and
 * coalesced into read as the same bytes; images qemu makes pass xenode's check().
 */
import { mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk } from '../../lib/index.js';
import { qemuImgRunner } from '../helpers/qemu-img.js';
import { requireTool } from '../helpers/tools.js';

const hasQemu = requireTool('qemu-img', undefined, { aptPackage: 'qemu-utils' });
const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (ext: string): string => join(dir, `m-${n++}.${ext}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-qemu-maint-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const qemuImg = qemuImgRunner(60_000);

/** qemu-img compare of `vhd` against the bytes xenode reads from it. */
async function expectQemuReadsAsXenode(vhd: string): Promise<void> {
  const disk = await VirtualDisk.open(vhd, { readOnly: true });
  const raw = fresh('raw');
  await writeFile(raw, await disk.read(0, disk.size));
  await disk.close();
  expect(await qemuImg('compare', '-f', 'vpc', '-F', 'raw', vhd, raw)).toContain('Images are identical');
}

describe.skipIf(!hasQemu)('qemu-img reads what check/repair/resize/coalesce leave', () => {
  it('a dynamic disk grown past its BAT, then written at its new end', async () => {
    const path = fresh('vhd');
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'dynamic' });
    await disk.write(MiB, Buffer.alloc(4096, 5));
    await disk.resize(300 * MiB);
    await disk.write(299 * MiB, Buffer.alloc(4096, 6));
    await disk.close();
    expect(JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', path))['virtual-size']).toBe(300 * MiB);
    await expectQemuReadsAsXenode(path);
  });

  it('a fixed disk grown', async () => {
    const path = fresh('vhd');
    const disk = await VirtualDisk.create(path, { size: MiB, type: 'fixed' });
    await disk.write(0, Buffer.alloc(MiB, 1));
    await disk.resize(3 * MiB);
    await disk.close();
    await expectQemuReadsAsXenode(path);
  });

  it('a disk repaired after losing its end footer, and a parent coalesced into', async () => {
    const base = fresh('vhd');
    const disk = await VirtualDisk.create(base, { size: 8 * MiB, type: 'dynamic' });
    await disk.write(0, Buffer.alloc(3 * MiB, 2));
    const child = await disk.snapshot(fresh('vhd'));
    await child.write(MiB, Buffer.alloc(2 * MiB, 3));
    await child.write(7 * MiB, Buffer.alloc(512, 4));
    await child.coalesce();
    await child.close();
    await disk.close();
    await expectQemuReadsAsXenode(base);
    await truncate(base, (await stat(base)).size - 512);
    expect((await VirtualDisk.repair(base)).problems).toEqual([]);
    await expectQemuReadsAsXenode(base);
  });

  it('finds no problem in the VHDs qemu-img makes', async () => {
    const raw = fresh('raw');
    const data = Buffer.alloc(6 * MiB);
    data.fill(9, MiB, 3 * MiB);
    await writeFile(raw, data);
    for (const subformat of ['dynamic', 'fixed']) {
      const vhd = fresh('vhd');
      await qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${subformat},force_size=on`, raw, vhd);
      expect(await VirtualDisk.check(vhd), subformat).toEqual([]);
      const d = await VirtualDisk.open(vhd, { readOnly: true });
      expect((await d.read(0, d.size)).equals(data)).toBe(true);
      await d.close();
    }
  });
});
