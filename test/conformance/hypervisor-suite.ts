/**
 * The event channel and grant table conformance suite, written once against the public
 * API (`xen.eventChannels`, `xen.grants`) and run on every backend: the mock host here
 * (test/conformance/hypervisor.test.ts) and Xen's own libraries in a real dom0
 * (test/xen/hypervisor.test.ts). Everything runs as dom0 talking to itself (an
 * interdomain channel from dom0 to dom0, pages granted to dom0 and mapped back), which
 * a real single-domain host allows. Backend-specific cases are gated by the features.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventChannel, Xen } from '../../lib/index.js';
import { VIRQ, XenError } from '../../lib/index.js';
import { rejection } from '../helpers/rejection.js';

export interface HypervisorSuiteFactory {
  /** A connection to the host under test, acting as dom0. */
  connect(): Promise<Xen>;
  /** A VIRQ nobody has bound, and a way to make the hypervisor raise it. */
  virq?: { number: number; raise(): Promise<void> };
  /** Unmapping detaches the memory, so views made earlier become empty (native). */
  readonly detachesViews: boolean;
  cleanup(): Promise<void>;
}

function nextEvent(ch: EventChannel, ms = 5000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no event on port ${ch.port} within ${ms} ms`)), ms);
    ch.once('event', (ev) => {
      clearTimeout(timer);
      resolve(ev.port);
    });
  });
}

export function hypervisorConformance(name: string, factory: HypervisorSuiteFactory): void {
  describe(`event channels and grant tables: ${name}`, () => {
    let xen: Xen;
    beforeAll(async () => {
      xen = await factory.connect();
    });
    afterAll(async () => {
      await xen?.close();
      await factory.cleanup();
    });

    describe('event channels', () => {
      it('an unbound port bound back by the same domain carries events both ways', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        expect(a).toMatchObject({ kind: 'unbound', remoteDomid: 0 });
        expect(a.port).toBeGreaterThan(0);
        const b = await xen.eventChannels.bindInterdomain(0, a.port);
        expect(b).toMatchObject({ kind: 'interdomain', remoteDomid: 0, remotePort: a.port });
        expect(b.port).not.toBe(a.port);
        const atA = nextEvent(a);
        await b.notify();
        expect(await atA).toBe(a.port);
        const atB = nextEvent(b);
        await a.notify();
        expect(await atB).toBe(b.port);
        // Again: the port was unmasked after the first event.
        const again = nextEvent(a);
        await b.notify();
        expect(await again).toBe(a.port);
        await b.close();
        await a.close();
      });

      it('delivers events through an async iterator, which ends when the port closes', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        const b = await xen.eventChannels.bindInterdomain(0, a.port);
        const seen: number[] = [];
        const loop = (async () => {
          for await (const ev of a.events()) {
            seen.push(ev.port);
            if (seen.length === 2) break;
          }
        })();
        await new Promise((r) => setTimeout(r, 10));
        await b.notify();
        await new Promise((r) => setTimeout(r, 50));
        await b.notify();
        await loop;
        expect(seen).toEqual([a.port, a.port]);
        const ended = (async () => {
          for await (const _ of a.events()) void _;
          return 'ended';
        })();
        await a.close();
        expect(await ended).toBe('ended');
        await b.close();
      });

      it('an aborted iterator ends with AbortError', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        const ac = new AbortController();
        const loop = (async () => {
          for await (const _ of a.events({ signal: ac.signal })) void _;
        })();
        setTimeout(() => ac.abort(), 10);
        await expect(loop).rejects.toMatchObject({ name: 'AbortError' });
        await a.close();
      });

      it('closing one end leaves the other unbound, so it can be bound again', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        const b = await xen.eventChannels.bindInterdomain(0, a.port);
        await b.close();
        const c = await xen.eventChannels.bindInterdomain(0, a.port);
        const atA = nextEvent(a);
        await c.notify();
        expect(await atA).toBe(a.port);
        await c.close();
        await a.close();
      });

      it('binding to a port that is not unbound for this domain is EINVAL', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        const b = await xen.eventChannels.bindInterdomain(0, a.port);
        const err = await rejection(xen.eventChannels.bindInterdomain(0, a.port));
        expect(err).toBeInstanceOf(XenError);
        expect(err).toMatchObject({ code: 'EINVAL', op: 'eventChannels.bindInterdomain' });
        await b.close();
        await a.close();
      });

      it('binding to a domain that does not exist is ESRCH (allocating a port for one is not checked)', async () => {
        const a = await xen.eventChannels.bindUnbound(32000);
        expect(a.remoteDomid).toBe(32000);
        const err = await rejection(xen.eventChannels.bindInterdomain(32000, 1));
        expect(err).toBeInstanceOf(XenError);
        expect(err).toMatchObject({ code: 'ESRCH', op: 'eventChannels.bindInterdomain', domid: 32000 });
        await a.close();
      });

      it('after close, notify is XEN_CLOSED and close again is harmless', async () => {
        const a = await xen.eventChannels.bindUnbound(0);
        await a.close();
        await a.close();
        await expect(a.notify()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
      });

      it('wrong arguments are TypeError / RangeError', async () => {
        await expect(xen.eventChannels.bindUnbound('0' as unknown as number)).rejects.toBeInstanceOf(TypeError);
        await expect(xen.eventChannels.bindUnbound(-1)).rejects.toBeInstanceOf(RangeError);
        await expect(xen.eventChannels.bindInterdomain(0, 0)).rejects.toBeInstanceOf(RangeError);
        await expect(xen.eventChannels.bindVirq(1.5)).rejects.toBeInstanceOf(RangeError);
      });

      it.skipIf(factory.virq === undefined)('a bound VIRQ delivers the hypervisor\'s interrupt', async () => {
        const { number, raise } = factory.virq as NonNullable<HypervisorSuiteFactory['virq']>;
        const v = await xen.eventChannels.bindVirq(number);
        expect(v).toMatchObject({ kind: 'virq', virq: number });
        const got = nextEvent(v, 20_000);
        await raise();
        expect(await got).toBe(v.port);
        await v.notify(); // nothing to notify: succeeds, as Linux's driver reports it
        await expect(xen.eventChannels.bindVirq(number)).rejects.toMatchObject({ code: 'EEXIST' });
        await v.close();
      });

      it('VIRQ numbers are exported', () => {
        expect(VIRQ.DOM_EXC).toBe(3);
        expect(VIRQ.CON_RING).toBe(8);
      });
    });

    describe('grant tables', () => {
      it('pages granted to dom0 and mapped back are the same memory', async () => {
        const shared = await xen.grants.share(0, { pages: 2 });
        expect(shared.refs).toHaveLength(2);
        expect(shared.bytes.byteLength).toBe(8192);
        const mapped = await xen.grants.map(0, shared.refs);
        expect(mapped.bytes.byteLength).toBe(8192);
        shared.bytes.set([1, 2, 3], 0);
        shared.bytes[4096] = 0x5a;
        expect([...mapped.bytes.subarray(0, 3)]).toEqual([1, 2, 3]);
        expect(mapped.bytes[4096]).toBe(0x5a);
        mapped.bytes[8191] = 0xa5;
        expect(shared.bytes[8191]).toBe(0xa5);
        mapped.unmap();
        shared.unmap();
      });

      it('a read-only grant maps read-only', async () => {
        const shared = await xen.grants.share(0, { writable: false });
        shared.bytes[0] = 7;
        const mapped = await xen.grants.map(0, shared.refs, { writable: false });
        expect(mapped.bytes[0]).toBe(7);
        mapped.unmap();
        shared.unmap();
      });

      it('unmapping empties the region; twice is harmless', async () => {
        const shared = await xen.grants.share(0);
        const mapped = await xen.grants.map(0, shared.refs);
        const view = mapped.bytes;
        mapped.unmap();
        mapped.unmap();
        expect(mapped.unmapped).toBe(true);
        expect(mapped.bytes.byteLength).toBe(0);
        if (factory.detachesViews) {
          expect(view.byteLength).toBe(0);
          expect(view[0]).toBeUndefined();
        }
        shared.unmap();
        expect(shared.bytes.byteLength).toBe(0);
      });

      it('a reference that is not granted to this domain is refused', async () => {
        const err = await rejection(xen.grants.map(0, [0x7fffff]));
        expect(err).toBeInstanceOf(XenError);
        expect((err as XenError).op).toBe('grants.map');
      });

      it('wrong arguments are TypeError / RangeError', async () => {
        await expect(xen.grants.share(0, { pages: 0 })).rejects.toBeInstanceOf(RangeError);
        await expect(xen.grants.share(0, { writable: 'yes' as unknown as boolean })).rejects.toBeInstanceOf(TypeError);
        await expect(xen.grants.map(0, [])).rejects.toBeInstanceOf(RangeError);
        await expect(xen.grants.map(0, ['1' as unknown as number])).rejects.toBeInstanceOf(TypeError);
        await expect(xen.grants.map(70000, [1])).rejects.toBeInstanceOf(RangeError);
      });
    });

    describe('closing', () => {
      it('closing the connection unbinds ports, unmaps regions, and is XEN_CLOSED afterwards', async () => {
        const other = await factory.connect();
        const a = await other.eventChannels.bindUnbound(0);
        const shared = await other.grants.share(0);
        const ended = (async () => {
          for await (const _ of a.events()) void _;
          return 'ended';
        })();
        await other.close();
        await other.close();
        expect(await ended).toBe('ended');
        expect(shared.bytes.byteLength).toBe(0);
        await expect(a.notify()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
        await expect(other.eventChannels.bindUnbound(0)).rejects.toMatchObject({ code: 'XEN_CLOSED' });
        await expect(other.grants.share(0)).rejects.toMatchObject({ code: 'XEN_CLOSED' });
      });
    });
  });
}
