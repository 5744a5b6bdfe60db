/**
 * Interop: Debian's xenstore-utils (the Xen project's own libxenstore clients) against the
 * mock xenstored, through XENSTORED_PATH. Each assertion is what a real C xenstored gives
 * (docs/misc/xenstore.txt, tools/xenstore/xenstore_client.c): if the tools and xenode ever
 * disagree, xenode is wrong.
 *
 * The tools connect as dom0 (a socket connection is privileged); unprivileged behaviour is
 * checked by setting permissions with the tools and acting as another domain through
 * `host.openXenStore({ domid })`.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockHost, XenError, XenStore } from '../../lib/index.js';
import { LineProcess, cliPath, run, type RunResult } from '../helpers/run.js';
import { onPath, requireTool } from '../helpers/tools.js';

const TOOLS = ['read', 'write', 'ls', 'list', 'rm', 'exists', 'chmod', 'watch'].map((t) => `xenstore-${t}`);
const hasTools = requireTool('xenstore-utils', () => TOOLS.every(onPath), { aptPackage: 'xenstore-utils' });

/** The error code a promise rejects with, or 'ok'. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof XenError) return err.code;
    throw err;
  }
}

describe.skipIf(!hasTools)('xenstore-utils against the mock xenstored', () => {
  let dir: string;
  let socket: string;
  let host: MockHost;
  /** xenode's TypeScript client over the same socket the tools use. */
  let client: XenStore;
  /** An in-process dom0 connection. */
  let dom0: XenStore;

  /** Runs `xenstore-<tool> args…` against the mock host. */
  const xs = (tool: string, ...args: string[]): Promise<RunResult> => run(`xenstore-${tool}`, args, { env: { XENSTORED_PATH: socket } });
  /** Like {@link xs}, but the command must succeed; returns its stdout. */
  const ok = async (tool: string, ...args: string[]): Promise<string> => {
    const r = await xs(tool, ...args);
    expect(r.code, `xenstore-${tool} ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const lines = (text: string) => text.split('\n').filter((l) => l !== '');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-interop-'));
    socket = join(dir, 'xs.sock');
    host = await MockHost.create({ xenstoreSocket: socket });
    client = await XenStore.connect(socket);
    dom0 = await host.openXenStore();
  });

  afterAll(async () => {
    await client?.close();
    await dom0?.close();
    await host?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('writes and reads values, creating missing parents empty', async () => {
    await ok('write', '/t/rw/a', 'hello', '/t/rw/b/c', 'deep');
    expect(await ok('read', '/t/rw/a')).toBe('hello\n');
    expect(await ok('read', '/t/rw/b')).toBe('\n');
    expect(await ok('read', '/t/rw/b/c')).toBe('deep\n');
    // Several paths are read in one transaction; -p prefixes each value with its path.
    expect(await ok('read', '-p', '/t/rw/a', '/t/rw/b/c')).toBe('/t/rw/a: hello\n/t/rw/b/c: deep\n');
    await ok('write', '/t/rw/a', 'replaced');
    expect(await ok('read', '/t/rw/a')).toBe('replaced\n');
  });

  it('reports a missing node as an error, and exists as an exit code', async () => {
    await ok('write', '/t/ex/here', '1');
    const missing = await xs('read', '/t/ex/nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("couldn't read path /t/ex/nope");
    expect((await xs('exists', '/t/ex/here')).code).toBe(0);
    expect((await xs('exists', '/t/ex')).code).toBe(0);
    expect((await xs('exists', '/t/ex/nope')).code).toBe(1);
    expect((await xs('list', '/t/ex/nope')).code).toBe(1);
  });

  it('lists children, with -p giving full paths', async () => {
    await ok('write', '/t/ls/a', '1', '/t/ls/b', '2', '/t/ls/c/d', '3');
    expect(lines(await ok('list', '/t/ls')).sort()).toEqual(['a', 'b', 'c']);
    expect(lines(await ok('list', '-p', '/t/ls')).sort()).toEqual(['/t/ls/a', '/t/ls/b', '/t/ls/c']);
    expect(await ok('list', '/t/ls/a')).toBe('');
    expect((await client.list('/t/ls')).sort()).toEqual(['a', 'b', 'c']);
  });

  it('shows the tree with xenstore-ls, indented, with -f full paths and -p permissions', async () => {
    await ok('write', '/t/tree/a', 'hello', '/t/tree/b/c', 'deep');
    const tree = lines(await ok('ls', '/t/tree'));
    expect(tree).toContain('a = "hello"');
    expect(tree).toContain('b = ""');
    expect(tree).toContain(' c = "deep"');
    expect(tree.indexOf(' c = "deep"')).toBe(tree.indexOf('b = ""') + 1);
    const flat = lines(await ok('ls', '-f', '/t/tree'));
    expect(flat).toContain('/t/tree/a = "hello"');
    expect(flat).toContain('/t/tree/b/c = "deep"');
    const perms = lines(await ok('ls', '-p', '/t/tree'));
    expect(perms.find((l) => l.startsWith('a = "hello"'))).toMatch(/\(n0\)$/);
    // The whole store, from the root: the default path.
    expect(lines(await ok('ls', '-f'))).toContain('/t/tree/b/c = "deep"');
  });

  it('changes permissions with xenstore-chmod, as xenstore-ls -p and getPermissions report', async () => {
    await ok('write', '/t/perm/a', 'x', '/t/perm/d/e', 'y', '/t/perm/d/f', 'z');
    await ok('chmod', '/t/perm/a', 'n0', 'r5');
    expect(lines(await ok('ls', '-p', '/t/perm')).find((l) => l.startsWith('a = '))).toMatch(/^a = "x".*\(n0,r5\)$/);
    expect(await client.getPermissions('/t/perm/a')).toEqual([
      { domid: 0, read: false, write: false },
      { domid: 5, read: true, write: false },
    ]);
    // -r applies the same list to every node below.
    await ok('chmod', '-r', '/t/perm/d', 'b0', 'w7');
    for (const p of ['/t/perm/d', '/t/perm/d/e', '/t/perm/d/f']) {
      expect(await client.getPermissions(p)).toEqual([
        { domid: 0, read: true, write: true },
        { domid: 7, read: false, write: true },
      ]);
    }
    // And the other way round: set by xenode, shown by the tools.
    await client.setPermissions('/t/perm/d/e', [{ domid: 3, read: false, write: false }, { domid: 4, read: true, write: true }]);
    expect(lines(await ok('ls', '-f', '-p', '/t/perm/d'))).toContain('/t/perm/d/e = "y"   (n3,b4)');
  });

  it('removes whole subtrees; a missing node is fine, a missing parent is not', async () => {
    await ok('write', '/t/rm/a', '1', '/t/rm/b/c/d', '2');
    await ok('rm', '/t/rm/b');
    expect((await xs('exists', '/t/rm/b/c/d')).code).toBe(1);
    expect((await xs('exists', '/t/rm/b')).code).toBe(1);
    expect(await client.exists('/t/rm/a')).toBe(true);
    expect((await xs('rm', '/t/rm/nope')).code).toBe(0);
    const orphan = await xs('rm', '/t/rm/nope/deeper');
    expect(orphan.code).toBe(1);
    expect(orphan.stderr).toContain('could not remove path /t/rm/nope/deeper');
    // -t also removes parents left empty and valueless.
    await ok('write', '/t/rm/tidy/x/y', 'v');
    await ok('rm', '-t', '/t/rm/tidy/x/y');
    expect(await client.exists('/t/rm/tidy')).toBe(false);
    expect(await client.exists('/t/rm/a')).toBe(true);
  });

  it('rejects bad paths, as xenode does with EINVAL', async () => {
    for (const bad of ['/t/bad path', '/t//double', '/t/trailing/', '/t/bad$char']) {
      const r = await xs('write', bad, 'x');
      expect(r.code, bad).toBe(1);
      expect(r.stderr).toContain('could not write path');
      expect(await codeOf(client.write(bad, 'x')), bad).toBe('EINVAL');
    }
    expect((await xs('exists', '/t/bad path')).code).toBe(1);
    expect(await ok('ls', '/t')).not.toContain('bad');
  });

  it('keeps values byte for byte, escaping them the way the tools do', async () => {
    await ok('write', '/t/val/spaces', 'a b=c "quoted"');
    expect(await ok('read', '/t/val/spaces')).toBe('a b=c "quoted"\n');
    // xenstore-write unescapes \x.. and \t; xenode sees the bytes.
    await ok('write', '/t/val/esc', 'A\\x42\\tC\\\\');
    expect(await client.readBytes('/t/val/esc')).toEqual(Buffer.from('AB\tC\\'));
    // Bytes written by xenode come back escaped by xenstore-read.
    await client.write('/t/val/bin', new Uint8Array([0x01, 0x41, 0x0a, 0xff, 0x5c]));
    expect(await ok('read', '/t/val/bin')).toBe('\\001A\\n\\xff\\\\\n');
    await client.write('/t/val/empty', '');
    expect(await ok('read', '/t/val/empty')).toBe('\n');
  });

  it('shares one store between the tools and both xenode clients', async () => {
    await ok('write', '/t/share/by-tool', 'from C');
    expect(await client.read('/t/share/by-tool')).toBe('from C');
    expect(await dom0.read('/t/share/by-tool')).toBe('from C');
    await dom0.write('/t/share/by-xenode', 'from TS');
    expect(await ok('read', '/t/share/by-xenode')).toBe('from TS\n');
    await client.mkdir('/t/share/dir');
    expect(lines(await ok('list', '/t/share')).sort()).toEqual(['by-tool', 'by-xenode', 'dir']);
  });

  it('lists a directory too big for one reply (libxenstore falls back to DIRECTORY_PART)', async () => {
    const names = Array.from({ length: 300 }, (_, i) => `child-with-a-long-name-${String(i).padStart(4, '0')}`);
    await client.transaction(async (tx) => {
      for (const n of names) await tx.write(`/t/big/${n}`, '');
    });
    const listed = lines(await ok('list', '/t/big'));
    expect(listed.length).toBe(300);
    expect(listed.sort()).toEqual(names);
  });

  it('isolates a xenode transaction from the tools until it commits', async () => {
    await ok('write', '/t/tx/a', 'old');
    let attempts = 0;
    await client.transaction(async (tx) => {
      attempts++;
      await tx.write('/t/tx/a', 'new');
      await tx.write('/t/tx/b', 'created');
      // The tools, outside the transaction, still see the old state.
      expect(await ok('read', '/t/tx/a')).toBe('old\n');
      expect((await xs('exists', '/t/tx/b')).code).toBe(1);
    });
    expect(attempts).toBe(1);
    expect(await ok('read', '/t/tx/a', '/t/tx/b')).toBe('new\ncreated\n');
  });

  it('makes a xenode transaction retry when a tool changes what it read', async () => {
    await ok('write', '/t/conflict/n', '1');
    let attempts = 0;
    const result = await client.transaction(async (tx) => {
      attempts++;
      const n = Number(await tx.read('/t/conflict/n'));
      if (attempts === 1) await ok('write', '/t/conflict/n', '10');
      await tx.write('/t/conflict/n', String(n + 1));
      return n + 1;
    });
    expect(attempts).toBe(2);
    expect(result).toBe(11);
    expect(await ok('read', '/t/conflict/n')).toBe('11\n');
  });

  describe('xenstore-watch', () => {
    const watch = (...args: string[]) => new LineProcess('xenstore-watch', args, { env: { XENSTORED_PATH: socket }, timeout: 10_000 });

    it('sends the first event at once, then one for a change below', async () => {
      const w = watch('-n', '2', '/t/w');
      expect(await w.nextLine()).toBe('/t/w');
      await client.write('/t/w/x', '1');
      expect(await w.nextLine()).toBe('/t/w/x');
      expect((await w.exited).code).toBe(0);
    });

    it('reports a node and its whole subtree being removed', async () => {
      await ok('write', '/t/wrm/a/b', '1');
      const w = watch('-n', '2', '/t/wrm/a/b');
      expect(await w.nextLine()).toBe('/t/wrm/a/b');
      // Removing a parent of the watched path fires with the watched path itself.
      await ok('rm', '/t/wrm/a');
      expect(await w.nextLine()).toBe('/t/wrm/a/b');
      expect((await w.exited).code).toBe(0);
    });

    it('fires for a permission change', async () => {
      await ok('write', '/t/wperm', '1');
      const w = watch('-n', '2', '/t/wperm');
      expect(await w.nextLine()).toBe('/t/wperm');
      await ok('chmod', '/t/wperm', 'n0', 'r1');
      expect(await w.nextLine()).toBe('/t/wperm');
      expect((await w.exited).code).toBe(0);
    });

    it('sees a transactional write only when it commits', async () => {
      const w = watch('-n', '2', '/t/wtx');
      expect(await w.nextLine()).toBe('/t/wtx');
      await client.transaction(async (tx) => {
        await tx.write('/t/wtx/inside', '1');
        await new Promise((r) => setTimeout(r, 200));
        expect(w.hasLine).toBe(false);
      });
      expect(await w.nextLine()).toBe('/t/wtx/inside');
      expect((await w.exited).code).toBe(0);
    });

    it('reports @introduceDomain and @releaseDomain', async () => {
      const intro = watch('-n', '2', '@introduceDomain');
      const release = watch('-n', '2', '@releaseDomain');
      expect(await intro.nextLine()).toBe('@introduceDomain');
      expect(await release.nextLine()).toBe('@releaseDomain');
      host.introduceDomain(9);
      expect(await intro.nextLine()).toBe('@introduceDomain');
      host.releaseDomain(9);
      expect(await release.nextLine()).toBe('@releaseDomain');
      expect((await intro.exited).code).toBe(0);
      expect((await release.exited).code).toBe(0);
    });

    it('delivers xenode watch events for writes made by the tools', async () => {
      const events = client.watch('/t/wts', { signal: AbortSignal.timeout(5_000) });
      expect((await events.next()).value).toEqual({ path: '/t/wts' });
      await ok('write', '/t/wts/k', 'v');
      expect((await events.next()).value).toEqual({ path: '/t/wts/k' });
      await events.return?.();
    });
  });

  describe('permissions set by the tools, as an unprivileged domain sees them', () => {
    const DOMID = 5;
    let guest: XenStore;
    let stranger: XenStore;

    beforeAll(async () => {
      guest = await host.openXenStore({ domid: DOMID });
      stranger = await host.openXenStore({ domid: 7 });
    });
    afterAll(async () => {
      await guest?.close();
      await stranger?.close();
    });

    it('denies a node owned by dom0 with no access for others', async () => {
      await ok('write', '/t/acl/secret', 's');
      expect(await ok('ls', '-f', '-p', '/t/acl')).toContain('(n0)');
      expect(await codeOf(guest.read('/t/acl/secret'))).toBe('EACCES');
      expect(await codeOf(guest.write('/t/acl/secret', 'x'))).toBe('EACCES');
      expect(await codeOf(guest.write('/t/acl/new', 'x'))).toBe('EACCES');
    });

    it('grants read to the listed domain only (first matching entry wins)', async () => {
      await ok('write', '/t/acl/ro', 'visible');
      await ok('chmod', '/t/acl/ro', 'n0', `r${DOMID}`);
      expect(await guest.read('/t/acl/ro')).toBe('visible');
      expect(await codeOf(guest.write('/t/acl/ro', 'x'))).toBe('EACCES');
      expect(await codeOf(stranger.read('/t/acl/ro'))).toBe('EACCES');
      // The owner entry's flags are the default for domains not listed later.
      await ok('chmod', '/t/acl/ro', 'r0', `n${DOMID}`);
      expect(await stranger.read('/t/acl/ro')).toBe('visible');
      expect(await codeOf(guest.read('/t/acl/ro'))).toBe('EACCES');
    });

    it('grants write without read with w<domid>', async () => {
      await ok('write', '/t/acl/wo', 'v');
      await ok('chmod', '/t/acl/wo', 'n0', `w${DOMID}`);
      await guest.write('/t/acl/wo', 'from guest');
      expect(await codeOf(guest.read('/t/acl/wo'))).toBe('EACCES');
      expect(await ok('read', '/t/acl/wo')).toBe('from guest\n');
    });

    it('lets a domain own its home, where its relative paths land', async () => {
      const home = `/local/domain/${DOMID}`;
      await ok('write', home, '');
      await ok('chmod', home, `n${DOMID}`);
      await guest.write('data/ip', '10.0.0.5');
      expect(await ok('read', `${home}/data/ip`)).toBe('10.0.0.5\n');
      // Nodes a domain creates are its own, and inherit the parent's list.
      expect(await ok('ls', '-f', '-p', home)).toContain(`${home}/data/ip = "10.0.0.5"   (n${DOMID})`);
      expect(await codeOf(stranger.read(`${home}/data/ip`))).toBe('EACCES');
      // The owner may change the permissions of its nodes; dom0 sees the result.
      await guest.setPermissions('data/ip', [{ domid: DOMID, read: false, write: false }, { domid: 7, read: true, write: false }]);
      expect(await ok('ls', '-f', '-p', `${home}/data`)).toContain('(n5,r7)');
      expect(await stranger.read(`${home}/data/ip`)).toBe('10.0.0.5');
      // Only a privileged domain may hand a node to another owner.
      expect(await codeOf(guest.setPermissions('data/ip', [{ domid: 7, read: false, write: false }]))).toBe('EPERM');
      await ok('chmod', `${home}/data/ip`, 'n7');
      expect(await client.getPermissions(`${home}/data/ip`)).toEqual([{ domid: 7, read: false, write: false }]);
    });

    it('opens a special watch to a domain with xenstore-chmod', async () => {
      const events = guest.watch('@introduceDomain', { signal: AbortSignal.timeout(5_000) });
      expect((await events.next()).value).toEqual({ path: '@introduceDomain' });
      let settled = false;
      const pending = events.next().finally(() => (settled = true));
      // Special events reach only privileged domains and those the name's permissions allow.
      host.introduceDomain(21);
      await new Promise((r) => setTimeout(r, 100));
      expect(settled).toBe(false);
      await ok('chmod', '@introduceDomain', 'n0', `r${DOMID}`);
      host.introduceDomain(22);
      expect((await pending).value).toEqual({ path: '@introduceDomain' });
      await events.return?.();
    });

    it('refuses a permission change by a domain that does not own the node', async () => {
      await ok('write', '/t/acl/owned-by-0', 'v');
      await ok('chmod', '/t/acl/owned-by-0', 'n0', `b${DOMID}`);
      expect(await guest.read('/t/acl/owned-by-0')).toBe('v');
      expect(await codeOf(guest.setPermissions('/t/acl/owned-by-0', [{ domid: DOMID, read: true, write: true }]))).toBe('EACCES');
      expect(await ok('ls', '-f', '-p', '/t/acl')).toContain('/t/acl/owned-by-0 = "v"   (n0,b5)');
    });
  });
});

describe.skipIf(!hasTools)('xenstore-utils against `xenode mock-host`', () => {
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run npm run build (npm test does it in pretest)`);
    dir = await mkdtemp(join(tmpdir(), 'xenode-mock-host-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves the tools until SIGTERM, then removes its socket and exits 0', async () => {
    const socket = join(dir, 'xs.sock');
    const proc = new LineProcess(process.execPath, [cliPath, 'mock-host', '--xenstore-socket', socket]);
    try {
      expect(await proc.nextLine()).toBe(`xenode mock-host: XenStore on ${socket} (XENSTORED_PATH=${socket} xenstore-ls /)`);
      const env = { XENSTORED_PATH: socket };
      expect((await run('xenstore-write', ['/bars/a', 'hello', '/bars/b/c', 'deep'], { env })).code).toBe(0);
      expect((await run('xenstore-read', ['/bars/a'], { env })).stdout).toBe('hello\n');
      expect((await run('xenstore-ls', ['-f', '/bars'], { env })).stdout).toContain('/bars/b/c = "deep"');
      // A watch is still open when the host stops: the host must not wait for it.
      const w = new LineProcess('xenstore-watch', ['/bars'], { env });
      expect(await w.nextLine()).toBe('/bars');
      expect(await proc.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      await w.stop('SIGKILL');
      expect(existsSync(socket)).toBe(false);
    } finally {
      await proc.stop('SIGKILL');
    }
  });

  it('stops as cleanly on SIGINT', async () => {
    const socket = join(dir, 'int.sock');
    const proc = new LineProcess(process.execPath, [cliPath, 'mock-host', '--xenstore-socket', socket]);
    try {
      await proc.nextLine();
      expect((await run('xenstore-exists', ['/'], { env: { XENSTORED_PATH: socket } })).code).toBe(0);
      expect(await proc.stop('SIGINT')).toEqual({ code: 0, signal: null });
      expect(existsSync(socket)).toBe(false);
    } finally {
      await proc.stop('SIGKILL');
    }
  });
});
