/**
 * The xl-like commands: list, info, create, destroy, pause, unpause, shutdown, reboot,
 * mem-set, vcpu-set, console, save, restore, migrate, migrate-receive, top. Tables by default, `--json` for scripts;
 * the native backend (or $XENODE_BACKEND) unless `--mock-host PATH` names a running
 * `xenode mock-host`.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { type Socket, createServer, connect as tcpConnect } from 'node:net';
import { Duplex } from 'node:stream';
import type { DomainInfo, DomainState, HostInfo } from '../backend-toolstack.js';
import { connectMockHost } from '../mock/remote.js';
import { connect, type Xen } from '../xen.js';
import { EXIT_OK, UsageError, parseCommandLine, nextSignal, type Command } from './common.js';

/** Usage text of the domain commands. */
export const DOMAINS_USAGE = `Usage: xenode <command> [--mock-host PATH] [--json] …

Manage domains, as xl does. Without --mock-host they use the backend connect() picks
($XENODE_BACKEND, else native); with --mock-host PATH they drive the simulated host that
'xenode mock-host --xenstore-socket PATH' runs.

  list                        the domains: name, id, memory (MiB), vCPUs, state, CPU time (s)
  info                        the host: Xen version, CPUs, memory, scheduler
  create FILE                 create a domain from an xl.cfg file
  destroy DOMAIN              destroy at once
  pause DOMAIN | unpause DOMAIN
  shutdown [-w] DOMAIN        ask the guest to power off (-w: wait until it is gone)
  reboot [-w] DOMAIN          ask the guest to reboot (-w: wait until it is back)
  mem-set DOMAIN MEM          set the balloon target (MEM in MiB, or with a k/m/g suffix)
  vcpu-set DOMAIN COUNT       bring COUNT vCPUs online
  block-snapshot DOMAIN VDEV CHILD
                              live snapshot of the running domain's VHD disk VDEV: its
                              backend switches to the new differencing image CHILD
  console DOMAIN              attach to the console (Ctrl-] detaches; so does the end of stdin)
  save DOMAIN FILE            save the domain to FILE (the domain is destroyed)
  restore FILE                restore a saved domain
  migrate DOMAIN HOST:PORT    migrate the domain live to the host where
                              'xenode migrate-receive --listen PORT' waits
  migrate DOMAIN --ssh HOST   the same over ssh: runs 'xenode migrate-receive' on HOST
  migrate-receive             receive one migration on stdin/stdout (what --ssh runs), or
                              on the first TCP connection to --listen PORT
  top [-d SECS] [-i COUNT]    refresh a table of domains with CPU %, COUNT times (default:
                              until SIGINT on a terminal, once otherwise)

DOMAIN is a name or a domid.

Options:
  --mock-host PATH            the XenStore socket of a running 'xenode mock-host'
  --json                      print JSON instead of a table
  -w, --wait                  (shutdown, reboot) wait for the outcome
  --offline                   (migrate) suspend the guest for the whole copy, not live
  --ssh HOST                  (migrate) the destination, reached with ssh
  --listen PORT               (migrate-receive) accept the migration on this TCP port
  --name NAME                 (migrate-receive) the name the domain takes here
  --paused                    (migrate-receive) leave the domain paused once it arrives
  -d, --delay SECS            (top) seconds between refreshes, default 1
  -i, --iterations COUNT      (top) refreshes before exiting
  -h, --help                  show this help`;

const options = {
  'mock-host': { type: 'string' },
  json: { type: 'boolean' },
  wait: { type: 'boolean', short: 'w' },
  delay: { type: 'string', short: 'd' },
  iterations: { type: 'string', short: 'i' },
  help: { type: 'boolean', short: 'h' },
  offline: { type: 'boolean' },
  ssh: { type: 'string' },
  listen: { type: 'string' },
  name: { type: 'string' },
  paused: { type: 'boolean' },
} as const;

interface Ctx {
  xen: Xen;
  args: string[];
  json: boolean;
  wait: boolean;
  delay: number;
  iterations: number | undefined;
  out: NodeJS.WritableStream;
  migration: { offline: boolean; ssh?: string | undefined; listen?: string | undefined; name?: string | undefined; paused: boolean };
}

/** `xl list`'s state column: one letter in its place among `rbpscd`. */
export function stateFlags(state: DomainState): string {
  const order = 'rbpscd';
  const letter = { running: 'r', blocked: 'b', paused: 'p', shutdown: 's', crashed: 'c', dying: 'd' }[state];
  return [...order].map((c) => (c === letter ? c : '-')).join('');
}

/** Lines of a left-aligned table (numbers right-aligned), as `xl list` prints. */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string[] {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  return cells.map((r) =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd(),
  );
}

