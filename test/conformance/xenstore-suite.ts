/**
 * The XenStore conformance suite: what docs/misc/xenstore.txt (as C xenstored of Xen 4.17
 * implements it) promises, written once against the {@link XenStoreConnection} contract.
 * Call {@link xenStoreConformance} with a factory for each transport or backend. A factory
 * offers unprivileged domains either as fresh ids it can act as (the mock) or as a few
 * domains that already exist ({@link XenStoreSuiteFactory.guests}: booted guests on real
 * Xen); tests that need something a factory cannot offer are skipped for it.
 */
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { XenStoreConnection, XsPermission } from '../../lib/backend.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';

/** The quotas the suite's quota cases exceed. */
export type QuotaKind = 'nodes' | 'nodeSize' | 'transactions' | 'watches' | 'permissions';

/** C xenstored's answers past each quota (the mock's too). */
const C_QUOTA_ERRORS: Readonly<Record<QuotaKind, string>> = { nodes: 'ENOSPC', nodeSize: 'ENOSPC', transactions: 'ENOSPC', watches: 'E2BIG', permissions: 'ENOSPC' };

/** How the suite reaches the XenStore under test. */
export interface XenStoreSuiteFactory {
  /** Opens a connection acting as `domid` (0 is dom0, privileged). */
  open(domid: number): Promise<XenStoreConnection>;
  /** Whether {@link open} can act as a domain other than dom0 (a socket to a real xenstored is always dom0). */
  readonly unprivileged?: boolean;
  /**
   * Unprivileged domains that already exist and that {@link open} can act as, at least
   * two. Without it the suite picks fresh domain ids (introducing them first when it can);
   * with it the suite takes these in turn, so each test sees domains that earlier tests
   * used too (it keeps its nodes in their homes below `conformance/` and removes those).
   */
  readonly guests?: readonly number[];
  /**
   * Introduces a domain to xenstored (fires `@introduceDomain`): `domid` when the factory
   * can choose, else one of its own (a real toolstack picks the id), which it resolves to.
   */
  introduce?(domid: number): Promise<number | void>;
  /** Releases a domain that {@link introduce} introduced (fires `@releaseDomain`). */
  release?(domid: number): Promise<void>;
  /**
   * Whether the special-name case has the unprivileged domain try to grant itself a special
   * name (which the store refuses with EACCES, as the mock and oxenstored do). `false` where
   * that request must not be sent: Debian's C xenstored 4.17 treats a guest's
   * `XS_SET_PERMS` of `@introduceDomain` as a bad path (EINVAL), and in two of four
   * real-Xen boots the guest's connection got no answer at all afterwards — every later
   * case of the boot needs that guest. The rest of the case runs there all the same.
   */
  readonly guestGrantsSpecialName?: boolean;
  /**
   * The error code of a reply above XENSTORE_PAYLOAD_MAX on this transport: only
   * oxenstored sends one (`XS_DIRECTORY` of a long listing).
   */
  readonly oversizedReply?: string;
  /**
   * A separate, fresh store whose unprivileged domains have these quotas. A factory with
   * {@link guests} may give the quotas to the store it has, counted from what the first
   * of its guests holds once the suite has set its home up, until its `cleanup()`.
   */
  withQuota?(quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory>;
  /**
   * The error code the store answers past each quota, where it is not C xenstored's
   * (ENOSPC; E2BIG for watches); `null` for a quota the store does not have, whose limit
   * the suite then expects to pass.
   */
  readonly quotaErrors?: Partial<Record<QuotaKind, string | null>>;
  /** Releases everything the factory made. */
  cleanup(): Promise<void>;
  /**
   * The xenstored behind the factory. The suite states what C xenstored does (and the mock
   * does the same); `'oxenstored'`, the OCaml daemon Debian starts by default, differs in a
   * few places, each marked where it occurs (seen on Xen 4.17 by the real-Xen tier).
   */
  readonly implementation?: 'xenstored' | 'oxenstored';
  /**
   * How many random operation sequences the model case checks (default 25). Each costs
   * about a hundred round trips; a xenstored in a dom0 under QEMU's emulation answers in
   * tens of milliseconds, so the real-Xen tier asks for fewer (the mock runs keep 25).
   */
  readonly modelRuns?: number;
}

const text = (s: string): Buffer => Buffer.from(s, 'utf8');
const none = (domid: number): XsPermission => ({ domid, read: false, write: false });
const reader = (domid: number): XsPermission => ({ domid, read: true, write: false });
const both = (domid: number): XsPermission => ({ domid, read: true, write: true });

/** `'ok'` or the value when `p` resolves, the error's code when it rejects. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => (v === undefined ? 'ok' : v),
    (err: { code?: string }) => err.code ?? String(err),
  );
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

/** Records a connection's watch events. */
function record(conn: XenStoreConnection): [string, string][] {
  const events: [string, string][] = [];
  conn.onWatchEvent = (path, token) => events.push([path, token]);
  return events;
}

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Waits until every event caused before now has reached `conn`: events are sent before the
 * reply of any later request on the same connection.
 */
async function sync(conn: XenStoreConnection): Promise<void> {
  await conn.getDomainPath(0);
  await new Promise((r) => setImmediate(r));
}

/** Registers the suite under `name`. */
export function xenStoreConformance(name: string, factory: XenStoreSuiteFactory): void {
  const ocaml = factory.implementation === 'oxenstored';
  /** Directory listings: C xenstored keeps creation order, oxenstored sorts by name. */
  const listed = (names: readonly string[]): string[] => (ocaml ? [...names].sort() : [...names]);
  /** A transaction id xenstored does not know: ENOENT from C xenstored, EIO from oxenstored. */
  const unknownTx = ocaml ? 'EIO' : 'ENOENT';
  describe(name, () => {
    const opened: XenStoreConnection[] = [];
    let serial = 0;
    // Fresh domain ids per test: the store is shared by the whole suite.
    let nextDomid = 11;

    let guestsTaken = 0;
    /** Introduces a domain, as {@link XenStoreSuiteFactory.introduce}; resolves to its id. */
    const introduce = async (from: XenStoreSuiteFactory = factory): Promise<number> => {
      const wanted = nextDomid++;
      return (await from.introduce?.(wanted)) ?? wanted;
    };

    const open = async (domid = 0, from: XenStoreSuiteFactory = factory): Promise<XenStoreConnection> => {
      const c = await from.open(domid);
      opened.push(c);
      return c;
    };
    /** A fresh directory for one test, owned by dom0 with the root's permissions (n0). */
    const fresh = async (dom0: XenStoreConnection): Promise<string> => {
      const base = `/conformance/t${++serial}`;
      await dom0.mkdir(0, base);
      return base;
    };
    /** A domain with its home, as the toolstack sets one up: owned by the domain, private. */
    const guest = async (dom0: XenStoreConnection, from: XenStoreSuiteFactory = factory) => {
      const fixed = from.guests;
      const domid = fixed ? (fixed[guestsTaken++ % fixed.length] as number) : await introduce(from);
      const home = `/local/domain/${domid}`;
      await dom0.mkdir(0, home);
      await dom0.setPermissions(0, home, [none(domid)]);
      // what an earlier test left there
      if (fixed) await dom0.rm(0, `${home}/conformance`);
      return { domid, home, conn: await open(domid, from) };
    };

    afterEach(async () => {
      guestsTaken = 0;
      await Promise.all(opened.splice(0).map((c) => c.close()));
    });
    afterAll(() => factory.cleanup());

    describe('nodes', () => {
      it('starts as a freshly booted host does', async () => {
        const dom0 = await open();
        expect(await dom0.directory(0, '/')).toEqual(expect.arrayContaining(['tool', 'local']));
        expect(await dom0.directory(0, '/local/domain')).toContain('0');
        expect(await dom0.getPermissions(0, '/')).toEqual([none(0)]);
        expect(await dom0.getPermissions(0, '/local/domain/0')).toEqual([none(0)]);
      });

      it('stores values as exact bytes', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const value = Buffer.from([0, 1, 2, 0xff, 0x80, 0x0a, 0]);
        await dom0.write(0, `${base}/bin`, value);
        expect(await dom0.read(0, `${base}/bin`)).toEqual(value);
        await dom0.write(0, `${base}/empty`, Buffer.alloc(0));
        expect((await dom0.read(0, `${base}/empty`)).length).toBe(0);
      });

      it('creates missing parents with empty values', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/a/b/c`, text('leaf'));
        expect((await dom0.read(0, `${base}/a`)).toString()).toBe('');
        expect(await dom0.directory(0, `${base}/a`)).toEqual(['b']);
        expect((await dom0.read(0, `${base}/a/b/c`)).toString()).toBe('leaf');
      });

      it('lists children in creation order', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        for (const n of ['zeta', 'alpha', 'mid']) await dom0.write(0, `${base}/${n}`, text(n));
        expect(await dom0.directory(0, base)).toEqual(listed(['zeta', 'alpha', 'mid']));
      });

      it('mkdir creates parents but leaves an existing node unchanged', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/keep`, text('value'));
        await dom0.mkdir(0, `${base}/keep`);
        expect((await dom0.read(0, `${base}/keep`)).toString()).toBe('value');
        await dom0.mkdir(0, `${base}/new/deep`);
        expect(await dom0.directory(0, `${base}/new`)).toEqual(['deep']);
        expect((await dom0.read(0, `${base}/new/deep`)).length).toBe(0);
      });

      it('rm removes the whole subtree', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/r/a/b`, text('x'));
        await dom0.write(0, `${base}/r/c`, text('y'));
        await dom0.write(0, `${base}/stay`, text('z'));
        await dom0.rm(0, `${base}/r`);
        await expectCode(dom0.read(0, `${base}/r/a/b`), 'ENOENT');
        await expectCode(dom0.read(0, `${base}/r`), 'ENOENT');
        expect(await dom0.directory(0, base)).toEqual(['stay']);
      });

      it('rm of an absent node is fine if its parent exists, ENOENT otherwise', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.rm(0, `${base}/absent`);
        await expectCode(dom0.rm(0, `${base}/absent/child`), 'ENOENT');
      });

      // oxenstored accepts XS_RM of / and empties the store, which a live host does not
      // survive: it is asked inside a transaction that is then aborted.
      it('refuses to remove the root (oxenstored: accepts it)', async () => {
        const dom0 = await open();
        const tx = await dom0.transactionStart();
        try {
          if (ocaml) {
            await dom0.rm(tx, '/');
            expect(await outcome(dom0.directory(tx, '/'))).toEqual([]);
          } else {
            await expectCode(dom0.rm(tx, '/'), 'EINVAL');
          }
        } finally {
          await dom0.transactionEnd(tx, false);
        }
        if (!ocaml) await expectCode(dom0.rm(0, '/'), 'EINVAL');
        expect(await dom0.directory(0, '/')).toContain('local');
      });

      it('answers ENOENT for absent nodes', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await expectCode(dom0.read(0, `${base}/nope`), 'ENOENT');
        await expectCode(dom0.directory(0, `${base}/nope`), 'ENOENT');
        await expectCode(dom0.getPermissions(0, `${base}/nope`), 'ENOENT');
        await expectCode(dom0.setPermissions(0, `${base}/nope`, [none(0)]), 'ENOENT');
      });

      it('gives every domain its home path', async () => {
        const dom0 = await open();
        expect(await dom0.getDomainPath(0)).toBe('/local/domain/0');
        expect(await dom0.getDomainPath(7)).toBe('/local/domain/7');
      });

      // oxenstored answers XS_DIRECTORY with one reply above XENSTORE_PAYLOAD_MAX (4096),
      // which libxenstore takes for a lost connection and the TypeScript client refuses:
      // the connection fails with the factory's `oversizedReply` error.
      it('lists a directory too long for one reply (oxenstored: a reply too large to take)', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const names = Array.from({ length: 120 }, (_, i) => `child-with-a-rather-long-name-${String(i).padStart(4, '0')}`);
        expect(names.reduce((n, s) => n + s.length + 1, 0)).toBeGreaterThan(4096);
        for (const n of names) await dom0.mkdir(0, `${base}/${n}`);
        if (ocaml) {
          expect(await outcome(dom0.directory(0, base))).toBe(factory.oversizedReply);
          const other = await open();
          expect(await other.directory(0, `${base}/${names[0] as string}`)).toEqual([]);
        } else {
          expect(await dom0.directory(0, base)).toEqual(names);
        }
      });
    });

    describe('paths', () => {
      it('resolves relative paths below the domain home', async () => {
        const dom0 = await open();
        const name = `conformance-rel-${++serial}`;
        await dom0.write(0, `${name}/x`, text('rel'));
        try {
          expect((await dom0.read(0, `/local/domain/0/${name}/x`)).toString()).toBe('rel');
          expect((await dom0.read(0, `${name}/x`)).toString()).toBe('rel');
          expect(await dom0.directory(0, name)).toEqual(['x']);
        } finally {
          await dom0.rm(0, name);
        }
      });

      // oxenstored takes some of these paths for good ones (see `rejected` below).
      it('rejects malformed paths with EINVAL', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const bad: Record<string, string> = {
          empty: '',
          'trailing slash': `${base}/`,
          'double slash': `${base}//x`,
          space: `${base}/a b`,
          dot: `${base}/a.b`,
          'non-ASCII': `${base}/caf\u00e9`,
          tab: `${base}/tab\t`,
          'special name': '@introduceDomain',
          'too long': `/${'a'.repeat(2048)}`,
        };
        /** What read, write and mkdir answer. */
        const got: Record<string, string> = {};
        for (const [what, p] of Object.entries(bad)) {
          const read = dom0.read(0, p).then(() => undefined);
          got[what] = [await outcome(read), await outcome(dom0.write(0, p, text('x'))), await outcome(dom0.mkdir(0, p))].join(' ');
        }
        const rejected = 'EINVAL EINVAL EINVAL';
        expect(got).toEqual({
          empty: rejected,
          'trailing slash': rejected,
          'double slash': rejected,
          space: rejected,
          dot: rejected,
          'non-ASCII': rejected,
          tab: rejected,
          // oxenstored keeps the special names as nodes: dom0 may read and write them
          'special name': ocaml ? 'ok ok ok' : rejected,
          'too long': rejected,
        });
        await expectCode(dom0.watch(`${base}//x`, 'tok'), 'EINVAL');
        expect(await dom0.directory(0, base)).toEqual([]);
      });

