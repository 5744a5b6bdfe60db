/**
 * A source rule of the addon: every Xen library function it calls has its C prototype, as
 * the installed header declares it, in a comment above the first call, so a reader of the
 * wrapper sees the contract it relies on without opening the header. Functions called
 * through a token-pasting macro (libxl_device_##kind##_add …) are covered by one generic
 * prototype with `<kind>` or `<T>` in place of the varying part.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const dir = join(import.meta.dirname, '..', '..', 'native');
const sources = readdirSync(dir)
  .filter((f) => /\.(cc|h)$/.test(f))
  .map((f) => ({ name: f, lines: readFileSync(join(dir, f), 'utf8').split('\n') }));

const isComment = (line: string): boolean => /^\s*\/\//.test(line);

/** Every symbol listed in an X-macro table (`X(name)`) of the addon's dlopen tables. */
function tableSymbols(): string[] {
  const symbols = new Set<string>();
  for (const { lines } of sources) {
    for (const line of lines) for (const m of line.matchAll(/\bX\((\w+)\)/g)) if (m[1] !== 'name') symbols.add(m[1]!);
  }
  return [...symbols].sort();
}

/** The generic spellings a prototype comment may use for `symbol`. */
function spellings(symbol: string): RegExp[] {
  const out = [new RegExp(`\\b${symbol}\\s*\\(`)];
  const device = /^libxl_device_(disk|nic|pci)_(\w+)$/.exec(symbol);
  if (device) out.push(new RegExp(`\\blibxl_device_<kind>_${device[2]}\\s*\\(`));
  const typed = /^libxl_(domain_config|device_disk|device_nic|device_pci|domain_restore_params|domain_remus_info)_(init|dispose|from_json|to_json)$/.exec(symbol);
  if (typed) out.push(new RegExp(`\\blibxl_<T>_${typed[2]}\\s*\\(`));
  return out;
}

/**
 * Loaded without being called: xtl_level_to_string is how xenlibs.cc proves that
 * libxentoollog.so.1 is present, so that its absence is named before libxenlight's.
 */
const loadedOnly = new Set(['xtl_level_to_string']);

describe('native sources', () => {
  const symbols = tableSymbols().filter((s) => !loadedOnly.has(s));

  it('load the Xen functions they call from X-macro tables', () => {
    expect(symbols.length).toBeGreaterThan(100);
    expect(symbols).toContain('xs_read');
    expect(symbols).toContain('libxl_domain_create_restore');
  });

  it.each(symbols)('%s has its prototype in a comment above its first call', (symbol) => {
    const found: string[] = [];
    let called = false;
    for (const { name, lines } of sources) {
      if (name === 'xenlibs.cc' || name === 'xenlibs.h') continue;
      const first = lines.findIndex((l) => !isComment(l) && new RegExp(`(->|\\.)${symbol}\\s*\\(`).test(l));
      if (first < 0) continue;
      called = true;
      const above = lines.slice(0, first).filter(isComment);
      if (!above.some((l) => spellings(symbol).some((re) => re.test(l)))) found.push(`${name}:${first + 1}`);
    }
    if (!called) {
      // called through a token-pasting macro: a generic prototype must be in some source
      const generic = sources.some(({ lines }) => lines.some((l) => isComment(l) && spellings(symbol).slice(1).some((re) => re.test(l))));
      expect(generic, `${symbol} is never called directly and has no generic prototype comment`).toBe(true);
    }
    expect(found, `calls of ${symbol} without its prototype above`).toEqual([]);
  });
});
