/**
 * The simulated hypervisor beyond the contract: the xenstore trees it writes (as libxl
 * does), domid allocation, memory accounting, the device handshake order, the console
 * ring, the save image, and the guest reacting to control/shutdown written by anyone.
 */
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { MockHost, XenError, connect, type Xen } from '../../lib/index.js';
import { vdevToDevid, normaliseBdf } from '../../lib/mock/devices.js';
import { decodeImage, encodeImage, XL_SAVE_MAGIC } from '../../lib/mock/save-image.js';
import { ConsoleRing, CONSOLE_KEEP } from '../../lib/mock/console.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function setup(options: Parameters<typeof MockHost.create>[0] = { timing: 'instant' }): Promise<{ host: MockHost; xen: Xen }> {
  const host = await MockHost.create(options);
  const xen = await connect({ backend: host });
  cleanups.push(() => host.close(), () => xen.close());
  return { host, xen };
}

const web = { name: 'web', type: 'pv' as const, kernel: '/boot/vmlinuz', cmdline: 'console=hvc0', memory: 256, maxMemory: 512, vcpus: 2, maxVcpus: 4 };

describe('the xenstore trees of a domain', () => {
  it('writes the home, /vm and memory/cpu keys as libxl does', async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create(web);
    const xs = xen.xenstore;
    const home = `/local/domain/${dom.domid}`;
    expect(await xs.read(`${home}/name`)).toBe('web');
    expect(await xs.read(`${home}/domid`)).toBe(String(dom.domid));
    expect(await xs.read(`${home}/vm`)).toBe(`/vm/${dom.uuid}`);
    expect(await xs.read(`/vm/${dom.uuid}/uuid`)).toBe(dom.uuid);
    expect(await xs.read(`/vm/${dom.uuid}/name`)).toBe('web');
    expect(await xs.read(`${home}/memory/target`)).toBe(String(256 * 1024));
    expect(await xs.read(`${home}/memory/static-max`)).toBe(String(512 * 1024));
    expect(await xs.list(`${home}/cpu`)).toEqual(['0', '1', '2', '3']);
    expect(await xs.read(`${home}/cpu/1/availability`)).toBe('online');
    expect(await xs.read(`${home}/cpu/2/availability`)).toBe('offline');
    expect(await xs.getPermissions(home)).toEqual([
      { domid: 0, read: false, write: false },
      { domid: dom.domid, read: true, write: false },
    ]);
    expect((await xs.getPermissions(`${home}/control/shutdown`))[0]).toEqual({ domid: dom.domid, read: false, write: false });
    expect(await xs.read(`${home}/console/type`)).toBe('xenconsoled');
    await dom.setVcpus(3);
    expect(await xs.read(`${home}/cpu/2/availability`)).toBe('online');
    await dom.setMemoryTarget(300);
    expect(await xs.read(`${home}/memory/target`)).toBe(String(300 * 1024));
    await dom.rename('web-renamed');
    expect(await xs.read(`${home}/name`)).toBe('web-renamed');
    expect(await xs.read(`/vm/${dom.uuid}/name`)).toBe('web-renamed');
  });

  it('writes vbd and vif frontends and backends with their keys, connected (state 4)', async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create({ ...web, disks: [{ target: '/srv/web.img', vdev: 'xvda' }, { target: '/srv/cd.iso', vdev: 'hdc', devtype: 'cdrom' }], nics: [{ mac: '00:16:3e:01:02:03', bridge: 'xenbr1', queues: 2 }] });
    const xs = xen.xenstore;
    const fe = `/local/domain/${dom.domid}/device/vbd/51712`;
    const be = `/local/domain/0/backend/vbd/${dom.domid}/51712`;
    expect(await xs.read(`${fe}/backend`)).toBe(be);
    expect(await xs.read(`${fe}/backend-id`)).toBe('0');
    expect(await xs.read(`${fe}/virtual-device`)).toBe('51712');
    expect(await xs.read(`${fe}/device-type`)).toBe('disk');
    expect(await xs.read(`${fe}/state`)).toBe('4');
    expect(await xs.exists(`${fe}/ring-ref`)).toBe(true);
    expect(await xs.read(`${be}/frontend`)).toBe(fe);
    expect(await xs.read(`${be}/frontend-id`)).toBe(String(dom.domid));
    expect(await xs.read(`${be}/params`)).toBe('/srv/web.img');
    expect(await xs.read(`${be}/mode`)).toBe('w');
    expect(await xs.read(`${be}/online`)).toBe('1');
    expect(await xs.read(`${be}/hotplug-status`)).toBe('connected');
    expect(await xs.read(`${be}/state`)).toBe('4');
    expect(await xs.read(`/local/domain/0/backend/vbd/${dom.domid}/5632/device-type`)).toBe('cdrom');
    expect(await xs.read(`/local/domain/0/backend/vbd/${dom.domid}/5632/mode`)).toBe('r');
    const vfe = `/local/domain/${dom.domid}/device/vif/0`;
    const vbe = `/local/domain/0/backend/vif/${dom.domid}/0`;
    expect(await xs.read(`${vfe}/mac`)).toBe('00:16:3e:01:02:03');
    expect(await xs.read(`${vfe}/multi-queue-num-queues`)).toBe('2');
    expect(await xs.list(vfe)).toEqual(expect.arrayContaining(['queue-0', 'queue-1']));
    expect(await xs.read(`${vbe}/bridge`)).toBe('xenbr1');
    expect(await xs.read(`${vbe}/script`)).toBe('/etc/xen/scripts/vif-bridge');
    expect(await xs.read(`${vbe}/multi-queue-max-queues`)).toBe('8');
    expect(await xs.read(`${vbe}/state`)).toBe('4');
    expect(await xs.getPermissions(fe)).toEqual([{ domid: dom.domid, read: false, write: false }, { domid: 0, read: true, write: false }]);
  });

  it('goes through the xenbus states 1 → 2 → 3 → 4 in order, and 5 → 6 on detach', async () => {
    const { xen } = await setup({ timing: 'realistic' });
    const dom = await xen.domains.create(web);
    const be = `/local/domain/0/backend/vbd/${dom.domid}/51712`;
    const fe = `/local/domain/${dom.domid}/device/vbd/51712`;
    const states: string[] = [];
    const ac = new AbortController();
    const watching = (async () => {
      for await (const ev of xen.xenstore.watch(`/local/domain/0/backend/vbd/${dom.domid}`, { signal: ac.signal })) {
        if (ev.path === `${be}/state`) states.push(`be${await xen.xenstore.read(ev.path).catch(() => '-')}`);
      }
    })().catch(() => undefined);
    const feStates: string[] = [];
    const feWatch = (async () => {
      for await (const ev of xen.xenstore.watch(`/local/domain/${dom.domid}/device/vbd`, { signal: ac.signal })) {
        if (ev.path === `${fe}/state`) feStates.push(`fe${await xen.xenstore.read(ev.path).catch(() => '-')}`);
      }
    })().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 20));
    const disk = await dom.attachDisk('/srv/more.img');
    expect(disk.devid).toBe(51712);
    await dom.detachDevice(disk);
    await new Promise((r) => setTimeout(r, 30));
    ac.abort();
    await Promise.all([watching, feWatch]);
    expect(states.filter((s) => s !== 'be-')).toEqual(['be1', 'be2', 'be4', 'be5', 'be6']);
    expect(feStates.filter((s) => s !== 'fe-')).toEqual(['fe1', 'fe3', 'fe4', 'fe6']);
    expect(await xen.xenstore.exists(be)).toBe(false);
  });

  it("passes a disk's hotplug script to its backend, and refuses a bad one", async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create(web);
    const disk = await dom.attachDisk('/srv/more.img', { script: '/opt/xenode/xenode-hotplug' });
    expect(disk.config).toMatchObject({ target: '/srv/more.img', script: '/opt/xenode/xenode-hotplug' });
    expect(await xen.xenstore.read(`${disk.backendPath}/script`)).toBe('/opt/xenode/xenode-hotplug');
    await expect(dom.attachDisk('/srv/x.img', { script: 'a,b' })).rejects.toThrow(RangeError);
    await expect(dom.attachDisk('/srv/x.img', { script: '' })).rejects.toThrow(RangeError);
    await expect(dom.attachDisk('/srv/x.img', { script: 7 as unknown as string })).rejects.toThrow(TypeError);
    expect((await dom.listDevices()).length).toBe(1);
  });

  it('removes every trace on destroy and fires @releaseDomain', async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create({ ...web, disks: [{ target: '/srv/web.img', vdev: 'xvda' }] });
    const released = xen.xenstore.watch('@releaseDomain', { signal: AbortSignal.timeout(3000) });
    await released.next(); // the first event
    await dom.destroy();
    expect((await released.next()).value).toEqual({ path: '@releaseDomain' });
    await released.return?.();
    expect(await xen.xenstore.exists(`/local/domain/${dom.domid}`)).toBe(false);
    expect(await xen.xenstore.exists(`/vm/${dom.uuid}`)).toBe(false);
    expect(await xen.xenstore.exists(`/local/domain/0/backend/vbd/${dom.domid}`)).toBe(false);
  });

  it('lets anyone shut a guest down through control/shutdown, as xl does', async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create(web);
    const events = dom.events({ signal: AbortSignal.timeout(3000) });
    await xen.xenstore.write(`/local/domain/${dom.domid}/control/shutdown`, 'poweroff');
    const first = await events.next();
    expect(first.value).toMatchObject({ type: 'shutdown', reason: 'poweroff' });
    await events.return?.();
  });
});

