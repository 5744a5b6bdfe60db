import { once } from 'node:events';
import { resolve } from 'node:path';
import { abortError } from '../errors.js';
import { VirtualDisk, type VirtualDiskInfo } from '../vhd/disk.js';
import type { VhdProblem } from '../vhd/check.js';
import { EXIT_OK, UsageError, nextSignal, parseCommandLine, type Command } from './common.js';
import { formatBytes, progressBar } from './progress.js';

/** Exit code of `check` and `repair` when the image has problems (left). */
export const EXIT_PROBLEMS = 3;

/** Usage text of `xenode disk`. */
export const DISK_USAGE = `Usage: xenode disk <subcommand> [options] …

VHD disk images (fixed, dynamic, differencing), as blktap2 and XenServer use them.
SIZE is in bytes, or with a binary suffix: 512K, 100M, 20G, 2T.

  create PATH --size SIZE [--type dynamic|fixed]
                        a new, empty disk (dynamic by default)
  info PATH             size, type, UUID, parent, chain depth, allocated bytes
  snapshot PATH CHILD   make CHILD a differencing child of PATH, which turns hidden
  clone BASE CHILD      one more child of BASE (hidden from then on)
  coalesce CHILD        copy CHILD's own data into its parent; CHILD may then be deleted
  resize PATH SIZE      grow (new space reads as zeros), or shrink if no data is lost
  check PATH…           list every problem found in each image
  repair PATH           fix what a crash leaves (end footer, footer copy, batmap)
  convert SRC DST -O raw|fixed|dynamic [-f vhd|raw]
                        copy the disk SRC reads as into a new image DST
  export PATH [OUT]     the disk's raw bytes, into OUT (sparse) or to stdout ('-')

Options:
  --json                print the result as JSON on stdout
  -q, --quiet           no progress bar (one is drawn on stderr when it is a terminal)
  --force               let create, convert and export replace an existing file
  -h, --help            show this help

Exit status: 0 success, 1 failure, 2 bad command line, ${EXIT_PROBLEMS} check found problems
(or repair left some).`;

const options = {
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  force: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  size: { type: 'string' },
  type: { type: 'string' },
  format: { type: 'string', short: 'f' },
  output: { type: 'string', short: 'O' },
} as const;

interface Values {
  json?: boolean;
  quiet?: boolean;
  force?: boolean;
  size?: string;
  type?: string;
  format?: string;
  output?: string;
}

/** Where a subcommand prints: replaceable in tests. */
export interface DiskIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** `20G`, `512K`, `1048576`: a size in bytes (binary suffixes, optional `iB`/`B`). */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`not a size: '${text}' (bytes, or a number with K, M, G or T)`, DISK_USAGE);
  const bytes = Number(m[1]) * (UNITS[(m[2] as string).toUpperCase()] as number);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`size out of range: '${text}'`, DISK_USAGE);
  return bytes;
}

function need(cond: boolean, message: string): void {
  if (!cond) throw new UsageError(`disk ${message}`, DISK_USAGE);
}

