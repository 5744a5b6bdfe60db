import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualDisk } from '../../lib/index.js';
import { writeNewImage } from '../../lib/vhd/create.js';
import { decodeFooter } from '../../lib/vhd/footer.js';
import { decodeHeader, encodeHeader } from '../../lib/vhd/header.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (name = 'd'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-chain-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function uuidOf(path: string): Promise<string> {
  const file = await readFile(path);
  return decodeFooter(file.subarray(file.length - 512), path).uuid;
}

describe('differencing disks', () => {
  it('read through to the parent sector by sector where the child has not written', async () => {
    const size = 4 * MiB;
    const base = await VirtualDisk.create(fresh('base'), { size, type: 'dynamic' });
    const model = Buffer.alloc(size);
    for (let i = 0; i < size; i += 512 * 3) model.fill(i & 0xff, i, i + 512);
    await base.write(0, model);
    const child = await base.snapshot(fresh('child'));
    const childModel = Buffer.from(model);
    // Every other sector in a range, so the child's bitmap alternates.
    for (let s = 10; s < 30; s += 2) {
      const data = Buffer.alloc(512, 0xee);
      await child.write(s * 512, data);
      data.copy(childModel, s * 512);
    }
    await child.write(2 * MiB - 7, Buffer.from('across!!!!!!!!'));
    Buffer.from('across!!!!!!!!').copy(childModel, 2 * MiB - 7);
    expect((await child.read(0, size)).equals(childModel)).toBe(true);
    expect((await base.read(0, size)).equals(model)).toBe(true);
    expect(child.info()).toMatchObject({ type: 'differencing', parent: base.path, chainDepth: 2 });
    expect(base.info().hidden).toBe(true);
    await expect(base.write(0, Buffer.alloc(1))).rejects.toMatchObject({ code: 'VHD_READ_ONLY' });
    await child.close();
    await base.close();
  });

  it('keep every layer of a chain equal to its model under random writes and snapshots', async () => {
    const size = 3 * MiB;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            { weight: 4, arbitrary: fc.record({ offset: fc.integer({ min: 0, max: size - 1 }), len: fc.integer({ min: 1, max: 70_000 }), byte: fc.integer({ min: 1, max: 255 }) }) },
            { weight: 1, arbitrary: fc.constant('snapshot' as const) },
          ),
          { maxLength: 20 },
        ),
        async (steps) => {
          let disk = await VirtualDisk.create(fresh('p'), { size, type: 'dynamic' });
          const layers: Array<[VirtualDisk, Buffer]> = [];
          let model = Buffer.alloc(size);
          for (const step of steps) {
            if (step === 'snapshot') {
              layers.push([disk, model]);
              disk = await disk.snapshot(fresh('c'));
              model = Buffer.from(model);
            } else {
              const data = Buffer.alloc(Math.min(step.len, size - step.offset), step.byte);
              await disk.write(step.offset, data);
              data.copy(model, step.offset);
            }
          }
          layers.push([disk, model]);
          for (const [d, m] of layers) expect((await d.read(0, size)).equals(m)).toBe(true);
          const reopened = await VirtualDisk.open(disk.path, { readOnly: true });
          expect((await reopened.read(0, size)).equals(model)).toBe(true);
          expect(reopened.info().chainDepth).toBe(layers.length);
          await reopened.close();
          for (const [d] of layers) await d.close();
        },
      ),
      { numRuns: 12 },
    );
  }, 60_000);

  it('refuses a child path that exists, leaving the disk writable', async () => {
    const base = await VirtualDisk.create(fresh('busy'), { size: MiB, type: 'dynamic' });
    const taken = fresh('taken');
    await writeFile(taken, 'x');
    await expect(base.snapshot(taken)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(base.info().hidden).toBe(false);
    await base.write(0, Buffer.from('still writable'));
    await base.close();
  });

  it('snapshots a fixed disk too', async () => {
    const base = await VirtualDisk.create(fresh('fixed'), { size: MiB, type: 'fixed' });
    await base.write(100, Buffer.from('fixed'));
    const child = await base.snapshot(fresh('child'));
    await child.write(102, Buffer.from('X'));
    expect((await child.read(100, 5)).toString()).toBe('fiXed');
    expect((await base.read(100, 5)).toString()).toBe('fixed');
    await child.close();
    await base.close();
  });

  it('clones many children of one base, each independent', async () => {
    const basePath = fresh('base');
    const base = await VirtualDisk.create(basePath, { size: 2 * MiB, type: 'dynamic' });
    await base.write(0, Buffer.from('golden image'));
    await base.close();
    const kids = [];
    for (let i = 0; i < 3; i++) {
      const kid = await VirtualDisk.clone(basePath, fresh(`clone${i}`));
      await kid.write(0, Buffer.from(String(i)));
      kids.push(kid);
    }
    for (let i = 0; i < 3; i++) expect((await kids[i]!.read(0, 12)).toString()).toBe(`${i}olden image`);
    await Promise.all(kids.map((k) => k.close()));
    await expect(VirtualDisk.open(basePath)).rejects.toMatchObject({ code: 'VHD_READ_ONLY', path: basePath });
    // Further clones of a hidden base only read it.
    const before = await readFile(basePath);
    const late = await VirtualDisk.clone(basePath, fresh('late'));
    expect((await readFile(basePath)).equals(before)).toBe(true);
    expect((await late.read(0, 12)).toString()).toBe('golden image');
    await late.close();
    const ro = await VirtualDisk.open(basePath, { readOnly: true });
    expect((await ro.read(0, 12)).toString()).toBe('golden image');
    expect(ro.info().hidden).toBe(true);
    await ro.close();
  });

  it('finds a parent through the relative locator after the chain moves', async () => {
    const sub = join(dir, `moved-${n++}`);
    const base = await VirtualDisk.create(join(dir, 'mv-base.vhd'), { size: MiB, type: 'dynamic' });
    await base.write(0, Buffer.from('base'));
    const child = await base.snapshot(join(dir, 'mv-child.vhd'));
    await child.close();
    await base.close();
    await mkdir(sub);
    await rename(join(dir, 'mv-base.vhd'), join(sub, 'mv-base.vhd'));
    await rename(join(dir, 'mv-child.vhd'), join(sub, 'mv-child.vhd'));
    const moved = await VirtualDisk.open(join(sub, 'mv-child.vhd'));
    expect(moved.info().parent).toBe(join(sub, 'mv-base.vhd'));
    expect((await moved.read(0, 4)).toString()).toBe('base');
    await moved.close();
  });
});

