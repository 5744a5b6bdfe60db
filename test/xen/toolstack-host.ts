/**
 * The toolstack conformance suite's factory for real Xen (test/conformance/toolstack-suite.ts):
 * `connect({ backend: 'native' })`, i.e. lib/native/toolstack.ts over libxl, libxenctrl
 * and xenstored, in the dom0 of the real-Xen tier (see docs/testing.md). Shared by the
 * files that run the suite's groups: toolstack.test.ts (C xenstored boot),
 * live-snapshot.test.ts and migrate.test.ts (oxenstored boot), split so that the two
 * boots take about as long.
 *
 * The guest is the tier's busybox PV guest (test/xen/tier.ts `guest`, its /init is
 * scripts/xen/image/guest-init): it loads xen-blkfront, xen-netfront (with up to four
 * queues) and xen-pcifront, prints `XENODE_GUEST ready` on its console, then runs a login prompt
 * there (busybox getty) and prints what dom0 writes to its data/xenode/say, and idles
 * until asked to shut down. So, on this host:
 * - devices: {@link setUpDevices} puts raw images on loop devices behind the /srv paths
 *   the device and live snapshot cases attach and creates the bridge xenbr0; the disks and the NIC name the
 *   tier's hotplug program (`hotplugScripts`, scripts/xen/image/dom0-hotplug.c says
 *   why): libxl gives a hotplug script 10 s, and under TCG Xen's bash `block` script
 *   (about fifty processes at about a second each) was killed at that limit
 *   ("killing execution of /etc/xen/scripts/block add because of timeout") even on a
 *   loop device, its shortest path;
 * - the console: `guest.writeConsole` writes data/xenode/say; what is typed into the
 *   pty (xenconsoled holds its master) reaches getty, which echoes it;
 * - `guest.diskWrite/diskRead`: the guest's own kernel reads and writes its disk, O_DIRECT
 *   through blkfront (`xenode-guest-xs disk-io`, scripts/xen/image/guest-xs.c), on a
 *   request written below its home (`guestDiskIo` here). The live snapshot cases create
 *   their domain with a VHD disk and `serveVhd`, so the native backend serves through xenode's block
 *   backend in this process (Xen 4.17 has no backend of its own that can switch a running
 *   disk to a VHD child), and snapshot it while the guest writes;
 * - `guest.crash`: a magic SysRq `c` (`xl sysrq D c`). Debian's kernel allows only some
 *   SysRq functions (kernel.sysrq 438, not the crash key), so the guest's command line
 *   carries `sysrq_always_enabled`; its panic reaches Xen as a crash. SysRq `b` and `o`
 *   make it reboot or power off.
 * - PCI passthrough: toolstack.test.ts adds the boot's assignable function (see there).
 * What it cannot do is declared, with the reason (CI=true: nothing is skipped silently):
 * - `liveMigration`: Debian's Xen 4.17 has no shadow paging, so the PV guest cannot enter
 *   log-dirty mode; the suite checks that its live migration is refused and moves it with
 *   `live: false` (migrate.test.ts migrates a PVH guest live).
 */
import { mkdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from '../../lib/index.js';
import { run } from '../helpers/run.js';
import type { ToolstackSuiteFactory } from '../conformance/toolstack-suite.js';
import { closeTierXenStore, guest, guestReady, tierXenStore, xl } from './tier.js';

/** The tier's hotplug script for disks and NICs (scripts/xen/image/dom0-hotplug.c). */
const hotplug = '/opt/xenode/xenode-hotplug';

/** The loop devices behind the /srv paths {@link setUpDevices} set up, and those paths. */
const loops: string[] = [];
const linked: string[] = [];

async function sh(file: string, args: readonly string[], timeout = 60_000): Promise<string> {
  const r = await run(file, args, { timeout });
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Resolves once the guest's init has written data/xenode/ready (its kernel's xenbus is up). */
export async function booted(domid: number): Promise<void> {
  await guestReady(domid, 120_000);
}

/** Bytes per xenstore node of a disk request's data (hex: 1920 characters, below oxenstored's 2048). */
const IO_CHUNK = 960;
let ioSeq = 0;
const ioQueue = new Map<number, Promise<unknown>>();

/**
 * Has the guest's own kernel read or write its disk `vdev` (O_DIRECT, through blkfront;
 * scripts/xen/image/guest-xs.c `disk-io`): the data goes through xenstore below the
 * guest's home, the request last, and the guest answers in data/xenode/disk/result.
 * One request per guest at a time.
 */
function guestDiskIo(domid: number, vdev: string, offset: number, length: number, data?: Buffer): Promise<Buffer> {
  const run = async (): Promise<Buffer> => {
    await booted(domid);
    const xs = await tierXenStore();
    const home = `/local/domain/${domid}/data/xenode/disk`;
    const id = `${process.pid}-${++ioSeq}`;
    await xs.remove(`${home}/in`).catch(() => undefined);
    await xs.remove(`${home}/out`).catch(() => undefined);
    for (let i = 0; data !== undefined && i * IO_CHUNK < length; i++) await xs.write(`${home}/in/${i}`, data.subarray(i * IO_CHUNK, (i + 1) * IO_CHUNK).toString('hex'));
    const signal = AbortSignal.timeout(120_000);
    // The watch's first event reads the result too, so an answer that comes before it is seen.
    const results = xs.watch(`${home}/result`, { signal });
    await xs.write(`${home}/request`, `${id} ${data === undefined ? 'read' : 'write'} ${vdev} ${offset} ${length}`);
    let answer = '';
    for await (const _ of results) {
      answer = await xs.read(`${home}/result`).catch(() => '');
      if (answer.startsWith(`${id} `)) break;
    }
    const [, status, ...why] = answer.split(' ');
    if (status !== 'ok') throw new Error(`the guest's disk ${data === undefined ? 'read' : 'write'} of ${vdev} failed: ${why.join(' ') || 'no answer'}`);
    if (data !== undefined) return Buffer.alloc(0);
    const out: Buffer[] = [];
    for (let i = 0; i * IO_CHUNK < length; i++) out.push(Buffer.from(await xs.read(`${home}/out/${i}`), 'hex'));
    return Buffer.concat(out);
  };
  const next = (ioQueue.get(domid) ?? Promise.resolve()).catch(() => undefined).then(run);
  ioQueue.set(domid, next);
  return next;
}

/**
 * Puts a 16 MiB raw image on a loop device behind each of `paths` (libxl sees a block
 * device, a phy disk, which the tier's hotplug program hands to blkback) and, with
 * `bridge`, creates the bridge xenbr0 that the suite's NICs join.
 */
export async function setUpDevices(paths: readonly string[], bridge: boolean): Promise<void> {
  await run('modprobe', ['loop'], { timeout: 60_000 });
  mkdirSync('/srv/xenode', { recursive: true });
  for (const path of paths) {
    const image = path.replace('/srv/', '/srv/xenode/');
    writeFileSync(image, '');
    truncateSync(image, 16 << 20);
    const loop = (await sh('losetup', ['-f', '--show', image])).trim();
    loops.push(loop);
    rmSync(path, { force: true });
    symlinkSync(loop, path);
    linked.push(path);
  }
  if (bridge) {
    await run('modprobe', ['bridge'], { timeout: 60_000 });
    await run('ip', ['link', 'del', 'xenbr0'], { timeout: 30_000 });
    await sh('ip', ['link', 'add', 'name', 'xenbr0', 'type', 'bridge']);
    await sh('ip', ['link', 'set', 'xenbr0', 'up']);
  }
}

/** Undoes {@link setUpDevices}, and closes the connection the guests' disk I/O used. */
export async function tearDownDevices(): Promise<void> {
  await closeTierXenStore();
  await run('ip', ['link', 'del', 'xenbr0'], { timeout: 30_000 });
  for (const path of linked.splice(0)) rmSync(path, { force: true });
  for (const loop of loops.splice(0)) await run('losetup', ['-d', loop], { timeout: 30_000 });
  rmSync('/srv/xenode', { recursive: true, force: true });
}

/** The suite's factory for the native backend on this host; `groups` picks the suite's groups to run. */
export function realXenToolstack(groups: Pick<ToolstackSuiteFactory, 'only' | 'except'>): ToolstackSuiteFactory {
  return {
    ...groups,
      kernel: guest.kernel,
      guestConfig: {
        type: 'pv',
        // the guest's kernel and initramfs do not boot in the suite's default 64 MiB
        memory: 128,
        ramdisk: guest.ramdisk,
        cmdline: 'console=hvc0 quiet sysrq_always_enabled',
      },
      missing: ['liveMigration'],
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
        diskWrite: async (domid, vdev, offset, data) => void (await guestDiskIo(domid, vdev, offset, data.length, data)),
        diskRead: (domid, vdev, offset, length) => guestDiskIo(domid, vdev, offset, length),
      },
      // dom0 under QEMU without KVM: a guest takes tens of seconds to boot or shut down
      timeoutMs: 90_000,
      connect: () => connect({ backend: 'native' }),
      cleanup: async () => undefined,
  };
}
