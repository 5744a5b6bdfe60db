// bench: VirtualDisk — raw <-> dynamic VHD vs qemu-img convert, random 4 KiB I/O vs a raw file and qemu-img bench, snapshot time at 1 GiB and 1 TiB
//
//   npm run bench -- vhd [--json] [--check] [--rounds N] [--size MiB] [--ops N]
//
// In one run, on the same input (`size` MiB, default 1024, of 2 MiB blocks half random and
// half zero, chosen by a fixed seed), median of `rounds`:
//   import  raw -> dynamic VHD: VirtualDisk.import(createReadStream(raw), { sync: false }) vs
//           `qemu-img convert -f raw -O vpc -o subformat=dynamic`, whose default cache mode
//           (unsafe) does not sync either; and, durable both, xenode's default (one
//           fdatasync before the rename) vs qemu-img `-t writeback`
//   export  dynamic VHD -> raw: VirtualDisk.convert(…, { type: 'raw', sync: false }) vs
//           `qemu-img convert -f vpc -O raw` (both leave holes for zeros); and, for
//           reference, disk.createReadStream() piped into a file (every byte written)
//   4 KiB   random reads, then writes, through VirtualDisk on the imported dynamic VHD vs the
//           same offsets on the raw file through a FileHandle, one at a time; and
//           `qemu-img bench -d 1 -s 4K` (strided, not random: qemu has no random mode)
//   snapshot  disk.snapshot() of a dynamic disk of 1 GiB and of 1 TiB (5 each, taking turns,
//           after a sync; median), and the ratio 1 TiB / 1 GiB: snapshot must not depend on
//           the disk's size
//   coalesce  child.coalesce() of a child holding every other block of the input (half the
//           disk) into its parent, vs writing the same bytes into a raw file (+ fdatasync)
//   live    domain.snapshotDisk() on the mock host of a running domain's 1 GiB and 1 TiB VHD
//           (5 each, median): the call's time and the pause window it reports (pausedMs)
// --check exits 1 when a figure misses its target (import/export ratio <= 1, snapshot < 15 ms,
// snapshot ratio 1 TiB / 1 GiB <= 2).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { MockHost, VirtualDisk, connect } = await import(pathToFileURL(join(root, 'dist', 'index.js')).href);
const MiB = 1024 * 1024;
const TARGETS = { ratio: 1, snapshotMs: 15, snapshotSizeRatio: 2 };

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    size: { type: 'string', default: '1024' },
    ops: { type: 'string', default: '4000' },
  },
});
const rounds = positive('rounds', opts.rounds);
const size = positive('size', opts.size) * MiB;
const ops = positive('ops', opts.ops);
if (size % (2 * MiB) !== 0) die('--size must be a multiple of 2 (MiB)', 2);

function positive(name, text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) die(`--${name} must be a positive integer, got ${text}`, 2);
  return n;
}

function die(message, code = 1) {
  console.error(`bench vhd: ${message}`);
  process.exit(code);
}

