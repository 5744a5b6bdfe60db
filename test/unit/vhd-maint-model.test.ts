/**
 * Property: random sequences of writes, snapshots, resizes and coalesces on a chain read
 * exactly as an in-memory model of the disk, the parent after a coalesce included, and
 * every file passes check().
 */
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualDisk } from '../../lib/index.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-model-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Op =
  | { kind: 'write'; at: number; length: number; seed: number }
  | { kind: 'snapshot' }
  | { kind: 'grow'; by: number }
  | { kind: 'coalesce' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('write' as const), at: fc.nat(12 * MiB), length: fc.integer({ min: 1, max: 3 * MiB }), seed: fc.nat(255) }), weight: 5 },
  { arbitrary: fc.constant({ kind: 'snapshot' as const }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('grow' as const), by: fc.integer({ min: 1, max: 4096 }).map((s) => s * 512) }), weight: 1 },
  { arbitrary: fc.constant({ kind: 'coalesce' as const }), weight: 2 },
);

describe('chains under random operations', () => {
  it('read as the model, parents included after coalesce, and pass check()', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), fc.constantFrom('dynamic', 'fixed'), async (ops, type) => {
        const files: string[] = [join(dir, `m${n++}.vhd`)];
        let model = Buffer.alloc(4 * MiB);
        let leaf = await VirtualDisk.create(files[0] as string, { size: model.length, type: type as 'dynamic' | 'fixed' });
        const open: VirtualDisk[] = [leaf];
        try {
          for (const o of ops) {
            if (o.kind === 'write') {
              const at = o.at % model.length;
              const data = Buffer.alloc(Math.min(o.length, model.length - at), o.seed);
              await leaf.write(at, data);
              data.copy(model, at);
            } else if (o.kind === 'snapshot') {
              const path = join(dir, `m${n++}.vhd`);
              leaf = await leaf.snapshot(path);
              files.push(path);
              open.push(leaf);
            } else if (o.kind === 'grow') {
              await leaf.resize(model.length + o.by);
              model = Buffer.concat([model, Buffer.alloc(o.by)]);
            } else if (files.length > 1) {
              await leaf.coalesce();
              const parent = await VirtualDisk.open(files[files.length - 2] as string, { readOnly: true });
              const got = await parent.read(0, parent.size);
              await parent.close();
              expect(got.equals(model)).toBe(true);
            }
            expect((await leaf.read(0, leaf.size)).equals(model)).toBe(true);
          }
        } finally {
          for (const d of open.reverse()) await d.close();
        }
        for (const f of files) expect(await VirtualDisk.check(f), f).toEqual([]);
      }),
      { numRuns: 25 },
    );
  }, 180_000);
});
