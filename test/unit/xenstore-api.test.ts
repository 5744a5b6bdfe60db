import { describe, expect, it } from 'vitest';
import type { XenStoreConnection } from '../../lib/backend.js';
import { XenError } from '../../lib/errors.js';
import { XenStore } from '../../lib/xenstore/xenstore.js';

/** A scripted connection: records calls, lets each test decide commit outcomes and emit events. */
function fakeConnection() {
  const calls: string[] = [];
  const values = new Map<string, Buffer>();
  let nextTx = 1;
  const commits: ('ok' | 'EAGAIN')[] = [];
  const conn: XenStoreConnection & { calls: string[]; commits: typeof commits; emit(path: string, token: string): void; tokens: string[] } = {
    domid: 0,
    calls,
    commits,
    tokens: [],
    onWatchEvent: undefined,
    onDisconnect: undefined,
    emit(path, token) {
      this.onWatchEvent?.(path, token);
    },
    async read(tx, path) {
      calls.push(`read ${tx} ${path}`);
      const v = values.get(path);
      if (!v) throw XenError.fromErrno('ENOENT', { op: 'xenstore.read', path });
      return v;
    },
    async write(tx, path, value) {
      calls.push(`write ${tx} ${path}`);
      values.set(path, Buffer.from(value));
    },
    async mkdir() {},
    async rm() {},
    async directory() {
      return [];
    },
    async getPermissions() {
      return [{ domid: 0, read: false, write: false }];
    },
    async setPermissions(tx, path, perms) {
      calls.push(`setperms ${path} ${JSON.stringify(perms)}`);
    },
    async transactionStart() {
      calls.push('start');
      return nextTx++;
    },
    async transactionEnd(tx, commit) {
      calls.push(`end ${tx} ${commit}`);
      if (commit && commits.shift() === 'EAGAIN') throw XenError.fromErrno('EAGAIN', { op: 'xenstore.transactionEnd' });
    },
    async watch(path, token) {
      calls.push(`watch ${path}`);
      this.tokens.push(token);
    },
    async unwatch(path) {
      calls.push(`unwatch ${path}`);
    },
    async getDomainPath(domid) {
      return `/local/domain/${domid}`;
    },
    async close() {
      calls.push('close');
    },
  };
  return conn;
}

describe('XenStore transactions', () => {
  it('retries a conflicting commit with a fresh transaction and returns the result', async () => {
    const conn = fakeConnection();
    conn.commits.push('EAGAIN', 'EAGAIN', 'ok');
    const xs = new XenStore(conn);
    let runs = 0;
    const result = await xs.transaction(async (tx) => {
      runs++;
      await tx.write('/n', String(tx.id));
      return tx.id;
    });
    expect(runs).toBe(3);
    expect(result).toBe(3);
    expect(conn.calls.filter((c) => c.startsWith('end'))).toEqual(['end 1 true', 'end 2 true', 'end 3 true']);
  });

  it('gives up after the retry budget with EAGAIN', async () => {
    const conn = fakeConnection();
    conn.commits.push('EAGAIN', 'EAGAIN', 'EAGAIN');
    const xs = new XenStore(conn);
    await expect(xs.transaction(async () => 1, { retries: 2 })).rejects.toMatchObject({ code: 'EAGAIN' });
    expect(conn.calls.filter((c) => c === 'start')).toHaveLength(3);
  });

  it('discards the transaction when the callback throws', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    await expect(
      xs.transaction(async (tx) => {
        await tx.write('/x', '1');
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(conn.calls).toContain('end 1 false');
    expect(conn.calls).not.toContain('end 1 true');
  });

  it('stops on an aborted signal and discards the attempt', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    const ac = new AbortController();
    await expect(
      xs.transaction(
        async () => {
          ac.abort();
        },
        { signal: ac.signal },
      ),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(conn.calls).toContain('end 1 false');
  });
});

describe('XenStore watches', () => {
  it('delivers events in order and merges a path that is already waiting', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    const it = xs.watch('/a');
    await new Promise((r) => setImmediate(r));
    const token = conn.tokens[0] as string;
    conn.emit('/a', token);
    conn.emit('/a/b', token);
    conn.emit('/a/b', token);
    conn.emit('/a/c', token);
    conn.emit('/a/x', 'someone-else');
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push((await it.next()).value?.path);
    expect(seen).toEqual(['/a', '/a/b', '/a/c']);
    await it.return?.();
    expect(conn.calls).toContain('unwatch /a');
  });

  it('rejects a pending next() with AbortError and unregisters', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    const ac = new AbortController();
    const it = xs.watch('/a', { signal: ac.signal });
    const pending = it.next();
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await new Promise((r) => setImmediate(r));
    expect(conn.calls).toContain('unwatch /a');
    expect((await it.next()).done).toBe(true);
  });

  it('ends iteration when the store is closed, and close twice is harmless', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    const it = xs.watch('/a');
    const pending = it.next();
    await xs.close();
    await xs.close();
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(conn.calls.filter((c) => c === 'close')).toHaveLength(1);
  });

  it('fails the iteration with the reason when the connection drops', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    const it = xs.watch('/a');
    const pending = it.next();
    conn.onDisconnect?.(new XenError('XEN_CLOSED', 'gone'));
    await expect(pending).rejects.toMatchObject({ code: 'XEN_CLOSED' });
  });
});

describe('XenStore argument checks', () => {
  it('throws TypeError / RangeError before calling the backend', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    await expect(xs.read(42 as unknown as string)).rejects.toBeInstanceOf(TypeError);
    await expect(xs.write('/a', 5 as unknown as string)).rejects.toBeInstanceOf(TypeError);
    await expect(xs.setPermissions('/a', [])).rejects.toBeInstanceOf(TypeError);
    await expect(xs.setPermissions('/a', [{ domid: -1, read: true, write: false }])).rejects.toBeInstanceOf(RangeError);
    await expect(xs.getDomainPath(1.5)).rejects.toBeInstanceOf(RangeError);
    expect(() => xs.watch(null as unknown as string)).toThrow(TypeError);
    await expect(xs.transaction(null as unknown as () => Promise<void>)).rejects.toBeInstanceOf(TypeError);
    expect(conn.calls).toEqual([]);
  });

  it('exists() is false only for ENOENT', async () => {
    const conn = fakeConnection();
    const xs = new XenStore(conn);
    await xs.write('/here', 'x');
    expect(await xs.exists('/here')).toBe(true);
    expect(await xs.exists('/gone')).toBe(false);
    conn.read = async () => {
      throw XenError.fromErrno('EACCES', { path: '/secret' });
    };
    await expect(xs.exists('/secret')).rejects.toMatchObject({ code: 'EACCES' });
  });
});
