/**
 * Raw images, import and convert against qemu-img (Debian qemu-utils): qemu reads what
 * xenode's convert and import make as the same bytes as the source, and xenode converts
 * what qemu makes. `-f vpc` is always given: qemu probes a fixed VHD as raw otherwise.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
const fresh = (ext: string): string => join(dir, `c-${n++}.${ext}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-convert-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const qemuImg = qemuImgRunner();

/** Data in blocks 0, 2, 3 (partly) of 2 MiB, zeros elsewhere: sparse paths get exercised. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    const block = Math.floor(i / (2 * MiB));
    if (block === 1 || (block === 3 && i % (2 * MiB) > MiB) || block > 3) continue;
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe.skipIf(!hasQemu)('qemu-img interop: raw, import, convert', () => {
  const size = 9 * MiB + 1536;
  let raw: string;
  let data: Buffer;
  beforeAll(async () => {
    raw = fresh('raw');
    data = pattern(size, 5);
    await writeFile(raw, data);
  });

  for (const type of ['dynamic', 'fixed'] as const) {
    it(`qemu-img finds a ${type} VHD converted from raw by xenode identical to the raw`, async () => {
      const path = fresh('vhd');
      await VirtualDisk.convert(raw, path, { type, format: 'raw' });
      await qemuImg('compare', '-f', 'vpc', '-F', 'raw', path, raw);
      const info = JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', path)) as { 'virtual-size': number };
      expect(info['virtual-size']).toBe(size);
    });

    it(`qemu-img finds a ${type} VHD imported by xenode from a stream identical to the raw`, async () => {
      const path = fresh('vhd');
      await VirtualDisk.import(path, createReadStream(raw, { highWaterMark: 100_000 }), { type });
      await qemuImg('compare', '-f', 'vpc', '-F', 'raw', path, raw);
    });
  }

  it('qemu-img reads a raw image written by xenode as written', async () => {
    const path = fresh('raw');
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'raw' });
    await disk.write(3, data.subarray(0, 3 * MiB));
    const expected = await disk.read(0, 4 * MiB);
    await disk.close();
    const out = fresh('raw');
    await qemuImg('convert', '-f', 'raw', '-O', 'raw', path, out);
    expect((await readFile(out)).equals(expected)).toBe(true);
  });

  for (const subformat of ['dynamic', 'fixed'] as const) {
    it(`xenode converts a ${subformat} VHD made by qemu-img to raw, fixed and dynamic with the same bytes`, async () => {
      const vhd = fresh('vhd');
      await qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${subformat},force_size=on`, raw, vhd);
      for (const type of ['raw', 'fixed', 'dynamic'] as const) {
        const out = fresh(type === 'raw' ? 'raw' : 'vhd');
        await VirtualDisk.convert(vhd, out, { type });
        await qemuImg('compare', '-f', type === 'raw' ? 'raw' : 'vpc', '-F', 'raw', out, raw);
      }
    });
  }

  it('a differencing chain flattened by convert reads in qemu as xenode reads the chain', async () => {
    const base = await VirtualDisk.create(fresh('vhd'), { size, type: 'dynamic' });
    await base.write(0, data);
    const child = await base.snapshot(fresh('vhd'));
    await child.write(2 * MiB - 5, Buffer.alloc(3 * MiB, 0x5a));
    const expectedRaw = fresh('raw');
    await writeFile(expectedRaw, await child.read(0, size));
    await child.close();
    await base.close();
    const flat = fresh('vhd');
    await VirtualDisk.convert(child.path, flat, { type: 'dynamic' });
    await qemuImg('compare', '-f', 'vpc', '-F', 'raw', flat, expectedRaw);
  });
});
