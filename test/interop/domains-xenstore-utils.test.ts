/**
 * Interop: the real xenstore-utils see the domains of the mock host as they would see a
 * real host's: the domain home, /vm, the vbd/vif frontend and backend trees at state 4 —
 * also while the main thread is blocked in a synchronous call (the socket is served from a
 * worker thread), and a guest shut down with xenstore-write, as `xl shutdown` does.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockHost, XenStore, connect, type Xen } from '../../lib/index.js';
import { run } from '../helpers/run.js';
import { onPath, requireTool } from '../helpers/tools.js';

const hasTools = requireTool('xenstore-utils', () => ['xenstore-ls', 'xenstore-read', 'xenstore-write'].every(onPath), { aptPackage: 'xenstore-utils' });

describe.skipIf(!hasTools)('xenstore-utils and the domains of the mock host', () => {
  let dir: string;
  let socket: string;
  let host: MockHost;
  let xen: Xen;
  const env = () => ({ XENSTORED_PATH: socket });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-dom-interop-'));
    socket = join(dir, 'xs.sock');
    host = await MockHost.create({ xenstoreSocket: socket, timing: 'instant' });
    xen = await connect({ backend: host });
  });

  afterAll(async () => {
    await xen?.close();
    await host?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows the domain home, /vm and both ends of its devices', async () => {
    const dom = await xen.domains.create({ name: 'interop', type: 'pv', kernel: '/k', memory: 128, vcpus: 1, disks: [{ target: '/srv/i.img', vdev: 'xvda' }], nics: [{ bridge: 'xenbr0' }] });
    const read = await run('xenstore-read', [`/local/domain/${dom.domid}/name`, `/vm/${dom.uuid}/uuid`], { env: env() });
    expect(read.stdout.split('\n').slice(0, 2)).toEqual(['interop', dom.uuid]);
    const fe = await run('xenstore-ls', ['-f', `/local/domain/${dom.domid}/device`], { env: env() });
    expect(fe.stdout).toContain(`/local/domain/${dom.domid}/device/vbd/51712/backend = "/local/domain/0/backend/vbd/${dom.domid}/51712"`);
    expect(fe.stdout).toContain(`/local/domain/${dom.domid}/device/vif/0/state = "4"`);
    const be = await run('xenstore-ls', ['-f', '/local/domain/0/backend'], { env: env() });
    expect(be.stdout).toContain(`/local/domain/0/backend/vbd/${dom.domid}/51712/params = "/srv/i.img"`);
    expect(be.stdout).toContain(`/local/domain/0/backend/vbd/${dom.domid}/51712/state = "4"`);
    expect(be.stdout).toContain(`/local/domain/0/backend/vif/${dom.domid}/0/bridge = "xenbr0"`);
    await dom.destroy();
    const gone = await run('xenstore-ls', [`/local/domain/${dom.domid}`], { env: env() });
    expect(gone.code).not.toBe(0);
  });

  it('answers reads while the main thread is blocked in execFileSync', async () => {
    const dom = await xen.domains.create({ name: 'blocked', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 });
    const out = execFileSync('xenstore-read', [`/local/domain/${dom.domid}/name`], { env: { ...process.env, ...env() }, timeout: 5000 }).toString();
    expect(out.trim()).toBe('blocked');
    const tree = execFileSync('xenstore-ls', ['/vm'], { env: { ...process.env, ...env() }, timeout: 5000 }).toString();
    expect(tree).toContain(dom.uuid);
    await dom.destroy();
  });

  it('keeps reads after writes consistent, whichever side wrote', async () => {
    const client = await XenStore.connect(socket);
    try {
      await client.write('/interop/a', '1');
      expect(await xen.xenstore.read('/interop/a')).toBe('1');
      await xen.xenstore.write('/interop/b', '2');
      expect(await client.read('/interop/b')).toBe('2');
      const w = await run('xenstore-write', ['/interop/c', '3'], { env: env() });
      expect(w.code).toBe(0);
      expect(await xen.xenstore.read('/interop/c')).toBe('3');
      expect(execFileSync('xenstore-read', ['/interop/c'], { env: { ...process.env, ...env() } }).toString().trim()).toBe('3');
      await xen.xenstore.remove('/interop');
      expect((await run('xenstore-read', ['/interop/a'], { env: env() })).code).not.toBe(0);
    } finally {
      await client.close();
    }
  });

  it('shuts a guest down when xenstore-write asks it to, as xl shutdown does', async () => {
    const dom = await xen.domains.create({ name: 'by-tool', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 });
    const events = dom.events({ signal: AbortSignal.timeout(5000) });
    expect((await run('xenstore-write', [`/local/domain/${dom.domid}/control/shutdown`, 'poweroff'], { env: env() })).code).toBe(0);
    const seen: string[] = [];
    for await (const ev of events) {
      seen.push(ev.type);
      if (ev.type === 'death') break;
    }
    expect(seen).toEqual(['shutdown', 'death']);
  });
});