describe('domids and memory', () => {
  it('skips domids that xenstore already knows and wraps before DOMID_FIRST_RESERVED', async () => {
    const { host, xen } = await setup();
    const guest = await host.openXenStore({ domid: 1 }); // a domain that only exists in xenstore
    cleanups.push(() => guest.close());
    const a = await xen.domains.create(web);
    expect(a.domid).toBe(2);
    (host.hypervisor as unknown as { nextDomid: number }).nextDomid = 0x7fef;
    const b = await xen.domains.create({ ...web, name: 'b' });
    expect(b.domid).toBe(0x7fef);
    const c = await xen.domains.create({ ...web, name: 'c' });
    expect(c.domid).toBe(3); // 1 and 2 are taken
  });

  it('accounts memory against the host, and ballooning up takes only what is free', async () => {
    const { xen } = await setup({ timing: 'instant', machine: { memory: 4096, dom0Memory: 1024 } });
    expect(await xen.host.freeMemory()).toBe(3072);
    const a = await xen.domains.create({ ...web, memory: 2048, maxMemory: 4096 });
    expect(await xen.host.freeMemory()).toBe(1024);
    await expect(xen.domains.create({ ...web, name: 'b', memory: 2048, maxMemory: 2048 })).rejects.toMatchObject({ code: 'ENOMEM' });
    await a.setMemoryTarget(4096);
    await expect.poll(async () => (await a.info()).memory.current).toBe(3072);
    expect(await xen.host.freeMemory()).toBe(0);
    await a.setMemoryTarget(1024);
    await expect.poll(async () => xen.host.freeMemory()).toBe(2048);
    await a.destroy();
    expect(await xen.host.freeMemory()).toBe(3072);
  });

  it('a paused guest does not balloon until it runs', async () => {
    const { xen } = await setup();
    const a = await xen.domains.create(web);
    await a.pause();
    await a.setMemoryTarget(128);
    await new Promise((r) => setTimeout(r, 20));
    expect((await a.info()).memory).toMatchObject({ current: 256, target: 128 });
    await a.unpause();
    await expect.poll(async () => (await a.info()).memory.current).toBe(128);
  });

  it('refuses a PCI physical function that dom0 keeps, and reports assignments', async () => {
    const { host, xen } = await setup();
    await expect(xen.domains.create({ ...web, pcis: [{ bdf: '03:00.0' }] })).rejects.toMatchObject({ code: 'XEN_ERROR_FAIL' });
    const dom = await xen.domains.create({ ...web, pcis: [{ bdf: '03:10.0' }] });
    expect(host.pciDevices().find((d) => d.bdf === '0000:03:10.0')).toMatchObject({ domid: dom.domid, physfn: '0000:03:00.0' });
    expect(await xen.xenstore.read(`/local/domain/0/backend/pci/${dom.domid}/0/dev-0`)).toBe('0000:03:10.0');
    await dom.destroy();
    expect(host.pciDevices().find((d) => d.bdf === '0000:03:10.0')?.domid).toBeUndefined();
  });

  it('hot-plugs a PCI function only into a domain created with passthrough, as Xen does', async () => {
    const { host, xen } = await setup();
    const plain = await xen.domains.create(web);
    await expect(plain.attachPci('03:10.1')).rejects.toMatchObject({ code: 'XEN_ERROR_FAIL', message: expect.stringContaining('without passthrough') });
    expect(host.pciDevices().find((d) => d.bdf === '0000:03:10.1')?.domid).toBeUndefined();
    const ready = await xen.domains.create({ ...web, name: 'web-pt', passthrough: 'enabled' });
    expect(await ready.attachPci('03:10.1')).toMatchObject({ kind: 'pci', config: { bdf: '0000:03:10.1' } });
    // what libxl stores: the mode it chose, separate IOMMU tables for a PV guest
    expect((await ready.config()).passthrough).toBe('sync_pt');
    expect((await plain.config()).passthrough).toBeUndefined();
    // created with devices, a domain has passthrough unless it asks for none
    const withDevice = await xen.domains.create({ ...web, name: 'web-dev', pcis: [{ bdf: '03:10.2' }] });
    expect(await withDevice.attachPci('03:10.3')).toMatchObject({ kind: 'pci' });
  });

  it('rejects a bad timing option', async () => {
    await expect(MockHost.create({ timing: 'slow' as 'instant' })).rejects.toBeInstanceOf(TypeError);
  });
});