      it('limits paths to 2048 characters below a domain home (oxenstored: 2048 in all)', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        // C xenstored 4.17 counts the length after a leading /local/domain/<domid>/ only;
        // oxenstored counts the whole path.
        const long = `/local/domain/0/conformance-long-${serial}/${'a'.repeat(2020)}`;
        expect(long.length).toBeGreaterThan(2048);
        if (ocaml) {
          await expectCode(dom0.write(0, long, text('ok')), 'EINVAL');
        } else {
          await dom0.write(0, long, text('ok'));
          expect((await dom0.read(0, long)).toString()).toBe('ok');
          await dom0.rm(0, `/local/domain/0/conformance-long-${serial}`);
        }
        const elsewhere = `${base}/${'a'.repeat(2048 - base.length)}`;
        expect(elsewhere.length).toBe(2049);
        /** What a write of a path of each length answers. */
        const got: Record<number, unknown> = {};
        for (const length of [1024, 1025, 2048, 2049]) got[length] = await outcome(dom0.write(0, elsewhere.slice(0, length), text('x')));
        // oxenstored: quota-path-max in /etc/xen/oxenstored.conf, 1024 as Debian ships it
        expect(got).toEqual({ 1024: 'ok', 1025: ocaml ? 'EINVAL' : 'ok', 2048: ocaml ? 'EINVAL' : 'ok', 2049: 'EINVAL' });
      });

      it('answers E2BIG when a request does not fit one payload', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await expectCode(dom0.write(0, `${base}/big`, Buffer.alloc(4096, 0x61)), 'E2BIG');
        await expectCode(dom0.read(0, `${base}/big`), 'ENOENT');
      });
    });

    describe.skipIf(!factory.unprivileged)('permissions', () => {
      it('denies an unprivileged domain everything on a node that does not grant it', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/secret`, text('s'));
        const { conn: g } = await guest(dom0);
        await expectCode(g.read(0, `${base}/secret`), 'EACCES');
        await expectCode(g.write(0, `${base}/secret`, text('x')), 'EACCES');
        await expectCode(g.directory(0, `${base}/secret`), 'EACCES');
        await expectCode(g.getPermissions(0, `${base}/secret`), 'EACCES');
        await expectCode(g.setPermissions(0, `${base}/secret`, [both(0)]), 'EACCES');
        await expectCode(g.rm(0, `${base}/secret`), 'EACCES');
        await expectCode(g.mkdir(0, `${base}/secret/sub`), 'EACCES');
        // Absent below an unreadable node: the domain may not even learn that (oxenstored
        // tells it).
        await expectCode(g.read(0, `${base}/secret/absent`), ocaml ? 'ENOENT' : 'EACCES');
        expect((await dom0.read(0, `${base}/secret`)).toString()).toBe('s');
      });

      it('grants one domain rights through a later entry, first match winning', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { domid, conn: g } = await guest(dom0);
        const { conn: other } = await guest(dom0);
        await dom0.write(0, `${base}/shared`, text('hello'));
        await dom0.setPermissions(0, `${base}/shared`, [none(0), reader(domid), both(domid)]);
        expect((await g.read(0, `${base}/shared`)).toString()).toBe('hello');
        expect(await g.getPermissions(0, `${base}/shared`)).toEqual([none(0), reader(domid), both(domid)]);
        await expectCode(g.write(0, `${base}/shared`, text('x')), 'EACCES');
        await expectCode(g.read(0, `${base}/shared/absent`), 'ENOENT');
        await expectCode(other.read(0, `${base}/shared`), 'EACCES');
      });

      it("applies the first entry's flags to domains not listed", async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { conn: g } = await guest(dom0);
        await dom0.write(0, `${base}/public`, text('p'));
        await dom0.setPermissions(0, `${base}/public`, [reader(0)]);
        expect((await g.read(0, `${base}/public`)).toString()).toBe('p');
        await expectCode(g.write(0, `${base}/public`, text('x')), 'EACCES');
      });

      it("gives new nodes their parent's permissions, an unprivileged creator becoming owner", async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { domid, conn: g } = await guest(dom0);
        await dom0.mkdir(0, `${base}/inh`);
        await dom0.setPermissions(0, `${base}/inh`, [none(0), both(domid)]);
        await g.write(0, `${base}/inh/by-guest/leaf`, text('g'));
        // oxenstored copies the parent's list as it is: the creator does not become owner
        const owner = ocaml ? none(0) : none(domid);
        expect(await dom0.getPermissions(0, `${base}/inh/by-guest`)).toEqual([owner, both(domid)]);
        expect(await dom0.getPermissions(0, `${base}/inh/by-guest/leaf`)).toEqual([owner, both(domid)]);
        await dom0.write(0, `${base}/inh/by-dom0`, text('d'));
        expect(await dom0.getPermissions(0, `${base}/inh/by-dom0`)).toEqual([none(0), both(domid)]);
      });

      it('lets a domain own what it creates in its home, through relative paths', async () => {
        const dom0 = await open();
        const { domid, home, conn: g } = await guest(dom0);
        await g.write(0, 'conformance/data/x', text('mine'));
        expect((await dom0.read(0, `${home}/conformance/data/x`)).toString()).toBe('mine');
        expect(await g.getPermissions(0, 'conformance/data/x')).toEqual([none(domid)]);
        expect(await g.directory(0, 'conformance/data')).toEqual(['x']);
      });

      it('needs write permission on the nearest existing ancestor to create', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { domid, conn: g } = await guest(dom0);
        await dom0.mkdir(0, `${base}/open`);
        await dom0.setPermissions(0, `${base}/open`, [none(0), { domid, read: false, write: true }]);
        await g.write(0, `${base}/open/new/deep`, text('ok'));
        expect((await dom0.read(0, `${base}/open/new/deep`)).toString()).toBe('ok');
        await expectCode(g.write(0, `${base}/closed/new`, text('x')), 'EACCES');
        await expectCode(dom0.read(0, `${base}/closed`), 'ENOENT');
      });

      it('lets only the owner or dom0 change permissions, and not give a node away', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { domid, home, conn: g } = await guest(dom0);
        await dom0.mkdir(0, `${base}/w`);
        await dom0.setPermissions(0, `${base}/w`, [none(0), both(domid)]);
        await expectCode(g.setPermissions(0, `${base}/w`, [none(0), both(domid), reader(3)]), 'EACCES');
        await g.write(0, 'conformance/owned', text('o'));
        await g.setPermissions(0, 'conformance/owned', [none(domid), reader(0), reader(3)]);
        expect(await dom0.getPermissions(0, `${home}/conformance/owned`)).toEqual([none(domid), reader(0), reader(3)]);
        await expectCode(g.setPermissions(0, 'conformance/owned', [none(0)]), ocaml ? 'EACCES' : 'EPERM');
        await dom0.setPermissions(0, `${home}/conformance/owned`, [none(0)]);
        await expectCode(g.read(0, 'conformance/owned'), 'EACCES');
      });

      it('refuses an empty permission list', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await expectCode(dom0.setPermissions(0, base, []), 'EINVAL');
      });
    });

    describe('transactions', () => {
      it('hands out ids that are never 0 and end with the transaction', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const tx = await dom0.transactionStart();
        expect(tx).not.toBe(0);
        await dom0.transactionEnd(tx, false);
        await expectCode(dom0.read(tx, base), unknownTx);
        await expectCode(dom0.transactionEnd(tx, true), unknownTx);
      });

      it('refuses unknown transaction ids with ENOENT', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await expectCode(dom0.read(0x7ffffff0, base), unknownTx);
        await expectCode(dom0.write(0x7ffffff0, `${base}/x`, text('x')), unknownTx);
        await expectCode(dom0.transactionEnd(0x7ffffff0, true), unknownTx);
        await expectCode(dom0.read(0, `${base}/x`), 'ENOENT');
      });

      it('keeps changes invisible to others until commit, visible to itself', async () => {
        const a = await open();
        const b = await open();
        const base = await fresh(a);
        const tx = await a.transactionStart();
        await a.write(tx, `${base}/iso`, text('v'));
        expect((await a.read(tx, `${base}/iso`)).toString()).toBe('v');
        expect(await a.directory(tx, base)).toEqual(['iso']);
        await expectCode(b.read(0, `${base}/iso`), 'ENOENT');
        await expectCode(a.read(0, `${base}/iso`), 'ENOENT');
        expect(await b.directory(0, base)).toEqual([]);
        await a.transactionEnd(tx, true);
        expect((await b.read(0, `${base}/iso`)).toString()).toBe('v');
      });

      it('discards the changes of an aborted transaction', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/k`, text('before'));
        const tx = await dom0.transactionStart();
        await dom0.write(tx, `${base}/k`, text('after'));
        await dom0.write(tx, `${base}/new`, text('n'));
        await dom0.rm(tx, `${base}/k`);
        await dom0.transactionEnd(tx, false);
        expect((await dom0.read(0, `${base}/k`)).toString()).toBe('before');
        await expectCode(dom0.read(0, `${base}/new`), 'ENOENT');
      });

      it('fails the commit with EAGAIN when a node it read changed meanwhile', async () => {
        const a = await open();
        const b = await open();
        const base = await fresh(a);
        await a.write(0, `${base}/c`, text('1'));
        const tx = await a.transactionStart();
        expect((await a.read(tx, `${base}/c`)).toString()).toBe('1');
        await b.write(0, `${base}/c`, text('2'));
        await a.write(tx, `${base}/d`, text('from-tx'));
        await expectCode(a.transactionEnd(tx, true), 'EAGAIN');
        await expectCode(a.read(0, `${base}/d`), 'ENOENT');
        expect((await a.read(0, `${base}/c`)).toString()).toBe('2');
      });

      it('fails the commit when a node it read was removed, or a listing it read grew', async () => {
        const a = await open();
        const b = await open();
        const base = await fresh(a);
        await a.write(0, `${base}/r`, text('r'));
        await a.mkdir(0, `${base}/l`);
        const t1 = await a.transactionStart();
        await a.read(t1, `${base}/r`);
        await b.rm(0, `${base}/r`);
        await a.write(t1, `${base}/r2`, text('x'));
        await expectCode(a.transactionEnd(t1, true), 'EAGAIN');
        const t2 = await a.transactionStart();
        expect(await a.directory(t2, `${base}/l`)).toEqual([]);
        await b.write(0, `${base}/l/new`, text('n'));
        await a.write(t2, `${base}/l2`, text('x'));
        await expectCode(a.transactionEnd(t2, true), 'EAGAIN');
      });

      it('commits transactions that touch different nodes', async () => {
        const a = await open();
        const b = await open();
        const base = await fresh(a);
        await a.write(0, `${base}/p`, text('p0'));
        await a.write(0, `${base}/q`, text('q0'));
        const ta = await a.transactionStart();
        const tb = await b.transactionStart();
        await a.write(ta, `${base}/p`, text('p1'));
        await b.write(tb, `${base}/q`, text('q1'));
        await a.transactionEnd(ta, true);
        await b.transactionEnd(tb, true);
        expect((await a.read(0, `${base}/p`)).toString()).toBe('p1');
        expect((await a.read(0, `${base}/q`)).toString()).toBe('q1');
      });
    });

    describe('watches', () => {
      it('fire once at registration, with the watch path', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const events = record(dom0);
        await dom0.watch(`${base}/w`, 'first');
        await until(() => events.length === 1, 'the first event');
        expect(events).toEqual([[`${base}/w`, 'first']]);
      });

      it('fire for changes at or below the path, never above or beside it', async () => {
        const dom0 = await open();
        const writer = await open();
        const base = await fresh(dom0);
        const events = record(dom0);
        await dom0.watch(`${base}/w`, 'tok');
        await until(() => events.length === 1, 'the first event');
        await writer.write(0, `${base}/w/x/y`, text('1'));
        await writer.write(0, `${base}/w`, text('2'));
        await writer.write(0, `${base}/w2`, text('beside'));
        await writer.write(0, base, text('above'));
        await writer.mkdir(0, `${base}/w`);
        await writer.mkdir(0, `${base}/w/made`);
        await sync(dom0);
        expect(events.slice(1)).toEqual([
          [`${base}/w/x/y`, 'tok'],
          [`${base}/w`, 'tok'],
          [`${base}/w/made`, 'tok'],
        ]);
      });

      it('fire on removal for the removed node and for watches below it', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/r/a/b`, text('x'));
        const watcher = await open();
        const events = record(watcher);
        await watcher.watch(`${base}/r`, 'r');
        await watcher.watch(`${base}/r/a`, 'a');
        await watcher.watch(`${base}/r/a/b`, 'b');
        await watcher.watch(base, 'base');
        await until(() => events.length === 4, 'the first events');
        await dom0.rm(0, `${base}/r`);
        await sync(watcher);
        const after = events.slice(4);
        expect(after.filter(([, t]) => t === 'r')).toEqual([[`${base}/r`, 'r']]);
        expect(after.filter(([, t]) => t === 'a')).toEqual([[`${base}/r/a`, 'a']]);
        expect(after.filter(([, t]) => t === 'b')).toEqual([[`${base}/r/a/b`, 'b']]);
        expect(after.filter(([, t]) => t === 'base')).toEqual([[`${base}/r`, 'base']]);
      });

      it('fire when permissions change', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        await dom0.write(0, `${base}/sp`, text('x'));
        const events = record(dom0);
        await dom0.watch(`${base}/sp`, 'perm');
        await until(() => events.length === 1, 'the first event');
        await dom0.setPermissions(0, `${base}/sp`, [reader(0)]);
        await sync(dom0);
        expect(events.slice(1)).toEqual([[`${base}/sp`, 'perm']]);
      });

      it('refuse a duplicate watch and an unknown unwatch; stop after unwatch', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const events = record(dom0);
        await dom0.watch(`${base}/u`, 't1');
        await expectCode(dom0.watch(`${base}/u`, 't1'), 'EEXIST');
        await dom0.watch(`${base}/u`, 't2');
        await until(() => events.length === 2, 'the first events');
        await expectCode(dom0.unwatch(`${base}/u`, 'nope'), 'ENOENT');
        await dom0.unwatch(`${base}/u`, 't1');
        await dom0.write(0, `${base}/u`, text('x'));
        await sync(dom0);
        expect(events.slice(2)).toEqual([[`${base}/u`, 't2']]);
      });

      it('report relative paths for relative watches', async () => {
        const dom0 = await open();
        const name = `conformance-watch-${++serial}`;
        const events = record(dom0);
        await dom0.watch(name, 'rel');
        await until(() => events.length === 1, 'the first event');
        await dom0.write(0, `/local/domain/0/${name}/x`, text('1'));
        await sync(dom0);
        expect(events).toEqual([
          [name, 'rel'],
          [`${name}/x`, 'rel'],
        ]);
        await dom0.unwatch(`/local/domain/0/${name}`, 'rel');
        await dom0.rm(0, name);
      });

      it('fire for a transaction only when it commits', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const watcher = await open();
        const events = record(watcher);
        await watcher.watch(`${base}/tw`, 'tx');
        await until(() => events.length === 1, 'the first event');
        const aborted = await dom0.transactionStart();
        await dom0.write(aborted, `${base}/tw/a`, text('1'));
        await dom0.transactionEnd(aborted, false);
        const tx = await dom0.transactionStart();
        await dom0.write(tx, `${base}/tw/b`, text('2'));
        await sync(watcher);
        expect(events.length).toBe(1);
        await dom0.transactionEnd(tx, true);
        await sync(watcher);
        expect(events.slice(1)).toEqual([[`${base}/tw/b`, 'tx']]);
      });

      it.skipIf(!factory.unprivileged)('tell a domain only of changes it may read', async () => {
        const dom0 = await open();
        const base = await fresh(dom0);
        const { domid, conn: g } = await guest(dom0);
        await dom0.mkdir(0, `${base}/hidden`);
        await dom0.mkdir(0, `${base}/vis`);
        await dom0.setPermissions(0, `${base}/vis`, [none(0), reader(domid)]);
        const events = record(g);
        await g.watch(`${base}/hidden`, 'h');
        await g.watch(`${base}/vis`, 'v');
        await until(() => events.length === 2, 'the first events');
        await dom0.write(0, `${base}/hidden/x`, text('1'));
        await dom0.write(0, `${base}/vis/x`, text('2'));
        // a guest kernel hands events on from a thread of its own, maybe after later replies
        await until(() => events.length > 2, 'the event of vis/x');
        await sync(g);
        expect(events.slice(2)).toEqual([[`${base}/vis/x`, 'v']]);
        // A node the domain could read is removed: it hears of that, through the parent it can read.
        await dom0.rm(0, `${base}/vis/x`);
        await until(() => events.length > 3, 'the event of the removal');
        await sync(g);
        expect(events.slice(3)).toEqual([[`${base}/vis/x`, 'v']]);
      });
    });

    describe.skipIf(!factory.introduce || !factory.release)('special watches', () => {
      it('announce introduced and released domains to dom0', async () => {
        const dom0 = await open();
        const events = record(dom0);
        await dom0.watch('@introduceDomain', 'in');
        await dom0.watch('@releaseDomain', 'out');
        await until(() => events.length === 2, 'the first events');
        expect(events).toEqual([
          ['@introduceDomain', 'in'],
          ['@releaseDomain', 'out'],
        ]);
        const domid = await introduce();
        await sync(dom0);
        expect(events.slice(2)).toEqual([['@introduceDomain', 'in']]);
        await factory.release?.(domid);
        // a real hypervisor tells xenstored of a dead domain after the toolstack returns,
        // and C xenstored may announce it both then and when the toolstack releases it
        await until(() => events.length > 3, 'the @releaseDomain event', 60_000);
        await sync(dom0);
        expect(new Set(events.slice(3).map((e) => e.join(' ')))).toEqual(new Set(['@releaseDomain out']));
      });

      it.skipIf(!factory.unprivileged)('reach an unprivileged domain only when the special name grants it', async () => {
        // One domain's life shows both halves: @introduceDomain granted to the guest,
        // @releaseDomain not (a real introduction is a domain build: tens of seconds under
        // emulation, so the case makes do with one).
        const dom0 = await open();
        const { domid, conn: g } = await guest(dom0);
        const events = record(g);
        await g.watch('@introduceDomain', 'in');
        await g.watch('@releaseDomain', 'out');
        // the first firing of a new watch is the watch's own, permitted or not
        await until(() => events.length === 2, 'the first events');
        const seen = record(dom0);
        await dom0.watch('@releaseDomain', 'dom0-out');
        await until(() => seen.length === 1, "dom0's first event");
        if (factory.guestGrantsSpecialName !== false) await expectCode(g.setPermissions(0, '@introduceDomain', [none(0), reader(domid)]), 'EACCES');
        await dom0.setPermissions(0, '@introduceDomain', [none(0), reader(domid)]);
        let introduced: number | undefined;
        try {
          introduced = await introduce();
          await until(() => events.length > 2, 'the @introduceDomain event', 60_000);
          await factory.release?.(introduced);
          introduced = undefined;
          await until(() => seen.length > 1, "dom0's @releaseDomain event", 60_000);
          await sync(g);
          expect(events.slice(2)).toEqual([['@introduceDomain', 'in']]);
        } finally {
          await dom0.setPermissions(0, '@introduceDomain', [none(0)]);
          if (introduced !== undefined) await factory.release?.(introduced);
        }
      });
    });

    describe.skipIf(!factory.withQuota || !factory.unprivileged)('quotas', () => {
      // 2049 bytes a node: oxenstored's limit, on the value alone, is then 2048, the one Xen
      // ships, which a store that must restart to take quotas can keep (a lower one would
      // have it drop longer nodes).
      const quota: Partial<XenStoreQuota> = { nodes: 5, nodeSize: 2049, transactions: 2, watches: 2, permissions: 2 };
      // One limited store for both cases: oxenstored restarts for each change of quotas.
      let limitedStore: Promise<XenStoreSuiteFactory> | undefined;
      afterAll(async () => {
        const f = await limitedStore?.catch(() => undefined);
        await f?.cleanup();
      });
      const limited = async () => {
        limitedStore ??= factory.withQuota?.(quota) as Promise<XenStoreSuiteFactory>;
        const f = await limitedStore;
        const dom0 = await open(0, f);
        const g = await guest(dom0, f);
        await g.conn.mkdir(0, 'conformance');
        return { f, dom0, ...g };
      };

      /** What `kind` answers past its quota on this store; `null` when it has no such quota. */
      const quotaError = (kind: QuotaKind): string | null => {
        const code = factory.quotaErrors?.[kind];
        return code === undefined ? C_QUOTA_ERRORS[kind] : code;
      };
      /** Expects `p` to fail with `kind`'s code, or to succeed where the store has no such quota. */
      const pastQuota = async (kind: QuotaKind, p: Promise<unknown>): Promise<void> => {
        const code = quotaError(kind);
        if (code === null) await p;
        else await expectCode(p, code);
      };

      it('refuses nodes past the nodes quota', async () => {
        const { conn: g } = await limited();
        let created = 0;
        let failure: unknown;
        for (let i = 0; i < 10 && failure === undefined; i++) {
          await g.write(0, `conformance/n${i}`, text('x')).then(() => created++, (err: unknown) => (failure = err));
        }
        // The home and conformance/ count as two of the domain's nodes.
        expect(created).toBe(3);
        expect(failure).toMatchObject({ code: quotaError('nodes') });
        await g.write(0, 'conformance/n0', text('rewrite is fine'));
      });

      it('limits node size, transactions, watches and permission entries', async () => {
        const { domid, conn: g } = await limited();
        await g.write(0, 'conformance/small', Buffer.alloc(1024));
        await pastQuota('nodeSize', g.write(0, 'conformance/large', Buffer.alloc(2049)));
        // As C xenstored, the check is "more than the quota already", so one more fits.
        const txs = [await g.transactionStart(), await g.transactionStart(), await g.transactionStart()];
        await pastQuota('transactions', g.transactionStart().then((t) => void txs.push(t)));
        await Promise.all(txs.map((t) => g.transactionEnd(t, false)));
        for (const t of ['w1', 'w2', 'w3']) await g.watch('conformance/small', t);
        await pastQuota('watches', g.watch('conformance/small', 'w4'));
        await g.setPermissions(0, 'conformance/small', [none(domid), reader(0)]);
        await pastQuota('permissions', g.setPermissions(0, 'conformance/small', [none(domid), reader(0), reader(3)]));
      });
    });

    describe('model', () => {
      type Op = { kind: 'write'; path: string; value: string } | { kind: 'mkdir' | 'rm'; path: string };
      const segment = fc.constantFrom('a', 'b', 'c');
      const relPath = fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
      const op: fc.Arbitrary<Op> = fc.oneof(
        fc.record({ kind: fc.constant('write' as const), path: relPath, value: fc.string({ maxLength: 8 }) }),
        fc.record({ kind: fc.constantFrom('mkdir' as const, 'rm' as const), path: relPath }),
      );
      const universe = ['a', 'b', 'c'].flatMap((x) => [x, ...['a', 'b', 'c'].flatMap((y) => [`${x}/${y}`, ...['a', 'b', 'c'].map((z) => `${x}/${y}/${z}`)])]);

      /** The reference: rel path → value and children in creation order; '' is the base. */
      class Model {
        readonly nodes = new Map<string, { value: string; children: string[] }>([['', { value: '', children: [] }]]);
        private parent(p: string): string {
          return p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
        }
        private create(p: string, value: string): void {
          const parent = this.parent(p);
          if (!this.nodes.has(parent)) this.create(parent, '');
          this.nodes.get(parent)?.children.push(p.slice(p.lastIndexOf('/') + 1));
          this.nodes.set(p, { value, children: [] });
        }
        write(p: string, value: string): void {
          const n = this.nodes.get(p);
          if (n) n.value = value;
          else this.create(p, value);
        }
        mkdir(p: string): void {
          if (!this.nodes.has(p)) this.create(p, '');
        }
        /** False when xenstored answers ENOENT. */
        rm(p: string): boolean {
          if (!this.nodes.has(p)) return this.nodes.has(this.parent(p));
          for (const k of [...this.nodes.keys()]) if (k === p || k.startsWith(`${p}/`)) this.nodes.delete(k);
          const siblings = this.nodes.get(this.parent(p))?.children ?? [];
          siblings.splice(siblings.indexOf(p.slice(p.lastIndexOf('/') + 1)), 1);
          return true;
        }
      }

      it('agrees with a simple model under random writes, mkdirs and removals', async () => {
        const dom0 = await open();
        await fc.assert(
          fc.asyncProperty(fc.array(op, { maxLength: 25 }), async (ops) => {
            const base = await fresh(dom0);
            const model = new Model();
            for (const o of ops) {
              const p = `${base}/${o.path}`;
              if (o.kind === 'write') {
                await dom0.write(0, p, text(o.value));
                model.write(o.path, o.value);
              } else if (o.kind === 'mkdir') {
                await dom0.mkdir(0, p);
                model.mkdir(o.path);
              } else if (model.rm(o.path)) {
                await dom0.rm(0, p);
              } else {
                await expectCode(dom0.rm(0, p), 'ENOENT');
              }
            }
            expect(await dom0.directory(0, base)).toEqual(listed(model.nodes.get('')?.children ?? []));
            for (const rel of universe) {
              const node = model.nodes.get(rel);
              const p = `${base}/${rel}`;
              if (node === undefined) {
                await expectCode(dom0.read(0, p), 'ENOENT');
              } else {
                expect((await dom0.read(0, p)).toString()).toBe(node.value);
                expect(await dom0.directory(0, p)).toEqual(listed(node.children));
              }
            }
          }),
          { numRuns: factory.modelRuns ?? 25 },
        );
      });
    });
  });
}
