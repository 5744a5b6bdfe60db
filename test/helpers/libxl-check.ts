/**
 * Builds test/fixtures/libxl-check.c (libxl's and libxlutil's parsers behind a small CLI)
 * once per source, compiler and flags, cached under node_modules/.cache/xenode like
 * bench/xs-bench.c is under bench/.build, and runs it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');
const source = join(root, 'test', 'fixtures', 'libxl-check.c');

/** True when the headers the checker needs are installed (Debian: libxen-dev). */
export function hasLibxlHeaders(): boolean {
  return existsSync('/usr/include/libxl.h') && existsSync('/usr/include/libxlutil.h') && existsSync('/usr/include/_libxl_types.h');
}

/** Compiles the checker unless a binary of the same source and flags is cached; returns its path. */
export function buildLibxlCheck(): string {
  const cc = process.env.CC || 'cc';
  const version = spawnSync(cc, ['--version'], { encoding: 'utf8' });
  if (version.error) throw new Error(`no C compiler (${cc})`);
  const pc = spawnSync('pkg-config', ['--cflags', '--libs', 'xenlight', 'xlutil', 'xentoollog'], { encoding: 'utf8' });
  const flags = pc.status === 0 ? pc.stdout.trim().split(/\s+/).filter(Boolean) : ['-lxenlight', '-lxlutil', '-lxentoollog'];
  const key = createHash('sha256').update(readFileSync(source)).update(`\0${cc}\0${flags.join(' ')}\0${version.stdout.split('\n', 1)[0]}`).digest('hex').slice(0, 16);
  const dir = join(root, 'node_modules', '.cache', 'xenode');
  const binary = join(dir, `libxl-check-${key}`);
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  const build = spawnSync(cc, ['-O1', '-Wall', '-Werror', '-o', tmp, source, ...flags, '-ldl'], { encoding: 'utf8' });
  if (build.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`building ${source} failed (is libxen-dev installed?):\n${build.stderr || build.error}`);
  }
  renameSync(tmp, binary); // atomic: a concurrent test file never runs half a binary
  return binary;
}

/** Runs the checker; resolves with parsed stdout, or rejects with stderr when libxl rejected the input. */
export function libxlCheck(binary: string, args: string[], input = ''): unknown {
  const out = execFileSync(binary, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  return JSON.parse(out);
}
