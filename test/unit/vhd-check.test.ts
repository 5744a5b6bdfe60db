/**
 * check() reports every problem as a record, on images too damaged to open; repair() fixes
 * what a crash leaves and says what it did, and does nothing the second time.
 */
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk, XenError } from '../../lib/index.js';
import { batmapChecksum } from '../../lib/vhd/batmap.js';
import { decodeFooter, encodeFooter } from '../../lib/vhd/footer.js';

const MiB = 1024 * 1024;
// xenode's layout for a disk of at most 128 blocks: footer copy, header, BAT at 4096, batmap
// header at 4608 and map at 5120; block storage (a 512-byte bitmap, then data) from 8192 on.
const BAT = 4096;
const BATMAP_HEADER = 4608;
const BATMAP = 5120;

let dir: string;
let n = 0;
const fresh = (name = 'c'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-check-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A dynamic disk with blocks 0 and 1 partly written and block 2 full. */
async function sample(): Promise<{ path: string; file: Buffer }> {
  const path = fresh();
  const disk = await VirtualDisk.create(path, { size: 8 * MiB, type: 'dynamic' });
  await disk.write(1000, Buffer.from('block zero'));
  await disk.write(2 * MiB + 4096, Buffer.alloc(4096, 1));
  await disk.write(4 * MiB, Buffer.alloc(2 * MiB, 2));
  await disk.close();
  return { path, file: await readFile(path) };
}

const codes = async (path: string) => (await VirtualDisk.check(path)).map((p) => p.code);

describe('check()', () => {
  it('finds nothing wrong with sound fixed, dynamic and differencing disks', async () => {
    const fixed = await VirtualDisk.create(fresh(), { size: MiB, type: 'fixed' });
    await fixed.write(0, Buffer.from('x'));
    expect(await fixed.check()).toEqual([]);
    await fixed.close();
    const { path } = await sample();
    expect(await VirtualDisk.check(path)).toEqual([]);
    const child = await VirtualDisk.clone(path, fresh('child'));
    await child.write(3 * MiB, Buffer.from('child data'));
    expect(await child.check()).toEqual([]);
    await child.close();
  });

  it('reports a damaged end footer, and that the copy at 0 can restore it', async () => {
    const a = await sample();
    a.file[a.file.length - 512 + 70] ^= 1;
    await writeFile(a.path, a.file);
    await expect(VirtualDisk.open(a.path)).rejects.toMatchObject({ code: 'VHD_BAD_CHECKSUM' });
    const problems = await VirtualDisk.check(a.path);
    expect(problems).toEqual([expect.objectContaining({ code: 'VHD_BAD_CHECKSUM', offset: a.file.length - 512, length: 512 })]);
    expect(problems[0]?.message).toContain('repair()');
  });

  it('reports a footer copy that differs from the end footer', async () => {
    const a = await sample();
    const footer = decodeFooter(a.file.subarray(0, 512), a.path);
    encodeFooter({ ...footer, hidden: true }).copy(a.file, 0);
    await writeFile(a.path, a.file);
    expect(await VirtualDisk.check(a.path)).toEqual([expect.objectContaining({ code: 'VHD_FOOTER_MISMATCH', offset: 0 })]);
  });

  it('reports a bad header checksum with its offset', async () => {
    const a = await sample();
    a.file[512 + 40] ^= 0x10;
    await writeFile(a.path, a.file);
    expect(await VirtualDisk.check(a.path)).toEqual([expect.objectContaining({ code: 'VHD_BAD_CHECKSUM', offset: 512, length: 1024 })]);
  });

  it('reports BAT entries past the end, overlapping each other and overlapping metadata, all at once', async () => {
    const a = await sample();
    const e0 = a.file.readUInt32BE(BAT);
    a.file.writeUInt32BE(0x00f0_0000, BAT + 4); // block 1 far past the end
    a.file.writeUInt32BE(e0 + 8, BAT + 8); // block 2 inside block 0's storage
    a.file.writeUInt32BE(1, BAT + 12); // block 3 on the header
    await writeFile(a.path, a.file);
    await expect(VirtualDisk.open(a.path)).rejects.toBeInstanceOf(XenError);
    const problems = await VirtualDisk.check(a.path);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'VHD_BAD_BAT', block: 1, offset: 0x00f0_0000 * 512 }),
        expect.objectContaining({ code: 'VHD_BAT_OVERLAP', block: 2 }),
        expect.objectContaining({ code: 'VHD_BAT_OVERLAP', block: 3, offset: 512 }),
      ]),
    );
    expect(problems.find((p) => p.block === 3)?.message).toContain('header');
  });

  it('reports a batmap that marks a partial block full, or lags behind a full one', async () => {
    const a = await sample();
    // Block 0 marked full (it is not), block 2 (full) not marked; checksum kept consistent.
    a.file[BATMAP] = 0x80;
    a.file.writeUInt32BE(batmapChecksum(a.file.subarray(BATMAP, BATMAP + 512)), BATMAP_HEADER + 24);
    await writeFile(a.path, a.file);
    const problems = await VirtualDisk.check(a.path);
    expect(problems.map((p) => [p.code, p.block])).toEqual([
      ['VHD_BATMAP_MISMATCH', 0],
      ['VHD_BATMAP_MISMATCH', 2],
    ]);
    expect(problems[0]?.offset).toBe(BATMAP);
  });

  it('reports a batmap checksum that does not match', async () => {
    const a = await sample();
    a.file.writeUInt32BE(0x1234, BATMAP_HEADER + 24);
    await writeFile(a.path, a.file);
    expect(await codes(a.path)).toEqual(['VHD_BAD_CHECKSUM']);
  });

  it('reports a missing parent and a parent with another UUID', async () => {
    const { path: base } = await sample();
    const childPath = fresh('child');
    await (await VirtualDisk.clone(base, childPath)).close();
    const saved = await readFile(base);
    await rm(base);
    expect(await codes(childPath)).toEqual(['VHD_PARENT_MISSING']);
    const other = await VirtualDisk.create(base, { size: 8 * MiB, type: 'dynamic' });
    await other.close();
    const problems = await VirtualDisk.check(childPath);
    expect(problems).toEqual([expect.objectContaining({ code: 'VHD_PARENT_MISMATCH', offset: 512 })]);
    expect(problems[0]?.message).toContain(decodeFooter(saved.subarray(0, 512), base).uuid);
  });

  it('reports truncated files, down to one too short for a footer', async () => {
    const a = await sample();
    await writeFile(a.path, a.file.subarray(0, 6000));
    expect(await codes(a.path)).toEqual(expect.arrayContaining(['VHD_BAD_FOOTER']));
    await writeFile(a.path, Buffer.concat([a.file.subarray(0, 2048), a.file.subarray(a.file.length - 512)]));
    expect(await codes(a.path)).toEqual(['VHD_TRUNCATED']);
    await writeFile(a.path, Buffer.alloc(100));
    expect(await VirtualDisk.check(a.path)).toEqual([expect.objectContaining({ code: 'VHD_TRUNCATED', offset: 0, length: 100 })]);
    const fixed = fresh();
    await (await VirtualDisk.create(fixed, { size: MiB, type: 'fixed' })).close();
    const bytes = await readFile(fixed);
    await writeFile(fixed, bytes.subarray(MiB - 4096));
    expect(await codes(fixed)).toEqual(['VHD_TRUNCATED']);
  });

  it('rejects bad arguments, missing files and closed disks', async () => {
    await expect(VirtualDisk.check('')).rejects.toBeInstanceOf(TypeError);
    await expect(VirtualDisk.check(fresh())).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(VirtualDisk.repair(fresh())).rejects.toMatchObject({ code: 'ENOENT' });
    const disk = await VirtualDisk.create(fresh(), { size: MiB, type: 'dynamic' });
    await disk.close();
    await expect(disk.check()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
  });
});

