/**
 * Gate for test tiers that need something outside the project: a system tool (the
 * xenstore-utils binaries, a C compiler, qemu-img) or a build product (the native addon).
 *
 * Locally a missing tool skips its tier with one visible warning; in CI (`CI=true`) it is a
 * failure that names the Debian package to install, because a tier that silently skips in
 * CI is a tier nobody runs.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Debian packages that provide the tools the tiers use. */
const aptPackages: Record<string, string> = {
  'xenstore-read': 'xenstore-utils',
  'xenstore-write': 'xenstore-utils',
  'xenstore-ls': 'xenstore-utils',
  'xenstore-list': 'xenstore-utils',
  'xenstore-rm': 'xenstore-utils',
  'xenstore-exists': 'xenstore-utils',
  'xenstore-chmod': 'xenstore-utils',
  'xenstore-watch': 'xenstore-utils',
  cc: 'build-essential',
  gcc: 'build-essential',
  'pkg-config': 'pkg-config',
  libxenstore: 'libxen-dev',
  'qemu-img': 'qemu-utils',
};

/** The Debian package that provides `name`, as far as these tiers know. */
export function aptPackageFor(name: string): string | undefined {
  return aptPackages[name];
}

/** Whether an executable called `name` is on `$PATH` (no shell involved). */
export function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Options of {@link requireTool}. */
export interface RequireToolOptions {
  /** The Debian package to name in the message; defaults to {@link aptPackageFor}. */
  aptPackage?: string;
  /** How to get it when it is not a package (e.g. "run npm rebuild"); replaces the apt hint. */
  hint?: string;
}

const warned = new Set<string>();

/** Whether tests run in CI, where every tier must run. */
export function inCI(): boolean {
  return process.env.CI === 'true';
}

/**
 * True when `name` is available: `probe()` if given, else an executable of that name on
 * `$PATH`. When it is not: locally, warns once and returns false (use the result with
 * `describe.skipIf(!has)`); with `CI=true`, throws, which fails the test file that asked,
 * with a message saying what to install.
 *
 * @example
 * ```ts
 * const hasTools = requireTool('xenstore-read');
 * describe.skipIf(!hasTools)('xenstore-utils interop', () => { … });
 * ```
 */
export function requireTool(name: string, probe?: () => boolean, options: RequireToolOptions = {}): boolean {
  let available: boolean;
  let why = 'not found';
  try {
    available = probe ? probe() : onPath(name);
  } catch (err) {
    // A probe that throws says why better than "not found" does.
    available = false;
    why = (err as Error).message ?? String(err);
  }
  if (available) return true;
  const pkg = options.aptPackage ?? aptPackageFor(name);
  const fix = options.hint ?? (pkg ? `apt-get install -y ${pkg}` : `install ${name}`);
  if (inCI()) {
    throw new Error(`${name} is required when CI=true but is missing (${why}): ${fix}`);
  }
  if (!warned.has(name)) {
    warned.add(name);
    console.warn(`[xenode tests] skipping the tier that needs ${name}: ${why} (${fix}; with CI=true this fails)`);
  }
  return false;
}
