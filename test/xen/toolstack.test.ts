/**
 * The toolstack conformance suite (test/conformance/toolstack-suite.ts) against real Xen:
 * `connect({ backend: 'native' })`, i.e. lib/native/toolstack.ts over libxl, libxenctrl
 * and xenstored, in a dom0 of the real-Xen tier (XENODE_XEN_TIER=1; see docs/testing.md).
 *
 * The guest is the tier's busybox PV guest. Its environment contract:
 *   XENODE_GUEST_KERNEL   the kernel (default /opt/xenci/vmlinuz)
 *   XENODE_GUEST_RAMDISK  an initramfs that boots and stays up, answering shutdown
 *                         requests (default $XENODE_SLEEP_RAMDISK, else
 *                         /opt/xenci/guest.cpio.gz, which powers off by itself: then
 *                         tests that need the guest to stay up fail)
 *   XENODE_GUEST_TYPE     pv (default) or pvh
 *   XENODE_GUEST_MEMORY   MiB for the suite's default guest (128; its 64 is too small)
 *   XENODE_HOTPLUG=1      /srv/conf-root.img, /srv/conf-data.img and bridge xenbr0 exist
 *   XENODE_SAVE_RESTORE=1 the guest kernel suspends (PV suspend) for save/restore
 *   XENODE_ASSIGNABLE_PCI a BDF the host can pass through (rarely under QEMU)
 */
import { describe } from 'vitest';
import { connect } from '../../lib/index.js';
import { toolstackConformance } from '../conformance/toolstack-suite.js';
import { onRealXen } from './tier.js';

const env = process.env;
const missing: ('hotplug' | 'saveRestore')[] = [];
if (env.XENODE_HOTPLUG !== '1') missing.push('hotplug');
if (env.XENODE_SAVE_RESTORE !== '1') missing.push('saveRestore');

describe.skipIf(!onRealXen)('native toolstack on real Xen', () => {
  toolstackConformance('native (libxl) on real Xen', {
    kernel: env.XENODE_GUEST_KERNEL ?? '/opt/xenci/vmlinuz',
    guestConfig: {
      type: env.XENODE_GUEST_TYPE === 'pvh' ? 'pvh' : 'pv',
      // The busybox guest's kernel and initramfs do not fit in the suite's 64 MiB.
      memory: Number(env.XENODE_GUEST_MEMORY ?? 128),
      ramdisk: env.XENODE_GUEST_RAMDISK ?? env.XENODE_SLEEP_RAMDISK ?? '/opt/xenci/guest.cpio.gz',
      cmdline: 'console=hvc0 quiet',
    },
    missing,
    // dom0 under QEMU without KVM: a guest takes tens of seconds to boot or shut down.
    timeoutMs: 60_000,
    ...(env.XENODE_ASSIGNABLE_PCI ? { assignablePci: env.XENODE_ASSIGNABLE_PCI } : {}),
    connect: () => connect({ backend: 'native' }),
    cleanup: async () => undefined,
  });
});