describe('helpers', () => {
  it('numbers virtual disks as vbd-interface.txt does', () => {
    expect(vdevToDevid('xvda')).toBe(51712);
    expect(vdevToDevid('xvdb1')).toBe(51729);
    expect(vdevToDevid('xvdq')).toBe((1 << 28) | (16 << 8));
    expect(vdevToDevid('hda')).toBe(768);
    expect(vdevToDevid('hdc')).toBe(5632);
    expect(vdevToDevid('sdb')).toBe(2064);
    expect(() => vdevToDevid('vda')).toThrow(expect.objectContaining({ code: 'XEN_ERROR_INVAL' }));
    expect(normaliseBdf('3:10.1')).toBe('0000:03:10.1');
  });

  it('round-trips the save image and refuses anything else', () => {
    const image = { config: web, memCurrent: 256, memTarget: 256, vcpusOnline: 2, cpuTime: 1.5, console: '' };
    const bytes = encodeImage(image);
    expect(bytes.subarray(0, XL_SAVE_MAGIC.length).toString('latin1')).toBe('Xen saved domain, xl format\n \0 \r');
    expect(decodeImage(bytes)).toEqual(image);
    expect(() => decodeImage(bytes.subarray(0, bytes.length - 3))).toThrow(/truncated/);
    expect(() => decodeImage(Buffer.from('nope'))).toThrow(expect.objectContaining({ code: 'XEN_ERROR_INVAL' }));
  });

  it('keeps the last CONSOLE_KEEP bytes of output and ends its streams', async () => {
    const typed: string[] = [];
    const ring = new ConsoleRing((d) => typed.push(d.toString()));
    ring.write('x'.repeat(CONSOLE_KEEP + 10));
    ring.write('tail');
    expect(ring.contents().length).toBe(CONSOLE_KEEP);
    const s = ring.open();
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.write('ls\r');
    ring.write('more');
    ring.end();
    await new Promise((r) => s.once('end', r));
    expect(Buffer.concat(chunks).toString().endsWith('tailmore')).toBe(true);
    expect(typed).toEqual(['ls\r']);
    const late = ring.open();
    await new Promise((r) => late.once('end', r).resume());
  });
});