function printJson(io: DiskIo, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Human-readable `info`: one `key: value` line each. */
export function formatInfo(info: VirtualDiskInfo): string {
  const lines = [
    `path: ${info.path}`,
    `type: ${info.type}`,
    `size: ${info.size} (${formatBytes(info.size)})`,
    `uuid: ${info.uuid}`,
    `parent: ${info.parent ?? '-'}`,
    `chain depth: ${info.chainDepth}`,
    `allocated: ${info.allocatedBytes} (${formatBytes(info.allocatedBytes)})`,
    `block size: ${info.blockSize ?? '-'}`,
    `hidden: ${info.hidden ? 'yes' : 'no'}`,
  ];
  return `${lines.join('\n')}\n`;
}

/** One line per problem: `PATH: CODE at offset N (block B): message`. */
export function formatProblems(path: string, problems: readonly VhdProblem[]): string {
  if (problems.length === 0) return `${path}: no problems found\n`;
  return problems
    .map((p) => {
      const where = p.offset === undefined ? '' : ` at offset ${p.offset}${p.block === undefined ? '' : ` (block ${p.block})`}`;
      return `${path}: ${p.code}${where}: ${p.message}\n`;
    })
    .join('');
}

/** Opens `path`, runs `fn` and closes the disk whatever happens. */
async function withDisk<T>(path: string, readOnly: boolean, fn: (d: VirtualDisk) => Promise<T>): Promise<T> {
  const disk = await VirtualDisk.open(path, { readOnly });
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

/** An AbortSignal that SIGINT or SIGTERM aborts, for `fn`'s duration. */
async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupt = new AbortController();
  const stop = new AbortController();
  void nextSignal(stop.signal).then(() => interrupt.abort());
  try {
    return await fn(interrupt.signal);
  } finally {
    stop.abort();
  }
}

async function showInfo(io: DiskIo, values: Values, disk: VirtualDisk): Promise<number> {
  const info = disk.info();
  // null rather than absent, so scripts see every key
  if (values.json) printJson(io, { ...info, parent: info.parent ?? null, blockSize: info.blockSize ?? null });
  else io.stdout.write(formatInfo(info));
  return EXIT_OK;
}

type Run = (args: string[], values: Values, io: DiskIo) => Promise<number>;

const subcommands: Record<string, Run> = {
  async create([path, ...extra], values, io) {
    need(path !== undefined && extra.length === 0 && values.size !== undefined, 'create: give PATH and --size SIZE');
    const type = values.type ?? 'dynamic';
    need(type === 'dynamic' || type === 'fixed', `create: --type must be dynamic or fixed, not '${type}'`);
    const size = parseSize(values.size as string);
    // A fixed disk is filled with zeros, which takes a while for a large one: Ctrl-C stops it, leaving no file.
    const disk = await interruptible((signal) => VirtualDisk.create(path as string, { size, type: type as 'dynamic' | 'fixed', overwrite: values.force === true, signal }));
    return withOpen(disk, (d) => showInfo(io, values, d));
  },

  async info([path, ...extra], values, io) {
    need(path !== undefined && extra.length === 0, 'info: give one PATH');
    return withDisk(path as string, true, (d) => showInfo(io, values, d));
  },

  async snapshot([path, child, ...extra], values, io) {
    need(child !== undefined && extra.length === 0, 'snapshot: give PATH and CHILD');
    // The command's result must survive a power loss: sync the child, which snapshot() leaves to its first flush.
    return withDisk(path as string, false, async (d) => withOpen(await d.snapshot(child as string), async (c) => {
      await c.flush();
      return showInfo(io, values, c);
    }));
  },

  async clone([base, child, ...extra], values, io) {
    need(child !== undefined && extra.length === 0, 'clone: give BASE and CHILD');
    return withOpen(await VirtualDisk.clone(base as string, child as string), async (c) => {
      await c.flush();
      return showInfo(io, values, c);
    });
  },

  async coalesce([path, ...extra], values, io) {
    need(path !== undefined && extra.length === 0, 'coalesce: give one CHILD');
    return withDisk(path as string, false, (child) =>
      interruptible(async (signal) => {
        let bar: ReturnType<typeof progressBar> | undefined;
        try {
          const result = await child.coalesce({
            signal,
            onProgress: (p) => {
              bar ??= progressBar(io.stderr, 'coalesce', p.blocksTotal, { enabled: !values.quiet && !values.json });
              bar.update(p.blocksDone);
            },
          });
          bar?.end();
          if (values.json) printJson(io, result);
          else io.stdout.write(`copied ${result.bytesCopied} bytes (${formatBytes(result.bytesCopied)}) from ${result.blocks} blocks into ${result.parent}\n`);
          return EXIT_OK;
        } catch (err) {
          bar?.end();
          if ((err as Error).name === 'AbortError') throw new Error('coalesce interrupted: run it again to finish (the disks are consistent)', { cause: err });
          throw err;
        }
      }),
    );
  },

  async resize([path, size, ...extra], values, io) {
    need(size !== undefined && extra.length === 0, 'resize: give PATH and SIZE');
    const bytes = parseSize(size as string);
    return withDisk(path as string, false, async (d) => {
      await d.resize(bytes);
      return showInfo(io, values, d);
    });
  },

  async check(paths, values, io) {
    need(paths.length > 0, 'check: give at least one PATH');
    const results: Array<{ path: string; problems: VhdProblem[] }> = [];
    for (const p of paths) results.push({ path: resolve(p), problems: await VirtualDisk.check(p) });
    if (values.json) printJson(io, results);
    else for (const r of results) io.stdout.write(formatProblems(r.path, r.problems));
    return results.some((r) => r.problems.length > 0) ? EXIT_PROBLEMS : EXIT_OK;
  },

  async repair([path, ...extra], values, io) {
    need(path !== undefined && extra.length === 0, 'repair: give one PATH');
    const report = await VirtualDisk.repair(path as string);
    if (values.json) printJson(io, report);
    else {
      if (report.actions.length === 0) io.stdout.write(`${report.path}: nothing to repair\n`);
      for (const a of report.actions) io.stdout.write(`${report.path}: ${a.code}: ${a.message}\n`);
      if (report.problems.length > 0) io.stdout.write(`left as they are:\n${formatProblems(report.path, report.problems)}`);
    }
    return report.problems.length > 0 ? EXIT_PROBLEMS : EXIT_OK;
  },

  async convert([src, dst, ...extra], values, io) {
    need(dst !== undefined && extra.length === 0, 'convert: give SRC and DST');
    const to = values.output;
    need(to === 'raw' || to === 'fixed' || to === 'dynamic', `convert: -O must be raw, fixed or dynamic${to === undefined ? '' : `, not '${to}'`}`);
    const from = values.format ?? 'vhd';
    need(from === 'vhd' || from === 'raw', `convert: -f must be vhd or raw, not '${from}'`);
    need(resolve(src as string) !== resolve(dst as string), 'convert: SRC and DST must be different files');
    return convertCommand(src as string, from as 'vhd' | 'raw', dst as string, to as 'raw' | 'fixed' | 'dynamic', 'convert', values, io);
  },

  async export([path, out, ...extra], values, io) {
    need(path !== undefined && extra.length === 0, 'export: give PATH and at most one OUT');
    if (out === undefined || out === '-') {
      need(!io.stdout.isTTY, 'export: refusing to write a disk image to a terminal; give OUT or redirect stdout');
      need(!values.json, 'export: --json needs OUT (stdout carries the image)');
      return exportToStream(path as string, values, io);
    }
    return convertCommand(path as string, 'vhd', out, 'raw', 'export', values, io);
  },
};

async function withOpen(disk: VirtualDisk, fn: (d: VirtualDisk) => Promise<number>): Promise<number> {
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

/** A progress bar for a copy of `total` bytes, made on the first report (when the total is known). */
function copyProgress(io: DiskIo, label: string, values: Values): { update(done: number, total: number): void; end(): void } {
  let bar: ReturnType<typeof progressBar> | undefined;
  return {
    update(done, total) {
      bar ??= progressBar(io.stderr, label, total, { enabled: !values.quiet && !values.json, unit: 'bytes' });
      bar.update(done);
    },
    end: () => bar?.end(),
  };
}

/** convert, and export into a file: VirtualDisk.convert, atomic and sparse-aware. */
async function convertCommand(src: string, from: 'vhd' | 'raw', dst: string, to: 'raw' | 'fixed' | 'dynamic', label: string, values: Values, io: DiskIo): Promise<number> {
  const bar = copyProgress(io, label, values);
  const result = await interruptible((signal) =>
    VirtualDisk.convert(src, dst, { type: to, format: from, overwrite: values.force === true, signal, onProgress: (p) => bar.update(p.done, p.total) }),
  ).finally(() => bar.end());
  const out = { source: resolve(src), destination: result.path, type: to, size: result.size, bytesWritten: result.bytesWritten };
  if (values.json) printJson(io, out);
  else io.stdout.write(`${out.destination}: ${to}, ${out.size} bytes (${formatBytes(out.bytesWritten)} of data written)\n`);
  return EXIT_OK;
}

/** export to stdout: the disk's bytes in order through createReadStream, waiting for the reader. */
async function exportToStream(path: string, values: Values, io: DiskIo): Promise<number> {
  return withDisk(path, true, (disk) =>
    interruptible(async (signal) => {
      const bar = copyProgress(io, 'export', values);
      const stream = disk.createReadStream();
      const stop = (): void => {
        stream.destroy(abortError(signal));
      };
      signal.addEventListener('abort', stop, { once: true });
      try {
        let done = 0;
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          if (!io.stdout.write(chunk)) await once(io.stdout, 'drain');
          done += chunk.length;
          bar.update(done, disk.size);
        }
      } finally {
        signal.removeEventListener('abort', stop);
        bar.end();
      }
      return EXIT_OK;
    }),
  );
}

/** Runs `xenode disk` with `args` against `io`. */
export async function runDisk(args: string[], io: DiskIo): Promise<number> {
  const { values, positionals } = parseCommandLine(args, options, DISK_USAGE);
  if (values.help) {
    io.stdout.write(`${DISK_USAGE}\n`);
    return EXIT_OK;
  }
  const [name, ...rest] = positionals;
  if (name === undefined) throw new UsageError('disk: missing subcommand', DISK_USAGE);
  const sub = Object.hasOwn(subcommands, name) ? subcommands[name] : undefined;
  if (sub === undefined) throw new UsageError(`disk: unknown subcommand '${name}'`, DISK_USAGE);
  const own: Record<string, string[]> = { create: ['size', 'type'], convert: ['format', 'output'] };
  for (const opt of ['size', 'type', 'format', 'output'] as const) {
    if (values[opt] !== undefined && !own[name]?.includes(opt)) throw new UsageError(`disk ${name}: --${opt} belongs to ${opt === 'size' || opt === 'type' ? 'create' : 'convert'}`, DISK_USAGE);
  }
  if (values.force && name !== 'convert' && name !== 'export' && name !== 'create') throw new UsageError(`disk ${name}: --force belongs to create, convert and export`, DISK_USAGE);
  return sub(rest, values, io);
}

/** `xenode disk …`. */
export const diskCommand: Command = (args) => runDisk(args, { stdout: process.stdout, stderr: process.stderr });
