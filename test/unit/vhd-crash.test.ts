/**
 * Crash safety, proved exhaustively: each scenario runs once to count the operations that
 * persist something (writes, flushes, truncations), then once per N with a file layer that
 * lets N of them through and "kills the process" at the next one. Each time, the image must
 * open (after repair() where the footer was being moved), every sector must read as its old or
 * its new content, repair() must leave check() clean, and the disk must take new writes.
 *
 * Three ways of dying: `throw` (the operation fails, the engine's error paths run), `drop`
 * (the engine carries on but nothing reaches the file any more, as after kill -9) and `tear`
 * (as `throw`, but a large write is cut at a 4 KiB boundary of the file: its first page lands).
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { type ImportDiskOptions, type OpenDiskOptions, VirtualDisk, XenError } from '../../lib/index.js';
import { FaultyFiles, SimulatedCrash } from '../../lib/vhd/faulty-file.js';
import { type VhdFiles, internalOptions } from '../../lib/vhd/files.js';

const MiB = 1024 * 1024;
let root: string;
let n = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'xenode-vhd-crash-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function openWith(path: string, files: VhdFiles, readOnly = false): Promise<VirtualDisk> {
  return VirtualDisk.open(path, { readOnly, [internalOptions]: { files } } as OpenDiskOptions);
}

/** A recognisable pattern: no two sectors of the test disks alike. */
function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 131 + i * 7 + (i >> 9) * 13) & 0xff;
  return b;
}

async function readAll(disk: VirtualDisk): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let at = 0; at < disk.size; at += 8 * MiB) parts.push(await disk.read(at, Math.min(8 * MiB, disk.size - at)));
  return Buffer.concat(parts);
}

/**
 * Sector indices where `actual` matches none of the `states` the disk went through
 * (bytes past the end of a smaller state read as zeros).
 */
function strangeSectors(actual: Buffer, states: Buffer[]): number[] {
  const bad: number[] = [];
  if (states.some((state) => state.equals(actual))) return bad;
  const sector = (b: Buffer, s: number) => {
    const part = b.subarray(s * 512, s * 512 + 512);
    return part.length === 512 ? part : Buffer.concat([part, Buffer.alloc(512 - part.length)]);
  };
  for (let s = 0; s < actual.length / 512; s++) {
    const a = sector(actual, s);
    if (!states.some((state) => a.equals(sector(state, s)))) bad.push(s);
  }
  return bad;
}

type Files = Map<string, Buffer>;

async function saveDir(dir: string): Promise<Files> {
  const out: Files = new Map();
  for (const name of await readdir(dir)) out.set(name, await readFile(join(dir, name)));
  return out;
}

async function restoreDir(dir: string, files: Files): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  for (const [name, data] of files) await writeFile(join(dir, name), data);
}

/** Opens read-only, repairing first if the image does not open. */
async function openAfterCrash(path: string): Promise<{ disk: VirtualDisk; repaired: boolean }> {
  try {
    return { disk: await VirtualDisk.open(path, { readOnly: true }), repaired: false };
  } catch (err) {
    if (!(err instanceof XenError)) throw err;
    const report = await VirtualDisk.repair(path);
    expect(report.actions.length, `repair of ${path} after ${err.code}`).toBeGreaterThan(0);
    return { disk: await VirtualDisk.open(path, { readOnly: true }), repaired: true };
  }
}

interface Scenario {
  /** Creates the starting images in `dir`. */
  setup(dir: string): Promise<void>;
  /**
   * The operation under test, through `files`; must close what it opens. An operation made of
   * several steps calls `step()` between them: a crash may show the state after any of them.
   */
  act(dir: string, files: VhdFiles, step?: () => Promise<void>): Promise<void>;
  /** Image files to read and compare after a crash: the disks whose content must survive. */
  watch: string[];
  /** Whether a crash may leave an image that only opens after repair(). */
  mayNeedRepair: boolean;
  /** The content of each watched disk a crash may show, besides before and after (coalesce). */
  afterContent?: (dir: string) => Promise<Map<string, Buffer>>;
}

interface Figures {
  crashPoints: number;
  repairs: number;
  /** Crash points where the interrupted write was torn (tear mode). */
  torn: number;
}

type Mode = 'throw' | 'drop' | 'tear';

