// bench: XenStore client throughput — TypeScript (one at a time, pipelined) vs libxenstore (C), against the mock xenstored
//
//   npm run bench -- xenstore [--json] [--check] [--rounds N] [--ops N] [--depth N]
//
// The mock xenstored runs in a child process (bench/xenstore-server.mjs) on a temporary
// unix socket. In the same run we measure, after a warm-up and over several rounds
// (median reported): the TypeScript client from dist/ one request at a time and with
// `depth` requests outstanding, and a small C program (bench/xs-bench.c, built once into
// bench/.build/) driving libxenstore, which is synchronous, via XENSTORED_PATH.
// --check exits 1 when a ratio is below its target.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const TARGETS = { serial: 0.8, pipelined: 3 };
const VALUE = Buffer.from('xenode-bench-value'); // the same bytes xs-bench.c writes

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '5' },
    ops: { type: 'string', default: '20000' },
    depth: { type: 'string', default: '32' },
  },
});
const rounds = positive('rounds', opts.rounds);
const ops = positive('ops', opts.ops);
const depth = positive('depth', opts.depth);

function positive(name, text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) die(`--${name} must be a positive integer, got ${text}`, 2);
  return n;
}

function die(message, code = 1) {
  console.error(`bench xenstore: ${message}`);
  process.exit(code);
}

/** Compiles xs-bench.c unless a binary built from the same source and flags is cached. */
function buildCBench() {
  const cc = process.env.CC || 'cc';
  const version = spawnSync(cc, ['--version'], { encoding: 'utf8' });
  if (version.error) die(`no C compiler (${cc}: ${version.error.code}); install gcc (Debian: build-essential) or set CC`);
  let flags;
  const pc = spawnSync('pkg-config', ['--cflags', '--libs', 'xenstore'], { encoding: 'utf8' });
  if (pc.status === 0) flags = pc.stdout.trim().split(/\s+/).filter(Boolean);
  else if (existsSync('/usr/include/xenstore.h')) flags = ['-lxenstore'];
  else die('libxenstore is missing (no pkg-config "xenstore", no /usr/include/xenstore.h); install libxen-dev (Debian) or xen-devel');

  const source = join(here, 'xs-bench.c');
  const key = createHash('sha256')
    .update(readFileSync(source))
    .update(`\0${cc}\0${flags.join(' ')}\0${version.stdout.split('\n', 1)[0]}`)
    .digest('hex')
    .slice(0, 16);
  const dir = join(here, '.build');
  const binary = join(dir, `xs-bench-${key}`);
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  const build = spawnSync(cc, ['-O2', '-Wall', '-o', tmp, source, ...flags], { encoding: 'utf8' });
  if (build.status !== 0) {
    rmSync(tmp, { force: true });
    die(`building ${source} failed (is libxen-dev installed?):\n${build.stderr || build.error}`);
  }
  renameSync(tmp, binary); // atomic, so a concurrent run never sees half a binary
  return binary;
}