function listTable(domains: readonly DomainInfo[]): string[] {
  return table(
    ['Name', 'ID', 'Mem', 'VCPUs', 'State', 'Time(s)'],
    domains.map((d) => [d.name, d.domid, d.memory.current, d.vcpus.online, stateFlags(d.state), d.cpuTime.toFixed(1)]),
  );
}

function hostLines(h: HostInfo): string[] {
  const rows: [string, string | number][] = [
    ['xen_version', h.xenVersion],
    ['xen_caps', h.capabilities.join(' ')],
    ['nr_cpus', h.cpus],
    ['nr_nodes', h.numaNodes],
    ['cores_per_socket', h.cores / h.sockets],
    ['threads_per_core', h.threadsPerCore],
    ['total_memory', h.totalMemory],
    ['free_memory', h.freeMemory],
    ['xen_scheduler', h.scheduler],
  ];
  return rows.map(([k, v]) => `${k.padEnd(22)}: ${v}`);
}

/** A memory size for mem-set: MiB, or with a b/k/m/g/t suffix as xl takes it. */
export function parseMemory(text: string): number {
  const m = /^(\d+)([bkmgt]?)$/i.exec(text.trim());
  if (m === null) throw new UsageError(`mem-set: '${text}' is not a memory size (e.g. 512, 512m, 2g)`, DOMAINS_USAGE);
  const n = Number(m[1]);
  const mib = { b: n / 1048576, k: n / 1024, m: n, g: n * 1024, t: n * 1048576, '': n }[(m[2] ?? '').toLowerCase()] as number;
  if (!Number.isInteger(mib) || mib < 1) throw new UsageError(`mem-set: '${text}' is not a whole number of MiB`, DOMAINS_USAGE);
  return mib;
}

