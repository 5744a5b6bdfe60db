/**
 * The addon's hypervisor interfaces where there is no hypervisor (here): they load, say
 * clearly what is missing, check their arguments, and the release check of libxenctrl
 * works through its test seam. The same calls against real Xen are in test/xen/.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import { connect } from '../../lib/index.js';
import { loadAddon } from '../../lib/native/load.js';
import { XenCtrl } from '../../lib/native/xenctrl.js';
import { MockHost } from '../../lib/mock/host.js';
import { hasNativeAddon, packageRoot } from './tier.js';

const noXen = !existsSync('/dev/xen/evtchn') && !existsSync('/dev/xen/privcmd');

/** Runs `code` (with `addon` in scope) in a child node with `env`; its stdout, parsed. */
function child(code: string, env: NodeJS.ProcessEnv = {}): unknown {
  const prelude = `const addon = require('node:module').createRequire(${JSON.stringify(packageRoot + '/package.json')})('node-gyp-build')(${JSON.stringify(packageRoot)});`;
  const r = spawnSync(process.execPath, ['-e', prelude + code], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const report = `.then(() => ({ ok: true }), (e) => ({ name: e.name, code: e.code, op: e.op, path: e.path, message: e.message }))`;

describe.skipIf(!hasNativeAddon)('native hypervisor interfaces without a hypervisor', () => {
  it('export the handles and the build version', () => {
    const addon = loadAddon();
    expect(addon.xenVersion).toMatch(/^\d+\.\d+/);
    for (const name of ['openEventChannels', 'openGrants', 'openXenCtrl', 'checkXenRelease'] as const) expect(typeof addon[name]).toBe('function');
    expect(() => new (addon.EvtchnHandle as unknown as new (x: unknown) => unknown)(1)).toThrow(TypeError);
    expect(() => new (addon.GntHandle as unknown as new (x: unknown) => unknown)(1)).toThrow(TypeError);
    expect(() => new (addon.XcHandle as unknown as new (x: unknown) => unknown)(1)).toThrow(TypeError);
  });

  it('check their arguments synchronously', () => {
    const addon = loadAddon();
    expect(() => addon.openEventChannels(42 as unknown as () => void)).toThrow(TypeError);
    expect(() => addon.checkXenRelease(-1)).toThrow(RangeError);
  });

  it.skipIf(!noXen)('opening fails with XEN_UNAVAILABLE naming the device and the fix', async () => {
    const addon = loadAddon();
    const settle = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
    const cases = [
      [settle(addon.openEventChannels(() => {})), 'xenevtchn_open', '/dev/xen/evtchn'],
      [settle(addon.openGrants()), 'xengnttab_open', '/dev/xen/gntdev'],
      [settle(addon.openXenCtrl()), 'xc_interface_open', '/dev/xen/privcmd'],
    ] as const;
    for (const [p, op, path] of cases) {
      const err = await p;
      expect(err).toMatchObject({ name: 'XenError', code: 'XEN_UNAVAILABLE', op, path, errno: 2 });
      expect((err as Error).message).toContain("{ backend: 'mock' }");
    }
    const xc = await XenCtrl.open().catch((e: unknown) => e);
    expect(xc).toBeInstanceOf(XenError);
    expect(xc).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'xc_interface_open', path: '/dev/xen/privcmd' });
  });

  it.skipIf(!noXen)('the native backend keeps XenStore working when the other devices are missing', async () => {
    await using host = await MockHost.create({ xenstoreSocket: `${packageRoot}/test/native/.hv-xenstored.sock` });
    process.env.XENSTORED_PATH = host.xenstoreSocket;
    try {
      const xen = await connect({ backend: 'native' });
      await xen.xenstore.write('/hv/ok', 'yes');
      await expect(xen.eventChannels.bindUnbound(0)).rejects.toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'xenevtchn_open' });
      await expect(xen.grants.share(0)).rejects.toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'xengnttab_open' });
      expect(await xen.xenstore.read('/hv/ok')).toBe('yes');
      await xen.close();
    } finally {
      delete process.env.XENSTORED_PATH;
    }
  });

  it('the hypervisor release check accepts the build\'s release and refuses another', () => {
    const addon = loadAddon();
    const [major, minor] = addon.xenVersion.split('.').map(Number) as [number, number];
    expect(addon.checkXenRelease((major << 16) | minor)).toBeNull();
    const err = addon.checkXenRelease((major << 16) | (minor + 1));
    expect(err).toMatchObject({ name: 'XenError', code: 'XEN_VERSION_MISMATCH', op: 'xc_version' });
    expect(err?.message).toContain(`the hypervisor is Xen ${major}.${minor + 1} but xenode's toolstack part was built for Xen ${major}.${minor}`);
    expect(err?.message).toContain('XenStore, event channels and grant tables keep working');
  });

  it('a host with another release\'s libxenctrl is XEN_VERSION_MISMATCH for xenctrl only', () => {
    // The test seam stands in for a build of Xen 4.99: this host has only another release's libxenctrl.
    const out = child(
      `Promise.all([addon.openXenCtrl()${report}, addon.openEventChannels(() => {})${report}, Promise.resolve(addon.checkXenRelease((4 << 16) | 99))]).then((r) => console.log(JSON.stringify(r)))`,
      { XENODE_TEST_XEN_BUILD_VERSION: '4.99.0' },
    ) as [Record<string, string>, Record<string, string>, null];
    expect(out[0]).toMatchObject({ name: 'XenError', code: 'XEN_VERSION_MISMATCH', op: 'dlopen' });
    expect(out[0]?.message).toMatch(/^libxenctrl\.so\.4\.99 cannot be loaded .* but this host has .*libxenctrl\.so\.\d+\.\d+: its Xen is not the Xen 4\.99 .*npm rebuild xenode/);
    // Event channels do not depend on the release.
    expect(out[1]?.code).not.toBe('XEN_VERSION_MISMATCH');
    expect(out[2]).toBeNull();
  });

  it('without libxenevtchn.so.1, opening event channels is XEN_UNAVAILABLE naming it', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const dir = await mkdtemp(`${packageRoot}/test/native/.no-evtchn-`);
    try {
      await writeFile(`${dir}/libxenevtchn.so.1`, '');
      const out = child(`addon.openEventChannels(() => {})${report}.then((r) => console.log(JSON.stringify(r)))`, { LD_LIBRARY_PATH: dir }) as Record<
        string,
        string
      >;
      expect(out).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'dlopen' });
      expect(out.message).toMatch(/^libxenevtchn\.so\.1 cannot be loaded .*apt-get install libxenevtchn1/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
