/**
 * The `xenode` command, run as users run it: `node dist/cli/main.js …` (built by `pretest`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDemo, xenstoreSteps, type DemoStep } from '../../lib/cli/demo.js';
import { MockHost, XenStore } from '../../lib/index.js';
import { LineProcess, cliPath, projectRoot, run, type RunOptions } from '../helpers/run.js';

const xenode = (args: string[], options?: RunOptions) => run(process.execPath, [cliPath, ...args], options);
const version = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;

beforeAll(() => {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run npm run build (npm test does it in pretest)`);
});

describe('xenode: usage', () => {
  it('prints help and version', async () => {
    const help = await xenode(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: xenode <command>/);
    for (const cmd of ['demo', 'mock-host', 'xenstore']) expect(help.stdout).toContain(cmd);
    expect(await xenode(['-v'])).toMatchObject({ code: 0, stdout: `${version}\n` });
    expect(await xenode(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
  });

  it('puts its shebang first, so the bin runs on its own', () => {
    expect(readFileSync(cliPath, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('exits 2 with usage on stderr for an unknown or missing command', async () => {
    const unknown = await xenode(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stdout).toBe('');
    expect(unknown.stderr).toMatch(/^xenode: unknown command 'frobnicate'\n\nUsage: xenode/);
    expect((await xenode([])).code).toBe(2);
  });

  it('exits 2 for options a command does not know', async () => {
    const r = await xenode(['demo', '--frob']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("xenode: Unknown option '--frob'");
    expect(r.stderr).toContain('Usage: xenode demo');
    expect((await xenode(['mock-host'])).code).toBe(2);
    expect((await xenode(['xenstore', 'frob'])).code).toBe(2);
    expect((await xenode(['xenstore', 'write', '/only-a-path'])).code).toBe(2);
    expect((await xenode(['xenstore', 'watch', '-n', 'zero', '/x'])).code).toBe(2);
    expect((await xenode(['blkback'])).code).toBe(2);
    expect((await xenode(['blkback', 'frob', 'd', 'xvdb', 'f'])).code).toBe(2);
    expect((await xenode(['blkback', 'serve', 'd', 'xvdb'])).code).toBe(2);
    expect((await xenode(['blkback', 'serve', 'd', 'eth0', 'f'])).stderr).toContain("'eth0' is not a virtual disk name");
  });

  it('gives every command its own --help', async () => {
    for (const cmd of ['blkback', 'demo', 'mock-host', 'xenstore']) {
      const r = await xenode([cmd, '--help']);
      expect(r.code, cmd).toBe(0);
      expect(r.stdout).toContain(`Usage: xenode ${cmd}`);
    }
  });
});

describe('xenode demo', () => {
  it('walks through XenStore in under two seconds and exits 0', async () => {
    const started = Date.now();
    const r = await xenode(['demo']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const step of xenstoreSteps) expect(r.stdout).toContain(step.title);
    const reported = Number(/Done in (\d+) ms/.exec(r.stdout)?.[1]);
    expect(reported).toBeLessThan(2000);
    // Node's own start-up comes on top; generous, as CI machines are slow.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('shows a denial, a grant, both watch events and a retried conflict', async () => {
    let text = '';
    await runDemo({ write: (s: string) => ((text += s), true) } as unknown as NodeJS.WritableStream);
    expect(text).toMatch(/\$VM = \/vm\/[-0-9a-f]{36}\n/);
    expect(text).toContain('dom5 read  $VM/name → EACCES');
    expect(text).toContain('dom5 read  $VM/name → "web"');
    expect(text).toContain('dom5 write $VM/name → EACCES');
    expect(text).toContain('watch $VM → event $VM   (sent once on registration)');
    expect(text).toContain('write $VM/state = "running" → event $VM/state');
    expect(text).toContain('outside, before commit: memory → "512"');
    expect(text).toContain('after commit:           memory → "1024"');
    expect(text).toContain('committed on attempt 2: generation → "11"');
    expect(text).toMatch(/name = "web" [ .]+\(n0,r5\)/);
  });

  it('runs extra steps appended to the list, and closes the host when one fails', async () => {
    const seen: string[] = [];
    const steps: DemoStep[] = [
      {
        title: 'first',
        run: async (ctx) => {
          seen.push(await ctx.xen.xenstore.getDomainPath(0));
        },
      },
      {
        title: 'broken',
        run: async () => {
          throw new Error('step failed');
        },
      },
    ];
    let text = '';
    const out = { write: (s: string) => ((text += s), true) } as unknown as NodeJS.WritableStream;
    await expect(runDemo(out, steps)).rejects.toThrow('step failed');
    expect(seen).toEqual(['/local/domain/0']);
    expect(text).toContain('[1/2] first');
    expect(text).toContain('[2/2] broken');
  });
});

describe('xenode xenstore --socket', () => {
  let dir: string;
  let socket: string;
  let host: MockHost;
  let xs: XenStore;
  const cli = (...args: string[]) => xenode(['xenstore', ...args, '--socket', socket]);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-cli-'));
    socket = join(dir, 'xs.sock');
    host = await MockHost.create({ xenstoreSocket: socket });
    xs = await host.openXenStore();
  });
  afterAll(async () => {
    await xs?.close();
    await host?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('writes, reads, lists and removes', async () => {
    expect((await cli('write', '/c/a', 'hello', '/c/b/c', 'x\\x41')).code).toBe(0);
    expect(await xs.read('/c/b/c')).toBe('xA');
    expect(await cli('read', '/c/a', '/c/b/c')).toMatchObject({ code: 0, stdout: 'hello\nxA\n' });
    const ls = await cli('ls', '/c');
    expect(ls.stdout.split('\n')).toEqual(expect.arrayContaining(['a = "hello"', 'b = ""', ' c = "xA"']));
    await xs.setPermissions('/c/a', [{ domid: 0, read: false, write: false }, { domid: 5, read: true, write: false }]);
    expect((await cli('ls', '-f', '-p', '/c')).stdout).toContain('/c/a = "hello"   (n0,r5)');
    expect((await cli('rm', '/c/b')).code).toBe(0);
    expect(await xs.exists('/c/b/c')).toBe(false);
  });

  it('watches: first event, then changes, stopping after -n events', async () => {
    const w = new LineProcess(process.execPath, [cliPath, 'xenstore', 'watch', '-n', '2', '/cw', '--socket', socket]);
    expect(await w.nextLine()).toBe('/cw');
    await xs.write('/cw/k', 'v');
    expect(await w.nextLine()).toBe('/cw/k');
    expect((await w.exited).code).toBe(0);
  });

  it('ends a watch without -n on SIGINT, exiting 0', async () => {
    const w = new LineProcess(process.execPath, [cliPath, 'xenstore', 'watch', '/cw2', '--socket', socket]);
    expect(await w.nextLine()).toBe('/cw2');
    expect(await w.stop('SIGINT')).toEqual({ code: 0, signal: null });
  });

  it('reports a failure as one line with its code, exit 1, and a stack only under DEBUG', async () => {
    const r = await cli('read', '/c/nope');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^xenode: ENOENT: .*\/c\/nope.*\n$/);
    const bad = await cli('write', '/c/bad path', 'x');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^xenode: EINVAL/);
    const debug = await xenode(['xenstore', 'read', '/c/nope', '--socket', socket], { env: { DEBUG: '1' } });
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/^xenode: ENOENT/);
    expect(debug.stderr).toMatch(/\n +at /);
  });

  it('stops quietly when its reader goes away (xenode xenstore ls | head)', async () => {
    // More output than a pipe buffers, so the CLI is still writing when the reader leaves.
    await xs.transaction(async (tx) => {
      for (let i = 0; i < 1500; i++) await tx.write(`/cbig/node-${i}`, 'v'.repeat(100));
    });
    const proc = new LineProcess(process.execPath, [cliPath, 'xenstore', 'ls', '-f', '/cbig', '--socket', socket]);
    expect(await proc.nextLine()).toMatch(/^\/cbig\/node-\d+ = "v+"$/);
    proc.child.stdout?.destroy();
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    expect(proc.stderr).toBe('');
  });

  it('reports a socket nobody listens on', async () => {
    const r = await xenode(['xenstore', 'read', '/x', '--socket', join(dir, 'nobody.sock')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^xenode: /);
    expect(r.stderr).not.toMatch(/\n +at /);
  });
});

describe('xenode mock-host', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-mh-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const start = (socket: string) => new LineProcess(process.execPath, [cliPath, 'mock-host', '--xenstore-socket', socket]);

  it('serves XenStore until SIGTERM, then exits 0 and removes the socket', async () => {
    const socket = join(dir, 'a.sock');
    const proc = start(socket);
    try {
      expect(await proc.nextLine()).toBe(`xenode mock-host: XenStore on ${socket} (XENSTORED_PATH=${socket} xenstore-ls /)`);
      const xs = await XenStore.connect(socket);
      await xs.write('/m/k', 'v');
      expect(await xs.read('/m/k')).toBe('v');
      // A client still connected must not hold the shutdown up.
      expect(await proc.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(existsSync(socket)).toBe(false);
      await xs.close();
    } finally {
      await proc.stop('SIGKILL');
    }
  });

  it('replaces a stale socket but refuses one in use', async () => {
    const socket = join(dir, 'b.sock');
    const crashed = start(socket);
    await crashed.nextLine();
    await crashed.stop('SIGKILL');
    expect(existsSync(socket)).toBe(true);

    const proc = start(socket);
    try {
      expect(await proc.nextLine()).toContain(`XenStore on ${socket}`);
      const second = await run(process.execPath, [cliPath, 'mock-host', '--xenstore-socket', socket]);
      expect(second.code).toBe(1);
      expect(second.stderr).toBe(`xenode: ${socket} is in use by a running server\n`);
      expect(await proc.stop('SIGINT')).toEqual({ code: 0, signal: null });
    } finally {
      await proc.stop('SIGKILL');
    }
  });
});
