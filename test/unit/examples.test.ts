/**
 * Every script in examples/ runs as-is against the mock host (XENODE_BACKEND=mock), as the
 * README promises. They import 'xenode', which resolves to this package's dist/ (built by
 * `pretest`).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot, run } from '../helpers/run.js';

const dir = join(projectRoot, 'examples');
const examples = readdirSync(dir).filter((f) => /\.(mjs|js)$/.test(f));

describe('examples', () => {
  it('exist', () => {
    expect(examples.length).toBeGreaterThan(0);
    expect(existsSync(join(projectRoot, 'dist/index.js')), 'dist/ is missing: run npm run build').toBe(true);
  });

  it.each(examples)('%s runs against the mock host and exits 0', async (file) => {
    const r = await run(process.execPath, [join(dir, file)], { env: { XENODE_BACKEND: 'mock' }, timeout: 15_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
  });

  it('xenstore-watch.mjs reports the states it saw and a timeout as a failure', async () => {
    const file = join(dir, 'xenstore-watch.mjs');
    const ok = await run(process.execPath, [file], { env: { XENODE_BACKEND: 'mock' } });
    expect(ok.stdout).toContain('/local/domain/0/backend/vif/7/0/state = 4 (Connected)');
    expect(ok.stdout.trim().split('\n').at(-1)).toBe('device connected');
    // Too short a time limit for the simulated driver: the script says so and exits 1.
    const late = await run(process.execPath, [file, '--timeout', '1'], { env: { XENODE_BACKEND: 'mock' } });
    expect(late.code).toBe(1);
    expect(late.stderr).toBe('timed out after 1 ms\n');
  });
});
