// The real-Xen tier (run in dom0, XENODE_XEN_TIER=1): only test/xen/, which the default
// config excludes. Usage: vitest run --config test/xen/vitest.config.ts
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/xen/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
