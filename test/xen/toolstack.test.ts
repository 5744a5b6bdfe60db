/**
 * The toolstack conformance suite (test/conformance/toolstack-suite.ts) against real Xen:
 * `connect({ backend: 'native' })`, i.e. lib/native/toolstack.ts over libxl, libxenctrl
 * and xenstored, in the dom0 of the real-Xen tier (see docs/testing.md).
 *
 * The guest is the tier's busybox PV guest (test/xen/tier.ts `guest`, its /init is
 * scripts/xen/image/guest-init): it loads xen-blkfront, xen-netfront (with up to four
 * queues) and xen-pcifront, prints `XENODE_GUEST ready` on its console, then runs a login prompt
 * there (busybox getty) and prints what dom0 writes to its data/xenode/say, and idles
 * until asked to shut down. So, on this host:
 * - devices: beforeAll puts two raw images on loop devices behind the /srv paths the
 *   device case attaches and creates the bridge xenbr0; the disks and the NIC name the
 *   tier's hotplug program (`hotplugScripts`, scripts/xen/image/dom0-hotplug.c says
 *   why): libxl gives a hotplug script 10 s, and under TCG Xen's bash `block` script
 *   (about fifty processes at about a second each) was killed at that limit
 *   ("killing execution of /etc/xen/scripts/block add because of timeout") even on a
 *   loop device, its shortest path;
 * - the console: `guest.writeConsole` writes data/xenode/say; what is typed into the
 *   pty (xenconsoled holds its master) reaches getty, which echoes it;
 * - `guest.crash`: a magic SysRq `c` (`xl sysrq D c`). Debian's kernel allows only some
 *   SysRq functions (kernel.sysrq 438, not the crash key), so the guest's command line
 *   carries `sysrq_always_enabled`; its panic reaches Xen as a crash. SysRq `b` and `o`
 *   make it reboot or power off.
 * What it cannot do is declared, with the reason (CI=true: nothing is skipped silently):
 * - the `save and restore` and `migration` groups run in test/xen/migrate.test.ts, in
 *   the other boot (oxenstored), with a live migration of a PVH guest;
 * - `liveSnapshot`: the suite's disks are libxl's, and Xen 4.17 has no backend of its own
 *   that can be repointed at a VHD child, so the suite checks that the native backend
 *   says so (XEN_LIVE_SNAPSHOT_UNSUPPORTED); blkback.test.ts takes live snapshots of a
 *   disk xenode serves itself;
 * - `assignablePci` is QEMU's `edu` device at 00:10.0 (test/xen/tier.ts): run.mjs gives
 *   this (the C xenstored) boot QEMU's emulated VT-d IOMMU, so Xen assigns devices (xl dmesg: "I/O virtualisation
 *   enabled"), and beforeAll binds the function to pciback (`xl pci-assignable-add`); the
 *   guest's xen-pcifront connects to it. It is a plain function, not an SR-IOV virtual
 *   one (QEMU 7.2's SR-IOV device, nvme, needs dom0's nvme driver to create its virtual
 *   functions); Xen and libxl assign a virtual function like any other.
 */
import { mkdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe } from 'vitest';
import { connect } from '../../lib/index.js';
import { run } from '../helpers/run.js';
import { toolstackConformance } from '../conformance/toolstack-suite.js';
import { assignablePci, guest, waitUntil, xl } from './tier.js';

/** The tier's hotplug script for disks and NICs (scripts/xen/image/dom0-hotplug.c). */
const hotplug = '/opt/xenode/xenode-hotplug';

/** The paths the suite's device case attaches, and the loop devices behind them. */
const disks = ['/srv/conf-root.img', '/srv/conf-data.img'];
const loops: string[] = [];

async function sh(file: string, args: readonly string[], timeout = 60_000): Promise<string> {
  const r = await run(file, args, { timeout });
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Resolves once the guest's init has written data/xenode/ready (its kernel's xenbus is up). */
async function booted(domid: number): Promise<void> {
  await waitUntil(async () => (await run('xenstore-read', [`/local/domain/${domid}/data/xenode/ready`], { timeout: 30_000 })).stdout.trim() === '1', `domain ${domid} to boot`, 120_000, 500);
}

describe('native toolstack on real Xen', () => {
  beforeAll(async () => {
    // Each disk is a raw image on a loop device, reached through a symlink: libxl sees a
    // block device (a phy disk), which the tier's hotplug program hands to blkback.
    await run('modprobe', ['loop'], { timeout: 60_000 });
    await run('modprobe', ['bridge'], { timeout: 60_000 });
    mkdirSync('/srv/xenode', { recursive: true });
    for (const path of disks) {
      const image = path.replace('/srv/', '/srv/xenode/');
      writeFileSync(image, '');
      truncateSync(image, 16 << 20);
      const loop = (await sh('losetup', ['-f', '--show', image])).trim();
      loops.push(loop);
      rmSync(path, { force: true });
      symlinkSync(loop, path);
    }
    await run('ip', ['link', 'del', 'xenbr0'], { timeout: 30_000 });
    await sh('ip', ['link', 'add', 'name', 'xenbr0', 'type', 'bridge']);
    await sh('ip', ['link', 'set', 'xenbr0', 'up']);
    // pciback takes the function, so that libxl can hand it to a guest
    if (assignablePci !== undefined) await xl(['pci-assignable-add', assignablePci]);
  });

  afterAll(async () => {
    await run('ip', ['link', 'del', 'xenbr0'], { timeout: 30_000 });
    for (const path of disks) rmSync(path, { force: true });
    for (const loop of loops) await run('losetup', ['-d', loop], { timeout: 30_000 });
    rmSync('/srv/xenode', { recursive: true, force: true });
  });

  toolstackConformance('native (libxl) on real Xen', {
    kernel: guest.kernel,
    guestConfig: {
      type: 'pv',
      // the guest's kernel and initramfs do not boot in the suite's default 64 MiB
      memory: 128,
      ramdisk: guest.ramdisk,
      cmdline: 'console=hvc0 quiet sysrq_always_enabled',
    },
    missing: ['liveSnapshot', 'liveMigration'],
    ...(assignablePci === undefined ? {} : { assignablePci }),
    // save/restore and migration run in migrate.test.ts, in the other boot, to even out the two
    except: ['save and restore', 'migration'],
    ready: booted,
    hotplugScripts: { disk: hotplug, nic: hotplug },
    consoleBanner: /XENODE_GUEST ready/,
    guest: {
      crash: async (domid) => {
        await booted(domid);
        await xl(['sysrq', String(domid), 'c']);
      },
      shutdown: async (domid, reason) => {
        const key = { poweroff: 'o', reboot: 'b' }[reason as string];
        if (key === undefined) throw new Error(`a real guest cannot be made to shut down with reason ${reason}`);
        await booted(domid);
        await xl(['sysrq', String(domid), key]);
      },
      writeConsole: async (domid, text) => {
        await booted(domid);
        await sh('xenstore-write', [`/local/domain/${domid}/data/xenode/say`, text]);
      },
    },
    // dom0 under QEMU without KVM: a guest takes tens of seconds to boot or shut down
    timeoutMs: 90_000,
    connect: () => connect({ backend: 'native' }),
    cleanup: async () => undefined,
  });
});
