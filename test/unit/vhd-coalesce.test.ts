/** coalesce(): the child's own sectors go into the parent, which then reads as the child. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CoalesceProgress, VirtualDisk, XenError } from '../../lib/index.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (name = 'c'): string => join(dir, `${name}-${n++}.vhd`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-coalesce-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

async function content(path: string): Promise<Buffer> {
  const d = await VirtualDisk.open(path, { readOnly: true });
  try {
    return await d.read(0, d.size);
  } finally {
    await d.close();
  }
}

/** A base with data and a child with its own writes: partial sectors, a full block, a new block. */
async function chain(type: 'dynamic' | 'fixed' = 'dynamic') {
  const basePath = fresh('base');
  const base = await VirtualDisk.create(basePath, { size: 8 * MiB, type });
  await base.write(0, pattern(3 * MiB, 1));
  await base.write(7 * MiB, pattern(4096, 2));
  await base.close();
  const childPath = fresh('child');
  const child = await VirtualDisk.clone(basePath, childPath);
  await child.write(100, pattern(1000, 3));
  await child.write(2 * MiB, pattern(2 * MiB, 4));
  await child.write(5 * MiB + 512, pattern(512, 5));
  return { basePath, childPath, child };
}

describe('coalesce()', () => {
  it('copies exactly the child sectors into the parent, reporting progress', async () => {
    const { basePath, child } = await chain();
    const expected = await child.read(0, child.size);
    const progress: CoalesceProgress[] = [];
    const result = await child.coalesce({ onProgress: (p) => progress.push(p) });
    // 100..1100 covers sectors 0-2; a whole block; one sector.
    expect(result).toEqual({ parent: basePath, blocks: 3, bytesCopied: 3 * 512 + 2 * MiB + 512 });
    expect(progress.map((p) => p.blocksDone)).toEqual([1, 2, 3]);
    expect(progress.every((p) => p.blocksTotal === 3)).toBe(true);
    expect(progress.at(-1)?.bytesCopied).toBe(result.bytesCopied);
    expect((await child.read(0, child.size)).equals(expected)).toBe(true);
    await child.close();
    expect((await content(basePath)).equals(expected)).toBe(true);
    expect(await VirtualDisk.check(basePath)).toEqual([]);
  });

  it('coalesces into a fixed parent, and into the middle of a chain', async () => {
    const fixed = await chain('fixed');
    const expectedFixed = await fixed.child.read(0, fixed.child.size);
    await fixed.child.coalesce();
    await fixed.child.close();
    expect((await content(fixed.basePath)).equals(expectedFixed)).toBe(true);

    const { basePath, childPath, child } = await chain();
    const baseBefore = await content(basePath);
    const leaf = await child.snapshot(fresh('leaf'));
    await leaf.write(6 * MiB, pattern(4096, 9));
    const expected = await leaf.read(0, leaf.size);
    await leaf.coalesce();
    await leaf.close();
    await child.close();
    expect((await content(childPath)).equals(expected)).toBe(true);
    expect((await content(basePath)).equals(baseBefore)).toBe(true);
  });

  it('grows the parent first when the child was grown', async () => {
    const { basePath, child } = await chain();
    await child.resize(12 * MiB);
    await child.write(11 * MiB, Buffer.from('past the parent'));
    const expected = await child.read(0, child.size);
    await child.coalesce();
    await child.close();
    const after = await content(basePath);
    expect(after.length).toBe(12 * MiB);
    expect(after.equals(expected)).toBe(true);
  });

  it('stops on abort, and a second run finishes the job', async () => {
    const { basePath, child } = await chain();
    const expected = await child.read(0, child.size);
    const pre = new AbortController();
    pre.abort();
    await expect(child.coalesce({ signal: pre.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const ac = new AbortController();
    const err = await child.coalesce({ signal: ac.signal, onProgress: (p) => p.blocksDone === 1 && ac.abort() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect((await child.read(0, child.size)).equals(expected)).toBe(true);
    await child.coalesce();
    await child.close();
    expect((await content(basePath)).equals(expected)).toBe(true);
  });

  it('refuses a disk without parent, bad options and a closed disk', async () => {
    const disk = await VirtualDisk.create(fresh(), { size: MiB, type: 'dynamic' });
    const err = await disk.coalesce().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'VHD_NOT_DIFFERENCING', path: disk.path });
    await disk.close();
    const { child } = await chain();
    await expect(child.coalesce({ onProgress: 5 as never })).rejects.toBeInstanceOf(TypeError);
    await child.close();
    await expect(child.coalesce()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
  });
});