describe('save and restore through files', () => {
  it('saves to a path and restores from it', async () => {
    const { xen, host } = await setup();
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'xenode-save-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const dom = await xen.domains.create(web);
    host.writeConsole(dom.domid, 'before save\r\n');
    await dom.save(join(dir, 'web.save'));
    const back = await xen.domains.restore(join(dir, 'web.save'));
    const con = await back.console();
    const text = await new Promise<string>((resolve) => con.once('data', (c: Buffer) => resolve(c.toString())));
    expect(text).toContain('before save');
    con.destroy();
  });

  it('resumes the domain when the image cannot be written', async () => {
    const { xen } = await setup();
    const dom = await xen.domains.create(web);
    const broken = new PassThrough({
      write: (_chunk, _enc, cb) => cb(new Error('disk full')),
    });
    broken.on('error', () => undefined);
    await expect(dom.save(broken)).rejects.toThrow('disk full');
    expect(await dom.info()).toMatchObject({ state: 'running' });
    expect((await dom.info()).shutdownReason).toBeUndefined();
    await dom.shutdown({ wait: true, timeoutMs: 2000 });
  });
});

describe('an idle guest', () => {
  it('shows blocked while it waits for events, and waitFor("running") counts it as up', async () => {
    const { host, xen } = await setup();
    const dom = await xen.domains.create(web);
    expect((await dom.info()).state).toBe('running');
    host.guestIdle(dom.domid);
    expect((await dom.info()).state).toBe('blocked');
    expect((await xen.domains.list()).find((d) => d.domid === dom.domid)?.state).toBe('blocked');
    await dom.waitFor('blocked', { timeoutMs: 1000 });
    await dom.waitFor('running', { timeoutMs: 1000 }); // up and unpaused: blocked will do
    await dom.pause();
    expect((await dom.info()).state).toBe('paused');
    await dom.unpause();
    expect((await dom.info()).state).toBe('blocked');
    host.guestIdle(dom.domid, false);
    expect((await dom.info()).state).toBe('running');
    await expect(dom.waitFor('blocked', { timeoutMs: 50 })).rejects.toMatchObject({ code: 'XEN_ERROR_TIMEDOUT' });
    // the idle guest still answers its controller
    host.guestIdle(dom.domid);
    await dom.shutdown({ wait: true, timeoutMs: 2000 });
  });

  it('is refused for dom0, a missing domain and a wrong argument', async () => {
    const { host } = await setup();
    expect(() => host.guestIdle(0)).toThrow(expect.objectContaining({ code: 'XEN_ERROR_INVAL' }));
    expect(() => host.guestIdle(77)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(() => host.guestIdle(-1)).toThrow(RangeError);
    expect(() => host.guestIdle(1, 'yes' as unknown as boolean)).toThrow(TypeError);
  });
});

describe("a shutdown request the guest is slow to acknowledge", () => {
  // libxl settles libxl_domain_shutdown only once the guest clears control/shutdown (60 s
  // at most): the toolstack's request stands in for it here, held or refused.
  async function withRequest(request: () => Promise<void>) {
    const { xen } = await setup();
    const dom = await xen.domains.create(web);
    const ts = await xen.domains.toolstack();
    const real = ts.shutdown.bind(ts);
    ts.shutdown = () => request();
    return { dom, real };
  }

  it('is bounded by timeoutMs as a whole, acknowledgement included', async () => {
    const { dom } = await withRequest(() => new Promise<void>(() => undefined));
    const started = Date.now();
    await expect(dom.shutdown({ wait: true, timeoutMs: 50 })).rejects.toMatchObject({ code: 'XEN_ERROR_GUEST_TIMEDOUT' });
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await dom.info()).state).not.toBe('shutdown');
  });

  it('rejects the wait with the request’s own error when the toolstack refuses it', async () => {
    const { dom } = await withRequest(() => Promise.reject(new XenError('XEN_ERROR_GUEST_TIMEDOUT', 'libxl: guest acknowledgement of poweroff request timed out', { op: 'libxl_domain_shutdown' })));
    await expect(dom.shutdown({ wait: true })).rejects.toMatchObject({ code: 'XEN_ERROR_GUEST_TIMEDOUT', op: 'libxl_domain_shutdown' });
    await expect(dom.reboot({ wait: true, timeoutMs: 10_000 })).rejects.toMatchObject({ op: 'libxl_domain_shutdown' });
  });

  it('returns once the domain is gone, whether or not the request has settled', async () => {
    let settle: () => void = () => undefined;
    const { dom, real } = await withRequest(async () => {
      await real(dom.domid, 'poweroff');
      await new Promise<void>((r) => (settle = r));
    });
    await dom.shutdown({ wait: true, timeoutMs: 10_000 });
    settle();
  });
});
