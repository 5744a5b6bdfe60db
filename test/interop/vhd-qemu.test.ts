/**
 * VHD interop with qemu-img (Debian qemu-utils): qemu reads what xenode writes, and xenode
 * reads (and writes into) what qemu makes. `-f vpc` is always given: qemu probes a fixed VHD
 * as raw otherwise. qemu ignores sector bitmaps and parents, so chains are tested in unit/.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk } from '../../lib/index.js';
import { qemuImgRunner } from '../helpers/qemu-img.js';
import { requireTool } from '../helpers/tools.js';

const hasQemu = requireTool('qemu-img', undefined, { aptPackage: 'qemu-utils' });
const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (ext: string): string => join(dir, `f-${n++}.${ext}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-qemu-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const qemuImg = qemuImgRunner();

/** Deterministic bytes with whole zero blocks in between, so sparse paths are exercised. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    if (Math.floor(i / (2 * MiB)) % 2 === 1) continue;
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe.skipIf(!hasQemu)('qemu-img interop (vpc)', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    it(`qemu-img reads a ${type} VHD written by xenode as the same bytes, at the exact size`, async () => {
      const size = 7 * MiB + 1536; // neither a CHS multiple nor a block multiple
      const path = fresh('vhd');
      const disk = await VirtualDisk.create(path, { size, type });
      const data = pattern(size, 7);
      await disk.write(0, data.subarray(0, 3 * MiB + 3));
      await disk.write(5 * MiB + 11, data.subarray(5 * MiB + 11));
      const expected = await disk.read(0, size);
      await disk.close();

      const info = JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', path)) as { 'virtual-size': number; format: string };
      expect(info.format).toBe('vpc');
      expect(info['virtual-size']).toBe(size);
      const raw = fresh('raw');
      await qemuImg('convert', '-f', 'vpc', '-O', 'raw', path, raw);
      expect((await readFile(raw)).equals(expected)).toBe(true);
      await qemuImg('compare', '-f', 'vpc', '-F', 'raw', path, raw);
    });
  }

  for (const subformat of ['dynamic', 'fixed'] as const) {
    for (const forceSize of [false, true]) {
      it(`xenode reads a ${subformat} VHD made by qemu-img convert${forceSize ? ' with force_size' : ''}`, async () => {
        const size = 6 * MiB;
        const raw = fresh('raw');
        const data = pattern(size, 3);
        await writeFile(raw, data);
        const path = fresh('vhd');
        const opts = `subformat=${subformat}${forceSize ? ',force_size=on' : ''}`;
        await qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', opts, raw, path);
        const disk = await VirtualDisk.open(path, { readOnly: true });
        expect(disk.info().type).toBe(subformat);
        if (forceSize) expect(disk.size).toBe(size);
        else expect(disk.size).toBeGreaterThanOrEqual(size); // qemu rounds up to the CHS geometry
        const got = await disk.read(0, disk.size);
        expect(got.subarray(0, size).equals(data)).toBe(true);
        expect(got.subarray(size).every((b) => b === 0)).toBe(true);
        await disk.close();
      });
    }
  }

  it('a fixed VHD is fully allocated: qemu-img compare -s (strict, allocation-aware) matches a raw file', async () => {
    const size = 12 * MiB + 512;
    const path = fresh('vhd');
    const disk = await VirtualDisk.create(path, { size, type: 'fixed' });
    const expected = Buffer.alloc(size);
    let seed = 3;
    for (const at of [0, 5 * MiB - 1000, 9 * MiB + 4096, size - 700]) {
      const data = pattern(Math.min(64 * 1024, size - at), seed++);
      data.fill(0xa5, 0, 16); // never all zeros, even where the pattern has a zero block
      await disk.write(at, data);
      data.copy(expected, at);
    }
    await disk.close();
    const raw = fresh('raw');
    // writeFileSync-style: every byte of the raw file is allocated, zeros included.
    await writeFile(raw, expected);
    await qemuImg('compare', '-q', '-s', '-f', 'vpc', '-F', 'raw', path, raw);
  });

  it('a fixed VHD made by convert, by import and grown by resize is fully allocated too', async () => {
    const size = 6 * MiB;
    const data = pattern(size, 21); // blocks 1 and 3 are zero blocks: they must get storage all the same
    const src = fresh('raw');
    await writeFile(src, data);
    const converted = fresh('vhd');
    await VirtualDisk.convert(src, converted, { type: 'fixed', format: 'raw' });
    await qemuImg('compare', '-q', '-s', '-f', 'vpc', '-F', 'raw', converted, src);
    const imported = fresh('vhd');
    await VirtualDisk.import(imported, Readable.from([data]), { type: 'fixed', size });
    await qemuImg('compare', '-q', '-s', '-f', 'vpc', '-F', 'raw', imported, src);
    const grown = await VirtualDisk.open(imported);
    await grown.resize(size + 3 * MiB);
    await grown.close();
    const bigger = fresh('raw');
    await writeFile(bigger, Buffer.concat([data, Buffer.alloc(3 * MiB)]));
    await qemuImg('compare', '-q', '-s', '-f', 'vpc', '-F', 'raw', imported, bigger);
  });

  it('xenode writes into an empty dynamic VHD made by qemu-img create, and qemu reads it back', async () => {
    const path = fresh('vhd');
    await qemuImg('create', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', path, String(5 * MiB));
    const disk = await VirtualDisk.open(path);
    expect(disk.size).toBe(5 * MiB);
    const data = pattern(5 * MiB, 11);
    await disk.write(100, data.subarray(100, 4 * MiB + 7));
    const expected = await disk.read(0, 5 * MiB);
    await disk.close();
    const raw = fresh('raw');
    await qemuImg('convert', '-f', 'vpc', '-O', 'raw', path, raw);
    expect((await readFile(raw)).equals(expected)).toBe(true);
  });
});
