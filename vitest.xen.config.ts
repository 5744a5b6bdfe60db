import { defineConfig } from 'vitest/config';

/**
 * The real-Xen tier, run by `npm run test:xen` inside the dom0 it boots under QEMU
 * (scripts/xen/). Every test/xen/*.test.ts is picked up. Files run one at a time: they
 * share one hypervisor, one xenstored and about 900 MB for guests, and TCG is slow.
 */
export default defineConfig({
  test: {
    include: ['test/xen/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 240_000,
    teardownTimeout: 60_000,
  },
});
