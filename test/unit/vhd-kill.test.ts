/**
 * A real kill -9: a child process writes to a dynamic VHD in a loop and is killed with
 * SIGKILL after a random number of writes, several rounds on the same image. After each
 * kill the image opens (after repair() when the kill came while a block was being added),
 * repair() leaves check() clean, and every sector reads as zeros (never written) or as a
 * sector the writer wrote for that very position.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk, XenError } from '../../lib/index.js';
import { LineProcess, projectRoot } from '../helpers/run.js';

const MiB = 1024 * 1024;
const ROUNDS = 8;
const writer = join(projectRoot, 'test', 'helpers', 'vhd-writer.mjs');
let dir: string;

beforeAll(async () => {
  if (!existsSync(join(projectRoot, 'dist', 'index.js'))) throw new Error('dist/ is missing: run npm run build (npm test does it in pretest)');
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-kill-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Sectors that are neither zero nor a stamp the writer makes for their own position. */
const ZERO_SECTOR = Buffer.alloc(512);

function foreignSectors(data: Buffer, firstSector: number): number[] {
  const bad: number[] = [];
  for (let k = 0; k < data.length / 512; k++) {
    const n = firstSector + k;
    const s = data.subarray(k * 512, k * 512 + 512);
    if (s.equals(ZERO_SECTOR)) continue;
    const ok = s.toString('latin1', 0, 4) === 'XNOD' && s.readUInt32BE(4) === n && s.every((b, i) => i < 12 || b === ((n * 7 + s.readUInt32BE(8) * 13 + i) & 0xff));
    if (!ok) bad.push(n);
  }
  return bad;
}

describe('kill -9 while writing', () => {
  it(`leaves an image that opens, passes check and holds no foreign data (${ROUNDS} rounds)`, async () => {
    const path = join(dir, 'disk.vhd');
    await (await VirtualDisk.create(path, { size: 512 * MiB, type: 'dynamic' })).close();
    let generation = 1;
    let repairs = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const child = new LineProcess(process.execPath, [writer, path, String(1000 + round)], { env: { GENERATION: String(generation) }, timeout: 60_000 });
      // Kill after a random number of completed writes: the kill lands wherever the writer is then.
      const writes = 1 + Math.floor(Math.random() * 40);
      for (let i = 0; i < writes; i++) {
        const line = await child.nextLine(30_000);
        expect(line, child.stderr).toBeDefined();
        generation = Number(line) + 1;
      }
      const exit = await child.stop('SIGKILL');
      expect(exit.signal).toBe('SIGKILL');
      // A generation may have been written after the last line read.
      generation += 1000;

      let disk: VirtualDisk;
      try {
        disk = await VirtualDisk.open(path);
      } catch (err) {
        expect(err).toBeInstanceOf(XenError);
        expect((await VirtualDisk.repair(path)).problems).toEqual([]);
        repairs++;
        disk = await VirtualDisk.open(path);
      }
      const chunk = 16 * MiB;
      const zeros = Buffer.alloc(chunk);
      for (let at = 0; at < disk.size; at += chunk) {
        const data = await disk.read(at, chunk);
        if (!data.equals(zeros)) expect(foreignSectors(data, at / 512), `round ${round}`).toEqual([]);
      }
      await disk.close();
      expect((await VirtualDisk.repair(path)).problems).toEqual([]);
      expect(await VirtualDisk.check(path), `round ${round}`).toEqual([]);
    }
    // Most kills land between block allocations; the crash matrix (vhd-crash) covers every
    // point inside one deterministically.
    console.info(`kill -9: ${ROUNDS} rounds, ${repairs} needed repair() to open`);
  }, 180_000);
});
