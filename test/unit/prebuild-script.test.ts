/**
 * `npm run prebuild` must build the prebuild, while the same script, run by npm as the
 * pre-hook of `npm run build`, must not (scripts/prebuild.mjs). The decision is checked
 * through real npm invocations in a scratch package whose scripts call the project's
 * script in dry-run mode.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', '..', 'scripts', 'prebuild.mjs');
const dir = mkdtempSync(join(tmpdir(), 'xenode-prebuild-'));
writeFileSync(
  join(dir, 'package.json'),
  JSON.stringify({
    name: 'prebuild-decision',
    version: '1.0.0',
    private: true,
    scripts: { prebuild: `node ${JSON.stringify(script)}`, build: 'node -e "console.log(\'built\')"', pretest: 'npm run build', test: 'node -e 0' },
  }),
);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function npm(args: string[], env: Record<string, string> = {}): string {
  return execFileSync('npm', args, {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, XENODE_PREBUILD_DRY_RUN: '1', XENODE_PREBUILD: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

describe('scripts/prebuild.mjs', { timeout: 60_000 }, () => {
  it('builds when asked for by name', () => {
    expect(npm(['run', 'prebuild'])).toContain('prebuild: would build');
  });

  it('does nothing as the pre-hook of npm run build', () => {
    const out = npm(['run', 'build']);
    expect(out).toContain('prebuild: skipped');
    expect(out).toContain('built');
  });

  it('does nothing when npm test builds through pretest', () => {
    expect(npm(['test'])).toContain('prebuild: skipped');
  });

  it('follows XENODE_PREBUILD over the guess', () => {
    expect(npm(['run', 'build'], { XENODE_PREBUILD: '1' })).toContain('prebuild: would build');
    expect(npm(['run', 'prebuild'], { XENODE_PREBUILD: '0' })).toContain('prebuild: skipped');
  });
});