async function contents(dir: string, names: string[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of names) {
    const path = join(dir, name);
    const disk = await VirtualDisk.open(path, { readOnly: true }).catch(() => undefined);
    if (!disk) continue;
    out.set(name, await readAll(disk));
    await disk.close();
  }
  return out;
}

/** Runs `scenario` crashing at every persisting operation; returns how many there were. */
async function everyCrashPoint(scenario: Scenario, mode: Mode): Promise<Figures> {
  const dir = join(root, `s${n++}`);
  await mkdir(dir);
  await scenario.setup(dir);
  const start = await saveDir(dir);
  const before = await contents(dir, scenario.watch);

  const counter = new FaultyFiles();
  const steps: Array<Map<string, Buffer>> = [];
  await scenario.act(dir, counter, async () => {
    steps.push(await contents(dir, scenario.watch));
  });
  const total = counter.operations;
  const after = scenario.afterContent ? await scenario.afterContent(dir) : await contents(dir, scenario.watch);

  let repairs = 0;
  let torn = 0;
  for (let crashAfter = 0; crashAfter <= total; crashAfter++) {
    await restoreDir(dir, start);
    const files = new FaultyFiles({ crashAfter, mode: mode === 'drop' ? 'drop' : 'throw', tear: mode === 'tear' });
    const outcome = await scenario.act(dir, files).then(
      () => 'done',
      (err: unknown) => err,
    );
    const where = `crash after ${crashAfter}/${total} operations (${mode}); last: ${files.log.at(-1) ?? 'none'}`;
    if (files.torn) torn++;
    if (mode !== 'drop' && crashAfter < total) expect(outcome, where).toBeInstanceOf(SimulatedCrash);
    else expect(outcome, where).toBe('done');

    for (const name of scenario.watch) {
      const path = join(dir, name);
      if (!(await readdir(dir)).includes(name)) {
        expect(before.has(name), `${where}: ${name} vanished`).toBe(false);
        continue;
      }
      const { disk, repaired } = await openAfterCrash(path);
      if (repaired) {
        repairs++;
        expect(scenario.mayNeedRepair, `${where}: ${name} needed repair`).toBe(true);
      }
      const actual = await readAll(disk);
      await disk.close();
      const states = [before, ...steps, after].flatMap((m) => m.get(name) ?? []);
      expect(states.some((st) => st.length === actual.length), `${where}: ${name} has size ${actual.length}`).toBe(true);
      expect(strangeSectors(actual, states), `${where}: sectors of ${name} that are neither old nor new`).toEqual([]);
    }
    for (const name of (await readdir(dir)).filter((f) => f.endsWith('.vhd'))) {
      const path = join(dir, name);
      await VirtualDisk.repair(path).catch((err: unknown) => {
        throw new Error(`${where}: repair of ${name} failed: ${String(err)}`);
      });
      expect(await VirtualDisk.check(path), `${where}: ${name} after repair`).toEqual([]);
    }
    // Still a working disk: a write that allocates, read back.
    const leafName = scenario.watch.filter((w) => w !== 'base.vhd').at(-1) ?? 'base.vhd';
    const leafPath = join(dir, (await readdir(dir)).includes(leafName) ? leafName : 'base.vhd');
    const leaf = await VirtualDisk.open(leafPath, { readOnly: false }).catch(() => undefined);
    if (leaf) {
      await leaf.write(leaf.size - 1024, Buffer.from('still works'));
      expect((await leaf.read(leaf.size - 1024, 11)).toString()).toBe('still works');
      await leaf.close();
      expect(await VirtualDisk.check(leafPath)).toEqual([]);
    }
  }
  return { crashPoints: total, repairs, torn };
}

async function makeDynamic(path: string, size: number, writes: Array<[number, number]>): Promise<void> {
  const disk = await VirtualDisk.create(path, { size, type: 'dynamic' });
  for (const [at, len] of writes) await disk.write(at, pattern(len, at / 512));
  await disk.close();
}