/** Starts the mock xenstored in a child process; resolves once it listens on `socket`. */
function startServer(socket) {
  const child = spawn(process.execPath, [join(here, 'xenstore-server.mjs'), socket], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolveReady, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the mock xenstored did not start within 10 s')), 10_000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('ready\n')) {
        clearTimeout(timer);
        resolveReady(child);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the mock xenstored exited (${signal ?? `code ${code}`}) before it was ready`));
    });
  });
}

const execFileAsync = promisify(execFile);

async function runC(binary, socket, n) {
  const { stdout } = await execFileAsync(binary, [String(n), '/bench/c'], { env: { ...process.env, XENSTORED_PATH: socket } });
  const r = JSON.parse(stdout);
  return { read: r.read_ops_per_sec, write: r.write_ops_per_sec };
}

async function serial(fn, n) {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return n / ((performance.now() - t0) / 1000);
}

async function pipelined(fn, n, outstanding) {
  let left = n;
  const worker = async () => {
    while (left-- > 0) await fn();
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: outstanding }, worker));
  return n / ((performance.now() - t0) / 1000);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function measure(binary, socket, conn) {
  const read = () => conn.read(0, '/bench/ts');
  const write = () => conn.write(0, '/bench/ts', VALUE);
  const samples = { ts_serial: { read: [], write: [] }, ts_pipelined: { read: [], write: [] }, c: { read: [], write: [] } };

  // Warm-up: JIT both sides, grow socket buffers, and fault in libxenstore.
  await write();
  const got = await read();
  if (!got.equals(VALUE)) throw new Error(`read back ${JSON.stringify(got.toString())}, expected ${JSON.stringify(VALUE.toString())}`);
  const warm = Math.min(ops, 5000);
  await serial(write, warm);
  await serial(read, warm);
  await pipelined(write, warm, depth);
  await pipelined(read, warm, depth);
  await runC(binary, socket, Math.min(ops, 2000));

  for (let r = 0; r < rounds; r++) {
    const c = await runC(binary, socket, ops);
    samples.c.write.push(c.write);
    samples.c.read.push(c.read);
    samples.ts_serial.write.push(await serial(write, ops));
    samples.ts_serial.read.push(await serial(read, ops));
    samples.ts_pipelined.write.push(await pipelined(write, ops, depth));
    samples.ts_pipelined.read.push(await pipelined(read, ops, depth));
  }
  const results = {};
  for (const [name, s] of Object.entries(samples)) results[name] = { read: median(s.read), write: median(s.write) };
  return { results, samples };
}

function report({ results, samples }) {
  const ratio = (a, b) => ({ read: a.read / b.read, write: a.write / b.write });
  const ratios = { serial: ratio(results.ts_serial, results.c), pipelined: ratio(results.ts_pipelined, results.c) };
  const pass = {
    serial: ratios.serial.read >= TARGETS.serial && ratios.serial.write >= TARGETS.serial,
    pipelined: ratios.pipelined.read >= TARGETS.pipelined && ratios.pipelined.write >= TARGETS.pipelined,
  };
  if (opts.json) {
    console.log(JSON.stringify({ bench: 'xenstore', ops, rounds, depth, unit: 'ops/s', results, ratios, targets: TARGETS, pass, samples }, null, 2));
    return pass;
  }
  const n = (x) => Math.round(x).toLocaleString('en-US').padStart(10);
  const x = (r) => `${r.toFixed(2)}x`.padStart(8);
  console.log(`XenStore client throughput, ops/s (median of ${rounds} rounds of ${ops} ops; mock xenstored in a child process)\n`);
  console.log(`${''.padEnd(26)}${'read'.padStart(10)}${'write'.padStart(10)}`);
  console.log(`${'TS, one at a time'.padEnd(26)}${n(results.ts_serial.read)}${n(results.ts_serial.write)}`);
  console.log(`${`TS, pipelined (${depth})`.padEnd(26)}${n(results.ts_pipelined.read)}${n(results.ts_pipelined.write)}`);
  console.log(`${'C libxenstore'.padEnd(26)}${n(results.c.read)}${n(results.c.write)}`);
  console.log(`\n${'ratio'.padEnd(26)}${'read'.padStart(8)}${'write'.padStart(8)}  target`);
  console.log(`${'TS one at a time / C'.padEnd(26)}${x(ratios.serial.read)}${x(ratios.serial.write)}  >=${TARGETS.serial}x  ${pass.serial ? 'PASS' : 'BELOW'}`);
  console.log(`${'TS pipelined / C'.padEnd(26)}${x(ratios.pipelined.read)}${x(ratios.pipelined.write)}  >=${TARGETS.pipelined}x    ${pass.pipelined ? 'PASS' : 'BELOW'}`);
  return pass;
}

async function main() {
  for (const file of ['client.js', 'engine.js', 'server.js']) {
    if (!existsSync(join(root, 'dist', 'xenstore', file))) die(`dist/xenstore/${file} is missing; run \`npm run build\` first`);
  }
  const binary = buildCBench();
  const { connectXenStore } = await import(pathToFileURL(join(root, 'dist', 'xenstore', 'client.js')).href);

  const dir = mkdtempSync(join(tmpdir(), 'xenode-bench-'));
  const socket = join(dir, 'xenstored.sock');
  let server;
  let conn;
  try {
    server = await startServer(socket);
    conn = await connectXenStore(socket);
    const pass = report(await measure(binary, socket, conn));
    if (opts.check && !(pass.serial && pass.pipelined)) process.exitCode = 1;
  } finally {
    await conn?.close();
    server?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => die(err instanceof Error ? err.message : String(err)));