try {
  execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
} catch {
  die('qemu-img is needed (Debian package qemu-utils)');
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
async function timed(fn) {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}
const qemu = (...args) => execFileSync('qemu-img', args, { encoding: 'utf8', maxBuffer: 16 * MiB });

/** A small deterministic generator (xorshift32), so every run uses the same layout and offsets. */
function prng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

async function makeInput(path) {
  const fh = await open(path, 'w');
  const pick = prng(84);
  const zeros = Buffer.alloc(2 * MiB);
  // Zeros written as data, not left as holes: qemu-img would find holes with SEEK_HOLE and
  // skip reading them, which a raw image streamed from elsewhere does not allow.
  for (let off = 0; off < size; off += 2 * MiB) await fh.write(pick() < 0.5 ? randomBytes(2 * MiB) : zeros, 0, 2 * MiB, off);
  await fh.close();
}

/** `ops` random 4 KiB reads then writes at the same offsets, one at a time; ops per second each. */
async function random4k(read, write) {
  const pick = prng(7);
  const offsets = Array.from({ length: ops }, () => Math.floor(pick() * (size / 4096)) * 4096);
  const data = randomBytes(4096);
  const r = await timed(async () => {
    for (const o of offsets) await read(o);
  });
  const w = await timed(async () => {
    for (const o of offsets) await write(o, data);
  });
  return { read: (ops / r) * 1000, write: (ops / w) * 1000 };
}

async function warm(file) {
  for await (const _ of createReadStream(file, { highWaterMark: 8 * MiB }));
}

function qemuBench(file, writeMode) {
  const step = Math.max(4096, Math.floor(size / ops / 4096) * 4096);
  const args = ['bench', '-f', 'vpc', '-c', String(ops), '-d', '1', '-s', '4096', '-S', String(step), '-t', 'writeback'];
  if (writeMode) args.push('-w');
  const out = qemu(...args, file);
  const secs = Number(/Run completed in ([\d.]+) seconds/.exec(out)?.[1]);
  return ops / secs;
}

const dir = await mkdtemp(join(tmpdir(), 'xenode-bench-vhd-'));
try {
  const raw = join(dir, 'input.raw');
  await makeInput(raw);
  const t = { xi: [], xd: [], qi: [], qw: [], xe: [], qe: [], xs: [] };
  for (let r = 0; r < rounds; r++) {
    t.xd.push(await timed(() => VirtualDisk.import(join(dir, 'x.vhd'), createReadStream(raw, { highWaterMark: 2 * MiB }), { type: 'dynamic' })));
    t.xi.push(await timed(() => VirtualDisk.import(join(dir, 'x.vhd'), createReadStream(raw, { highWaterMark: 2 * MiB }), { type: 'dynamic', sync: false })));
    t.qw.push(await timed(() => qemu('convert', '-t', 'writeback', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw, join(dir, 'q.vhd'))));
    t.qi.push(await timed(() => qemu('convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw, join(dir, 'q.vhd'))));
    t.xe.push(await timed(() => VirtualDisk.convert(join(dir, 'x.vhd'), join(dir, 'x.raw'), { type: 'raw', sync: false })));
    t.qe.push(await timed(() => qemu('convert', '-f', 'vpc', '-O', 'raw', join(dir, 'q.vhd'), join(dir, 'q.raw'))));
    t.xs.push(
      await timed(async () => {
        const disk = await VirtualDisk.open(join(dir, 'x.vhd'), { readOnly: true });
        await pipeline(disk.createReadStream(), createWriteStream(join(dir, 's.raw')));
        await disk.close();
      }),
    );
    await Promise.all(['x.raw', 'q.raw', 's.raw'].map((f) => rm(join(dir, f))));
  }
  const check = qemu('compare', '-f', 'vpc', '-F', 'raw', join(dir, 'x.vhd'), raw).trim();
  if (!check.includes('identical')) die(`qemu-img compare: ${check}`);

  // Random 4 KiB I/O: the imported dynamic VHD (half its blocks allocated) vs the raw input,
  // both first read whole so that neither pays for cold page cache the other does not.
  await warm(join(dir, 'x.vhd'));
  await warm(raw);
  const disk = await VirtualDisk.open(join(dir, 'x.vhd'));
  const xenode = await random4k((o) => disk.read(o, 4096), (o, d) => disk.write(o, d));
  await disk.close();
  const fh = await open(raw, 'r+');
  const buf = Buffer.alloc(4096);
  const rawFile = await random4k((o) => fh.read(buf, 0, 4096, o), (o, d) => fh.write(d, 0, 4096, o));
  await fh.close();
  const qemuIops = { read: qemuBench(join(dir, 'q.vhd'), false), write: qemuBench(join(dir, 'q.vhd'), true) };

  // Snapshots: a chain of 5 on a disk of each size; only metadata, so the sizes are nominal.
  // The gigabytes the steps above wrote are made durable first (their writeback would
  // otherwise land on whichever size is measured while it runs), and the two sizes take turns,
  // so that what the machine does meanwhile weighs on both alike.
  execFileSync('sync');
  const sizes = [['1 GiB', 1024 ** 3], ['1 TiB', 1024 ** 4]];
  const chains = {};
  const times = {};
  for (const [label, bytes] of sizes) {
    const cur = await VirtualDisk.create(join(dir, `snap-${label}-0.vhd`).replace(' ', ''), { size: bytes, type: 'dynamic' });
    await cur.write(0, randomBytes(4096));
    chains[label] = [cur];
    times[label] = [];
  }
  for (let i = 1; i <= 5; i++) {
    for (const [label] of sizes) {
      const chain = chains[label];
      const cur = chain[chain.length - 1];
      let child;
      // A clean parent: what it still had to write (the previous child's BAT, left to the
      // first flush) is its own pending work, not this snapshot's.
      await cur.flush();
      times[label].push(await timed(async () => (child = await cur.snapshot(join(dir, `snap-${label}-${i}.vhd`).replace(' ', '')))));
      chain.push(child);
    }
  }
  const snapshot = {};
  for (const [label] of sizes) {
    for (const d of chains[label]) await d.close();
    snapshot[label] = median(times[label]);
  }

  // Coalesce: a child of the imported disk with every other 2 MiB block rewritten (half the
  // disk), merged into its parent (synced); against writing the same bytes at the same offsets
  // into a new raw file through a FileHandle, then fdatasync (what a coalesce writes, at least).
  const co = { ms: [], rawMs: [], bytes: 0 };
  for (let r = 0; r < rounds; r++) {
    const basePath = join(dir, 'co-base.vhd');
    await VirtualDisk.import(basePath, createReadStream(raw, { highWaterMark: 2 * MiB }), { type: 'dynamic', sync: false });
    const base = await VirtualDisk.open(basePath);
    const child = await base.snapshot(join(dir, 'co-child.vhd'));
    await base.close();
    const data = randomBytes(2 * MiB);
    for (let off = 0; off < size; off += 4 * MiB) await child.write(off, data);
    await child.flush();
    co.ms.push(await timed(async () => (co.bytes = (await child.coalesce()).bytesCopied)));
    await child.close();
    const copy = await open(join(dir, 'co.raw'), 'w');
    co.rawMs.push(
      await timed(async () => {
        for (let off = 0; off < size; off += 4 * MiB) await copy.write(data, 0, data.length, off);
        await copy.datasync();
      }),
    );
    await copy.close();
    await Promise.all(['co-base.vhd', 'co-child.vhd', 'co.raw'].map((f) => rm(join(dir, f))));
  }
  const coalesce = { bytes: co.bytes, ms: median(co.ms), rawFileMs: median(co.rawMs) };

  // Live snapshots: the same sizes, attached to a running domain of the mock host, whose
  // block backend pauses, flushes, snapshots, switches and resumes; a guest write between.
  const live = {};
  const host = await MockHost.create({ timing: 'instant' });
  const xen = await connect({ backend: host });
  try {
    for (const [label, bytes] of [['1 GiB', 1024 ** 3], ['1 TiB', 1024 ** 4]]) {
      const base = join(dir, `live-${label.replace(' ', '')}-0.vhd`);
      await (await VirtualDisk.create(base, { size: bytes, type: 'dynamic' })).close();
      const dom = await xen.domains.create({ name: `bench-${label.replace(' ', '')}`, type: 'pvh', kernel: '/boot/vmlinuz', memory: 64, vcpus: 1, disks: [{ target: base, vdev: 'xvda', format: 'vhd' }] });
      const calls = [];
      const paused = [];
      for (let i = 1; i <= 5; i++) {
        await host.guestDiskWrite(dom.domid, 'xvda', i * 4096, randomBytes(4096));
        let snap;
        calls.push(await timed(async () => (snap = await dom.snapshotDisk('xvda', join(dir, `live-${label.replace(' ', '')}-${i}.vhd`)))));
        paused.push(snap.pausedMs);
      }
      await dom.destroy();
      live[label] = { callMs: median(calls), pausedMs: median(paused) };
    }
  } finally {
    await xen.close();
    await host.close();
  }

  const results = {
    import: { xenode: median(t.xi), qemu: median(t.qi), xenodeSync: median(t.xd), qemuWriteback: median(t.qw) },
    export: { xenode: median(t.xe), qemu: median(t.qe), xenodeStream: median(t.xs) },
    random4k: { xenode, rawFile, qemuStrided: qemuIops },
    snapshotMs: snapshot,
    liveSnapshot: live,
    coalesce,
  };
  const ratios = {
    import: results.import.xenode / results.import.qemu,
    export: results.export.xenode / results.export.qemu,
    random4kRead: xenode.read / rawFile.read,
    random4kWrite: xenode.write / rawFile.write,
    snapshot1TiBTo1GiB: snapshot['1 TiB'] / snapshot['1 GiB'],
    livePaused1TiBTo1GiB: live['1 TiB'].pausedMs / live['1 GiB'].pausedMs,
    coalesceToRawWrite: coalesce.ms / coalesce.rawFileMs,
  };
  const pass = {
    import: ratios.import <= TARGETS.ratio,
    export: ratios.export <= TARGETS.ratio,
    snapshot: Object.values(snapshot).every((ms) => ms < TARGETS.snapshotMs) && ratios.snapshot1TiBTo1GiB <= TARGETS.snapshotSizeRatio,
  };
  const vhdBytes = (await stat(join(dir, 'x.vhd'))).size;
  if (opts.json) {
    console.log(JSON.stringify({ bench: 'vhd', sizeBytes: size, vhdBytes, rounds, ops, results, ratios, targets: TARGETS, pass }, null, 2));
  } else {
    const ms = (v) => `${v.toFixed(0)} ms`.padStart(10);
    const io = (v) => v.toFixed(0).padStart(10);
    console.log(`VirtualDisk vs qemu-img, ${size / MiB} MiB (half random, half zero 2 MiB blocks), median of ${rounds}\n`);
    console.log(`${''.padEnd(34)}${'xenode'.padStart(10)}${'qemu-img'.padStart(10)}   ratio (target <= ${TARGETS.ratio})`);
    console.log(`${'import raw -> dynamic VHD'.padEnd(34)}${ms(results.import.xenode)}${ms(results.import.qemu)}   ${ratios.import.toFixed(2)} ${pass.import ? 'PASS' : 'SLOWER'}`);
    console.log(`${'  durable: sync / -t writeback'.padEnd(34)}${ms(results.import.xenodeSync)}${ms(results.import.qemuWriteback)}   ${(results.import.xenodeSync / results.import.qemuWriteback).toFixed(2)}`);
    console.log(`${'export dynamic VHD -> raw'.padEnd(34)}${ms(results.export.xenode)}${ms(results.export.qemu)}   ${ratios.export.toFixed(2)} ${pass.export ? 'PASS' : 'SLOWER'}`);
    console.log(`${'export via createReadStream()'.padEnd(34)}${ms(results.export.xenodeStream)}   (every byte written, zeros too)`);
    console.log(`\nrandom 4 KiB, ops/s, one at a time (${ops} ops)`);
    console.log(`${''.padEnd(34)}${'read'.padStart(10)}${'write'.padStart(10)}`);
    console.log(`${'xenode, dynamic VHD'.padEnd(34)}${io(xenode.read)}${io(xenode.write)}`);
    console.log(`${'FileHandle, raw file'.padEnd(34)}${io(rawFile.read)}${io(rawFile.write)}`);
    console.log(`${'qemu-img bench, VHD (strided)'.padEnd(34)}${io(qemuIops.read)}${io(qemuIops.write)}`);
    console.log(`${'xenode VHD / raw file'.padEnd(34)}${ratios.random4kRead.toFixed(2).padStart(10)}${ratios.random4kWrite.toFixed(2).padStart(10)}`);
    console.log(`\nsnapshot (median of 5, target < ${TARGETS.snapshotMs} ms and the same for both)`);
    const ms1 = (v) => `${v.toFixed(1)} ms`.padStart(10);
    for (const [label, v] of Object.entries(snapshot)) console.log(`${label.padEnd(34)}${ms1(v)}`);
    console.log(`${'ratio 1 TiB / 1 GiB'.padEnd(34)}${ratios.snapshot1TiBTo1GiB.toFixed(2).padStart(10)}   (target <= ${TARGETS.snapshotSizeRatio}) ${pass.snapshot ? 'PASS' : 'SLOWER'}`);
    console.log(`\nlive snapshot of a running domain's disk, mock host (median of 5)`);
    console.log(`${''.padEnd(34)}${'call'.padStart(10)}${'paused'.padStart(10)}`);
    for (const [label, v] of Object.entries(live)) console.log(`${label.padEnd(34)}${ms1(v.callMs)}${ms1(v.pausedMs)}`);
    console.log(`${'paused ratio 1 TiB / 1 GiB'.padEnd(34)}${''.padStart(10)}${ratios.livePaused1TiBTo1GiB.toFixed(2).padStart(10)}`);
    const mibs = (bytes, ms) => `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`.padStart(12);
    console.log(`\ncoalesce of a child holding ${coalesce.bytes / MiB} MiB (every other block), median of ${rounds}`);
    console.log(`${'child.coalesce() (synced)'.padEnd(34)}${ms(coalesce.ms)}${mibs(coalesce.bytes, coalesce.ms)}`);
    console.log(`${'same bytes into a raw file + sync'.padEnd(34)}${ms(coalesce.rawFileMs)}${mibs(coalesce.bytes, coalesce.rawFileMs)}`);
    console.log(`${'time ratio coalesce / raw write'.padEnd(34)}${ratios.coalesceToRawWrite.toFixed(2).padStart(10)}`);
  }
  if (opts.check && !(pass.import && pass.export && pass.snapshot)) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
