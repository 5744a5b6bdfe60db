/**
 * The real-Xen tier: what every test/xen/*.test.ts may rely on. These files run only
 * inside the dom0 that `npm run test:xen` boots (Xen 4.17 under QEMU, see
 * scripts/xen/); anywhere else importing this module throws, so a stray
 * `vitest -c vitest.xen.config.ts` on a laptop fails loudly instead of testing nothing.
 *
 * In that dom0: root, xen services started (xenstored — oxenstored or the C one,
 * see {@link xenstored} — xenconsoled, dom0 introduced), `xl` and the xenstore-* tools
 * on $PATH, XENODE_BACKEND=native, CI=true, and the test guest's files below.
 */
import { existsSync, readFileSync } from 'node:fs';
import { type Xen, type XenStore, connect } from '../../lib/index.js';
import { run, type RunResult } from '../helpers/run.js';

if (process.env.XENODE_XEN_TIER !== '1') {
  throw new Error('test/xen/ runs inside the dom0 that `npm run test:xen` boots (XENODE_XEN_TIER=1 is not set)');
}

/** Which xenstored this boot runs: `'oxenstored'` or `'xenstored'` (the C one). */
export const xenstored = (process.env.XENODE_XENSTORED ?? '') as 'oxenstored' | 'xenstored';

/**
 * The test guest: Debian's kernel with a busybox initramfs whose /init acts on XenStore
 * as the guest (scripts/xen/image/guest-init), prints `XENODE_GUEST ready` on its
 * console, then idles until it is shut down or destroyed. 128 MB, one vcpu, PV.
 */
export const guest = {
  kernel: '/opt/xenode/guest/vmlinux',
  ramdisk: '/opt/xenode/guest/initramfs.cpio.gz',
  /** A complete xl.cfg for it (name `xenode-guest`). */
  config: '/opt/xenode/guest/guest.cfg',
  /** Where xenconsoled logs the console of the guest called `name`. */
  consoleLog: (name: string): string => `/var/log/xen/console/guest-${name}.log`,
};

/**
 * The test guest as libxl's domain_config JSON (what `LibxlConnection.createDomain`
 * takes): 128 MB, one vcpu, direct kernel boot, destroyed on poweroff and crash. `pvh`
 * runs it in an HVM container, which log-dirty mode (Remus, live migration) needs here.
 */
export function guestDomainJson(name: string, type: 'pv' | 'pvh' = 'pv'): Record<string, unknown> {
  return {
    c_info: { type, name },
    b_info: {
      max_vcpus: 1,
      avail_vcpus: [0],
      max_memkb: 131072,
      target_memkb: 131072,
      kernel: guest.kernel,
      ramdisk: guest.ramdisk,
      cmdline: 'console=hvc0 quiet',
      [`type.${type}`]: {},
    },
    on_poweroff: 'destroy',
    on_crash: 'destroy',
  };
}

/** Runs `xl` with `args` (timeout 120 s: TCG is slow) and throws unless it exits 0. */
export async function xl(args: readonly string[], timeout = 120_000): Promise<string> {
  const r: RunResult = await run('xl', args, { timeout });
  if (r.code !== 0) throw new Error(`xl ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** `xl info` as a map of its `key : value` lines. */
export async function xlInfo(): Promise<Map<string, string>> {
  const info = new Map<string, string>();
  for (const line of (await xl(['info'])).split('\n')) {
    const m = /^(\S+)\s*:\s*(.*)$/.exec(line);
    if (m) info.set(m[1] as string, (m[2] as string).trim());
  }
  return info;
}

/**
 * The PCI function dom0 can pass through: QEMU's `edu` device (1234:11e8, no driver in
 * dom0 or in the guest) behind the emulated VT-d IOMMU that scripts/xen/run.mjs gives
 * the C xenstored boot (XENODE_XEN_IOMMU), or undefined when this boot has none.
 */
export const assignablePci: string | undefined = (() => {
  const dir = '/sys/bus/pci/devices/0000:00:10.0';
  if (!existsSync(dir)) return undefined;
  return readTrimmed(`${dir}/vendor`) === '0x1234' && readTrimmed(`${dir}/device`) === '0x11e8' ? '0000:00:10.0' : undefined;
})();

/** Reads a small file, trimmed. */
export function readTrimmed(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

/** Resolves once `check()` is true, polling every `step` ms; rejects after `ms`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, ms = 60_000, step = 100): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, step));
  }
}

let tierXen: Promise<Xen> | undefined;

/**
 * XenStore through one native connection kept for the test file (opened on first use),
 * for the tier's helpers: a `xenstore-read` process per poll costs dom0 about a second of
 * CPU under TCG, taken from the guest that is booting beside it.
 */
export async function tierXenStore(): Promise<XenStore> {
  tierXen ??= connect({ backend: 'native' });
  return (await tierXen).xenstore;
}

/** Closes the connection of {@link tierXenStore}; the next use opens another. */
export async function closeTierXenStore(): Promise<void> {
  const xen = tierXen;
  tierXen = undefined;
  await (await xen?.catch(() => undefined))?.close();
}

/** Reads a XenStore node through {@link tierXenStore}, or undefined where it is absent. */
export async function xenstoreRead(path: string): Promise<string | undefined> {
  return (await tierXenStore()).read(path).catch(() => undefined);
}

/** Resolves once the test guest's init has written data/xenode/ready (its kernel's xenbus is up). */
export async function guestReady(domid: number, ms = 180_000): Promise<void> {
  await waitUntil(async () => (await xenstoreRead(`/local/domain/${domid}/data/xenode/ready`)) === '1', `domain ${domid} to boot`, ms, 250);
}

/** Always true once this module has loaded (it throws anywhere but the tier's dom0). */
export const onRealXen = true;
