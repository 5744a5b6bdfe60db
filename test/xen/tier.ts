/**
 * The real-Xen tier: these tests run in a dom0 of real Xen (the QEMU harness runs them
 * with XENODE_BACKEND=native and XENODE_XEN_TIER=1); anywhere else they skip.
 */
export const onRealXen = process.env.XENODE_XEN_TIER === '1';
