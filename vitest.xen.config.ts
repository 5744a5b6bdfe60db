import { defineConfig } from 'vitest/config';

/**
 * The real-Xen tier, run by `npm run test:xen` inside the dom0 it boots under QEMU
 * (scripts/xen/). Every test/xen/*.test.ts is picked up. Files run one at a time: they
 * share one hypervisor, one xenstored and about 900 MB for guests. Timeouts are generous:
 * TCG runs dom0 ten times slower than the host, and more on a shared machine (the
 * conformance suite's model test took two minutes there); run.mjs bounds the whole boot.
 *
 * The two boots run side by side, so the tier takes as long as the longer one, and CI
 * has 30 minutes for everything. Both boots run what depends on the xenstored: the
 * XenStore conformance suite and the unprivileged guest's view (guest-xenstore.test.ts).
 * The rest drives libxl, the hypervisor and the kernel's devices rather than xenstored,
 * so each file runs in one boot only, chosen so that the two take about as long (C
 * xenstored 414 s, oxenstored 529 s of vitest before this split; the PVH migrations
 * alone take 209 s): with the C xenstored the toolstack suite (its libxl traffic covers
 * libxl with the C xenstored), xenode's block backend and the suite's live snapshot
 * group (live-snapshot.test.ts); with oxenstored, which has no emulated IOMMU (run.mjs:
 * its PVH guests), libxl.test.ts, the handles' life cycles, event channels and grant
 * tables, Remus and migrate.test.ts (the suite's save/restore and migration groups and
 * a PVH live migration).
 */
const onlyIn: Record<string, string> = {
  'test/xen/toolstack.test.ts': 'xenstored',
  'test/xen/libxl.test.ts': 'oxenstored',
  'test/xen/hypervisor.test.ts': 'oxenstored',
  'test/xen/lifecycle.test.ts': 'oxenstored',
  'test/xen/native-lifecycle.test.ts': 'oxenstored',
  'test/xen/remus.test.ts': 'oxenstored',
  // One guest boot serving a VHD through xenode's own block backend.
  'test/xen/blkback.test.ts': 'xenstored',
  'test/xen/migrate.test.ts': 'oxenstored',
  // The toolstack suite's live snapshot group (two guests).
  'test/xen/live-snapshot.test.ts': 'xenstored',
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
