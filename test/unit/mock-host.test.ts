import { afterEach, describe, expect, it } from 'vitest';
import { MockHost, XenStore, connect } from '../../lib/index.js';

const hosts: MockHost[] = [];
async function newHost(): Promise<MockHost> {
  const h = await MockHost.create();
  hosts.push(h);
  return h;
}
afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.close()));
});

describe('MockHost', () => {
  it('gives a new domain a home like libxl: readable home, writable data/', async () => {
    const host = await newHost();
    const guest = await host.openXenStore({ domid: 5 });
    expect(guest.domid).toBe(5);
    const dom0 = await host.openXenStore();
    expect(await dom0.getPermissions('/local/domain/5')).toEqual([
      { domid: 0, read: false, write: false },
      { domid: 5, read: true, write: false },
    ]);
    await guest.write('data/greeting', 'hello');           // relative to the home
    expect(await dom0.read('/local/domain/5/data/greeting')).toBe('hello');
    await expect(guest.write('name', 'x')).rejects.toMatchObject({ code: 'EACCES' });
    await expect(guest.read('/local/domain/0')).rejects.toMatchObject({ code: 'EACCES' });
    expect(await guest.list('/local/domain/5')).toEqual(expect.arrayContaining(['data', 'device', 'control']));
  });

  it('announces a domain on its first connection and its release', async () => {
    const host = await newHost();
    const dom0 = await host.openXenStore();
    const intro = dom0.watch('@introduceDomain');
    const rel = dom0.watch('@releaseDomain');
    expect((await intro.next()).value).toEqual({ path: '@introduceDomain' });   // first event
    expect((await rel.next()).value).toEqual({ path: '@releaseDomain' });
    const guest = await host.openXenStore({ domid: 9 });
    expect((await intro.next()).value).toEqual({ path: '@introduceDomain' });
    await guest.close();
    host.releaseDomain(9);
    expect((await rel.next()).value).toEqual({ path: '@releaseDomain' });
    // xenstored drops the nodes the domain owned; the home is dom0's and libxl's to remove.
    expect(await dom0.exists('/local/domain/9/data')).toBe(false);
    expect(await dom0.exists('/local/domain/9')).toBe(true);
  });

  it('keeps hosts isolated from each other', async () => {
    const a = await (await newHost()).openXenStore();
    const b = await (await newHost()).openXenStore();
    await a.write('/only/in/a', '1');
    expect(await b.exists('/only/in/a')).toBe(false);
  });

  it('closes its clients when closed; close twice is harmless', async () => {
    const host = await newHost();
    const xs = await host.openXenStore();
    await host.close();
    await host.close();
    await expect(xs.read('/local')).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    await expect(host.openXenStore()).rejects.toBeInstanceOf(Error);
  });

  it('rejects bad options with TypeError / RangeError', async () => {
    await expect(MockHost.create({ xenstoreSocket: 5 as unknown as string })).rejects.toBeInstanceOf(TypeError);
    const host = await newHost();
    await expect(host.openXenStore({ domid: -1 })).rejects.toBeInstanceOf(RangeError);
    await expect(host.openXenStore({ domid: 0x7ff0 })).rejects.toBeInstanceOf(RangeError);
  });
});

describe('connect', () => {
  it("with backend 'mock' owns a fresh host and closes it", async () => {
    const xen = await connect({ backend: 'mock' });
    expect(xen.backend.name).toBe('mock');
    await xen.xenstore.write('/x', '1');
    expect(await xen.xenstore.read('/x')).toBe('1');
    await xen.close();
    await xen.close();
    await expect(xen.xenstore.read('/x')).rejects.toMatchObject({ code: 'XEN_CLOSED' });
  });

  it('with a MockHost shares it and leaves it open', async () => {
    const host = await newHost();
    const xen = await connect({ backend: host });
    await xen.xenstore.write('/shared', 'yes');
    await xen.close();
    const again = await host.openXenStore();
    expect(await again.read('/shared')).toBe('yes');
  });

  it('follows XENODE_BACKEND and refuses a bad value', async () => {
    const saved = process.env.XENODE_BACKEND;
    try {
      process.env.XENODE_BACKEND = 'mock';
      const xen = await connect();
      expect(xen.backend.name).toBe('mock');
      await xen.close();
      process.env.XENODE_BACKEND = 'kvm';
      await expect(connect()).rejects.toBeInstanceOf(TypeError);
    } finally {
      if (saved === undefined) delete process.env.XENODE_BACKEND;
      else process.env.XENODE_BACKEND = saved;
    }
  });

  it('refuses a backend it does not know', async () => {
    await expect(connect({ backend: 'qemu' as 'mock' })).rejects.toBeInstanceOf(TypeError);
    await expect(connect({ backend: {} as 'mock' })).rejects.toBeInstanceOf(TypeError);
  });

  it('serves the same store through the TS client over the host socket', async () => {
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const socket = join(tmpdir(), `xenode-host-${process.pid}.sock`);
    const host = await MockHost.create({ xenstoreSocket: socket });
    hosts.push(host);
    const local = await host.openXenStore();
    await local.write('/via/local', 'a');
    const remote = await XenStore.connect(socket);
    expect(await remote.read('/via/local')).toBe('a');
    await remote.write('/via/socket', 'b');
    expect(await local.read('/via/socket')).toBe('b');
    await remote.close();
  });
});
