/**
 * The event channel and grant table suite on the mock host, plus what only the mock
 * offers: other domains, VIRQ_DOM_EXC on releaseDomain.
 */
import { describe, expect, it } from 'vitest';
import { MockHost, VIRQ, connect } from '../../lib/index.js';
import { hypervisorConformance } from './hypervisor-suite.js';

let host: MockHost | undefined;
hypervisorConformance('mock', {
  connect: async () => {
    host ??= await MockHost.create();
    return connect({ backend: host });
  },
  virq: {
    number: VIRQ.DOM_EXC,
    raise: async () => {
      host?.raiseVirq(VIRQ.DOM_EXC);
    },
  },
  detachesViews: false,
  cleanup: async () => {
    await host?.close();
  },
});

describe('mock event channels between domains', () => {
  it('dom0 and a guest connect a channel both ways', async () => {
    await using h = await MockHost.create();
    const dom0 = h.openEventChannels();
    const guest = h.openEventChannels({ domid: 5 });
    const unbound = await dom0.bindUnbound(5);
    await expect(h.openEventChannels({ domid: 6 }).bindInterdomain(0, unbound)).rejects.toMatchObject({ code: 'EINVAL' });
    const port = await guest.bindInterdomain(0, unbound);
    const got: number[] = [];
    dom0.onEvent = (p) => got.push(p);
    await guest.notify(port);
    await guest.notify(port); // coalesces with the first
    await new Promise((r) => setImmediate(r));
    expect(got).toEqual([unbound]);
    await expect(guest.notify(999)).rejects.toMatchObject({ code: 'ENOTCONN' });
    await guest.close();
    await dom0.close();
  });

  it('releasing a domain raises VIRQ_DOM_EXC', async () => {
    await using h = await MockHost.create();
    const xen = await connect({ backend: h });
    const exc = await xen.eventChannels.bindVirq(VIRQ.DOM_EXC);
    h.openEventChannels({ domid: 3 });
    const got = new Promise((resolve) => exc.once('event', resolve));
    h.releaseDomain(3);
    expect(await got).toEqual({ port: exc.port });
    await expect(xen.eventChannels.bindVirq(99)).rejects.toMatchObject({ code: 'EINVAL' });
    await xen.close();
  });

  it('a simulated domain that shuts down and dies raises VIRQ_DOM_EXC', async () => {
    await using h = await MockHost.create({ timing: 'instant' });
    const xen = await connect({ backend: h });
    const exc = await xen.eventChannels.bindVirq(VIRQ.DOM_EXC);
    let fired = 0;
    exc.on('event', () => fired++);
    const dom = await xen.domains.create({ name: 'exc', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 });
    expect(fired).toBe(0);
    await dom.shutdown({ wait: true, timeoutMs: 5000 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(fired).toBeGreaterThanOrEqual(1);
    await xen.close();
  });

  it('a guest maps what dom0 granted it, and nothing else', async () => {
    await using h = await MockHost.create();
    const dom0 = h.openGrants();
    const guest = h.openGrants({ domid: 4 });
    const shared = await dom0.share(4, 2, true);
    const view = await guest.map(0, shared.refs, true);
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength)[10] = 42;
    expect(new Uint8Array(shared.buffer)[10]).toBe(42);
    await expect(h.openGrants({ domid: 9 }).map(0, shared.refs, true)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(guest.map(0, [shared.refs[1] as number, shared.refs[0] as number], true)).rejects.toMatchObject({ code: 'ENOSYS' });
    expect(dom0.unmap(shared.id)).toBe(true);
    expect(dom0.unmap(shared.id)).toBe(false);
    await expect(guest.map(0, shared.refs, true)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('a backend without event channels or grants says so', async () => {
    await using h = await MockHost.create();
    const backend = { name: 'bare', openXenStore: () => h.backend().openXenStore(), openToolstack: () => h.backend().openToolstack(), close: async () => undefined };
    const xen = await connect({ backend });
    await expect(xen.eventChannels.bindUnbound(0)).rejects.toMatchObject({ code: 'XEN_UNAVAILABLE' });
    await expect(xen.grants.share(0)).rejects.toMatchObject({ code: 'XEN_UNAVAILABLE' });
    await xen.close();
  });
});
