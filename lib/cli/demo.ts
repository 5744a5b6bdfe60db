import { performance } from 'node:perf_hooks';
import { XenError } from '../errors.js';
import { MockHost } from '../mock/host.js';
import { connect, type Xen } from '../xen.js';
import type { XenStore } from '../xenstore/xenstore.js';
import { EXIT_OK, UsageError, parseCommandLine, type Command } from './common.js';
import { escapeValue, formatPermissions, formatTree } from './format.js';

/** Usage text of `xenode demo`. */
export const DEMO_USAGE = `Usage: xenode demo

A guided walk through xenode on a simulated Xen host that lives inside this process:
nothing on your machine is touched and no Xen is needed. Each step prints what it does
and what the host answered.

Options:
  -h, --help   show this help`;

/** What every demo step gets to work with. */
export interface DemoContext {
  /** The simulated host; its test controls (e.g. `openXenStore({ domid })`) are fair game. */
  readonly host: MockHost;
  /** dom0's view of the host, as `connect({ backend: host })` returns it. */
  readonly xen: Xen;
  /** The VM the walk-through manages, as a toolstack would record it under /vm. */
  readonly vm: { readonly uuid: string; readonly path: string };
  /** Prints one line of the step's story, indented under its heading. */
  say(line: string): void;
  /** Registers cleanup to run when the demo ends, even if a step fails. */
  defer(fn: () => Promise<void>): void;
}

/** One step of the demo: a heading and the code that tells its story through `ctx.say`. */
export interface DemoStep {
  readonly title: string;
  run(ctx: DemoContext): Promise<void>;
}

const q = (value: string | Uint8Array) => `"${escapeValue(typeof value === 'string' ? Buffer.from(value) : value)}"`;

/** The error code a promise rejects with, or 'ok' — steps use it to show denials. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof XenError) return err.code;
    throw err;
  }
}

/** An unprivileged domain's XenStore, opened once and closed when the demo ends. */
async function guest(ctx: DemoContext): Promise<XenStore> {
  const xs = await ctx.host.openXenStore({ domid: 5 });
  ctx.defer(() => xs.close());
  return xs;
}

const GUEST = 5;

/** `$VM/name` for `/vm/<uuid>/name`: the uuid would drown every line of the story. */
function short(ctx: DemoContext, path: string): string {
  return path.startsWith(ctx.vm.path) ? `$VM${path.slice(ctx.vm.path.length)}` : path;
}

