/**
 * The VHD engine's fast paths and everything that moves a whole disk: batched block
 * allocation and run-length reads (against simple models), read streams, import from a
 * stream, raw images, convert, and snapshots built from memory.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type ImportDiskOptions, VirtualDisk, XenError } from '../../lib/index.js';
import { bitmapRuns, setRange } from '../../lib/vhd/blocks.js';
import { writeAllv } from '../../lib/vhd/create.js';
import { FaultyFiles } from '../../lib/vhd/faulty-file.js';
import { internalOptions, replaceFile } from '../../lib/vhd/files.js';
import { loadAddon } from '../../lib/native/load.js';
import { setBit, testBit } from '../../lib/vhd/bitmap.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;
const fresh = (ext = 'vhd'): string => join(dir, `t-${n++}.${ext}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenode-vhd-transfer-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Deterministic non-zero bytes. */
function bytes(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

/** Raw disk content: `size` bytes where the listed 2 MiB blocks hold data and the rest is zero. */
function rawImage(size: number, dataBlocks: number[], seed = 1): Buffer {
  const b = Buffer.alloc(size);
  for (const blk of dataBlocks) bytes(Math.min(2 * MiB, size - blk * 2 * MiB), seed + blk).copy(b, blk * 2 * MiB);
  return b;
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

/** A stream of `data` in chunks of the given sizes (cycled), as a network stream would come. */
function chunked(data: Buffer, sizes: number[]): Readable {
  const parts: Buffer[] = [];
  for (let at = 0, i = 0; at < data.length; i++) {
    const len = sizes[i % sizes.length] as number;
    parts.push(data.subarray(at, at + len));
    at += len;
  }
  return Readable.from(parts);
}

describe('bitmap helpers', () => {
  const bitmap = fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a));
  const range = fc.tuple(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 64 })).map(([a, b]) => [Math.min(a, b), Math.abs(a - b)] as const);

  it('setRange sets exactly the bits a bit-by-bit loop sets, and says whether any was clear', () => {
    fc.assert(
      fc.property(bitmap, range, (bm, [first, count]) => {
        const model = Buffer.from(bm);
        let changed = false;
        for (let s = first; s < first + count; s++) {
          if (!testBit(model, s)) changed = true;
          setBit(model, s);
        }
        const actual = Buffer.from(bm);
        expect(setRange(actual, first, count)).toBe(changed);
        expect(actual).toEqual(model);
      }),
    );
  });

  it('bitmapRuns gives maximal runs that match the bits', () => {
    fc.assert(
      fc.property(fc.oneof(bitmap, fc.constantFrom(Buffer.alloc(8), Buffer.alloc(8, 0xff))), range, (bm, [first, count]) => {
        const runs = bitmapRuns(bm, first, count);
        let s = first;
        for (const [i, run] of runs.entries()) {
          expect(run.first).toBe(s);
          expect(run.count).toBeGreaterThan(0);
          if (i > 0) expect(run.present).not.toBe(runs[i - 1]?.present);
          for (let k = run.first; k < run.first + run.count; k++) expect(testBit(bm, k)).toBe(run.present);
          s += run.count;
        }
        expect(s).toBe(first + count);
      }),
    );
  });
});

