/**
 * `xenode disk …`, run as users run it (node dist/cli/main.js), plus its progress bar.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSize } from '../../lib/cli/disk.js';
import { progressBar } from '../../lib/cli/progress.js';
import { VirtualDisk } from '../../lib/index.js';
import { cliPath, run } from '../helpers/run.js';

const MiB = 1024 * 1024;
const xenode = (...args: string[]) => run(process.execPath, [cliPath, 'disk', ...args], { timeout: 30_000 });
let dir: string;
const at = (name: string) => join(dir, name);

beforeAll(async () => {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run npm run build (npm test does it in pretest)`);
  dir = await mkdtemp(join(tmpdir(), 'xenode-cli-disk-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI and returns stdout as bytes (the exported image). */
function xenodeBytes(...args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, 'disk', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

async function content(path: string): Promise<Buffer> {
  const d = await VirtualDisk.open(path, { readOnly: true });
  try {
    return await d.read(0, d.size);
  } finally {
    await d.close();
  }
}

describe('xenode disk', () => {
  it('is listed in the help, and has its own', async () => {
    expect((await run(process.execPath, [cliPath, '--help'])).stdout).toContain('disk create|info|snapshot|clone|coalesce|resize|check|repair|convert|export');
    const help = await xenode('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: xenode disk/);
  });

  it('creates, describes, snapshots, clones, resizes and coalesces, with --json', async () => {
    const created = await xenode('create', at('base.vhd'), '--size', '8M', '--json');
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ size: 8 * MiB, type: 'dynamic', parent: null, chainDepth: 1 });
    expect((await xenode('create', at('base.vhd'), '--size', '8M')).code).toBe(1); // exists, no --force
    expect(JSON.parse((await xenode('create', at('fixed.vhd'), '--size', '1M', '--type', 'fixed', '--json')).stdout)).toMatchObject({ type: 'fixed', blockSize: null });

    const base = await VirtualDisk.open(at('base.vhd'));
    await base.write(0, Buffer.from('base data'));
    await base.close();
    const snap = await xenode('snapshot', at('base.vhd'), at('snap.vhd'), '--json');
    expect(JSON.parse(snap.stdout)).toMatchObject({ type: 'differencing', parent: at('base.vhd'), chainDepth: 2 });
    const info = await xenode('info', at('base.vhd'));
    expect(info.stdout).toContain('hidden: yes');
    expect(info.stdout).toContain('size: 8388608 (8.0 MiB)');
    expect((await xenode('clone', at('base.vhd'), at('clone.vhd'))).stdout).toContain(`parent: ${at('base.vhd')}`);

    const child = await VirtualDisk.open(at('snap.vhd'));
    await child.write(4 * MiB, Buffer.from('child data'));
    await child.close();
    const resized = await xenode('resize', at('snap.vhd'), '12M', '--json');
    expect(JSON.parse(resized.stdout)).toMatchObject({ size: 12 * MiB });
    const expected = await content(at('snap.vhd'));
    const coalesced = await xenode('coalesce', at('snap.vhd'), '--json');
    expect(coalesced.code, coalesced.stderr).toBe(0);
    expect(JSON.parse(coalesced.stdout)).toEqual({ parent: at('base.vhd'), blocks: 1, bytesCopied: 512 });
    expect(coalesced.stderr).toBe(''); // no bar: stderr is not a terminal
    expect((await content(at('base.vhd'))).equals(expected)).toBe(true);
  }, 60_000);

  it('check exits 3 with the problems, repair fixes them and says how', async () => {
    const path = at('damaged.vhd');
    const disk = await VirtualDisk.create(path, { size: 4 * MiB, type: 'dynamic' });
    await disk.write(MiB, Buffer.from('x'));
    await disk.close();
    expect(await xenode('check', path)).toMatchObject({ code: 0, stdout: `${path}: no problems found\n` });
    const file = await readFile(path);
    await writeFile(path, file.subarray(0, file.length - 200));
    const check = await xenode('check', path, '--json');
    expect(check.code).toBe(3);
    expect(JSON.parse(check.stdout)).toEqual([{ path, problems: [expect.objectContaining({ code: 'VHD_BAD_FOOTER' })] }]);
    const text = await xenode('check', path);
    expect(text.stdout).toMatch(new RegExp(`^${path}: VHD_BAD_FOOTER at offset \\d+: `));
    const repair = await xenode('repair', path, '--json');
    expect(repair.code).toBe(0);
    expect(JSON.parse(repair.stdout)).toMatchObject({ path, actions: [{ code: 'VHD_BAD_FOOTER' }], problems: [] });
    expect((await xenode('repair', path)).stdout).toBe(`${path}: nothing to repair\n`);
    expect((await xenode('check', path)).code).toBe(0);
  }, 60_000);

  it('converts between raw, fixed and dynamic, and exports raw bytes to a file or stdout', async () => {
    const raw = Buffer.alloc(6 * MiB);
    raw.write('start', 0);
    raw.fill(7, 3 * MiB, 3 * MiB + 4096);
    raw.write('end', raw.length - 3);
    await writeFile(at('in.raw'), raw);
    const toDynamic = await xenode('convert', at('in.raw'), at('conv.vhd'), '-f', 'raw', '-O', 'dynamic', '--json');
    expect(toDynamic.code, toDynamic.stderr).toBe(0);
    // Chunks of zeros are not written: here only the three 2 MiB chunks with data are.
    expect(JSON.parse(toDynamic.stdout)).toMatchObject({ type: 'dynamic', size: 6 * MiB, bytesWritten: 3 * 2 * MiB });
    expect((await content(at('conv.vhd'))).equals(raw)).toBe(true);
    expect((await xenode('convert', at('conv.vhd'), at('conv-fixed.vhd'), '-O', 'fixed')).code).toBe(0);
    expect((await content(at('conv-fixed.vhd'))).equals(raw)).toBe(true);
    expect((await xenode('convert', at('conv-fixed.vhd'), at('out.raw'), '-O', 'raw')).code).toBe(0);
    expect((await readFile(at('out.raw'))).equals(raw)).toBe(true);

    expect((await xenode('export', at('conv.vhd'), at('out.raw'))).code).toBe(1); // exists
    expect((await xenode('export', at('conv.vhd'), at('out.raw'), '--force')).code).toBe(0);
    expect((await readFile(at('out.raw'))).equals(raw)).toBe(true);
    const piped = await xenodeBytes('export', at('conv.vhd'));
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout.equals(raw)).toBe(true);
  }, 60_000);

  it('exits 2 for bad command lines and 1 for failures', async () => {
    for (const args of [
      [],
      ['frob'],
      ['create', at('x.vhd')],
      ['create', at('x.vhd'), '--size', '12Q'],
      ['create', at('x.vhd'), '--size', '1M', '--type', 'sparse'],
      ['info'],
      ['snapshot', at('base.vhd')],
      ['check'],
      ['convert', at('a'), at('b')],
      ['convert', at('a'), at('b'), '-O', 'qcow2'],
      ['convert', at('a'), at('a'), '-O', 'raw'],
      ['info', at('base.vhd'), '--size', '1M'],
      ['check', at('base.vhd'), '--force'],
      ['export', at('base.vhd'), '--json'],
    ]) {
      const r = await xenode(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('Usage: xenode disk');
    }
    const missing = await xenode('info', at('missing.vhd'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^xenode: ENOENT/);
    const shrink = await xenode('resize', at('fixed.vhd'), '512K');
    expect(shrink.code).toBe(1);
    expect(shrink.stderr).toContain('VHD_SHRINK_LOSES_DATA');
  }, 90_000);

  it('reads sizes with binary suffixes', () => {
    expect(parseSize('512')).toBe(512);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('20G')).toBe(20 * 1024 ** 3);
    expect(parseSize('2TiB')).toBe(2 * 1024 ** 4);
    expect(parseSize('100mb')).toBe(100 * MiB);
    expect(() => parseSize('1.5G')).toThrow(/not a size/);
  });
});

describe('progress bar', () => {
  it('draws on a terminal and erases itself at the end', () => {
    let text = '';
    const tty = { isTTY: true, columns: 60, write: (s: string) => (text += s) };
    const bar = progressBar(tty, 'copy', 4);
    bar.update(4);
    expect(text.startsWith('\rcopy [#')).toBe(true);
    expect(text.endsWith('] 100% 4/4\u001b[K')).toBe(true);
    bar.end();
    expect(text.endsWith('\r\x1b[K')).toBe(true);
  });

  it('draws nothing on a pipe, or when disabled', () => {
    let text = '';
    const pipe = { write: (s: string) => (text += s) };
    const bar = progressBar(pipe, 'copy', 4);
    bar.update(2);
    bar.end();
    progressBar({ ...pipe, isTTY: true }, 'copy', 4, { enabled: false }).update(4);
    expect(text).toBe('');
  });
});
