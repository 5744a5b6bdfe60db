/**
 * XenStore permissions with a real unprivileged domain: dom0 boots the test guest with
 * `xl create`; the guest acts on XenStore through its own xenbus connection
 * (scripts/xen/image/guest-init) and writes what happened below its home; dom0 checks,
 * through the native backend, who owns what and that the guest was refused what is not
 * its own. Then the toolstack shuts the guest down and xenstored forgets it.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { XenBackend, XenStoreConnection, XsPermission } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { guest, waitUntil, xl } from './tier.js';

const name = `xenode-perm-${process.pid}`;
const none = (domid: number): XsPermission => ({ domid, read: false, write: false });

async function readOr(conn: XenStoreConnection, path: string): Promise<string | undefined> {
  try {
    return (await conn.read(0, path)).toString();
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
}

describe('a real unprivileged guest and XenStore', () => {
  let backend: XenBackend;
  let dom0: XenStoreConnection;
  let domid: number;
  let home: string;
  const events: string[] = [];

  beforeAll(async () => {
    backend = await createNativeBackend();
    dom0 = await backend.openXenStore();
    dom0.onWatchEvent = (path) => events.push(path);
    await xl(['create', guest.config, `name="${name}"`]);
    domid = Number((await xl(['domid', name])).trim());
    home = await dom0.getDomainPath(domid);
    await dom0.watch(`${home}/data/xenode/ready`, 'ready');
    // the guest boots under TCG: give it time; the watch wakes the wait up early
    await waitUntil(async () => (await readOr(dom0, `${home}/data/xenode/ready`)) === '1', 'the guest to report', 180_000, 250);
  }, 240_000);

  afterAll(async () => {
    await xl(['destroy', name]).catch(() => undefined);
    await backend?.close();
  });

  it('gives the guest a home that dom0 owns and the guest may read', async () => {
    expect(domid).toBeGreaterThan(0);
    expect(home).toBe(`/local/domain/${domid}`);
    expect(await dom0.getPermissions(0, home)).toEqual([none(0), { domid, read: true, write: false }]);
    expect((await dom0.read(0, `${home}/name`)).toString()).toBe(name);
  });

  it('makes the guest the owner of what it creates, as dom0 sees it', async () => {
    expect(await dom0.getPermissions(0, `${home}/data`)).toEqual([none(domid)]);
    expect(await dom0.getPermissions(0, `${home}/data/xenode/ready`)).toEqual([none(domid)]);
    expect(events).toContain(`${home}/data/xenode/ready`);
  });

  it('lets the guest read its own nodes through relative paths', async () => {
    expect((await dom0.read(0, `${home}/data/xenode/own-name`)).toString()).toBe(name);
  });

  it("refuses the guest dom0's nodes, for reading and for writing", async () => {
    expect((await dom0.read(0, `${home}/data/xenode/denied-read`)).toString()).toBe('EACCES');
    expect((await dom0.read(0, `${home}/data/xenode/denied-write`)).toString()).toBe('EACCES');
    expect(await readOr(dom0, '/local/domain/0/xenode-from-guest')).toBeUndefined();
  });

  it("shows the guest's console output in xenconsoled's log", async () => {
    const log = guest.consoleLog(name);
    await waitUntil(() => {
      try {
        return readFileSync(log, 'latin1').includes('XENODE_GUEST ready');
      } catch {
        return false;
      }
    }, `XENODE_GUEST ready in ${log}`, 30_000);
  });

  it('shuts the guest down on request, and xenstored forgets it', async () => {
    const released: string[] = [];
    const watcher = await backend.openXenStore();
    watcher.onWatchEvent = (path) => released.push(path);
    await watcher.watch('@releaseDomain', 'released');
    await waitUntil(() => released.length === 1, 'the first @releaseDomain event', 10_000);
    await xl(['shutdown', '-w', name], 180_000);
    await waitUntil(async () => (await readOr(dom0, `${home}/name`)) === undefined, `${home} to go`, 30_000);
    await waitUntil(() => released.length >= 2, 'a @releaseDomain event', 10_000);
    const list = await xl(['list']);
    expect(list).not.toContain(name);
    await watcher.close();
  }, 240_000);
});
