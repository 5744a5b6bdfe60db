import { defineConfig } from 'vitest/config';

/**
 * The real-Xen tier, run by `npm run test:xen` inside the dom0 it boots under QEMU
 * (scripts/xen/). Every test/xen/*.test.ts is picked up. Files run one at a time: they
 * share one hypervisor, one xenstored and about 900 MB for guests. Timeouts are generous:
 * TCG runs dom0 ten times slower than the host, and more on a shared machine (the
 * conformance suite's model test took two minutes there); run.mjs bounds the whole boot.
 *
 * The two boots run side by side, so the tier takes as long as the longer one. The
 * toolstack suite and Remus drive libxl and the hypervisor rather than xenstored (libxl's
 * own xenstore traffic is covered in both boots by libxl.test.ts), so each runs in one
 * boot only: the toolstack suite with the C xenstored; Remus, xenode's block backend and
 * migrate.test.ts (the suite's save/restore group and a PVH live migration) with
 * oxenstored. That keeps .ci/run within its 30 minutes.
 */
const onlyIn: Record<string, string> = {
  'test/xen/toolstack.test.ts': 'xenstored',
  'test/xen/remus.test.ts': 'oxenstored',
  // One guest boot serving a VHD through xenode's own block backend.
  'test/xen/blkback.test.ts': 'oxenstored',
  'test/xen/migrate.test.ts': 'oxenstored',
};
const xenstored = process.env.XENODE_XENSTORED;
const elsewhere = xenstored ? Object.keys(onlyIn).filter((file) => onlyIn[file] !== xenstored) : [];
export default defineConfig({
  test: {
    include: ['test/xen/**/*.test.ts'],
    exclude: ['node_modules/**', ...elsewhere],
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 600_000,
    teardownTimeout: 60_000,
  },
});