const scenarios: Record<string, Scenario> = {
  'allocating write (partial sectors, across a block boundary)': {
    watch: ['base.vhd'],
    mayNeedRepair: true,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 8 * MiB, [[MiB, 8192]]),
    async act(dir, files, step) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        await disk.write(2 * MiB - 1000, pattern(9000, 99));
        await step?.();
        await disk.write(6 * MiB + 100, pattern(300, 98));
      } finally {
        await disk.close();
      }
    },
  },
  'batched write over four blocks (three new, one existing; one BAT write, one footer move)': {
    watch: ['base.vhd'],
    mayNeedRepair: true,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 16 * MiB, [[3 * MiB, 8192], [9 * MiB, 4096]]),
    async act(dir, files, step) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        // Blocks 0 (partly), 1 and 2 are new, block 3 exists: one call, one batch.
        await disk.write(MiB + 512, pattern(7 * MiB - 1024, 77));
        await step?.();
        // Whole blocks, as import and convert write them: two new, the second full.
        await disk.write(10 * MiB, pattern(4 * MiB, 78));
      } finally {
        await disk.close();
      }
    },
  },
  'import over an existing disk (temporary image, then rename)': {
    watch: ['base.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 8 * MiB, [[0, 4096], [5 * MiB, MiB]]),
    async act(dir, files) {
      // Half data, half zero blocks: the zero ones stay unallocated.
      const blocks = [pattern(2 * MiB, 60), Buffer.alloc(2 * MiB), pattern(2 * MiB, 61), Buffer.alloc(2 * MiB)];
      await VirtualDisk.import(join(dir, 'base.vhd'), Readable.from(blocks), {
        type: 'dynamic',
        size: 8 * MiB,
        [internalOptions]: { files },
      } as ImportDiskOptions);
    },
  },
  'overwrite, filling a block (bitmap and batmap updates)': {
    watch: ['base.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 4 * MiB, [[MiB, 4096], [3 * MiB, 512]]),
    async act(dir, files, step) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        await disk.write(MiB + 512, pattern(1024, 7));
        await step?.();
        await disk.write(0, pattern(2 * MiB, 8));
        await disk.flush();
      } finally {
        await disk.close();
      }
    },
  },
  'snapshot (hidden flag, then the child)': {
    watch: ['base.vhd', 'child.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 4 * MiB, [[0, 4096], [3 * MiB, 512]]),
    async act(dir, files) {
      const base = await openWith(join(dir, 'base.vhd'), files);
      try {
        const child = await base.snapshot(join(dir, 'child.vhd'));
        await child.close();
      } finally {
        await base.close();
      }
    },
  },
  'clone of a base (hidden flag, then the child)': {
    watch: ['base.vhd', 'child.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 4 * MiB, [[0, 4096], [3 * MiB, 512]]),
    async act(dir, files) {
      const child = await VirtualDisk.clone(join(dir, 'base.vhd'), join(dir, 'child.vhd'), { [internalOptions]: { files } });
      await child.close();
    },
  },
  'resize of a dynamic disk within its BAT': {
    watch: ['base.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 4 * MiB, [[MiB, 4096]]),
    async act(dir, files) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        await disk.resize(20 * MiB);
      } finally {
        await disk.close();
      }
    },
  },
  'resize of a dynamic disk that moves its BAT': {
    watch: ['base.vhd'],
    mayNeedRepair: false,
    setup: (dir) => makeDynamic(join(dir, 'base.vhd'), 4 * MiB, [[MiB, 4096], [3 * MiB, MiB]]),
    async act(dir, files) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        await disk.resize(300 * MiB);
      } finally {
        await disk.close();
      }
    },
  },
  'resize of a fixed disk': {
    watch: ['base.vhd'],
    mayNeedRepair: false,
    async setup(dir) {
      const disk = await VirtualDisk.create(join(dir, 'base.vhd'), { size: MiB, type: 'fixed' });
      await disk.write(0, pattern(MiB, 3));
      await disk.close();
    },
    async act(dir, files) {
      const disk = await openWith(join(dir, 'base.vhd'), files);
      try {
        await disk.resize(3 * MiB);
      } finally {
        await disk.close();
      }
    },
  },
  'coalesce of a child into its parent': {
    watch: ['base.vhd', 'child.vhd'],
    mayNeedRepair: true,
    async setup(dir) {
      await makeDynamic(join(dir, 'base.vhd'), 8 * MiB, [[0, 8192], [5 * MiB, 4096]]);
      const child = await VirtualDisk.clone(join(dir, 'base.vhd'), join(dir, 'child.vhd'));
      await child.write(4096, pattern(8192, 40));
      await child.write(3 * MiB - 512, pattern(2048, 41));
      await child.write(6 * MiB, pattern(512, 42));
      await child.close();
    },
    async act(dir, files) {
      const child = await openWith(join(dir, 'child.vhd'), files);
      try {
        await child.coalesce();
      } finally {
        await child.close();
      }
    },
    // The parent may hold, sector by sector, its old data or the child's: the child's full
    // content is the "new" one for both.
    afterContent: async (dir) => {
      const child = (await contents(dir, ['child.vhd'])).get('child.vhd') as Buffer;
      return new Map([
        ['base.vhd', child],
        ['child.vhd', child],
      ]);
    },
  },
};