/** The XenStore part of the walk-through. */
export const xenstoreSteps: readonly DemoStep[] = [
  {
    title: 'Connect to a simulated Xen host',
    async run(ctx) {
      ctx.say(`const host = await MockHost.create();         // dom0 and a xenstored, in this process`);
      ctx.say(`const xen = await connect({ backend: host }); // the same API a real dom0 gets with 'native'`);
      ctx.say(`backend: ${ctx.xen.backend.name}; domain home of dom0: ${await ctx.xen.xenstore.getDomainPath(0)}`);
    },
  },
  {
    title: 'Write and read like a toolstack',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const { path } = ctx.vm;
      await xs.write('/local/domain/0/name', 'Domain-0');
      ctx.say(`write /local/domain/0/name = ${q('Domain-0')}`);
      ctx.say(`a VM's entries live under /vm/<uuid>; here $VM = ${path}`);
      for (const [key, value] of [['name', 'web'], ['memory', '512'], ['vcpus', '2']] as const) {
        await xs.write(`${path}/${key}`, value);
        ctx.say(`write $VM/${key} = ${q(value)}`);
      }
      ctx.say(`read  $VM/memory → ${q(await xs.read(`${path}/memory`))}`);
      ctx.say(`read  $VM → ${q(await xs.read(path))}   (parents are created empty)`);
      ctx.say(`list  $VM → [${(await xs.list(path)).join(', ')}]`);
      ctx.say(`read  $VM/kernel → ${await outcome(xs.read(`${path}/kernel`))}   (no such node)`);
    },
  },
  {
    title: 'Permissions: an unprivileged domain',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const dom5 = await guest(ctx);
      const name = `${ctx.vm.path}/name`;
      const shown = short(ctx, name);
      ctx.say(`const dom5 = await host.openXenStore({ domid: ${GUEST} })`);
      ctx.say(`perms of ${shown}: ${formatPermissions(await xs.getPermissions(name))}   (owner dom0, others: none)`);
      ctx.say(`dom5 read  ${shown} → ${await outcome(dom5.read(name))}`);
      await xs.setPermissions(name, [
        { domid: 0, read: false, write: false },
        { domid: GUEST, read: true, write: false },
      ]);
      ctx.say(`dom0 setPermissions ${shown} ${formatPermissions(await xs.getPermissions(name))}   (owner dom0; dom5 may read)`);
      ctx.say(`dom5 read  ${shown} → ${q(await dom5.read(name))}`);
      ctx.say(`dom5 write ${shown} → ${await outcome(dom5.write(name, 'evil'))}   (read-only for dom5)`);

      // The mock host made dom5's home as libxl does; relative paths resolve there.
      const home = await xs.getDomainPath(GUEST);
      ctx.say(`${home}: ${formatPermissions(await xs.getPermissions(home))}, its data/: ${formatPermissions(await xs.getPermissions(`${home}/data`))}   (as libxl makes them)`);
      ctx.say(`dom5 write name → ${await outcome(dom5.write('name', 'evil'))}   (its home is dom0's)`);
      await dom5.write('data/ip', '10.0.0.5');
      ctx.say(`dom5 write data/ip = ${q('10.0.0.5')}   (relative to its home)`);
      ctx.say(`dom0 read  ${home}/data/ip → ${q(await xs.read(`${home}/data/ip`))}`);
    },
  },
  {
    title: 'Watch: a first event, then every change below',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const { path } = ctx.vm;
      // A timeout so that a missing event ends the demo with an error instead of a hang.
      const events = xs.watch(path, { signal: AbortSignal.timeout(1500) });
      try {
        const first = await events.next();
        ctx.say(`watch $VM → event ${short(ctx, first.value?.path ?? '')}   (sent once on registration)`);
        await xs.write(`${path}/state`, 'running');
        const change = await events.next();
        ctx.say(`write $VM/state = ${q('running')} → event ${short(ctx, change.value?.path ?? '')}`);
      } finally {
        await events.return?.();
      }
      ctx.say('breaking out of the loop (or aborting its signal) removes the watch');
    },
  },
  {
    title: 'Transaction: several writes, seen all at once',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const memory = `${ctx.vm.path}/memory`;
      const vcpus = `${ctx.vm.path}/vcpus`;
      await xs.transaction(async (tx) => {
        await tx.write(memory, '1024');
        await tx.write(vcpus, '4');
        ctx.say(`in tx ${tx.id}: write memory = ${q('1024')}, vcpus = ${q('4')}`);
        ctx.say(`outside, before commit: memory → ${q(await xs.read(memory))}`);
      });
      ctx.say(`after commit:           memory → ${q(await xs.read(memory))}, vcpus → ${q(await xs.read(vcpus))}`);
    },
  },
  {
    title: 'A conflicting writer, resolved by retry',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const other = await ctx.host.openXenStore();
      ctx.defer(() => other.close());
      const gen = `${ctx.vm.path}/generation`;
      await xs.write(gen, '1');
      let attempt = 0;
      const final = await xs.transaction(async (tx) => {
        attempt++;
        const n = Number(await tx.read(gen));
        if (attempt === 1) {
          // Another toolstack process bumps the counter while this transaction is open.
          await other.write(gen, '10');
          ctx.say(`attempt 1: read generation ${n}; meanwhile another client writes 10`);
        } else {
          ctx.say(`attempt ${attempt}: commit of the previous attempt failed with EAGAIN; read generation ${n}`);
        }
        await tx.write(gen, String(n + 1));
        return n + 1;
      });
      ctx.say(`committed on attempt ${attempt}: generation → ${q(await xs.read(gen))} (expected ${final}, nothing lost)`);
    },
  },
  {
    title: 'The tree now (what xenstore-ls -p would show)',
    async run(ctx) {
      for (const root of ['/vm', '/local/domain']) {
        ctx.say(root);
        for await (const line of formatTree(ctx.xen.xenstore, root, { permissions: true })) ctx.say(` ${line}`);
      }
    },
  },
];

const WEB_CFG = `name = "web1"
type = "pvh"
kernel = "/boot/vmlinuz-6.1"
extra = "console=hvc0"
memory = 256
maxmem = 512
vcpus = 1
maxvcpus = 2
disk = [ 'format=raw, vdev=xvda, access=rw, target=/srv/web1.img' ]
vif = [ 'mac=00:16:3e:00:00:01, bridge=xenbr0, queues=2' ]`;