describe('batched writes', () => {
  const size = 9 * MiB + 512;
  const write = fc.integer({ min: 0, max: size - 1 }).chain((offset) =>
    fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(5 * MiB, size - offset) }), seed: fc.integer() }),
  );

  it('a differencing disk under random multi-block writes equals the model, also after reopening', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 6 }), fc.array(write, { minLength: 1, maxLength: 6 }), async (before, after) => {
        const basePath = fresh();
        const childPath = fresh();
        const model = Buffer.alloc(size);
        const base = await VirtualDisk.create(basePath, { size, type: 'dynamic' });
        for (const w of before) {
          const data = bytes(w.length, w.seed);
          await base.write(w.offset, data);
          data.copy(model, w.offset);
        }
        const child = await base.snapshot(childPath);
        await base.close();
        for (const w of after) {
          const data = bytes(w.length, w.seed);
          await child.write(w.offset, data);
          data.copy(model, w.offset);
        }
        expect((await child.read(0, size)).equals(model)).toBe(true);
        await child.close();
        // Reopening re-reads and re-verifies BAT, batmap checksum and footers.
        const again = await VirtualDisk.open(childPath);
        expect((await again.read(0, size)).equals(model)).toBe(true);
        await again.close();
      }),
      { numRuns: 12 },
    );
  }, 60_000);

  it('writes a batch in the crash-safe order, with BAT, batmap and footer written once', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 16 * MiB, type: 'dynamic' });
    await disk.write(0, bytes(512, 1)); // block 0 exists, with one sector
    const probe = await open(path, 'r');
    const proto = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    // Every image write goes through FileHandle.write or writev: record where each one lands.
    const spy = vi.spyOn(proto, 'write');
    const vspy = vi.spyOn(proto, 'writev');
    let calls: unknown[][];
    let vcalls: unknown[][];
    try {
      await disk.write(512, bytes(6 * MiB, 2)); // the rest of block 0, blocks 1-2, part of block 3
    } finally {
      calls = [...spy.mock.calls];
      vcalls = [...vspy.mock.calls];
      spy.mockRestore();
      vspy.mockRestore();
    }
    // Each new block (1, 2, and 3 from its first sector) is its bitmap and data in one
    // writev, the data 4 KiB-aligned; all of them before the BAT is written.
    expect(vcalls).toHaveLength(3);
    for (const [bufs, at] of vcalls as Array<[Buffer[], number]>) {
      expect(bufs.map((b) => b.length)).toEqual([512, bufs[1]!.length]);
      expect((at + 512) % 4096).toBe(0);
    }
    expect(vcalls.map((c) => (c[0] as Buffer[])[1]!.length)).toEqual([2 * MiB, 2 * MiB, 512]);
    const end = (await stat(path)).size - 512;
    const kinds = calls.map((args) => {
      const at = args[3] as number;
      if (at === end) return 'footer';
      if (at >= 4096 && at < 4608) return 'bat';
      if (at === 4608) return 'batmap';
      return 'data';
    });
    await disk.close();
    expect(kinds.filter((k) => k === 'bat')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'batmap')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'footer')).toHaveLength(1);
    expect(kinds.slice(-3)).toEqual(['bat', 'batmap', 'footer']);
    const reopened = await VirtualDisk.open(path, { readOnly: true });
    expect((await reopened.read(512, 6 * MiB)).equals(bytes(6 * MiB, 2))).toBe(true);
    await reopened.close();
  });

  it('allocates a multi-block write 4 KiB-aligned, in order, and keeps the batmap checksum valid', async () => {
    const path = fresh();
    const disk = await VirtualDisk.create(path, { size: 16 * MiB, type: 'dynamic' });
    await disk.write(3 * MiB, bytes(6 * MiB, 3)); // half of block 1, blocks 2-3, half of block 4
    await disk.close();
    const file = await readFile(path);
    const bat = Number(file.readBigUInt64BE(512 + 16));
    const entries = [0, 1, 2, 3, 4, 5].map((i) => file.readUInt32BE(bat + i * 4));
    expect(entries[0]).toBe(0xffffffff);
    const used = entries.slice(1, 5);
    for (const e of used) expect(((e + 1) * 512) % 4096).toBe(0);
    expect([...used].sort((a, b) => a - b)).toEqual(used);
    const reopened = await VirtualDisk.open(path, { readOnly: true });
    expect(reopened.info().allocatedBytes).toBe(8 * MiB);
    await reopened.close();
  });
});

describe('writeAllv', () => {
  it('writes what a short pwritev left, from where it stopped, in order', async () => {
    const file = Buffer.alloc(64);
    const ops: string[] = [];
    // A file handle whose writev takes 5 bytes only, and whose write takes 3 at a time.
    const fh = {
      writev: async (bufs: Buffer[], at: number) => {
        Buffer.concat(bufs).copy(file, at, 0, 5);
        ops.push(`writev 5@${at}`);
        return { bytesWritten: 5, buffers: bufs };
      },
      write: async (buf: Buffer, off: number, len: number, at: number) => {
        const n = Math.min(3, len);
        buf.copy(file, at, off, off + n);
        ops.push(`write ${n}@${at}`);
        return { bytesWritten: n, buffer: buf };
      },
    } as unknown as FileHandle;
    await writeAllv(fh, [Buffer.from('abcd'), Buffer.from('efgh'), Buffer.from('ij')], 10);
    expect(file.subarray(10, 20).toString()).toBe('abcdefghij');
    expect(ops).toEqual(['writev 5@10', 'write 3@15', 'write 2@18']);
  });
});

