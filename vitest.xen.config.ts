import { defineConfig } from 'vitest/config';

/**
 * The real-Xen tier, run by `npm run test:xen` inside the dom0 it boots under QEMU
 * (scripts/xen/). Every test/xen/*.test.ts is picked up. Files run one at a time: they
 * share one hypervisor, one xenstored and about 900 MB for guests. Timeouts are generous:
 * TCG runs dom0 ten times slower than the host, and more on a shared machine (the
 * conformance suite's model test took two minutes there); run.mjs bounds the whole boot.
 */
export default defineConfig({
  test: {
    include: ['test/xen/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 600_000,
    teardownTimeout: 60_000,
  },
});