describe('crash at every persisting operation', () => {
  const figures: Record<string, Figures> = {};
  afterAll(() => {
    // The figures the issue asks for: how many crash points each scenario exercised.
    const line = ([k, f]: [string, Figures]) => `${k}: ${f.crashPoints} crash points, ${f.repairs} needed repair${f.torn ? `, ${f.torn} torn writes` : ''}`;
    console.info(Object.entries(figures).map(line).join('\n'));
  });

  for (const [name, scenario] of Object.entries(scenarios)) {
    for (const mode of ['throw', 'drop', 'tear'] as const) {
      // Snapshot and import put a new file in place (link, rename) and then open it: once that
      // is dropped, the engine cannot carry on as if it had happened (the file is not there).
      // throw and tear cover every crash point of theirs, directory changes included.
      if (mode === 'drop' && (name.startsWith('snapshot') || name.startsWith('clone') || name.startsWith('import'))) continue;
      it(`${name} [${mode}]`, async () => {
        const f = await everyCrashPoint(scenario, mode);
        figures[`${name} [${mode}]`] = f;
        expect(f.crashPoints).toBeGreaterThan(2);
        if (!scenario.mayNeedRepair) expect(f.repairs).toBe(0);
      }, 120_000);
    }
  }

  it('repair crashed at every persisting operation, then run again, mends the image', async () => {
    const dir = join(root, `repair${n++}`);
    await mkdir(dir);
    const path = join(dir, 'base.vhd');
    await makeDynamic(path, 8 * MiB, [[0, 4096], [3 * MiB, 8192]]);
    const expected = (await contents(dir, ['base.vhd'])).get('base.vhd') as Buffer;
    // A crash while a block was added: the end footer lost, the batmap behind the bitmaps.
    const image = await readFile(path);
    const damaged = Buffer.from(image.subarray(0, image.length - 200));
    await writeFile(path, damaged);
    const counter = new FaultyFiles();
    await VirtualDisk.repair(path, { [internalOptions]: { files: counter } });
    expect(await VirtualDisk.check(path)).toEqual([]);
    const total = counter.operations;
    expect(total).toBeGreaterThan(1);
    for (let crashAfter = 0; crashAfter < total; crashAfter++) {
      for (const tear of [false, true]) {
        await writeFile(path, damaged);
        const files = new FaultyFiles({ crashAfter, tear });
        await expect(VirtualDisk.repair(path, { [internalOptions]: { files } }), `crash after ${crashAfter}`).rejects.toBeInstanceOf(SimulatedCrash);
        // Checking goes through the same layer, and reports rather than fails.
        expect(Array.isArray(await VirtualDisk.check(path, { [internalOptions]: { files: new FaultyFiles() } }))).toBe(true);
        await VirtualDisk.repair(path);
        expect(await VirtualDisk.check(path), `crash after ${crashAfter}${tear ? ' (torn)' : ''}`).toEqual([]);
        expect((await contents(dir, ['base.vhd'])).get('base.vhd')?.equals(expected)).toBe(true);
      }
    }
  });

  it('coalesce re-run after a crash finishes the job', async () => {
    const s = scenarios['coalesce of a child into its parent'] as Scenario;
    const dir = join(root, `rerun${n++}`);
    await mkdir(dir);
    await s.setup(dir);
    const expected = (await contents(dir, ['child.vhd'])).get('child.vhd') as Buffer;
    const files = new FaultyFiles({ crashAfter: 5 });
    await expect(s.act(dir, files)).rejects.toBeInstanceOf(SimulatedCrash);
    await VirtualDisk.repair(join(dir, 'base.vhd'));
    await s.act(dir, new FaultyFiles());
    expect((await contents(dir, ['base.vhd'])).get('base.vhd')?.equals(expected)).toBe(true);
  });
});
