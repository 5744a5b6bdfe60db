import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk, XenError } from '../../lib/index.js';
import { decodeFooter, encodeFooter } from '../../lib/vhd/footer.js';
import { decodeHeader } from '../../lib/vhd/header.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (name = 'bad'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-bad-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A dynamic disk with one block written, as bytes. */
async function sample(type: 'dynamic' | 'fixed' = 'dynamic'): Promise<{ path: string; file: Buffer }> {
  const path = fresh();
  const disk = await VirtualDisk.create(path, { size: 4 * MiB, type });
  await disk.write(MiB, Buffer.from('data'));
  await disk.close();
  return { path, file: await readFile(path) };
}

async function expectCode(path: string, code: string): Promise<void> {
  const err = await VirtualDisk.open(path).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(XenError);
  expect(err).toMatchObject({ code, path });
  expect((err as Error).message).toContain(path);
}

describe('bad VHD input gives a VHD_ code and the path', () => {
  it('VHD_TRUNCATED: a file shorter than a footer, a fixed disk missing data, a sparse disk cut short', async () => {
    const tiny = fresh();
    await writeFile(tiny, Buffer.alloc(100));
    await expectCode(tiny, 'VHD_TRUNCATED');

    const fixed = await sample('fixed');
    await writeFile(fixed.path, fixed.file.subarray(fixed.file.length - 512));
    await expectCode(fixed.path, 'VHD_TRUNCATED');

    const dyn = await sample();
    // Keep the footer copy and the header only, then a footer: the BAT lies past the end.
    await writeFile(dyn.path, Buffer.concat([dyn.file.subarray(0, 1536), dyn.file.subarray(dyn.file.length - 512)]));
    await expectCode(dyn.path, 'VHD_TRUNCATED');
  });

  it('VHD_BAD_CHECKSUM for a flipped byte in the footer or the header', async () => {
    const a = await sample();
    a.file[a.file.length - 512 + 70] ^= 0x01;
    await writeFile(a.path, a.file);
    await expectCode(a.path, 'VHD_BAD_CHECKSUM');

    const b = await sample();
    b.file[512 + 30] ^= 0x80;
    await writeFile(b.path, b.file);
    await expectCode(b.path, 'VHD_BAD_CHECKSUM');
  });

  it('VHD_BAD_FOOTER for a file that is no VHD, VHD_BAD_HEADER for a missing cxsparse', async () => {
    const raw = fresh();
    await writeFile(raw, Buffer.alloc(4096, 7));
    await expectCode(raw, 'VHD_BAD_FOOTER');

    const b = await sample();
    b.file.write('xxsparse', 512, 'latin1');
    await writeFile(b.path, b.file);
    await expectCode(b.path, 'VHD_BAD_HEADER');
  });

  it('VHD_BAD_BAT for a BAT entry pointing past the end of the file', async () => {
    const a = await sample();
    const header = decodeHeader(a.file.subarray(512, 1536), a.path);
    a.file.writeUInt32BE(0x00ff_0000, Number(header.tableOffset) + 4);
    await writeFile(a.path, a.file);
    await expectCode(a.path, 'VHD_BAD_BAT');
  });

  it('VHD_BAD_CHECKSUM for a batmap that disagrees with its checksum', async () => {
    const a = await sample();
    const header = decodeHeader(a.file.subarray(512, 1536), a.path);
    a.file[Number(header.tableOffset) + 1024] ^= 0x80;
    await writeFile(a.path, a.file);
    await expectCode(a.path, 'VHD_BAD_CHECKSUM');
  });

  it('VHD_TOO_LARGE for a size over 2040 GiB, on create and on open', async () => {
    const path = fresh();
    await expect(VirtualDisk.create(path, { size: 2041 * 1024 ** 3, type: 'dynamic' })).rejects.toMatchObject({ code: 'VHD_TOO_LARGE' });
    const a = await sample('fixed');
    const footer = decodeFooter(a.file.subarray(a.file.length - 512), a.path);
    await writeFile(a.path, Buffer.concat([a.file.subarray(0, a.file.length - 512), encodeFooter({ ...footer, currentSize: 2041n * 1024n ** 3n })]));
    await expectCode(a.path, 'VHD_TOO_LARGE');
  });

  it('ENOENT for a file that does not exist', async () => {
    const path = fresh();
    await expect(VirtualDisk.open(path)).rejects.toMatchObject({ code: 'ENOENT', path });
  });

  it('never leaves a footer that reads as valid after a cut in the middle of the file', async () => {
    const a = await sample();
    await truncate(a.path, a.file.length - 1000);
    const err = await VirtualDisk.open(a.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenError);
    expect((err as XenError).code).toMatch(/^VHD_/);
  });
});
