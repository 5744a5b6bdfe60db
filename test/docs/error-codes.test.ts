/**
 * docs/errors.md has one heading per error code: every code the library can raise (the
 * errno names the protocol carries, and every literal code in lib/ and native/) must have
 * its `## CODE` section.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { XS_ERRORS } from '../../lib/xenstore/wire.js';

const root = join(import.meta.dirname, '..', '..');

function files(dir: string, ext: RegExp): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name), ext) : ext.test(e.name) ? [join(dir, e.name)] : [],
  );
}

function raisedCodes(): Set<string> {
  // oxenstored's EQUOTA is not in xsd_errors; the client passes it on as it comes
  const codes = new Set<string>([...XS_ERRORS, 'EQUOTA']);
  const patterns = [/new XenError\(\s*'([A-Z][A-Z0-9_]+)'/g, /fromErrno\(\s*'([A-Z][A-Z0-9_]+)'/g, /code: '([A-Z][A-Z0-9_]+)'/g, /"((?:XEN|VHD)_[A-Z0-9_]+)"/g, /vhdError\(\s*'([A-Z][A-Z0-9_]+)'/g];
  for (const file of [...files(join(root, 'lib'), /\.ts$/), ...files(join(root, 'native'), /\.(cc|h)$/)]) {
    const text = readFileSync(file, 'utf8');
    for (const re of patterns) for (const m of text.matchAll(re)) codes.add(m[1] as string);
  }
  return codes;
}

describe('docs/errors.md', () => {
  const headings = new Set([...readFileSync(join(root, 'docs', 'errors.md'), 'utf8').matchAll(/^## (\S+)/gm)].map((m) => m[1]));
  const codes = [...raisedCodes()].sort();

  it('finds the codes the library raises', () => {
    expect(codes).toEqual(expect.arrayContaining(['ENOENT', 'EAGAIN', 'XEN_CLOSED', 'XEN_PROTOCOL', 'XEN_UNAVAILABLE']));
  });

  it.each(codes)('has a heading for %s', (code) => {
    expect(headings.has(code)).toBe(true);
  });
});