describe('replacing a file', () => {
  it('the addon swaps two names atomically (renameat2 RENAME_EXCHANGE), and says why it cannot', async () => {
    const addon = loadAddon();
    const [a, b] = [fresh('a'), fresh('b')];
    await writeFile(a, 'first');
    await writeFile(b, 'second');
    await addon.exchangeFiles!(a, b);
    expect([await readFile(a, 'utf8'), await readFile(b, 'utf8')]).toEqual(['second', 'first']);
    await expect(addon.exchangeFiles!(a, fresh('missing'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(() => addon.exchangeFiles!(a, 7 as unknown as string)).toThrow(TypeError);
    expect(() => addon.exchangeFiles!('a\0b', b)).toThrow(TypeError);
  });

  it('puts the new file in place over the old one, leaving no other name behind', async () => {
    const sub = await mkdtemp(join(dir, 'replace-'));
    await writeFile(join(sub, '.new.tmp'), 'new');
    await writeFile(join(sub, 'disk.vhd'), 'old');
    await replaceFile(join(sub, '.new.tmp'), join(sub, 'disk.vhd'));
    expect(await readFile(join(sub, 'disk.vhd'), 'utf8')).toBe('new');
    expect(await readdir(sub)).toEqual(['disk.vhd']);
    // Nothing there yet: a rename; no source: ENOENT, and nothing changes.
    await writeFile(join(sub, '.other.tmp'), 'other');
    await replaceFile(join(sub, '.other.tmp'), join(sub, 'other.vhd'));
    expect((await readdir(sub)).sort()).toEqual(['disk.vhd', 'other.vhd']);
    await expect(replaceFile(join(sub, 'missing'), join(sub, 'disk.vhd'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(join(sub, 'disk.vhd'), 'utf8')).toBe('new');
  });
});

describe('createReadStream', () => {
  it('streams the whole disk, through the chain, and any inclusive [start, end] range', async () => {
    const size = 7 * MiB + 1024;
    const base = await VirtualDisk.create(fresh(), { size, type: 'dynamic' });
    await base.write(MiB, bytes(3 * MiB, 5));
    const child = await base.snapshot(fresh());
    await child.write(2 * MiB + 100, bytes(1000, 6));
    await child.write(size - 10, bytes(10, 7));
    const all = await child.read(0, size);
    expect((await collect(child.createReadStream())).equals(all)).toBe(true);
    expect((await collect(child.createReadStream({ start: 2 * MiB + 50, end: 5 * MiB, highWaterMark: 300_000 }))).equals(all.subarray(2 * MiB + 50, 5 * MiB + 1))).toBe(true);
    expect((await collect(child.createReadStream({ start: 10, end: 9 }))).length).toBe(0);
    expect(() => child.createReadStream({ end: size })).toThrow(RangeError);
    expect(() => child.createReadStream({ start: -1 })).toThrow(RangeError);
    expect(() => child.createReadStream({ highWaterMark: 0 })).toThrow(RangeError);
    await child.close();
    await base.close();
  });

  it('reads only as fast as the consumer takes chunks', async () => {
    const disk = await VirtualDisk.create(fresh(), { size: 64 * MiB, type: 'dynamic' });
    const stream = disk.createReadStream({ highWaterMark: 64 * 1024 });
    let taken = 0;
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, done) {
        taken += chunk.length;
        setImmediate(done);
      },
    });
    const piping = pipeline(stream, slow);
    await new Promise((r) => setTimeout(r, 50));
    // Paused by backpressure: the stream holds at most a chunk or two beyond what was taken.
    expect(stream.readableLength).toBeLessThanOrEqual(2 * 64 * 1024);
    await piping;
    expect(taken).toBe(64 * MiB);
    await disk.close();
  });

  it('ends with the error when the disk is closed under it', async () => {
    const disk = await VirtualDisk.create(fresh(), { size: 8 * MiB, type: 'fixed' });
    const stream = disk.createReadStream({ highWaterMark: 4096 });
    await disk.close();
    await expect(collect(stream)).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    expect(() => disk.createReadStream()).toThrow(XenError);
  });
});

describe('VirtualDisk.import', () => {
  for (const type of ['dynamic', 'fixed', 'raw'] as const) {
    it(`makes a ${type} disk from a stream in odd chunks, ${type === 'fixed' ? 'allocating every block, zero ones too' : 'leaving zero blocks unallocated'}`, async () => {
      const size = 9 * MiB;
      const data = rawImage(size, [0, 2, 4]);
      data.write('tail', size - 4);
      const path = fresh(type === 'raw' ? 'raw' : 'vhd');
      const seen: number[] = [];
      await VirtualDisk.import(path, chunked(data, [1, 65536, 3 * MiB + 7, 511]), { type, size, onProgress: ({ done, total }) => {
        expect(total).toBe(size);
        seen.push(done);
      } });
      expect(seen).toEqual([...seen].sort((a, b) => a - b));
      expect(seen.at(-1)).toBe(size);
      const disk = await VirtualDisk.open(path, { readOnly: true, format: type === 'raw' ? 'raw' : 'vhd' });
      expect(disk.info().type).toBe(type);
      expect((await disk.read(0, size)).equals(data)).toBe(true);
      if (type === 'dynamic') expect(disk.info().allocatedBytes).toBe(3 * 2 * MiB); // blocks 0, 2 and 4 (which holds the tail)
      await disk.close();
      // A raw image has holes where zero; a fixed one has storage for every byte, as "fixed" promises.
      if (type === 'raw') expect((await stat(path)).blocks * 512).toBeLessThan(size);
      if (type === 'fixed') expect((await stat(path)).blocks * 512).toBeGreaterThanOrEqual(size);
    });
  }

  it('writes each data block once, and the BAT, batmap and footer once at the end', async () => {
    const size = 16 * MiB;
    const data = rawImage(size, [0, 3, 4, 7]);
    const path = fresh();
    const files = new FaultyFiles(); // counts and logs every persisting operation
    await VirtualDisk.import(path, chunked(data, [2 * MiB]), { type: 'dynamic', size, [internalOptions]: { files } } as ImportDiskOptions);
    // The new image (header, BAT, batmap, footers; synced), then one writev per data block,
    // then the BAT, the batmap and the end footer, the sync and the rename.
    const after = files.log.slice(files.log.findIndex((op) => op.startsWith('writev')));
    expect(after.map((op) => op.split(' ')[0])).toEqual(['writev', 'writev', 'writev', 'writev', 'write', 'write', 'write', 'datasync', 'rename']);
    const disk = await VirtualDisk.open(path, { readOnly: true });
    expect((await disk.read(0, size)).equals(data)).toBe(true);
    expect(disk.info().allocatedBytes).toBe(8 * MiB);
    await disk.close();
    expect(await VirtualDisk.check(path)).toEqual([]);
  });

  it('takes the size from a fs.ReadStream of a whole file, and needs it otherwise', async () => {
    const raw = fresh('raw');
    const data = rawImage(5 * MiB, [1]);
    await writeFile(raw, data);
    const path = fresh();
    await VirtualDisk.import(path, createReadStream(raw), { type: 'dynamic' });
    const disk = await VirtualDisk.open(path, { readOnly: true });
    expect(disk.size).toBe(5 * MiB);
    expect((await disk.read(0, disk.size)).equals(data)).toBe(true);
    await disk.close();
    await expect(VirtualDisk.import(fresh(), Readable.from([data]), { type: 'dynamic' })).rejects.toThrow(TypeError);
  });

  it('reads an unread fs.ReadStream\'s file directly, reusing its buffers, and closes the stream', async () => {
    // More blocks than the reader's buffers, data in each, so that a buffer read into again
    // while its write were still in flight would show as wrong bytes.
    const size = 23 * MiB + 512;
    const data = randomBytes(size);
    for (const block of [3, 9, 10]) data.fill(0, block * 2 * MiB, (block + 1) * 2 * MiB);
    const raw = fresh('raw');
    await writeFile(raw, data);
    const stream = createReadStream(raw);
    const path = fresh();
    const result = await VirtualDisk.import(path, stream, { type: 'dynamic' });
    expect(result).toMatchObject({ size, bytesWritten: size - 3 * 2 * MiB });
    expect(stream.destroyed).toBe(true);
    const disk = await VirtualDisk.open(path, { readOnly: true });
    expect((await disk.read(0, size)).equals(data)).toBe(true);
    expect(disk.info().allocatedBytes).toBe(9 * 2 * MiB);
    await disk.close();
    // A stream something has already read from is consumed as a stream, from where it is.
    const started = createReadStream(raw, { highWaterMark: MiB });
    const first = (await new Promise((done) => started.once('readable', () => done(started.read(MiB))))) as Buffer;
    expect(first.equals(data.subarray(0, MiB))).toBe(true);
    const rest = fresh();
    await VirtualDisk.import(rest, started, { type: 'dynamic', size: size - MiB });
    const tail = await VirtualDisk.open(rest, { readOnly: true });
    expect((await tail.read(0, size - MiB)).equals(data.subarray(MiB))).toBe(true);
    await tail.close();
  });

  it('fails on a stream longer or shorter than size, leaving the destination as it was', async () => {
    const path = fresh();
    await writeFile(path, 'old');
    await expect(VirtualDisk.import(path, Readable.from([Buffer.alloc(MiB + 512, 1)]), { type: 'dynamic', size: MiB })).rejects.toThrow(RangeError);
    await expect(VirtualDisk.import(path, Readable.from([Buffer.alloc(MiB - 512, 1)]), { type: 'fixed', size: MiB })).rejects.toThrow(RangeError);
    await expect(VirtualDisk.import(path, Readable.from(['text']), { type: 'fixed', size: MiB })).rejects.toThrow(TypeError);
    expect(await readFile(path, 'utf8')).toBe('old');
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('rejects bad options before reading', async () => {
    const src = (): Readable => Readable.from([Buffer.alloc(512)]);
    await expect(VirtualDisk.import(fresh(), src(), { type: 'qcow2' as 'raw', size: 512 })).rejects.toThrow(TypeError);
    await expect(VirtualDisk.import(fresh(), src(), { type: 'raw', size: 500 })).rejects.toThrow(RangeError);
    await expect(VirtualDisk.import(fresh(), {} as Readable, { type: 'raw', size: 512 })).rejects.toThrow(TypeError);
    await expect(VirtualDisk.import(fresh(), src(), { type: 'dynamic', size: 2041 * 1024 ** 3 })).rejects.toMatchObject({ code: 'VHD_TOO_LARGE' });
    await expect(VirtualDisk.import(fresh(), src(), { type: 'raw', size: 512, signal: 'x' as unknown as AbortSignal })).rejects.toThrow(TypeError);
    await expect(VirtualDisk.import(fresh(), src(), { type: 'raw', size: 512, sync: 'no' as unknown as boolean })).rejects.toThrow(TypeError);
  });

  it('stops on abort with an AbortError, even while the stream is idle, and leaves no file', async () => {
    const path = fresh();
    const ac = new AbortController();
    const idle = new Readable({ read() {} });
    idle.push(Buffer.alloc(3 * MiB, 1));
    const importing = VirtualDisk.import(path, idle, { type: 'dynamic', size: 8 * MiB, signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await expect(importing).rejects.toMatchObject({ name: 'AbortError' });
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const already = AbortSignal.abort();
    await expect(VirtualDisk.import(path, Readable.from([]), { type: 'raw', size: 512, signal: already })).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('raw images', () => {
  it('creates, writes, reads and reports a raw image through the same API', async () => {
    const path = fresh('raw');
    const disk = await VirtualDisk.create(path, { size: 3 * MiB, type: 'raw' });
    await disk.write(1000, Buffer.from('raw bytes'));
    expect((await disk.read(998, 13)).toString('latin1')).toBe('\0\0raw bytes\0\0');
    expect(disk.info()).toMatchObject({ type: 'raw', size: 3 * MiB, uuid: '', parent: undefined, chainDepth: 1, blockSize: undefined, hidden: false });
    await disk.close();
    const file = await readFile(path);
    expect(file.length).toBe(3 * MiB);
    expect(file.toString('latin1', 1000, 1009)).toBe('raw bytes');
  });

  it('equals the model under random writes, and streams any range as read() returns it', async () => {
    const size = 5 * MiB + 1536;
    const write = fc.integer({ min: 0, max: size - 1 }).chain((offset) =>
      fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(3 * MiB, size - offset) }), seed: fc.integer() }),
    );
    const range = fc.tuple(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 0, max: size - 1 })).map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as const);
    await fc.assert(
      fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 8 }), range, fc.integer({ min: 4096, max: 3 * MiB }), async (writes, [start, end], hwm) => {
        const path = fresh('raw');
        const disk = await VirtualDisk.create(path, { size, type: 'raw' });
        const model = Buffer.alloc(size);
        for (const w of writes) {
          const data = bytes(w.length, w.seed);
          await disk.write(w.offset, data);
          data.copy(model, w.offset);
        }
        expect((await disk.read(0, size)).equals(model)).toBe(true);
        expect((await collect(disk.createReadStream({ start, end, highWaterMark: hwm }))).equals(model.subarray(start, end + 1))).toBe(true);
        await disk.close();
        expect((await readFile(path)).equals(model)).toBe(true);
        await rm(path);
      }),
      { numRuns: 10 },
    );
  }, 60_000);

  it('opens any file as raw only when asked, at its exact size', async () => {
    const path = fresh('img');
    await writeFile(path, Buffer.alloc(1000, 9));
    await expect(VirtualDisk.open(path)).rejects.toMatchObject({ code: 'VHD_BAD_FOOTER' });
    const disk = await VirtualDisk.open(path, { format: 'raw', readOnly: true });
    expect(disk.size).toBe(1000);
    expect((await disk.read(990, 10)).equals(Buffer.alloc(10, 9))).toBe(true);
    await expect(disk.write(0, Buffer.alloc(1))).rejects.toMatchObject({ code: 'VHD_READ_ONLY' });
    await disk.close();
    await expect(VirtualDisk.open(path, { format: 'qcow2' as 'raw' })).rejects.toThrow(TypeError);
  });

  it('cannot be a snapshot parent', async () => {
    const disk = await VirtualDisk.create(fresh('raw'), { size: MiB, type: 'raw' });
    await expect(disk.snapshot(fresh())).rejects.toMatchObject({ code: 'VHD_UNSUPPORTED' });
    await disk.write(0, Buffer.alloc(1)); // still writable: nothing was changed
    await disk.close();
  });
});