describe('chain faults', () => {
  it('limits chains to 30 disks: snapshot refuses the 31st, open refuses a longer chain', async () => {
    let disk = await VirtualDisk.create(fresh('deep'), { size: MiB, type: 'dynamic' });
    const all = [disk];
    for (let i = 1; i < 30; i++) {
      disk = await disk.snapshot(fresh('deep'));
      all.push(disk);
    }
    expect(disk.info().chainDepth).toBe(30);
    await expect(disk.snapshot(fresh('deep'))).rejects.toMatchObject({ code: 'VHD_CHAIN_TOO_DEEP', path: disk.path });
    for (const d of all) await d.close();
    // Build a 31st layer by hand, as another tool might.
    const leaf = fresh('deep');
    await writeNewImage(leaf, { size: MiB, type: 'differencing', blockSize: 2 * MiB, parent: { path: disk.path, uuid: await uuidOf(disk.path), timestamp: 0 } });
    await expect(VirtualDisk.open(leaf)).rejects.toMatchObject({ code: 'VHD_CHAIN_TOO_DEEP' });
  }, 30_000);

  it('VHD_PARENT_MISSING when no locator names an existing file', async () => {
    const basePath = fresh('gone');
    await (await VirtualDisk.create(basePath, { size: MiB, type: 'dynamic' })).close();
    const childPath = fresh('orphan');
    await (await VirtualDisk.clone(basePath, childPath)).close();
    await rm(basePath);
    await expect(VirtualDisk.open(childPath)).rejects.toMatchObject({ code: 'VHD_PARENT_MISSING', path: childPath });
  });

  it('VHD_PARENT_MISMATCH when the parent file is another disk', async () => {
    const basePath = fresh('swap');
    await (await VirtualDisk.create(basePath, { size: MiB, type: 'dynamic' })).close();
    const childPath = fresh('child');
    await (await VirtualDisk.clone(basePath, childPath)).close();
    await rm(basePath);
    await (await VirtualDisk.create(basePath, { size: MiB, type: 'dynamic' })).close();
    await expect(VirtualDisk.open(childPath)).rejects.toMatchObject({ code: 'VHD_PARENT_MISMATCH', path: childPath });
  });

  it('VHD_PARENT_CYCLE when a disk is its own ancestor', async () => {
    const path = fresh('cycle');
    await writeNewImage(path, { size: MiB, type: 'differencing', blockSize: 2 * MiB, parent: { path, uuid: '00000000-0000-0000-0000-000000000001', timestamp: 0 } });
    const file = await readFile(path);
    const header = decodeHeader(file.subarray(512, 1536), path);
    await writeFile(path, Buffer.concat([file.subarray(0, 512), encodeHeader({ ...header, parentUuid: await uuidOf(path) }), file.subarray(1536)]));
    await expect(VirtualDisk.open(path)).rejects.toMatchObject({ code: 'VHD_PARENT_CYCLE', path });
  });
});