function positiveInt(text: string | undefined, what: string): number {
  if (text === undefined || !/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${what} must be a positive integer, got '${text ?? ''}'`, DOMAINS_USAGE);
  return Number(text);
}

function print(ctx: Ctx, json: unknown, lines: () => string[]): void {
  ctx.out.write(ctx.json ? `${JSON.stringify(json, null, 2)}\n` : lines().map((l) => `${l}\n`).join(''));
}

/** What each command needs: its positional count (min, max) and its action. */
const actions: Record<string, { args: [number, number]; run(ctx: Ctx): Promise<void> }> = {
  list: {
    args: [0, 0],
    async run(ctx) {
      const domains = await ctx.xen.domains.list();
      print(ctx, domains, () => listTable(domains));
    },
  },
  info: {
    args: [0, 0],
    async run(ctx) {
      const info = await ctx.xen.host.info();
      print(ctx, info, () => hostLines(info));
    },
  },
  create: {
    args: [1, 1],
    async run(ctx) {
      const file = ctx.args[0] as string;
      const dom = await ctx.xen.domains.create(await readFile(file, 'utf8'), { filename: file });
      const info = await dom.info();
      print(ctx, info, () => [`Created domain ${info.name} (domid ${info.domid})`]);
    },
  },
  destroy: simple('destroy', (d) => d.destroy()),
  pause: simple('pause', (d) => d.pause()),
  unpause: simple('unpause', (d) => d.unpause()),
  shutdown: {
    args: [1, 1],
    async run(ctx) {
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await dom.shutdown({ wait: ctx.wait });
      print(ctx, { domid: dom.domid, name: dom.name, done: ctx.wait }, () => [ctx.wait ? `Domain ${dom.name} is down` : `Asked ${dom.name} to shut down`]);
    },
  },
  reboot: {
    args: [1, 1],
    async run(ctx) {
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await dom.reboot({ wait: ctx.wait });
      print(ctx, { domid: dom.domid, name: dom.name, done: ctx.wait }, () => [ctx.wait ? `Domain ${dom.name} is back as domid ${dom.domid}` : `Asked ${dom.name} to reboot`]);
    },
  },
  'mem-set': {
    args: [2, 2],
    async run(ctx) {
      const mib = parseMemory(ctx.args[1] as string);
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await dom.setMemoryTarget(mib);
      print(ctx, { domid: dom.domid, target: mib }, () => [`Memory target of ${dom.name}: ${mib} MiB`]);
    },
  },
  'vcpu-set': {
    args: [2, 2],
    async run(ctx) {
      const count = positiveInt(ctx.args[1], 'vcpu-set: COUNT');
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await dom.setVcpus(count);
      print(ctx, { domid: dom.domid, vcpus: count }, () => [`${dom.name}: ${count} vCPU(s) online`]);
    },
  },
  'block-snapshot': {
    args: [3, 3],
    async run(ctx) {
      const [name, vdev, child] = ctx.args as [string, string, string];
      const dom = await ctx.xen.domains.get(name);
      const snap = await dom.snapshotDisk(vdev, child);
      print(ctx, { domid: dom.domid, name: dom.name, ...snap }, () => [
        `${dom.name} ${snap.vdev}: now on ${snap.child}; ${snap.parent} is its hidden parent (guest I/O held ${snap.pausedMs.toFixed(1)} ms)`,
      ]);
    },
  },
  save: {
    args: [2, 2],
    async run(ctx) {
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await dom.save(ctx.args[1] as string);
      print(ctx, { domid: dom.domid, name: dom.name, file: ctx.args[1] }, () => [`Saved ${dom.name} to ${ctx.args[1]}`]);
    },
  },
  restore: {
    args: [1, 1],
    async run(ctx) {
      const dom = await ctx.xen.domains.restore(ctx.args[0] as string);
      const info = await dom.info();
      print(ctx, info, () => [`Restored ${info.name} (domid ${info.domid})`]);
    },
  },
  migrate: { args: [1, 2], run: migrate },
  'migrate-receive': { args: [0, 0], run: migrateReceive },
  console: { args: [1, 1], run: attachConsole },
  top: { args: [0, 0], run: top },
};

function simple(verb: string, fn: (d: Awaited<ReturnType<Xen['domains']['get']>>) => Promise<void>): { args: [number, number]; run(ctx: Ctx): Promise<void> } {
  return {
    args: [1, 1],
    async run(ctx) {
      const dom = await ctx.xen.domains.get(ctx.args[0] as string);
      await fn(dom);
      print(ctx, { domid: dom.domid, name: dom.name, action: verb }, () => [`${verb}: ${dom.name} (domid ${dom.domid})`]);
    },
  };
}

/** `HOST:PORT` (or `[v6]:PORT`) as net.connect's options. */
function hostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || !(port >= 1 && port <= 65535)) throw new UsageError(`migrate: '${text}' is not HOST:PORT`, DOMAINS_USAGE);
  return { host: (m[1] ?? m[2]) as string, port };
}

async function migrate(ctx: Ctx): Promise<void> {
  const { ssh, offline } = ctx.migration;
  const [name, dest] = ctx.args as [string, string | undefined];
  if ((dest === undefined) === (ssh === undefined)) throw new UsageError('migrate: give either HOST:PORT or --ssh HOST', DOMAINS_USAGE);
  const dom = await ctx.xen.domains.get(name);
  let stream: Duplex;
  let done: () => Promise<void>;
  if (ssh !== undefined) {
    // as xl migrate: the receiving side speaks on its stdio
    const child = spawn('ssh', [ssh, 'xenode', 'migrate-receive'], { stdio: ['pipe', 'pipe', 'inherit'] });
    stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
    done = () => new Promise((resolve) => {
      child.stdin.end();
      if (child.exitCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  } else {
    const sock = tcpConnect(hostPort(dest as string));
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    stream = sock;
    done = () => new Promise((resolve) => sock.end(resolve));
  }
  let last = '';
  try {
    await dom.migrate(stream, {
      live: !offline,
      onProgress: (p) => {
        if (!ctx.json && process.stderr.isTTY && p.phase !== last) process.stderr.write(`${p.phase}… `);
        last = p.phase;
      },
    });
  } finally {
    await done();
  }
  if (!ctx.json && process.stderr.isTTY) process.stderr.write('\n');
  print(ctx, { name: dom.name, uuid: dom.uuid, to: ssh ?? dest, live: !offline }, () => [`Migrated ${dom.name} to ${ssh ?? dest}`]);
}

async function migrateReceive(ctx: Ctx): Promise<void> {
  const { listen, name, paused } = ctx.migration;
  const opts = { ...(name === undefined ? {} : { name }), paused };
  if (listen === undefined) {
    // stdout carries the stream: the report goes to stderr
    const dom = await ctx.xen.domains.receiveMigration(Duplex.from({ readable: process.stdin, writable: process.stdout }), opts);
    process.stderr.write(`Received ${dom.name} (domid ${dom.domid})\n`);
    return;
  }
  const port = positiveInt(listen, '--listen');
  const sock = await new Promise<Socket>((resolve, reject) => {
    const server = createServer((s) => {
      server.close();
      resolve(s);
    });
    server.once('error', reject).listen(port);
  });
  try {
    const dom = await ctx.xen.domains.receiveMigration(sock, opts);
    const info = await dom.info();
    print(ctx, info, () => [`Received ${info.name} (domid ${info.domid})`]);
  } finally {
    sock.end();
  }
}

/** Ctrl-], as xl console. */
const DETACH = 0x1d;

async function attachConsole(ctx: Ctx): Promise<void> {
  const dom = await ctx.xen.domains.get(ctx.args[0] as string);
  const con = await dom.console();
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  await new Promise<void>((resolve) => {
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      stdin.off('data', onInput);
      stdin.off('end', onEnd);
      stdin.pause();
      con.destroy();
      resolve();
    };
    const onInput = (chunk: Buffer) => {
      const at = chunk.indexOf(DETACH);
      if (at === -1) return void con.write(chunk);
      if (at > 0) con.write(chunk.subarray(0, at));
      done();
    };
    // Output still on its way when input ends gets a moment to arrive.
    const onEnd = () => setTimeout(done, 200);
    con.on('data', (chunk: Buffer) => ctx.out.write(chunk));
    con.on('end', done);
    con.on('error', done);
    stdin.on('data', onInput);
    stdin.on('end', onEnd);
    stdin.resume();
  });
  if (raw) stdin.setRawMode(false);
  if (!ctx.json) ctx.out.write('\n');
}

async function top(ctx: Ctx): Promise<void> {
  const iterations = ctx.iterations ?? (process.stdout.isTTY ? Infinity : 1);
  const stop = new AbortController();
  void nextSignal(stop.signal).then(() => stop.abort());
  let last = new Map<number, { cpu: number; at: number }>();
  try {
    for (let i = 0; i < iterations && !stop.signal.aborted; i++) {
      if (i > 0) await new Promise<void>((r) => {
        const t = setTimeout(r, ctx.delay * 1000);
        stop.signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
      });
      if (stop.signal.aborted) break;
      const [domains, host] = await Promise.all([ctx.xen.domains.list(), ctx.xen.host.info()]);
      const now = performance.now();
      const rows = domains.map((d) => {
        const prev = last.get(d.domid);
        const pct = prev === undefined ? 0 : ((d.cpuTime - prev.cpu) / ((now - prev.at) / 1000)) * 100;
        return { ...d, cpuPercent: Math.max(0, Math.round(pct * 10) / 10) };
      });
      last = new Map(domains.map((d) => [d.domid, { cpu: d.cpuTime, at: now }]));
      if (ctx.json) {
        ctx.out.write(`${JSON.stringify({ host: { totalMemory: host.totalMemory, freeMemory: host.freeMemory, cpus: host.cpus }, domains: rows })}\n`);
        continue;
      }
      if (process.stdout.isTTY && iterations > 1) ctx.out.write('\x1b[H\x1b[2J');
      ctx.out.write(`xenode top - ${rows.length} domains, ${host.cpus} CPUs, memory ${host.totalMemory} MiB total, ${host.freeMemory} MiB free\n`);
      const lines = table(
        ['NAME', 'ID', 'STATE', 'CPU(sec)', 'CPU(%)', 'MEM(MiB)', 'MAXMEM(MiB)', 'VCPUS'],
        rows.map((d) => [d.name, d.domid, stateFlags(d.state), d.cpuTime.toFixed(1), d.cpuPercent.toFixed(1), d.memory.current, d.memory.max, d.vcpus.online]),
      );
      ctx.out.write(lines.map((l) => `${l}\n`).join(''));
    }
  } finally {
    stop.abort();
  }
}

/** Names of the commands this module handles. */
export const DOMAIN_COMMANDS = Object.keys(actions);

/** The command `name` (`list`, `create`, …) as a {@link Command}. */
export function domainCommand(name: string): Command {
  const action = actions[name];
  if (action === undefined) throw new RangeError(`not a domain command: ${name}`);
  return async (args) => {
    const { values, positionals } = parseCommandLine(args, options, DOMAINS_USAGE);
    if (values.help) {
      process.stdout.write(`${DOMAINS_USAGE}\n`);
      return EXIT_OK;
    }
    const [min, max] = action.args;
    if (positionals.length < min) throw new UsageError(`${name}: missing argument`, DOMAINS_USAGE);
    if (positionals.length > max) throw new UsageError(`${name}: unexpected argument '${positionals[max]}'`, DOMAINS_USAGE);
    const delay = values.delay === undefined ? 1 : Number(values.delay);
    if (!Number.isFinite(delay) || delay < 0) throw new UsageError(`--delay must be a number of seconds, got '${values.delay}'`, DOMAINS_USAGE);
    const iterations = values.iterations === undefined ? undefined : positiveInt(values.iterations, '--iterations');
    const mockHost = values['mock-host'];
    if (mockHost === '') throw new UsageError('--mock-host needs a socket path', DOMAINS_USAGE);
    const xen = await connect(mockHost === undefined ? {} : { backend: connectMockHost(mockHost) });
    try {
      const migration = { offline: values.offline ?? false, ssh: values.ssh, listen: values.listen, name: values.name, paused: values.paused ?? false };
      await action.run({ xen, args: positionals, json: values.json ?? false, wait: values.wait ?? false, delay, iterations, out: process.stdout, migration });
    } finally {
      await xen.close();
    }
    return EXIT_OK;
  };
}
