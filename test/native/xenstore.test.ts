/**
 * The native XenStoreConnection end to end: the addon, libxenstore.so.4 and the mock
 * xenstored, which libxenstore reaches through XENSTORED_PATH. Every request below goes
 * through Xen's own C client library.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { XenError } from '../../lib/errors.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { XenStoreEngine } from '../../lib/xenstore/engine.js';
import { XenStoreServer } from '../../lib/xenstore/server.js';
import { XenStore } from '../../lib/xenstore/xenstore.js';
import { hasNativeAddon, waitFor } from './tier.js';

const text = (s: string): Buffer => Buffer.from(s);

async function rejection(p: Promise<unknown>): Promise<XenError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(XenError);
    return err as XenError;
  }
  throw new Error('expected a rejection');
}

/** One loop turn and a round trip, so that any event already sent has arrived. */
async function settle(conn: XenStoreConnection): Promise<void> {
  await conn.getDomainPath(0);
  await new Promise((r) => setTimeout(r, 20));
}

describe.skipIf(!hasNativeAddon)('native XenStore (libxenstore against the mock xenstored)', () => {
  let dir: string;
  let server: XenStoreServer;
  let backend: XenBackend;
  let conn: XenStoreConnection;

  /** A server of its own on a new socket, and XENSTORED_PATH pointing at it. */
  async function startServer(name: string): Promise<XenStoreServer> {
    const s = new XenStoreServer(new XenStoreEngine());
    const socket = join(dir, `${name}.sock`);
    await s.listen(socket);
    process.env.XENSTORED_PATH = socket;
    return s;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-native-'));
    server = await startServer('xenstored');
    backend = await createNativeBackend();
    conn = await backend.openXenStore();
  });

  afterAll(async () => {
    await backend?.close();
    await server?.close();
    delete process.env.XENSTORED_PATH;
    await rm(dir, { recursive: true, force: true });
  });

  it('is the native backend, connected as dom0 through the socket', () => {
    expect(backend.name).toBe('native');
    expect(conn.domid).toBe(0);
  });

  it('writes, reads, lists and removes nodes', async () => {
    await conn.write(0, '/vm/web/name', text('web'));
    await conn.write(0, '/vm/web/memory', text('512'));
    await conn.mkdir(0, '/vm/web/device');
    expect((await conn.read(0, '/vm/web/name')).toString()).toBe('web');
    expect((await conn.read(0, '/vm/web/device')).length).toBe(0);
    expect((await conn.directory(0, '/vm/web')).sort()).toEqual(['device', 'memory', 'name']);
    expect(await conn.directory(0, '/vm/web/device')).toEqual([]);
    await conn.rm(0, '/vm/web');
    expect(await conn.directory(0, '/vm')).toEqual([]);
    expect(await conn.getDomainPath(7)).toBe('/local/domain/7');
  });

  it('passes binary values through unchanged', async () => {
    const value = Buffer.from([0, 1, 2, 255, 0, 10]);
    await conn.write(0, '/bin', value);
    expect(await conn.read(0, '/bin')).toEqual(value);
  });

  it('keeps the order of calls made without waiting', async () => {
    const results = await Promise.all([
      conn.write(0, '/order', text('1')),
      conn.read(0, '/order'),
      conn.write(0, '/order', text('2')),
      conn.read(0, '/order'),
    ]);
    expect(results.map((r) => r?.toString())).toEqual([undefined, '1', undefined, '2']);
  });

  it('rejects with XenErrors carrying code, errno, op and path', async () => {
    const err = await rejection(conn.read(0, '/no/such/node'));
    expect(err).toMatchObject({ code: 'ENOENT', errno: 2, op: 'xenstore.read', path: '/no/such/node' });
    expect(err.stack).toContain('xenstore.test.ts');
    expect(await rejection(conn.write(0, '/big', Buffer.alloc(5000)))).toMatchObject({ code: 'E2BIG', op: 'xenstore.write' });
    expect(await rejection(conn.read(0, 'bad//path'))).toMatchObject({ code: 'EINVAL' });
    expect(await rejection(conn.read(0, '/nul\0byte'))).toMatchObject({ code: 'EINVAL', op: 'xenstore.read' });
  });

  it('gets and sets permissions', async () => {
    await conn.write(0, '/perm', text('x'));
    expect(await conn.getPermissions(0, '/perm')).toEqual([{ domid: 0, read: false, write: false }]);
    const perms = [
      { domid: 3, read: true, write: false },
      { domid: 5, read: true, write: true },
    ];
    await conn.setPermissions(0, '/perm', perms);
    expect(await conn.getPermissions(0, '/perm')).toEqual(perms);
    expect(await rejection(conn.setPermissions(0, '/perm', []))).toMatchObject({ code: 'EINVAL', op: 'xenstore.setPermissions' });
  });

  it('commits transactions, and rejects a conflicting commit with EAGAIN', async () => {
    await conn.write(0, '/tx/a', text('0'));
    const tx = await conn.transactionStart();
    expect(tx).not.toBe(0);
    await conn.write(tx, '/tx/a', text('1'));
    expect((await conn.read(0, '/tx/a')).toString()).toBe('0');
    await conn.transactionEnd(tx, true);
    expect((await conn.read(0, '/tx/a')).toString()).toBe('1');

    const other = await backend.openXenStore();
    const conflicting = await conn.transactionStart();
    await conn.read(conflicting, '/tx/a');
    await conn.write(conflicting, '/tx/a', text('mine'));
    await other.write(0, '/tx/a', text('theirs'));
    expect(await rejection(conn.transactionEnd(conflicting, true))).toMatchObject({ code: 'EAGAIN', op: 'xenstore.transactionEnd' });
    expect((await conn.read(0, '/tx/a')).toString()).toBe('theirs');
    await other.close();

    const discarded = await conn.transactionStart();
    await conn.write(discarded, '/tx/b', text('never'));
    await conn.transactionEnd(discarded, false);
    expect((await rejection(conn.read(0, '/tx/b'))).code).toBe('ENOENT');
  });

  it('delivers the first watch event after watch() resolves, then every change, none after unwatch()', async () => {
    const events: string[] = [];
    conn.onWatchEvent = (path, token) => events.push(`${token} ${path}`);
    await conn.watch('/w', 'tok');
    expect(events).toEqual([]);
    await waitFor(() => events.length === 1);
    await conn.write(0, '/w/child', text('1'));
    await waitFor(() => events.length === 2);
    expect(events).toEqual(['tok /w', 'tok /w/child']);
    expect((await rejection(conn.watch('/w', 'tok'))).code).toBe('EEXIST');
    await conn.unwatch('/w', 'tok');
    await conn.write(0, '/w/child', text('2'));
    await settle(conn);
    expect(events).toEqual(['tok /w', 'tok /w/child']);
    expect((await rejection(conn.unwatch('/w', 'tok'))).code).toBe('ENOENT');
    conn.onWatchEvent = undefined;
  });

  it('serves the public XenStore class', async () => {
    const xs = new XenStore(await backend.openXenStore());
    await xs.write('/api/state', 'starting');
    expect(await xs.read('/api/state')).toBe('starting');
    const seen: string[] = [];
    const ac = new AbortController();
    const watching = (async () => {
      for await (const ev of xs.watch('/api', { signal: ac.signal })) {
        seen.push(ev.path);
        if (ev.path === '/api/state') break;
      }
    })();
    await waitFor(() => seen.length === 1);
    await xs.write('/api/state', 'ready');
    await watching;
    expect(seen).toEqual(['/api', '/api/state']);
    await xs.close();
  });

  it('close(): pending and later calls reject with XEN_CLOSED, and it may be called twice', async () => {
    const c = await backend.openXenStore();
    await c.write(0, '/closing', text('1'));
    const pending = [c.read(0, '/closing'), c.read(0, '/closing'), c.write(0, '/closing', text('2'))];
    const closing = c.close();
    for (const p of pending) expect(await rejection(p)).toMatchObject({ code: 'XEN_CLOSED' });
    await closing;
    await c.close();
    expect(await rejection(c.read(0, '/closing'))).toMatchObject({ code: 'XEN_CLOSED', op: 'xenstore.read', path: '/closing' });
  });

  it('reports a xenstored that goes away through onDisconnect, once, and XEN_CLOSED', async () => {
    const gone = await startServer('gone');
    const c = await backend.openXenStore();
    process.env.XENSTORED_PATH = join(dir, 'xenstored.sock');
    const reasons: Error[] = [];
    c.onDisconnect = (reason) => reasons.push(reason);
    await c.write(0, '/here', text('1'));
    await gone.close();
    expect(await rejection(c.read(0, '/here'))).toMatchObject({ code: 'XEN_CLOSED', op: 'xenstore.read' });
    expect(await rejection(c.read(0, '/here'))).toMatchObject({ code: 'XEN_CLOSED' });
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toBeInstanceOf(XenError);
    expect(reasons[0]).toMatchObject({ code: 'XEN_CLOSED' });
    await c.close();
  });

  it('notices a xenstored that goes away while the connection only waits for watch events', async () => {
    const gone = await startServer('gone-while-watching');
    const c = await backend.openXenStore();
    process.env.XENSTORED_PATH = join(dir, 'xenstored.sock');
    const reasons: Error[] = [];
    c.onDisconnect = (reason) => reasons.push(reason);
    await c.watch('/idle', 'tok');
    await gone.close();
    await waitFor(() => reasons.length > 0, 5000);
    expect(reasons[0]).toMatchObject({ code: 'XEN_CLOSED', op: 'xenstore.connection' });
    expect(await rejection(c.read(0, '/idle'))).toMatchObject({ code: 'XEN_CLOSED' });
    await c.close();
    expect(reasons).toHaveLength(1);
  });

  it('rejects with XEN_UNAVAILABLE when no xenstored can be reached', async () => {
    process.env.XENSTORED_PATH = join(dir, 'nobody-listens.sock');
    try {
      const err = await rejection(backend.openXenStore());
      expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', errno: 2, op: 'xs_open', path: join(dir, 'nobody-listens.sock') });
      expect(err.message).toContain('cannot connect to xenstored');
    } finally {
      process.env.XENSTORED_PATH = join(dir, 'xenstored.sock');
    }
  });
});
