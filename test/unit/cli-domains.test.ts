/**
 * The xl-like commands against a running `xenode mock-host` (`--mock-host PATH`), as an
 * operator runs them: table output, --json, exit codes.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { domainSteps } from '../../lib/cli/demo.js';
import { parseMemory, stateFlags, table } from '../../lib/cli/domains.js';
import { LineProcess, cliPath, run, type RunOptions } from '../helpers/run.js';

const xenode = (args: string[], options?: RunOptions) => run(process.execPath, [cliPath, ...args], options);

describe('xenode domain commands --mock-host', () => {
  let dir: string;
  let socket: string;
  let host: LineProcess;
  const cli = (...args: string[]) => xenode([...args, '--mock-host', socket]);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-cli-dom-'));
    socket = join(dir, 'xs.sock');
    host = new LineProcess(process.execPath, [cliPath, 'mock-host', '--xenstore-socket', socket, '--timing', 'instant'], { timeout: 120_000 });
    expect(await host.nextLine()).toContain(`XenStore on ${socket}`);
    expect(await host.nextLine()).toContain(`toolstack on ${socket}.toolstack`);
    await writeFile(join(dir, 'web.cfg'), 'name = "web"\nkernel = "/boot/vmlinuz"\nmemory = 256\nmaxmem = 512\nvcpus = 1\nmaxvcpus = 2\ndisk = [ "phy:/dev/vg/web,xvda,w" ]\n');
    await writeFile(join(dir, 'bad.cfg'), 'name = "bad"\nmemory = "lots"\n');
  });

  afterAll(async () => {
    expect(await host?.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(existsSync(`${socket}.toolstack`)).toBe(false);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates from an xl.cfg file and lists as xl does', async () => {
    const created = await cli('create', join(dir, 'web.cfg'));
    expect(created).toMatchObject({ code: 0, stdout: 'Created domain web (domid 1)\n' });
    const list = await cli('list');
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^Name\s+ID\s+Mem\s+VCPUs\s+State\s+Time\(s\)$/);
    expect(lines[1]).toMatch(/^Domain-0\s+0\s+2048\s+4\s+r-----\s+[\d.]+$/);
    expect(lines[2]).toMatch(/^web\s+1\s+256\s+1\s+r-----\s+[\d.]+$/);
    const json = JSON.parse((await cli('list', '--json')).stdout) as { name: string }[];
    expect(json.map((d) => d.name)).toEqual(['Domain-0', 'web']);
  });

  it('pauses, sets memory and vCPUs, by name or domid', async () => {
    expect((await cli('pause', 'web')).code).toBe(0);
    expect((await cli('list')).stdout).toMatch(/web\s+1\s+256\s+1\s+--p---/);
    expect((await cli('unpause', '1')).code).toBe(0);
    expect((await cli('mem-set', 'web', '384m')).stdout).toBe('Memory target of web: 384 MiB\n');
    expect((await cli('vcpu-set', 'web', '2')).code).toBe(0);
    const info = JSON.parse((await cli('list', '--json')).stdout) as { name: string; memory: { target: number }; vcpus: { online: number } }[];
    expect(info.find((d) => d.name === 'web')).toMatchObject({ memory: { target: 384 }, vcpus: { online: 2 } });
  });

  it('takes a live snapshot of a VHD disk, and says why it cannot for another', async () => {
    const { VirtualDisk } = await import('../../lib/index.js');
    const root = join(dir, 'db.vhd');
    await (await VirtualDisk.create(root, { size: 8 * 1024 * 1024, type: 'dynamic' })).close();
    await writeFile(join(dir, 'db.cfg'), `name = "db"\nkernel = "/boot/vmlinuz"\nmemory = 128\nvcpus = 1\ndisk = [ "format=vhd, vdev=xvda, access=rw, target=${root}" ]\n`);
    expect((await cli('create', join(dir, 'db.cfg'))).code).toBe(0);
    const out = await cli('block-snapshot', 'db', 'xvda', join(dir, 'db-1.vhd'), '--json');
    expect(out.code).toBe(0);
    const snap = JSON.parse(out.stdout) as { vdev: string; parent: string; child: string; pausedMs: number };
    expect(snap).toMatchObject({ vdev: 'xvda', parent: root, child: join(dir, 'db-1.vhd') });
    const text = await cli('block-snapshot', 'db', 'xvda', join(dir, 'db-2.vhd'));
    expect(text.stdout).toMatch(/^db xvda: now on .*db-2\.vhd; .*db-1\.vhd is its hidden parent \(guest I\/O held [\d.]+ ms\)\n$/);
    const refused = await cli('block-snapshot', 'web', 'xvda', join(dir, 'web-1.vhd'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('XEN_DISK_NOT_VHD');
    expect((await cli('block-snapshot', 'db', 'xvda')).code).toBe(2);
    expect((await cli('destroy', 'db')).code).toBe(0);
  });

  it('shows the host', async () => {
    const info = await cli('info');
    expect(info.stdout).toMatch(/^xen_version\s+: 4\.17/m);
    expect(info.stdout).toMatch(/^free_memory\s+: \d+$/m);
    expect(JSON.parse((await cli('info', '--json')).stdout)).toMatchObject({ scheduler: 'credit2' });
  });

  it('attaches to the console until its input ends', async () => {
    // stdin is /dev/null here: the console detaches once it has shown what the guest wrote.
    const con = new LineProcess(process.execPath, [cliPath, 'console', 'web', '--mock-host', socket]);
    const lines: string[] = [];
    for (let l = await con.nextLine(); l !== undefined; l = await con.nextLine()) lines.push(l);
    expect(await con.exited).toEqual({ code: 0, signal: null });
    expect(lines.join('\n')).toContain('Booting paravirtualized kernel on Xen');
  });

  it('saves and restores', async () => {
    const file = join(dir, 'web.save');
    expect((await cli('save', 'web', file)).code).toBe(0);
    expect((await cli('list')).stdout).not.toMatch(/^web/m);
    expect((await cli('restore', file)).stdout).toMatch(/^Restored web \(domid \d+\)$/m);
  });

  it('migrates to a receiver listening on a TCP port, and needs a destination', async () => {
    const port = 20000 + (process.pid % 20000);
    const receiver = new LineProcess(process.execPath, [cliPath, 'migrate-receive', '--listen', String(port), '--mock-host', socket], { timeout: 60_000 });
    let sent: Awaited<ReturnType<typeof cli>> | undefined;
    for (let i = 0; i < 50; i++) {
      sent = await cli('migrate', 'web', `127.0.0.1:${port}`, '--offline');
      if (!/ECONNREFUSED/.test(sent.stderr)) break;
      await new Promise((r) => setTimeout(r, 100)); // the receiver is still starting
    }
    expect(sent).toMatchObject({ code: 0, stdout: `Migrated web to 127.0.0.1:${port}\n` });
    expect(await receiver.nextLine()).toMatch(/^Received web \(domid \d+\)$/);
    expect(await receiver.exited).toEqual({ code: 0, signal: null });
    expect((await cli('list')).stdout.match(/^web\s/gm)).toHaveLength(1);
    expect((await cli('migrate', 'web')).code).toBe(2);
    expect((await cli('migrate', 'web', 'nohost')).code).toBe(2);
  });

  it('prints a top table', async () => {
    const top = await cli('top', '-i', '2', '-d', '0.05');
    expect(top.stdout.match(/^xenode top - /gm)).toHaveLength(2);
    expect(top.stdout).toMatch(/^NAME\s+ID\s+STATE\s+CPU\(sec\)\s+CPU\(%\)/m);
  });

  it('reboots and shuts down, waiting', async () => {
    expect((await cli('reboot', '-w', 'web')).stdout).toMatch(/^Domain web is back as domid \d+$/m);
    expect((await cli('shutdown', '-w', 'web')).stdout).toBe('Domain web is down\n');
    expect((await cli('list')).stdout).not.toMatch(/^web/m);
  });

  it('fails with the XenError code, and with exit 2 on a bad command line', async () => {
    expect(await cli('destroy', 'nobody')).toMatchObject({ code: 1, stderr: "xenode: ESRCH: no domain is called 'nobody' (domain.byName)\n" });
    const bad = await cli('create', join(dir, 'bad.cfg'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('bad.cfg line 2: memory:');
    expect((await cli('mem-set', 'web', 'lots')).code).toBe(2);
    expect((await cli('pause')).code).toBe(2);
    expect((await cli('list', 'extra')).code).toBe(2);
    expect((await xenode(['list', '--help'])).stdout).toContain('--mock-host PATH');
  });
});

describe('xenode demo', () => {
  it('walks through creating, inspecting and destroying a domain', async () => {
    const r = await xenode(['demo']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    for (const step of domainSteps) expect(r.stdout).toContain(step.title);
    expect(r.stdout).toContain('event death');
    expect(r.stdout).toContain('create 1 TiB domain → ENOMEM');
  });
});

describe('domain command helpers', () => {
  it('formats states, tables and memory sizes as xl does', () => {
    expect(stateFlags('running')).toBe('r-----');
    expect(stateFlags('dying')).toBe('-----d');
    expect(table(['Name', 'ID'], [['a', 1], ['long-name', 12]])).toEqual(['Name       ID', 'a           1', 'long-name  12']);
    expect(parseMemory('512')).toBe(512);
    expect(parseMemory('2g')).toBe(2048);
    expect(parseMemory('262144k')).toBe(256);
    expect(() => parseMemory('1k')).toThrow(/whole number/);
  });
});

describe('xenode list without a host', () => {
  it('says why the native backend cannot list domains', async () => {
    const r = await xenode(['list'], { env: { XENODE_BACKEND: 'native' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^xenode: XEN_UNAVAILABLE/);
  });
});
