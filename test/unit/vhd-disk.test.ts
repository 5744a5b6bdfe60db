import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VirtualDisk, XenError } from '../../lib/index.js';
import { decodeBatmapHeader } from '../../lib/vhd/batmap.js';
import { testBit } from '../../lib/vhd/bitmap.js';
import { decodeFooter } from '../../lib/vhd/footer.js';
import { decodeHeader } from '../../lib/vhd/header.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (name = 'd'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-disk-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A random write: offset and data inside a disk of `size` bytes. */
const writeArb = (size: number, maxLength: number) =>
  fc.integer({ min: 0, max: size - 1 }).chain((offset) =>
    fc.record({
      offset: fc.constant(offset),
      data: fc.integer({ min: 1, max: Math.min(maxLength, size - offset) }).chain((len) =>
        fc.tuple(fc.integer({ min: 1, max: 255 }), fc.constant(len)).map(([seed, l]) => Buffer.from(Buffer.alloc(l, seed).map((b, i) => (b + i * 7) & 0xff))),
      ),
    }),
  );

describe('VirtualDisk.create / open', () => {
  it('lays out a dynamic disk as blktap does: footer copy, header, 4 KiB-aligned BAT, batmap, footer', async () => {
    const path = fresh();
    const size = 5 * MiB + 512; // not a CHS multiple, not a block multiple
    const disk = await VirtualDisk.create(path, { size, type: 'dynamic' });
    await disk.close();
    const file = await readFile(path);
    const end = decodeFooter(file.subarray(file.length - 512), path);
    const copy = decodeFooter(file.subarray(0, 512), path);
    expect(copy).toEqual(end);
    expect(end.creatorApplication).toBe('tap\0');
    expect(end.currentSize).toBe(BigInt(size));
    expect(end.diskType).toBe(3);
    expect(end.dataOffset).toBe(512n);
    const header = decodeHeader(file.subarray(512, 1536), path);
    expect(header.tableOffset % 4096n).toBe(0n);
    expect(header.blockSize).toBe(2 * MiB);
    expect(header.maxTableEntries).toBe(3);
    const batmap = decodeBatmapHeader(file.subarray(Number(header.tableOffset) + 512, Number(header.tableOffset) + 1024));
    expect(batmap?.batmapSize).toBe(1);
  });

  it('reports info and reads zeros from a new disk of either type', async () => {
    for (const type of ['dynamic', 'fixed'] as const) {
      const path = fresh();
      const disk = await VirtualDisk.create(path, { size: 3 * MiB, type });
      const info = disk.info();
      expect(info).toMatchObject({ path, size: 3 * MiB, type, parent: undefined, chainDepth: 1, hidden: false });
      expect(info.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(info.allocatedBytes).toBe(type === 'fixed' ? 3 * MiB : 0);
      expect(info.blockSize).toBe(type === 'fixed' ? undefined : 2 * MiB);
      expect((await disk.read(0, 3 * MiB)).every((b) => b === 0)).toBe(true);
      await disk.close();
      await disk.close();
      await expect(disk.read(0, 1)).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    }
    expect((await stat(join(dir, `d-${n - 1}.vhd`))).size).toBe(3 * MiB + 512);
  });

  it('rejects bad arguments before touching a file', async () => {
    await expect(VirtualDisk.create(fresh(), { size: 1000, type: 'dynamic' })).rejects.toThrow(RangeError);
    await expect(VirtualDisk.create(fresh(), { size: MiB, type: 'qcow2' as 'fixed' })).rejects.toThrow(TypeError);
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: MiB, type: 'dynamic' });
    await expect(disk.read(MiB - 1, 2)).rejects.toThrow(RangeError);
    await expect(disk.write(-1, Buffer.alloc(1))).rejects.toThrow(RangeError);
    await expect(VirtualDisk.create(path, { size: MiB, type: 'dynamic', overwrite: false })).rejects.toMatchObject({ code: 'EEXIST', path });
    await expect(VirtualDisk.create(path, { size: MiB, type: 'dynamic', overwrite: 1 as unknown as boolean })).rejects.toThrow(TypeError);
    await disk.close();
  });

  it('gives a fixed disk storage for every byte (zeros written, as libvhd does), a raw one none', async () => {
    const size = 24 * MiB;
    const fixed = fresh();
    await (await VirtualDisk.create(fixed, { size, type: 'fixed' })).close();
    const st = await stat(fixed);
    expect(st.size).toBe(size + 512);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(size);
    const raw = fresh('raw');
    await (await VirtualDisk.create(raw, { size, type: 'raw' })).close();
    expect((await stat(raw)).blocks * 512).toBeLessThan(MiB);
  });

  it('stops a fixed create on abort, leaving no file and an old one untouched', async () => {
    const path = fresh();
    const ac = new AbortController();
    const creating = VirtualDisk.create(path, { size: 64 * MiB, type: 'fixed', signal: ac.signal });
    ac.abort();
    await expect(creating).rejects.toMatchObject({ name: 'AbortError' });
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    const old = await VirtualDisk.create(path, { size: MiB, type: 'dynamic' });
    await old.write(0, Buffer.from('old data'));
    await old.close();
    const again = new AbortController();
    const replacing = VirtualDisk.create(path, { size: 64 * MiB, type: 'fixed', signal: again.signal });
    again.abort();
    await expect(replacing).rejects.toMatchObject({ name: 'AbortError' });
    const kept = await VirtualDisk.open(path, { readOnly: true });
    expect((await kept.read(0, 8)).toString()).toBe('old data');
    await kept.close();
    expect((await readdir(dirname(path))).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    await expect(VirtualDisk.create(fresh(), { size: MiB, type: 'fixed', signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await expect(VirtualDisk.create(fresh(), { size: MiB, type: 'fixed', signal: 'no' as unknown as AbortSignal })).rejects.toThrow(TypeError);
  });

  it('replaces an existing file atomically by default, and keeps it with overwrite: false', async () => {
    const path = fresh();
    const old = await VirtualDisk.create(path, { size: MiB, type: 'dynamic' });
    await old.write(0, Buffer.from('old data'));
    await old.close();
    await expect(VirtualDisk.create(path, { size: 2 * MiB, type: 'fixed', overwrite: false })).rejects.toMatchObject({ code: 'EEXIST' });
    const kept = await VirtualDisk.open(path, { readOnly: true });
    expect((await kept.read(0, 8)).toString()).toBe('old data');
    await kept.close();
    const fresh2 = await VirtualDisk.create(path, { size: 2 * MiB, type: 'fixed' });
    expect(fresh2.info()).toMatchObject({ size: 2 * MiB, type: 'fixed' });
    expect((await fresh2.read(0, 8)).equals(Buffer.alloc(8))).toBe(true);
    await fresh2.close();
    expect((await readdir(dirname(path))).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses writes when open read-only', async () => {
    const path = fresh();
    await (await VirtualDisk.create(path, { size: MiB, type: 'dynamic' })).close();
    const disk = await VirtualDisk.open(path, { readOnly: true });
    const err = await disk.write(0, Buffer.alloc(1)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'VHD_READ_ONLY', path });
    await disk.close();
  });
});

describe('VirtualDisk read/write against a Buffer model', () => {
  it('handles partial sectors and writes across block boundaries', async () => {
    const path = fresh();
    const size = 6 * MiB;
    const disk = await VirtualDisk.create(path, { size, type: 'dynamic' });
    const model = Buffer.alloc(size);
    const writes: Array<[number, Buffer]> = [
      [3, Buffer.from('abc')],
      [510, Buffer.from('0123456789')],
      [2 * MiB - 5, Buffer.alloc(2 * MiB + 11, 0x5a)],
      [size - 1, Buffer.from('Z')],
      [4, Buffer.from('X')],
    ];
    for (const [offset, data] of writes) {
      await disk.write(offset, data);
      data.copy(model, offset);
    }
    expect((await disk.read(0, size)).equals(model)).toBe(true);
    expect(await disk.read(511, 3)).toEqual(model.subarray(511, 514));
    expect(disk.info().allocatedBytes).toBe(6 * MiB);
    await disk.close();
    const again = await VirtualDisk.open(path);
    expect((await again.read(0, size)).equals(model)).toBe(true);
    await again.close();
  });

  it('sets the batmap bit of a block once every sector of it is written', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'dynamic' });
    await disk.write(2 * MiB, Buffer.alloc(2 * MiB - 512, 1));
    await disk.write(0, Buffer.alloc(2 * MiB, 2));
    await disk.close();
    const file = await readFile(path);
    const header = decodeHeader(file.subarray(512, 1536), path);
    const bh = decodeBatmapHeader(file.subarray(Number(header.tableOffset) + 512));
    const map = file.subarray(Number(bh?.batmapOffset), Number(bh?.batmapOffset) + 512);
    expect(testBit(map, 0)).toBe(true);
    expect(testBit(map, 1)).toBe(false);
    // Block data is 4 KiB-aligned.
    const entry = file.readUInt32BE(Number(header.tableOffset));
    expect((entry * 512 + 512) % 4096).toBe(0);
    await (await VirtualDisk.open(path)).close();
  });

  for (const type of ['dynamic', 'fixed'] as const) {
    it(`keeps a ${type} disk equal to the model under random writes, also after reopening`, async () => {
      const size = 5 * MiB + 3 * 512;
      await fc.assert(
        fc.asyncProperty(fc.array(writeArb(size, 3 * MiB), { minLength: 1, maxLength: 12 }), async (writes) => {
          const path = fresh(type);
          const disk = await VirtualDisk.create(path, { size, type });
          const model = Buffer.alloc(size);
          for (const { offset, data } of writes) {
            await disk.write(offset, data);
            data.copy(model, offset);
          }
          expect((await disk.read(0, size)).equals(model)).toBe(true);
          await disk.flush();
          await disk.close();
          const again = await VirtualDisk.open(path, { readOnly: true });
          expect((await again.read(0, size)).equals(model)).toBe(true);
          await again.close();
          await rm(path);
        }),
        { numRuns: 15 },
      );
    }, 60_000);
  }

  it('serializes concurrent writes and reads', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'dynamic' });
    const model = Buffer.alloc(4 * MiB);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const offset = (i * 104_729) % (4 * MiB - 1000);
      const data = Buffer.alloc(1000, i + 1);
      data.copy(model, offset);
      ops.push(disk.write(offset, data));
    }
    await Promise.all(ops);
    expect((await disk.read(0, 4 * MiB)).equals(model)).toBe(true);
    await disk.close();
  });
});
