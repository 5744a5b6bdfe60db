/**
 * The fast path (batched writes, in-memory snapshots, raw images, import/convert) and the
 * maintenance operations (resize, coalesce, check, the file layer of the crash tests) used
 * together.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConvertDiskOptions, type ImportDiskOptions, type OpenDiskOptions, VirtualDisk, XenError } from '../../lib/index.js';
import { FaultyFiles } from '../../lib/vhd/faulty-file.js';
import { internalOptions } from '../../lib/vhd/files.js';

const MiB = 1024 * 1024;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-merged-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fast path and maintenance together', () => {
  it('sends every file operation of snapshot, import and convert through the file layer', async () => {
    const files = new FaultyFiles();
    const internal = { [internalOptions]: { files } };
    await VirtualDisk.import(join(dir, 'imp.vhd'), Readable.from([Buffer.alloc(2 * MiB, 1), Buffer.alloc(2 * MiB)]), { type: 'dynamic', size: 4 * MiB, ...internal } as ImportDiskOptions);
    expect(files.log.some((l) => l.startsWith('rename imp.vhd'))).toBe(true);
    const disk = await VirtualDisk.open(join(dir, 'imp.vhd'), internal as OpenDiskOptions);
    const child = await disk.snapshot(join(dir, 'imp-child.vhd'));
    expect(files.log.some((l) => l.startsWith('link imp-child.vhd'))).toBe(true);
    const before = files.operations;
    await child.write(0, Buffer.alloc(4096, 2)); // the child's handle is the layer's too
    expect(files.operations).toBeGreaterThan(before);
    await child.close();
    await disk.close();
    await VirtualDisk.convert(join(dir, 'imp-child.vhd'), join(dir, 'flat.raw'), { type: 'raw', ...internal } as ConvertDiskOptions);
    expect(files.log.some((l) => l.startsWith('rename flat.raw'))).toBe(true);
  });

  it('resizes a raw image: it grows with zeros and refuses to shrink; check() finds nothing', async () => {
    const disk = await VirtualDisk.create(join(dir, 'r.raw'), { size: MiB, type: 'raw' });
    await disk.write(0, Buffer.from('raw'));
    await disk.resize(3 * MiB);
    expect(disk.size).toBe(3 * MiB);
    expect((await stat(join(dir, 'r.raw'))).size).toBe(3 * MiB);
    expect((await disk.read(2 * MiB, 4)).equals(Buffer.alloc(4))).toBe(true);
    await expect(disk.resize(MiB)).rejects.toMatchObject({ code: 'VHD_SHRINK_LOSES_DATA' });
    expect(await disk.check()).toEqual([]);
    expect((await disk.read(0, 3)).toString()).toBe('raw');
    await disk.close();
  });

  it('grows a fresh snapshot child (shared unused BAT), then writes across blocks and coalesces', async () => {
    const base = await VirtualDisk.create(join(dir, 'g.vhd'), { size: 4 * MiB, type: 'dynamic' });
    await base.write(MiB, Buffer.alloc(MiB, 7));
    const child = await base.snapshot(join(dir, 'g-child.vhd'));
    const other = await VirtualDisk.create(join(dir, 'g-other.vhd'), { size: 4 * MiB, type: 'dynamic' });
    await child.resize(400 * MiB); // moves the BAT; reload() gives the child a BAT of its own
    await child.write(3 * MiB, Buffer.alloc(6 * MiB, 9)); // one batch over four new blocks of the child
    expect(other.info().allocatedBytes).toBe(0); // the shared table was not changed
    expect((await child.read(MiB, 4)).equals(Buffer.alloc(4, 7))).toBe(true);
    expect(await child.check()).toEqual([]);
    const result = await child.coalesce();
    expect(result.bytesCopied).toBe(6 * MiB);
    expect((await child.read(3 * MiB, 6 * MiB)).equals(Buffer.alloc(6 * MiB, 9))).toBe(true);
    await other.close();
    await child.close();
    await base.close();
    const parent = await VirtualDisk.open(join(dir, 'g.vhd'), { readOnly: true });
    expect(parent.size).toBe(400 * MiB);
    expect((await parent.read(3 * MiB, 6 * MiB)).equals(Buffer.alloc(6 * MiB, 9))).toBe(true);
    expect((await parent.read(MiB, 4)).equals(Buffer.alloc(4, 7))).toBe(true);
    await parent.close();
    expect(await VirtualDisk.check(join(dir, 'g.vhd'))).toEqual([]);
  });

  it('refuses to resize a snapshot parent', async () => {
    const base = await VirtualDisk.create(join(dir, 'p.vhd'), { size: 4 * MiB, type: 'dynamic' });
    const child = await base.snapshot(join(dir, 'p-child.vhd'));
    await expect(base.resize(8 * MiB)).rejects.toBeInstanceOf(XenError);
    await child.close();
    await base.close();
  });
});
