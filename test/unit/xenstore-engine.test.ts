/**
 * Engine internals the transport-level conformance suite does not reach: path rules,
 * event timing, quotas inside transactions, domain lifecycle, DIRECTORY_PART chunking,
 * control commands.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import { runControl } from '../../lib/xenstore/control.js';
import { XenStoreEngine, type EngineConnection } from '../../lib/xenstore/engine.js';
import { openLocalConnection } from '../../lib/xenstore/local.js';
import { canonicalPath, isValidNodePath } from '../../lib/xenstore/paths.js';
import { XsFail } from '../../lib/xenstore/store.js';
import type { XsPermission } from '../../lib/xenstore/wire.js';

const b = (s: string): Buffer => Buffer.from(s);
const none = (domid: number): XsPermission => ({ domid, read: false, write: false });
const reader = (domid: number): XsPermission => ({ domid, read: true, write: false });

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function record(conn: EngineConnection): [string, string][] {
  const events: [string, string][] = [];
  conn.onWatchEvent = (path, token) => events.push([path, token]);
  return events;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** An engine with dom0 and an introduced guest owning its home. */
function setup(options: ConstructorParameters<typeof XenStoreEngine>[0] = {}, guest = 5) {
  const engine = new XenStoreEngine(options);
  const dom0 = engine.connect(0);
  engine.introduceDomain(guest);
  const home = `/local/domain/${guest}`;
  dom0.mkdir(0, home);
  dom0.setPermissions(0, home, [none(guest)]);
  return { engine, dom0, home, g: engine.connect(guest) };
}

describe('path rules', () => {
  /** An independent statement of 4.17's is_valid_nodename. */
  function reference(p: string): boolean {
    if (!p.startsWith('/')) return false;
    if (p !== '/' && p.endsWith('/')) return false;
    if (p.includes('//')) return false;
    const m = /^\/local\/domain\/(\d{1,5})\//.exec(p);
    if (p.length > (m ? m[0].length : 0) + 2048) return false;
    return [...p].every((c) => /[A-Za-z0-9/_@-]/.test(c));
  }

  it('accepts and refuses the documented forms', () => {
    for (const ok of ['/', '/a', '/a/b-c_d@e', '/local/domain/7/x', `/local/domain/7/${'x'.repeat(2048)}`, `/${'y'.repeat(2047)}`]) {
      expect(isValidNodePath(ok), ok.slice(0, 40)).toBe(true);
    }
    for (const bad of ['', 'a', '/a/', '//', '/a//b', '/a b', '/a.b', '/a\0b', '/\u00e9', `/${'y'.repeat(2048)}`, `/local/domain/7/${'x'.repeat(2049)}`, `/local/domain/123456/${'x'.repeat(2040)}`]) {
      expect(isValidNodePath(bad), bad.slice(0, 40)).toBe(false);
    }
  });

  it('agrees with a reference implementation on random paths', () => {
    const chars = fc.constantFrom('/', 'a', 'Z', '9', '-', '_', '@', '.', ' ', '\u00e9', '/');
    fc.assert(
      fc.property(fc.array(chars, { maxLength: 30 }).map((c) => c.join('')), (p) => {
        expect(isValidNodePath(p)).toBe(reference(p));
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 2030, max: 2080 }), fc.boolean(), (n, local) => {
        const p = `${local ? '/local/domain/3/' : '/'}${'q'.repeat(n)}`;
        expect(isValidNodePath(p)).toBe(reference(p));
      }),
    );
  });

  it('resolves relative paths against the home, leaving absolute and special ones', () => {
    expect(canonicalPath('a/b', '/local/domain/3')).toBe('/local/domain/3/a/b');
    expect(canonicalPath('/a', '/local/domain/3')).toBe('/a');
    expect(canonicalPath('@releaseDomain', '/local/domain/3')).toBe('@releaseDomain');
  });
});