describe('VirtualDisk.convert', () => {
  const kinds = ['raw', 'fixed', 'dynamic'] as const;

  it('flattens a differencing chain into each type, with the same bytes', async () => {
    const size = 11 * MiB + 512;
    const base = await VirtualDisk.create(fresh(), { size, type: 'dynamic' });
    await base.write(0, bytes(5 * MiB, 11));
    const mid = await base.snapshot(fresh());
    await mid.write(4 * MiB, Buffer.alloc(2 * MiB)); // zeros over base data must win
    await mid.write(9 * MiB + 3, bytes(100, 12));
    const leaf = await mid.snapshot(fresh());
    await leaf.write(size - 512, bytes(512, 13));
    const expected = await leaf.read(0, size);
    for (const type of kinds) {
      const dst = fresh(type);
      await VirtualDisk.convert(leaf.path, dst, { type });
      const out = await VirtualDisk.open(dst, { readOnly: true, format: type === 'raw' ? 'raw' : 'vhd' });
      expect(out.info()).toMatchObject({ type, size, chainDepth: 1, parent: undefined });
      expect((await out.read(0, size)).equals(expected)).toBe(true);
      // Blocks 2 (zeros in every image) and 3, 6, 7, 8 (never written) stay unallocated.
      if (type === 'dynamic') expect(out.info().allocatedBytes).toBeLessThan(size);
      // A fixed disk gets storage there all the same (zeros written), a raw one holes.
      if (type === 'fixed') expect((await stat(dst)).blocks * 512).toBeGreaterThanOrEqual(size);
      if (type === 'raw') expect((await stat(dst)).blocks * 512).toBeLessThan(size);
      await out.close();
    }
    await leaf.close();
    await mid.close();
    await base.close();
  });

  it('converts between every pair of types, from raw sources of any size too', async () => {
    const size = 6 * MiB + 700; // not a sector multiple: padded with zeros
    const data = rawImage(size, [0, 2]);
    const raw = fresh('raw');
    await writeFile(raw, data);
    const padded = Buffer.concat([data, Buffer.alloc(Math.ceil(size / 512) * 512 - size)]);
    for (const from of kinds) {
      const src = fresh(from);
      await VirtualDisk.convert(raw, src, { type: from, format: 'raw' });
      for (const to of kinds) {
        const dst = fresh(to);
        await VirtualDisk.convert(src, dst, { type: to, format: from === 'raw' ? 'raw' : 'vhd' });
        const out = await VirtualDisk.open(dst, { readOnly: true, format: to === 'raw' ? 'raw' : 'vhd' });
        expect((await out.read(0, padded.length)).equals(padded), `${from} -> ${to}`).toBe(true);
        await out.close();
      }
    }
  });

  it('reports progress up to the size, stops on abort, and never leaves a partial file', async () => {
    const src = await VirtualDisk.create(fresh(), { size: 20 * MiB, type: 'dynamic' });
    await src.write(0, bytes(20 * MiB, 4));
    await src.close();
    const dst = fresh();
    const progress: number[] = [];
    await VirtualDisk.convert(src.path, dst, { type: 'dynamic', onProgress: (p) => progress.push(p.done) });
    expect(progress.at(-1)).toBe(20 * MiB);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    const ac = new AbortController();
    const target = fresh();
    await expect(VirtualDisk.convert(src.path, target, { type: 'fixed', signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(VirtualDisk.convert(src.path, dst, { type: 'dynamic', overwrite: false })).rejects.toMatchObject({ code: 'EEXIST' });
    const unsynced = fresh();
    await VirtualDisk.convert(src.path, unsynced, { type: 'dynamic', sync: false });
    const a = await VirtualDisk.open(unsynced, { readOnly: true });
    expect((await a.read(0, 20 * MiB)).equals(bytes(20 * MiB, 4))).toBe(true);
    await a.close();
    await expect(VirtualDisk.convert(src.path, src.path, { type: 'dynamic' })).rejects.toThrow(TypeError);
    await expect(VirtualDisk.convert(src.path, fresh(), { type: 'vpc' as 'raw' })).rejects.toThrow(TypeError);
    await expect(VirtualDisk.convert(fresh(), fresh(), { type: 'raw' })).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('snapshot from memory', () => {
  it('gives a child that matches the file it wrote and outlives the parent handle', async () => {
    const base = await VirtualDisk.create(fresh(), { size: 12 * MiB, type: 'dynamic' });
    await base.write(MiB, bytes(4 * MiB, 21));
    const child = await base.snapshot(fresh());
    await base.close(); // the child reads through handles of its own
    await child.write(2 * MiB, Buffer.from('child'));
    const inMemory = child.info();
    const content = await child.read(0, 12 * MiB);
    await child.close();
    const reopened = await VirtualDisk.open(inMemory.path);
    expect(reopened.info()).toEqual(inMemory);
    expect((await reopened.read(0, 12 * MiB)).equals(content)).toBe(true);
    // Snapshots of the snapshot, to the chain limit's neighbourhood, stay in memory too.
    const grandchild = await reopened.snapshot(fresh());
    expect(grandchild.info().chainDepth).toBe(3);
    expect((await grandchild.read(0, 12 * MiB)).equals(content)).toBe(true);
    await grandchild.close();
    await reopened.close();
  });

  it('clone returns a child whose parent is the base it opened', async () => {
    const basePath = fresh();
    const base = await VirtualDisk.create(basePath, { size: 4 * MiB, type: 'fixed' });
    await base.write(0, Buffer.from('fixed base'));
    await base.close();
    const a = await VirtualDisk.clone(basePath, fresh());
    const b = await VirtualDisk.clone(basePath, fresh());
    await a.write(0, Buffer.from('A'));
    expect((await a.read(0, 10)).toString()).toBe('Aixed base');
    expect((await b.read(0, 10)).toString()).toBe('fixed base');
    expect(b.info().parent).toBe(basePath);
    await a.close();
    await b.close();
  });
});
