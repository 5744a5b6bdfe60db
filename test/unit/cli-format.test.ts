import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapeValue, formatPermissions, formatTree, unescapeValue } from '../../lib/cli/format.js';
import { MockHost } from '../../lib/index.js';

describe('escapeValue / unescapeValue (libxenstore sanitise_value rules)', () => {
  it('escapes like xenstore-read', () => {
    expect(escapeValue(Buffer.from('plain text ~!'))).toBe('plain text ~!');
    expect(escapeValue(Buffer.from('a\tb\nc\rd\\e'))).toBe('a\\tb\\nc\\rd\\\\e');
    expect(escapeValue(new Uint8Array([0, 1, 7, 8, 0x1f, 0x7f, 0xff]))).toBe('\\000\\001\\007\\x08\\x1f\\x7f\\xff');
    expect(escapeValue(Buffer.from('é'))).toBe('\\xc3\\xa9');
  });

  it('unescapes like xenstore-write', () => {
    expect(unescapeValue('A\\x42\\tC\\\\')).toEqual(Buffer.from('AB\tC\\'));
    expect(unescapeValue('\\101\\1x')).toEqual(Buffer.from([0x41, 0x01, 0x78]));
    expect(unescapeValue('\\x4g')).toEqual(Buffer.from([0x04, 0x67]));
    expect(unescapeValue('\\xzz')).toEqual(Buffer.from('xzz'));
    expect(unescapeValue('\\q')).toEqual(Buffer.from('q'));
    // A trailing backslash is a NUL byte in the C tool.
    expect(unescapeValue('ab\\')).toEqual(Buffer.from([0x61, 0x62, 0]));
    expect(unescapeValue('né')).toEqual(Buffer.from('né'));
  });

  it('round-trips any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        expect(unescapeValue(escapeValue(bytes))).toEqual(Buffer.from(bytes));
      }),
    );
  });

  it('formats permission lists as xenstore-ls -p does', () => {
    expect(
      formatPermissions([
        { domid: 0, read: false, write: false },
        { domid: 5, read: true, write: false },
        { domid: 6, read: false, write: true },
        { domid: 7, read: true, write: true },
      ]),
    ).toBe('(n0,r5,w6,b7)');
  });
});

describe('formatTree', () => {
  it('prints the subtree like xenstore-ls, in its three layouts', async () => {
    await using host = await MockHost.create();
    const xs = await host.openXenStore();
    await xs.write('/t/a', 'hello');
    await xs.write('/t/b/c', 'deep');
    const collect = async (opts: Parameters<typeof formatTree>[2]) => {
      const out: string[] = [];
      for await (const line of formatTree(xs, '/t', opts)) out.push(line);
      return out;
    };
    const indented = await collect({});
    expect(indented).toContain('a = "hello"');
    expect(indented.indexOf(' c = "deep"')).toBe(indented.indexOf('b = ""') + 1);
    expect(await collect({ fullPaths: true })).toEqual(expect.arrayContaining(['/t/a = "hello"', '/t/b = ""', '/t/b/c = "deep"']));
    const withPerms = await collect({ permissions: true });
    const a = withPerms.find((l) => l.startsWith('a = '));
    expect(a).toMatch(/^a = "hello" {2}\. \. .*\. {2}\(n0\)$/);
    // The permission column starts at the same place on every line.
    expect(new Set(withPerms.map((l) => l.indexOf('(')))).toEqual(new Set([62]));
    expect(await collect({ fullPaths: true, permissions: true })).toContain('/t/b/c = "deep"   (n0)');
  });

  it('shows a node the caller may not read with a colon', async () => {
    await using host = await MockHost.create();
    const dom0 = await host.openXenStore();
    await dom0.write('/t/open', 'v');
    await dom0.write('/t/closed', 'secret');
    await dom0.setPermissions('/t', [{ domid: 0, read: true, write: false }]);
    await dom0.setPermissions('/t/open', [{ domid: 0, read: true, write: false }]);
    const guest = await host.openXenStore({ domid: 3 });
    const out: string[] = [];
    for await (const line of formatTree(guest, '/t', { fullPaths: true })) out.push(line);
    expect(out.sort()).toEqual(['/t/closed:', '/t/open = "v"']);
  });
});