describe('engine connections', () => {
  it('check arguments before anything else and refuse calls once closed', () => {
    const engine = new XenStoreEngine();
    const c = engine.connect(0);
    expect(() => c.read(-1, '/')).toThrow(TypeError);
    expect(() => c.read(1.5, '/')).toThrow(TypeError);
    expect(() => c.read(0, 42 as unknown as string)).toThrow(TypeError);
    expect(() => c.write(0, '/a', 'text' as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => c.setPermissions(0, '/a', [{ domid: 70000, read: true, write: false }])).toThrow(TypeError);
    expect(() => engine.connect(0x7ff0)).toThrow(RangeError);
    c.close();
    c.close();
    expect(codeOf(() => c.read(0, '/'))).toBe('XEN_CLOSED');
  });

  it('throws XenError with the errno, operation and path', () => {
    const c = new XenStoreEngine().connect(0);
    let err: unknown;
    try {
      c.read(0, '/no/such');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'ENOENT', errno: 2, op: 'xenstore.read', path: '/no/such' });
  });

  it('hands out copies: changing a result does not change the store', () => {
    const c = new XenStoreEngine().connect(0);
    const value = b('abc');
    c.write(0, '/copy', value);
    value[0] = 0x7a;
    const read = c.read(0, '/copy');
    read[1] = 0x7a;
    expect(c.read(0, '/copy').toString()).toBe('abc');
    c.getPermissions(0, '/copy')[0].read = true;
    expect(c.getPermissions(0, '/copy')).toEqual([none(0)]);
  });

  it('numbers transactions from 1, skipping ids in use', () => {
    const c = new XenStoreEngine().connect(0);
    const ids = [c.transactionStart(), c.transactionStart(), c.transactionStart()];
    expect(ids).toEqual([1, 2, 3]);
    c.transactionEnd(2, false);
    expect(c.transactionStart()).toBe(4);
    expect(c.transactionCount).toBe(3);
    c.resetWatches();
    expect(c.transactionCount).toBe(0);
    expect(codeOf(() => c.read(1, '/'))).toBe('ENOENT');
  });
});

describe('watch events', () => {
  it('deliver the first event after watch() returns, before any later event', async () => {
    const engine = new XenStoreEngine();
    const c = engine.connect(0);
    const events = record(c);
    c.watch('/ev', 'a');
    expect(events).toEqual([]);
    c.write(0, '/ev/x', b('1'));
    expect(events).toEqual([
      ['/ev', 'a'],
      ['/ev/x', 'a'],
    ]);
    await tick();
    expect(events.length).toBe(2);
  });

  it('send no first event for a watch removed before it was due', async () => {
    const c = new XenStoreEngine().connect(0);
    const events = record(c);
    c.watch('/gone', 'a');
    c.unwatch('/gone', 'a');
    await tick();
    expect(events).toEqual([]);
  });

  it('are delivered once the change is complete', () => {
    const engine = new XenStoreEngine();
    const writer = engine.connect(0);
    const watcher = engine.connect(0);
    writer.write(0, '/done/a/b', b('x'));
    const seen: string[] = [];
    watcher.onWatchEvent = (path) => {
      seen.push(`${path}:${codeOf(() => watcher.read(0, path)) ?? watcher.read(0, path).toString()}`);
    };
    watcher.watch('/done', 't');
    writer.write(0, '/done/a/b', b('new'));
    writer.rm(0, '/done/a');
    expect(seen).toEqual(['/done:', '/done/a/b:new', '/done/a:ENOENT']);
  });

  it('caused by a handler are delivered after the current ones', () => {
    const engine = new XenStoreEngine();
    const c = engine.connect(0);
    const order: string[] = [];
    c.onWatchEvent = (path, token) => {
      order.push(`${token}:${path}`);
      if (path === '/re/a' && token === 'one') c.write(0, '/re/b', b('from handler'));
    };
    c.watch('/re', 'one');
    c.watch('/re', 'two');
    c.write(0, '/re/a', b('1'));
    expect(order).toEqual(['one:/re', 'two:/re', 'one:/re/a', 'two:/re/a', 'one:/re/b', 'two:/re/b']);
  });

  it('fire special watches on their name and, as 4.17 does, on /', async () => {
    const engine = new XenStoreEngine();
    const c = engine.connect(0);
    const events = record(c);
    c.watch('/', 'root');
    c.watch('@introduceDomain', 'in');
    c.watch('@introduceDomain/7', 'depth');
    c.watch('@', 'at');
    await tick();
    engine.introduceDomain(7);
    expect(events.slice(4)).toEqual([
      ['@introduceDomain', 'root'],
      ['@introduceDomain', 'in'],
    ]);
    // An unprivileged watcher of / hears only what the special name's permissions grant.
    const g = engine.connect(7);
    const gEvents = record(g);
    g.watch('/', 'root');
    await tick();
    engine.introduceDomain(8);
    expect(gEvents).toEqual([['/', 'root']]);
  });

  it('refuse the special names for anything but watches and their permissions', () => {
    const { g, dom0 } = setup();
    expect(codeOf(() => dom0.getPermissions(0, '@introduceDomain'))).toBe('EINVAL');
    expect(codeOf(() => dom0.read(0, '@releaseDomain'))).toBe('EINVAL');
    expect(codeOf(() => dom0.setPermissions(0, '@other', [none(0)]))).toBe('EINVAL');
    expect(codeOf(() => g.setPermissions(0, '@releaseDomain', [none(5)]))).toBe('EACCES');
    expect(codeOf(() => dom0.watch(`@${'x'.repeat(2048)}`, 't'))).toBe('EINVAL');
  });
});