describe('repair()', () => {
  it('restores the end footer a crash during allocation loses, dropping unrecorded storage', async () => {
    const a = await sample();
    // What a crash after a new block's data and before its BAT entry leaves: data past the
    // last block and no footer at the end.
    await writeFile(a.path, Buffer.concat([a.file.subarray(0, a.file.length - 512), Buffer.alloc(1536, 9)]));
    await expect(VirtualDisk.open(a.path)).rejects.toMatchObject({ code: 'VHD_BAD_FOOTER' });
    const report = await VirtualDisk.repair(a.path);
    expect(report.actions).toEqual([expect.objectContaining({ code: 'VHD_BAD_FOOTER', offset: a.file.length - 512 })]);
    expect(report.actions[0]?.message).toContain('in place of 1536 bytes');
    expect(report.problems).toEqual([]);
    expect((await readFile(a.path)).equals(a.file)).toBe(true);
    expect((await VirtualDisk.repair(a.path)).actions).toEqual([]);
  });

  it('extends a file cut inside the last block, whose BAT entry was written', async () => {
    const a = await sample();
    await truncate(a.path, a.file.length - 512 - MiB);
    const report = await VirtualDisk.repair(a.path);
    expect(report.actions.map((x) => x.code)).toEqual(['VHD_BAD_FOOTER']);
    expect(report.problems).toEqual([]);
    const disk = await VirtualDisk.open(a.path);
    expect((await disk.read(1000, 10)).toString()).toBe('block zero');
    await disk.close();
  });

  it('rewrites a differing footer copy and recomputes the batmap, then has nothing to do', async () => {
    const a = await sample();
    const footer = decodeFooter(a.file.subarray(0, 512), a.path);
    encodeFooter({ ...footer, hidden: true }).copy(a.file, 0);
    a.file[BATMAP] = 0xff;
    await writeFile(a.path, a.file);
    const report = await VirtualDisk.repair(a.path);
    expect(report.actions.map((x) => x.code)).toEqual(['VHD_FOOTER_MISMATCH', 'VHD_BATMAP_MISMATCH']);
    expect(report.problems).toEqual([]);
    expect(await VirtualDisk.check(a.path)).toEqual([]);
    expect((await readFile(a.path))[BATMAP]).toBe(0x20); // block 2 only
    expect(await VirtualDisk.repair(a.path)).toEqual({ path: a.path, actions: [], problems: [] });
  });

  it('reports problems it cannot fix, and refuses a file with no footer anywhere', async () => {
    const a = await sample();
    a.file.writeUInt32BE(0x00f0_0000, BAT + 4);
    await writeFile(a.path, a.file);
    const report = await VirtualDisk.repair(a.path);
    expect(report.actions).toEqual([]);
    expect(report.problems.map((p) => p.code)).toEqual(['VHD_BAD_BAT']);

    const junk = fresh();
    await writeFile(junk, Buffer.alloc(4096, 7));
    const err = await VirtualDisk.repair(junk).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'VHD_BAD_FOOTER', path: junk });
  });
});
