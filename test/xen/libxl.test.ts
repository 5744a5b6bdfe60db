/**
 * libxl against real Xen (the real-Xen tier: dom0 under QEMU, XENODE_XEN_TIER=1,
 * XENODE_BACKEND=native; see scripts/ and the xen-vm recipe). Creates the tiny busybox
 * PV guest from JSON and drives it through the native building blocks.
 *
 * The guest is the tier's test guest (test/xen/tier.ts `guest`): it boots, writes
 * data/xenode/ready in its XenStore home, and idles until it is asked to shut down.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import { LibxlConnection, type LibxlDomainEvent, validateDomainConfigJson } from '../../lib/native/libxl.js';
import { guestDomainJson, guestReady, guest as tierGuest, onRealXen } from './tier.js';
import { rejection } from '../helpers/rejection.js';

const enabled = onRealXen;
const packageRoot = fileURLToPath(new URL('../..', import.meta.url));

function guest(name: string): Record<string, unknown> {
  return guestDomainJson(name);
}

/** The next `'domain'` event matching `filter`, or a rejection after `ms`. */
function nextEvent(conn: LibxlConnection, filter: (e: LibxlDomainEvent) => boolean, ms = 120_000): Promise<LibxlDomainEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      conn.off('domain', on);
      reject(new Error('no matching libxl event'));
    }, ms);
    const on = (e: LibxlDomainEvent): void => {
      if (!filter(e)) return;
      clearTimeout(timer);
      conn.off('domain', on);
      resolve(e);
    };
    conn.on('domain', on);
  });
}

describe.skipIf(!enabled)('libxl on real Xen', { timeout: 300_000 }, () => {
  let conn: LibxlConnection;
  let domid = -1;
  const errors: Error[] = [];

  beforeAll(async () => {
    conn = await LibxlConnection.open();
    conn.on('error', (err) => errors.push(err));
  }, 120_000);

  afterAll(async () => {
    if (domid > 0) await conn.destroyDomain(domid).catch(() => {});
    await conn?.close();
  }, 120_000);

  it('opens a context on the running Xen', () => {
    expect(conn.xenVersion).toMatch(/^4\.17\./);
  });

  it('lists dom0', async () => {
    const list = await conn.listDomains();
    expect(list.find((d) => d.domid === 0)).toBeDefined();
  });

  it('validates the guest config with the same libxl', async () => {
    expect(await validateDomainConfigJson(guest('tiny'))).toMatchObject({ c_info: { name: 'tiny' } });
  });

  it('creates the busybox PV guest from JSON, paused', async () => {
    domid = await conn.createDomain(guest('tiny'), { paused: true });
    expect(domid).toBeGreaterThan(0);
    const info = await conn.domainInfo(domid);
    expect(info).toMatchObject({ domid, paused: true });
    expect((await conn.listDomains()).map((d) => d.domid)).toContain(domid);
  });

  it('reports an unknown domain as XEN_ERROR_DOMAIN_NOTFOUND (or the libxl code it uses)', async () => {
    const err = await rejection(conn.domainInfo(30000));
    expect(err).toBeInstanceOf(XenError);
    expect((err as XenError).code).toMatch(/^XEN_ERROR_/);
    expect(err).toMatchObject({ op: 'libxl_domain_info', domid: 30000 });
  });

  it('returns its configuration as JSON', async () => {
    const config = await conn.domainConfig(domid);
    expect(config).toMatchObject({ c_info: { type: 'pv', name: 'tiny' }, b_info: { kernel: tierGuest.kernel } });
  });

  it('sets the memory target and max memory', async () => {
    await conn.setMaxMemory(domid, 131072);
    await conn.setMemoryTarget(domid, 120000);
    const info = await conn.domainInfo(domid);
    expect(info.domid).toBe(domid);
  });

  it('sets the vcpu count', async () => {
    await conn.setVcpuCount(domid, 1);
    expect(await rejection(conn.setVcpuCount(domid, 4))).toMatchObject({ code: 'XEN_ERROR_INVAL' });
  });

  it('gives the console tty', async () => {
    expect(await conn.consoleTty(domid)).toMatch(/^\/dev\/pts\/\d+$/);
  });

  it('renames the domain', async () => {
    await conn.renameDomain(domid, 'tiny-renamed', 'tiny');
    expect((await conn.domainConfig(domid)).c_info).toMatchObject({ name: 'tiny-renamed' });
    await conn.renameDomain(domid, 'tiny');
  });

  it('unpauses and pauses it', async () => {
    await conn.unpauseDomain(domid);
    expect((await conn.domainInfo(domid)).paused).toBeFalsy();
    await conn.pauseDomain(domid);
    expect((await conn.domainInfo(domid)).paused).toBe(true);
  });

  it('asks the guest to shut down, reports its shutdown, and its death when destroyed', async () => {
    const watch = await conn.watchDomain(domid);
    await conn.unpauseDomain(domid);
    // The guest handles control/shutdown once its kernel is up: wait for its own ready mark.
    await guestReady(domid, 240_000);
    const shutdown = nextEvent(conn, (e) => e.domid === domid && e.type === 'domain_shutdown');
    await conn.shutdownDomain(domid);
    const s = await shutdown;
    expect(s.watchId).toBe(watch);
    const death = nextEvent(conn, (e) => e.domid === domid && e.type === 'domain_death');
    await conn.destroyDomain(domid);
    expect((await death).watchId).toBe(watch);
    await conn.unwatchDomain(watch);
    expect((await conn.listDomains()).map((d) => d.domid)).not.toContain(domid);
    domid = -1;
  }, 400_000);

  it('rejects calls after close with XEN_CLOSED, and closing twice is harmless', async () => {
    const other = await LibxlConnection.open();
    await other.close();
    await other.close();
    expect(await rejection(other.listDomains())).toMatchObject({ code: 'XEN_CLOSED' });
  });

  it('a worker that exits with a context open has it freed by the cleanup hook', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const root = ${JSON.stringify(packageRoot)};
      const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);
      (async () => {
        const h = await addon.openLibxl(() => {}, () => {});
        const list = JSON.parse(await h.listDomains());
        await h.watchDomain(0);
        parentPort.postMessage(list.length);
        process.exit(0);
      })().catch((err) => parentPort.postMessage('error: ' + err.message));`;
    const worker = new Worker(code, { eval: true });
    const message = new Promise((resolve) => worker.once('message', resolve));
    const exit = new Promise((resolve) => worker.once('exit', resolve));
    expect(await message).toBeGreaterThanOrEqual(1);
    expect(await exit).toBe(0);
  }, 120_000);

  it('saw no libxl disaster', () => {
    expect(errors).toEqual([]);
  });
});