describe('quotas', () => {
  it('count child names in the node size, for unprivileged writers only', () => {
    const { g, dom0, home } = setup({ quota: { nodeSize: 120 } });
    // 24 + 8 + value + children: each name is 4 characters plus a NUL.
    let created = 0;
    for (let i = 0; i < 40; i++) {
      if (codeOf(() => g.write(0, `dir/n${String(i).padStart(3, '0')}`, b(''))) !== undefined) break;
      created++;
    }
    expect(24 + 8 + (created + 1) * 5).toBeGreaterThanOrEqual(120);
    expect(24 + 8 + created * 5).toBeLessThan(120);
    dom0.write(0, `${home}/dir/by-dom0`, b(''));
    expect(dom0.directory(0, `${home}/dir`)).toContain('by-dom0');
  });

  it('doom a transaction that touches too many nodes: the commit fails with ENOMEM', () => {
    const { g } = setup({ quota: { transactionNodes: 3 } });
    const tx = g.transactionStart();
    g.write(tx, 'a', b('1'));
    expect(codeOf(() => g.write(tx, 'b/c/d', b('2')))).toBe('ENOSPC');
    expect(codeOf(() => g.transactionEnd(tx, true))).toBe('ENOMEM');
    expect(codeOf(() => g.read(0, 'a'))).toBe('ENOENT');
  });

  it('check the nodes quota again when a transaction that created nodes commits', () => {
    const { g } = setup({ quota: { nodes: 3 } });
    const t1 = g.transactionStart();
    g.write(t1, 'one', b('1'));
    g.transactionEnd(t1, true);
    // The home and one node: 2. A transaction may take the count to the quota, but as in C
    // xenstored its commit refuses to leave the domain at the quota.
    const t2 = g.transactionStart();
    g.write(t2, 'two', b('2'));
    expect(codeOf(() => g.transactionEnd(t2, true))).toBe('ENOSPC');
    g.write(0, 'two', b('2'));
    expect(codeOf(() => g.write(0, 'three', b('3')))).toBe('ENOSPC');
  });

  it('can be changed while running', () => {
    const { engine, g } = setup({ quota: { nodes: 2 } });
    expect(codeOf(() => g.write(0, 'x/y', b('')))).toBe('ENOSPC');
    engine.setQuota({ nodes: 10 });
    g.write(0, 'x/y', b(''));
    expect(engine.domainUsage(5).nodes).toBe(3);
    expect(() => engine.setQuota({ nodes: -1 })).toThrow(RangeError);
    expect(() => engine.setQuota({ bogus: 1 } as never)).toThrow(TypeError);
  });
});

describe('transactions', () => {
  it('keep the version of a node they first saw', () => {
    const engine = new XenStoreEngine();
    const a = engine.connect(0);
    const other = engine.connect(0);
    a.write(0, '/pin', b('old'));
    const tx = a.transactionStart();
    expect(a.read(tx, '/pin').toString()).toBe('old');
    other.write(0, '/pin', b('new'));
    expect(a.read(tx, '/pin').toString()).toBe('old');
    expect(codeOf(() => a.transactionEnd(tx, true))).toBe('EAGAIN');
  });

  it('apply like the same requests outside a transaction when they commit', () => {
    type Op = { write: string; value: string } | { rm: string };
    const path = fc.constantFrom('/m/a', '/m/b', '/m/a/x', '/m/b/y', '/m/c/z');
    const op: fc.Arbitrary<Op> = fc.oneof(fc.record({ write: path, value: fc.string({ maxLength: 4 }) }), fc.record({ rm: path }));
    const paths = ['/m', '/m/a', '/m/b', '/m/c', '/m/a/x', '/m/b/y', '/m/c/z'];
    const snapshot = (c: EngineConnection) =>
      paths.map((p) => {
        const code = codeOf(() => c.read(0, p));
        return code ?? `${c.read(0, p).toString()}|${c.directory(0, p).join(',')}`;
      });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 12 }), fc.boolean(), (ops, commit) => {
        const viaTx = new XenStoreEngine().connect(0);
        const direct = new XenStoreEngine().connect(0);
        viaTx.mkdir(0, '/m');
        direct.mkdir(0, '/m');
        const before = snapshot(viaTx);
        const tx = viaTx.transactionStart();
        const apply = (c: EngineConnection, t: number, o: Op): string | undefined =>
          codeOf(() => ('write' in o ? c.write(t, o.write, b(o.value)) : c.rm(t, o.rm)));
        for (const o of ops) expect(apply(viaTx, tx, o)).toBe(apply(direct, 0, o));
        viaTx.transactionEnd(tx, commit);
        expect(snapshot(viaTx)).toEqual(commit ? snapshot(direct) : before);
      }),
    );
  });
});