/** The domains part of the walk-through. */
export const domainSteps: readonly DemoStep[] = [
  {
    title: 'Create a domain from an xl.cfg file',
    async run(ctx) {
      for (const line of WEB_CFG.split('\n')) ctx.say(`| ${line}`);
      const dom = await ctx.xen.domains.create(WEB_CFG);
      ctx.defer(() => dom.destroy().catch(() => undefined));
      const i = await dom.info();
      ctx.say(`await xen.domains.create(cfg) → domid ${i.domid}, ${i.state}, ${i.memory.current} MiB, ${i.vcpus.online}/${i.vcpus.max} vCPUs`);
      for (const d of await ctx.xen.domains.list()) ctx.say(`  ${d.name.padEnd(9)} id ${String(d.domid).padStart(2)}  ${String(d.memory.current).padStart(5)} MiB  ${d.state}`);
    },
  },
  {
    title: 'What libxl wrote to XenStore for it',
    async run(ctx) {
      const xs = ctx.xen.xenstore;
      const dom = await ctx.xen.domains.get('web1');
      const home = `/local/domain/${dom.domid}`;
      for (const key of ['name', 'vm', 'memory/target', 'cpu/1/availability', 'device/vbd/51712/state', 'device/vif/0/multi-queue-num-queues']) {
        ctx.say(`${home}/${key} = ${q(await xs.read(`${home}/${key}`))}`);
      }
      const be = `/local/domain/0/backend/vbd/${dom.domid}/51712`;
      ctx.say(`${be}/params = ${q(await xs.read(`${be}/params`))}, state = ${q(await xs.read(`${be}/state`))}   (4: connected)`);
      for (const d of await dom.listDevices()) ctx.say(`device ${d.kind} ${d.devid}: frontend ${d.frontendState}, backend ${d.backendState}`);
    },
  },
  {
    title: 'Pause, balloon, add a vCPU',
    async run(ctx) {
      const dom = await ctx.xen.domains.get('web1');
      await dom.pause();
      ctx.say(`pause()   → ${(await dom.info()).state}`);
      await dom.unpause();
      ctx.say(`unpause() → ${(await dom.info()).state}`);
      await dom.setMemoryTarget(384);
      await dom.setVcpus(2);
      await dom.waitFor('running');
      const i = await dom.info();
      ctx.say(`setMemoryTarget(384), setVcpus(2) → target ${i.memory.target} MiB (max ${i.memory.max}), ${i.vcpus.online} vCPUs online`);
      ctx.say(`free host memory: ${await ctx.xen.host.freeMemory()} MiB of ${(await ctx.xen.host.info()).totalMemory}`);
    },
  },
  {
    title: 'Shut it down and watch the events',
    async run(ctx) {
      const dom = await ctx.xen.domains.get('web1');
      const events = ctx.xen.domains.events({ signal: AbortSignal.timeout(5000) });
      await dom.shutdown({ wait: true, timeoutMs: 5000 });
      ctx.say(`shutdown({ wait: true }): the guest saw control/shutdown = "poweroff" and went down`);
      for await (const ev of events) {
        ctx.say(`event ${ev.type}${ev.type === 'shutdown' ? ` (${ev.reason})` : ''} domid ${ev.domid}`);
        if (ev.type === 'death') break;
      }
      ctx.say(`listed now: [${(await ctx.xen.domains.list()).map((d) => d.name).join(', ')}]`);
    },
  },
  {
    title: 'Errors say what Xen would say',
    async run(ctx) {
      const huge = ctx.xen.domains.create({ name: 'huge', type: 'pv', kernel: '/k', memory: 1024 * 1024, vcpus: 1 });
      ctx.say(`create 1 TiB domain → ${await outcome(huge)}`);
      ctx.say(`domains.get('nope') → ${await outcome(ctx.xen.domains.get('nope'))}`);
      const broken = await ctx.xen.domains.create('name = "x"\nmemory = "lots"\n').then(
        () => 'created?!',
        (err: Error) => `${err.name}: ${err.message}`,
      );
      ctx.say(`create(broken xl.cfg) → ${broken}   (nothing was created)`);
    },
  },
];

/** Every step of `xenode demo`, in order. Later parts of xenode (disks…) append their own lists here. */
export const demoSteps: readonly DemoStep[] = [...xenstoreSteps, ...domainSteps];

const VM_UUID = '5e2c4a0e-8d1f-4f6b-9c3a-2b7d1e0f9a41';

/**
 * Runs `steps` on a fresh simulated host, printing a numbered heading per step and the
 * step's story below it. The host is closed at the end, also when a step fails.
 */
export async function runDemo(out: NodeJS.WritableStream, steps: readonly DemoStep[] = demoSteps): Promise<void> {
  const started = performance.now();
  // Instant simulated timing: the walk-through shows the order of things, not their pace.
  const host = await MockHost.create({ timing: 'instant' });
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const xen = await connect({ backend: host });
    cleanups.push(() => xen.close());
    const ctx: DemoContext = {
      host,
      xen,
      vm: { uuid: VM_UUID, path: `/vm/${VM_UUID}` },
      say: (line) => out.write(`    ${line}\n`),
      defer: (fn) => cleanups.push(fn),
    };
    out.write('xenode demo: XenStore and domains on a simulated Xen host\n');
    for (const [i, step] of steps.entries()) {
      out.write(`\n[${i + 1}/${steps.length}] ${step.title}\n`);
      await step.run(ctx);
    }
  } finally {
    for (const fn of cleanups.reverse()) await fn();
    await host.close();
  }
  out.write(`\nDone in ${Math.round(performance.now() - started)} ms. Next: serve this to the real Xen tools with\n`);
  out.write('    npx xenode mock-host --xenstore-socket /tmp/xs.sock &\n');
  out.write('    XENSTORED_PATH=/tmp/xs.sock xenstore-ls -p /\n');
  out.write('    npx xenode create web1.cfg --mock-host /tmp/xs.sock && npx xenode list --mock-host /tmp/xs.sock\n');
}

/** `xenode demo`. */
export const demoCommand: Command = async (args) => {
  const { values, positionals } = parseCommandLine(args, { help: { type: 'boolean', short: 'h' } } as const, DEMO_USAGE);
  if (values.help) {
    process.stdout.write(`${DEMO_USAGE}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`demo: unexpected argument '${positionals[0]}'`, DEMO_USAGE);
  await runDemo(process.stdout);
  return EXIT_OK;
};
