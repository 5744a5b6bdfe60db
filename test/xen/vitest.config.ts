// The real-Xen tier's vitest configuration: only test/xen, which the default config
// leaves out. Run in a dom0 with XENODE_BACKEND=native XENODE_XEN_TIER=1:
//   npx vitest run --config test/xen/vitest.config.ts
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/xen/**/*.test.ts'],
    // dom0 under QEMU without KVM is slow: guests take tens of seconds to build and boot.
    testTimeout: 300_000,
    hookTimeout: 120_000,
    // One file at a time: the files share the host's VIRQs and its memory for guests.
    fileParallelism: false,
  },
});