describe('domains', () => {
  it('release a domain: its nodes go, its rights go, @releaseDomain fires last', async () => {
    const { engine, dom0, g, home } = setup();
    g.write(0, 'data/x', b('1'));
    dom0.write(0, '/shared', b('s'));
    dom0.setPermissions(0, '/shared', [none(0), reader(5), reader(6)]);
    const gEvents = record(g);
    g.watch('data', 'mine');
    const events = record(dom0);
    dom0.watch(home, 'home');
    dom0.watch('@releaseDomain', 'rel');
    await tick();
    engine.releaseDomain(5);
    expect(events.slice(2)).toEqual([
      [home, 'home'],
      ['@releaseDomain', 'rel'],
    ]);
    expect(codeOf(() => dom0.read(0, home))).toBe('ENOENT');
    expect(dom0.getPermissions(0, '/shared')).toEqual([none(0), reader(6)]);
    expect(g.watchCount).toBe(0);
    expect(gEvents).toEqual([['data', 'mine']]);
    expect(engine.isDomainIntroduced(5)).toBe(false);
    expect(engine.domainUsage(5).nodes).toBe(0);
    expect(codeOf(() => engine.releaseDomain(5))).toBe('ENOENT');
    expect(codeOf(() => engine.releaseDomain(0))).toBe('EINVAL');
  });

  it('give a released domain\'s nodes to dom0 when keeping orphans', () => {
    const { engine, dom0, g, home } = setup({ keepOrphans: true });
    g.write(0, 'kept', b('k'));
    engine.releaseDomain(5);
    expect(dom0.read(0, `${home}/kept`).toString()).toBe('k');
    expect(dom0.getPermissions(0, `${home}/kept`)).toEqual([none(0)]);
    expect(engine.domainUsage(5).nodes).toBe(0);
  });

  it('announce a shutdown once, again after resume', async () => {
    const { engine, dom0 } = setup();
    const events = record(dom0);
    dom0.watch('@releaseDomain', 'rel');
    await tick();
    engine.shutdownDomain(5);
    engine.shutdownDomain(5);
    expect(events.length).toBe(2);
    engine.resumeDomain(5);
    engine.shutdownDomain(5);
    expect(events.length).toBe(3);
    expect(engine.isDomainIntroduced(5)).toBe(true);
    expect(codeOf(() => engine.shutdownDomain(9))).toBe('ENOENT');
    expect(codeOf(() => engine.resumeDomain(0))).toBe('EINVAL');
  });

  it('reset the connections of a domain introduced again', async () => {
    const { engine, g } = setup();
    const events = record(g);
    g.watch('x', 't');
    g.transactionStart();
    engine.introduceDomain(5);
    await tick();
    expect(g.watchCount).toBe(0);
    expect(g.transactionCount).toBe(0);
    expect(events).toEqual([]);
  });

  it('let a targeting domain act with its target\'s rights', () => {
    const { engine, dom0, home } = setup({}, 20);
    engine.introduceDomain(21);
    const dm = engine.connect(21);
    dom0.write(0, `${home}/device`, b('d'));
    dom0.write(0, '/granted', b('g'));
    dom0.setPermissions(0, '/granted', [none(0), reader(20)]);
    expect(codeOf(() => dm.read(0, `${home}/device`))).toBe('EACCES');
    expect(codeOf(() => engine.setTarget(21, 33))).toBe('ENOENT');
    engine.setTarget(21, 20);
    expect(dm.read(0, `${home}/device`).toString()).toBe('d');
    expect(dm.read(0, '/granted').toString()).toBe('g');
    dm.write(0, `${home}/device`, b('by dm'));
    expect(dom0.read(0, `${home}/device`).toString()).toBe('by dm');
  });

  it('answer domain requests from privileged connections only', () => {
    const { dom0, g } = setup();
    expect(codeOf(() => g.isDomainIntroduced(0))).toBe('EACCES');
    expect(codeOf(() => g.introduceDomain(8))).toBe('EACCES');
    expect(dom0.isDomainIntroduced(5)).toBe(true);
    expect(dom0.isDomainIntroduced(0x7ff0)).toBe(true);
    expect(codeOf(() => dom0.introduceDomain(0x7ff0))).toBe('EINVAL');
    expect(codeOf(() => dom0.releaseDomain(0x7ff5))).toBe('ENOENT');
  });
});

describe('directory parts', () => {
  it('cut the list into replies that fit, resuming at a byte offset', () => {
    const c = new XenStoreEngine().connect(0);
    const names = Array.from({ length: 400 }, (_, i) => `n${String(i).padStart(12, '0')}`);
    for (const n of names) c.mkdir(0, `/big/${n}`);
    const got: string[] = [];
    let offset = 0;
    let generation: string | undefined;
    for (;;) {
      const part = c.directoryPart(0, '/big', offset);
      generation ??= part.generation;
      expect(part.generation).toBe(generation);
      const bytes = part.children.reduce((n, s) => n + s.length + 1, 0);
      expect(part.generation.length + 1 + bytes + (part.more ? 0 : 1)).toBeLessThanOrEqual(4096);
      got.push(...part.children);
      offset += bytes;
      if (!part.more) break;
    }
    expect(got).toEqual(names);
    expect(c.directoryPart(0, '/big', offset + 5)).toEqual({ generation, children: [], more: false });
    // An offset inside a name starts there, as xenstored does.
    expect(c.directoryPart(0, '/big', 3).children[0]).toBe(names[0].slice(3));
    c.rm(0, `/big/${names[0]}`);
    expect(c.directoryPart(0, '/big', 0).generation).not.toBe(generation);
  });
});

describe('control commands', () => {
  const run = (engine: XenStoreEngine, ...args: string[]): string => {
    try {
      return runControl(engine, args).toString('latin1');
    } catch (err) {
      return err instanceof XsFail ? err.code : String(err);
    }
  };

  it('show and set quotas as xenstore-control does', () => {
    const engine = new XenStoreEngine();
    engine.connect(0).write(0, '/x', b(''));
    const shown = run(engine, 'quota');
    expect(shown.split('\n').slice(0, 3)).toEqual([
      'Quota settings:',
      'nodes            :     1000 Nodes per domain',
      'watches          :      128 Watches per connection',
    ]);
    expect(run(engine, 'quota', 'set', 'transaction-nodes', '12')).toBe('OK\0');
    expect(engine.quota.transactionNodes).toBe(12);
    expect(run(engine, 'quota', 'set', 'unknown', '1')).toBe('EINVAL');
    expect(run(engine, 'quota', 'set', 'nodes')).toBe('EINVAL');
    expect(run(engine, 'quota', '0')).toMatch(/^Domain 0:\nnodes {11}: +\d+\nwatches {9}: +0\ntransactions {4}: +0\n\0$/);
    expect(run(engine, 'check', 'extra')).toBe('EINVAL');
    expect(run(engine, 'log', 'maybe')).toBe('EINVAL');
    expect(run(engine, 'log', 'on')).toBe('OK\0');
    expect(run(engine, 'help')).toBe('check\t\nlog\ton|off\nprint\t<string>\nquota\t[set <name> <val>|<domid>]\nhelp\t\n');
  });
});

describe('in-process connections', () => {
  it('deliver events asynchronously and refuse calls once closed', async () => {
    const engine = new XenStoreEngine();
    const xs = openLocalConnection(engine, 0);
    const events: string[] = [];
    xs.onWatchEvent = (path) => events.push(path);
    await xs.watch('/async', 't');
    await tick();
    expect(events).toEqual(['/async']);
    const written = xs.write(0, '/async', b('1'));
    expect(events).toEqual(['/async']);
    await written;
    await tick();
    expect(events).toEqual(['/async', '/async']);
    await xs.close();
    await xs.close();
    await expect(xs.read(0, '/async')).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    await expect(xs.write(0, '/a', 'x' as unknown as Uint8Array)).rejects.toThrow(TypeError);
  });
});
