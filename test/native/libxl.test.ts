/**
 * The libxl binding without a hypervisor: libxl's own JSON parser through the validation
 * shim, the context-allocation failure off a dom0, argument checks, error mapping, the
 * wrapper's life cycle over a fake handle, and a worker thread that exits cleanly. The
 * same operations against real Xen are in test/xen/libxl.test.ts.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import type { NativeAddon, RawXenError, XlHandle } from '../../lib/native/addon.js';
import { LibxlConnection, fromLibxl, remusDefaults, validateDomainConfigJson, validateLibxlJson } from '../../lib/native/libxl.js';
import { NativeBackend } from '../../lib/native/backend.js';
import { loadAddon } from '../../lib/native/load.js';
import { hasNativeAddon, packageRoot } from './tier.js';
import { rejection } from '../helpers/rejection.js';

/** The busybox PV guest of the real-Xen tier, as libxl JSON. */
export const tinyGuest = {
  c_info: { type: 'pv', name: 'tiny' },
  b_info: {
    max_vcpus: 1,
    avail_vcpus: [0],
    max_memkb: 131072,
    target_memkb: 131072,
    kernel: '/opt/xenci/vmlinuz',
    ramdisk: '/opt/xenci/guest.cpio.gz',
    cmdline: 'console=hvc0 quiet',
    'type.pv': {},
  },
  on_poweroff: 'destroy',
  on_crash: 'destroy',
};

function rawError(fields: Omit<RawXenError, 'name'>): RawXenError {
  return Object.assign(new Error(fields.message), { name: 'XenError' as const, ...fields });
}

const onDom0 = existsSync('/dev/xen/privcmd');

describe.skipIf(!hasNativeAddon)('libxl JSON validation (no hypervisor)', () => {
  it("accepts the tiny PV guest and returns libxl's reading of it", async () => {
    const parsed = await validateDomainConfigJson(tinyGuest);
    expect(parsed).toMatchObject({
      c_info: { type: 'pv', name: 'tiny' },
      b_info: { max_memkb: 131072, target_memkb: 131072, kernel: '/opt/xenci/vmlinuz', cmdline: 'console=hvc0 quiet', 'type.pv': {} },
    });
  });

  it('takes JSON text as well as objects', async () => {
    const parsed = await validateDomainConfigJson(JSON.stringify(tinyGuest));
    expect(parsed.c_info).toEqual({ type: 'pv', name: 'tiny' });
  });

  it('drops fields libxl does not know, so a typo shows', async () => {
    const parsed = await validateDomainConfigJson({ c_info: { type: 'pv', name: 'x', nmae: 'typo' } });
    expect(parsed.c_info).toEqual({ type: 'pv', name: 'x' });
  });

  it('rejects a value of the wrong type with XEN_ERROR_FAIL and what libxl logged', async () => {
    const err = await rejection(validateDomainConfigJson({ c_info: { type: 'not-a-domain-type' } }));
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_ERROR_FAIL', op: 'libxl_domain_config_from_json' });
    expect((err as Error).message).toMatch(/unable to convert libxl__json_object to libxl_domain_config/);
  });

  it('rejects malformed JSON quoting the parser', async () => {
    const err = await rejection(validateDomainConfigJson('{"c_info": 3'));
    expect(err).toMatchObject({ code: 'XEN_ERROR_FAIL' });
    expect((err as Error).message).toMatch(/yajl error: parse error/);
  });

  it('parses devices, restore parameters and Remus settings', async () => {
    expect(await validateLibxlJson('device_disk', { pdev_path: '/srv/a.img', vdev: 'xvda', format: 'raw', readwrite: 1 })).toEqual({
      pdev_path: '/srv/a.img',
      vdev: 'xvda',
      format: 'raw',
      readwrite: 1,
    });
    expect(await validateLibxlJson('device_nic', { mac: '00:16:3e:01:02:03', bridge: 'xenbr0' })).toMatchObject({ mac: '00:16:3e:01:02:03', bridge: 'xenbr0' });
    expect(await validateLibxlJson('device_pci', { bus: 3, dev: 0, func: 1 })).toMatchObject({ bus: 3, func: 1 });
    expect(await validateLibxlJson('domain_restore_params', { stream_version: 2 })).toMatchObject({ stream_version: 2 });
    expect(await validateLibxlJson('domain_remus_info', { interval: 200 })).toMatchObject({ interval: 200 });
    expect(await rejection(validateLibxlJson('device_disk', { format: 'no-such-format' }))).toMatchObject({ code: 'XEN_ERROR_FAIL', op: 'libxl_device_disk_from_json' });
  });

  it('runs validations concurrently', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => validateDomainConfigJson({ c_info: { type: 'pv', name: `vm${i}` } })));
    expect(results.map((r) => (r.c_info as { name: string }).name)).toEqual(Array.from({ length: 20 }, (_, i) => `vm${i}`));
  });

  it('checks its arguments', async () => {
    const addon = loadAddon();
    expect(() => addon.validateLibxlJson?.('nope' as 'device_disk', '{}')).toThrow(TypeError);
    expect(() => addon.validateLibxlJson?.('device_disk', 3 as unknown as string)).toThrow(TypeError);
    expect(() => addon.validateLibxlJson?.('device_disk', '{"vdev":"xvda\0"}')).toThrow(/NUL/);
    await expect(validateDomainConfigJson(42 as unknown as string)).rejects.toThrow(TypeError);
  });
});

describe.skipIf(!hasNativeAddon || onDom0)('opening a libxl context off a dom0', () => {
  it('rejects with XEN_UNAVAILABLE saying what libxl needs', async () => {
    const err = await rejection(LibxlConnection.open());
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'libxl_ctx_alloc' });
    expect((err as Error).message).toMatch(/cannot open libxc handle.*needs a Xen dom0.*backend: 'mock'/);
  });

  it('checks the callbacks', () => {
    const addon = loadAddon();
    expect(() => addon.openLibxl?.(undefined as unknown as () => void, () => {})).toThrow(TypeError);
    expect(() => addon.openLibxl?.(() => {}, 'x' as unknown as () => void)).toThrow(TypeError);
  });

  it('the XlHandle class cannot be constructed from JavaScript', () => {
    const Ctor = loadAddon().XlHandle as unknown as new () => unknown;
    expect(() => new Ctor()).toThrow(/openLibxl/);
  });
});

/** Runs `script` (ESM) in a child with `env`, resolving with its stdout lines. */
function runNode(script: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`child did not exit: ${out}`));
    }, 15_000);
    proc.on('exit', () => {
      clearTimeout(timer);
      resolve(out.split('\n').filter(Boolean));
    });
  });
}

describe.skipIf(!hasNativeAddon)('loading libxenlight', () => {
  let dir: string;
  const script = `
    import { createRequire } from 'node:module';
    const addon = createRequire(${JSON.stringify(join(packageRoot, 'package.json'))})('node-gyp-build')(${JSON.stringify(packageRoot)});
    for (const run of [() => addon.openLibxl(() => {}, () => {}), () => addon.validateLibxlJson('device_disk', '{}')]) {
      try { await run(); console.log('ok'); } catch (e) { console.log(JSON.stringify({ code: e.code, op: e.op, message: e.message })); }
    }`;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-libxl-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('without the library, is XEN_UNAVAILABLE naming it and the fix', async () => {
    const shadow = join(dir, 'missing');
    await mkdir(shadow);
    await writeFile(join(shadow, 'libxenlight.so.4.17'), '');
    const lines = await runNode(script, { LD_LIBRARY_PATH: shadow });
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      const err = JSON.parse(line) as RawXenError;
      expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'dlopen' });
      expect(err.message).toMatch(/^libxenlight\.so\.4\.17 cannot be loaded .*apt-get install libxenmisc4\.17/);
    }
  });

  it("with another Xen's libxenlight only, is XEN_VERSION_MISMATCH telling to rebuild", async () => {
    const shadow = join(dir, 'other');
    await mkdir(shadow);
    await writeFile(join(shadow, 'libxenlight.so.4.17'), '');
    await writeFile(join(shadow, 'libxenlight.so.4.99'), '');
    const lines = await runNode(script, { LD_LIBRARY_PATH: shadow });
    const err = JSON.parse(lines[0] as string) as RawXenError;
    expect(err).toMatchObject({ code: 'XEN_VERSION_MISMATCH', op: 'dlopen' });
    expect(err.message).toMatch(/libxenlight\.so\.4\.99 but xenode was built against Xen 4\.17.*npm rebuild xenode/);
  });
});

describe.skipIf(!hasNativeAddon)('libxl in a worker thread', () => {
  it('validates, fails to open off a dom0, and exits cleanly', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const root = ${JSON.stringify(packageRoot)};
      const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);
      (async () => {
        const v = JSON.parse(await addon.validateLibxlJson('domain_config', '{"c_info":{"type":"pv","name":"w"}}'));
        let open = 'opened';
        try { const h = await addon.openLibxl(() => {}, () => {}); await h.close(); } catch (e) { open = e.code; }
        parentPort.postMessage(v.c_info.name + ' ' + open);
      })().catch((err) => parentPort.postMessage('error: ' + err.message));`;
    const worker = new Worker(code, { eval: true });
    const message = new Promise((resolve) => worker.once('message', resolve));
    const exit = new Promise((resolve) => worker.once('exit', resolve));
    expect(await message).toBe(onDom0 ? 'w opened' : 'w XEN_UNAVAILABLE');
    expect(await exit).toBe(0);
  });
});

/** A stand-in XlHandle recording calls; `fail` makes the next call reject with that raw error. */
function fakeHandle(): { handle: XlHandle; calls: unknown[][]; fail: { next?: RawXenError }; events: { emit?: (json: string) => void; error?: (e: RawXenError) => void } } {
  const calls: unknown[][] = [];
  const fail: { next?: RawXenError } = {};
  let closed = false;
  const events: { emit?: (json: string) => void; error?: (e: RawXenError) => void } = {};
  const record =
    (name: string, result: unknown) =>
    async (...args: unknown[]) => {
      calls.push([name, ...args]);
      if (closed) throw rawError({ code: 'XEN_CLOSED', op: `libxl_${name}`, message: `libxl_${name}: the handle is closed` });
      const f = fail.next;
      fail.next = undefined;
      if (f) throw f;
      return result;
    };
  const handle = {
    get closed() {
      return closed;
    },
    xenVersion: '4.17.7',
    createDomain: record('createDomain', 7),
    restoreDomain: record('restoreDomain', 8),
    destroyDomain: record('destroyDomain', undefined),
    shutdownDomain: record('shutdownDomain', undefined),
    rebootDomain: record('rebootDomain', undefined),
    pauseDomain: record('pauseDomain', undefined),
    unpauseDomain: record('unpauseDomain', undefined),
    listDomains: record('listDomains', '[{"current_memkb":1048576},{"domid":7}]'),
    domainInfo: record('domainInfo', '{"domid":7,"paused":true}'),
    domainConfig: record('domainConfig', '{"c_info":{"name":"tiny"}}'),
    setMemoryTarget: record('setMemoryTarget', undefined),
    setMaxMemory: record('setMaxMemory', undefined),
    setVcpuCount: record('setVcpuCount', undefined),
    addDevice: record('addDevice', undefined),
    removeDevice: record('removeDevice', undefined),
    suspendDomain: record('suspendDomain', undefined),
    remusStart: record('remusStart', undefined),
    watchDomain: record('watchDomain', 1),
    unwatchDomain: record('unwatchDomain', undefined),
    consoleTty: record('consoleTty', '/dev/pts/3'),
    renameDomain: record('renameDomain', undefined),
    close: async () => {
      calls.push(['close']);
      closed = true;
    },
  } as XlHandle;
  return { handle, calls, fail, events };
}

function fakeAddon(handle: XlHandle, events: { emit?: (json: string) => void; error?: (e: RawXenError) => void }): NativeAddon {
  return {
    xenVersion: '4.17.0',
    openXenStore: () => Promise.reject(new Error('unused')),
    XsHandle: class {} as unknown as NativeAddon['XsHandle'],
    openLibxl: async (onEvent: (eventJson: string) => void, onError: (err: RawXenError) => void) => {
      events.emit = onEvent;
      events.error = onError;
      return handle;
    },
    validateLibxlJson: async (_type: string, json: string) => json,
  } as Partial<NativeAddon> as NativeAddon;
}

describe('LibxlConnection over a fake handle', () => {
  it('passes JSON and numbers through, unpausing a created domain unless asked not to', async () => {
    const { handle, calls, events } = fakeHandle();
    const conn = await LibxlConnection.open(fakeAddon(handle, events));
    expect(conn.xenVersion).toBe('4.17.7');
    expect(await conn.createDomain({ c_info: { name: 'tiny' } })).toBe(7);
    expect(calls.slice(-2)).toEqual([
      ['createDomain', '{"c_info":{"name":"tiny"}}'],
      ['unpauseDomain', 7],
    ]);
    expect(await conn.createDomain('{}', { paused: true })).toBe(7);
    expect(calls.at(-1)).toEqual(['createDomain', '{}']);
    // libxl omits dom0's domid (a default); the wrapper fills it in.
    expect(await conn.listDomains()).toEqual([{ domid: 0, current_memkb: 1048576 }, { domid: 7 }]);
    expect(await conn.domainInfo(7)).toEqual({ domid: 7, paused: true });
    expect(await conn.domainConfig(7)).toEqual({ c_info: { name: 'tiny' } });
    await conn.setMemoryTarget(7, 65536);
    expect(calls.at(-1)).toEqual(['setMemoryTarget', 7, 65536, false, true]);
    await conn.setMemoryTarget(7, -1024, { relative: true, enforce: false });
    expect(calls.at(-1)).toEqual(['setMemoryTarget', 7, -1024, true, false]);
    await conn.suspendDomain(7, 12, { live: true });
    expect(calls.at(-1)).toEqual(['suspendDomain', 7, 12, true, false]);
    await conn.addDevice(7, 'disk', { vdev: 'xvdb' });
    expect(calls.at(-1)).toEqual(['addDevice', 7, 'disk', '{"vdev":"xvdb"}']);
    expect(await conn.consoleTty(7)).toBe('/dev/pts/3');
    expect(calls.at(-1)).toEqual(['consoleTty', 7, 0, 'pv']);
    await conn.close();
  });

  it('checks arguments before calling the addon', async () => {
    const { handle, calls, events } = fakeHandle();
    const conn = await LibxlConnection.open(fakeAddon(handle, events));
    const before = calls.length;
    expect(() => conn.pauseDomain('1' as unknown as number)).toThrow(TypeError);
    expect(() => conn.pauseDomain(-1)).toThrow(RangeError);
    expect(() => conn.pauseDomain(0x7ff0)).toThrow(RangeError);
    expect(() => conn.setMemoryTarget(1, -5)).toThrow(RangeError);
    expect(() => conn.setVcpuCount(1, 0)).toThrow(RangeError);
    expect(() => conn.suspendDomain(1, 1.5)).toThrow(RangeError);
    await expect(conn.createDomain([] as unknown as string)).rejects.toThrow(TypeError);
    expect(calls.length).toBe(before);
    await conn.close();
  });

  it('turns libxl failures into XenErrors keeping the libxl function and the domain', async () => {
    const { handle, fail, events } = fakeHandle();
    const conn = await LibxlConnection.open(fakeAddon(handle, events));
    fail.next = rawError({ code: 'XEN_ERROR_DOMAIN_NOTFOUND', op: 'libxl_domain_pause', domid: 9, message: 'XEN_ERROR_DOMAIN_NOTFOUND: libxl error -21 (libxl_domain_pause, domain 9)' });
    const err = await rejection(conn.pauseDomain(9));
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_ERROR_DOMAIN_NOTFOUND', op: 'libxl_domain_pause', domid: 9 });
    await conn.close();
  });

  it('after close, rejects with XEN_CLOSED; closing twice is harmless', async () => {
    const { handle, calls, events } = fakeHandle();
    const conn = await LibxlConnection.open(fakeAddon(handle, events));
    await Promise.all([conn.close(), conn.close()]);
    await conn.close();
    expect(calls.filter((c) => c[0] === 'close')).toHaveLength(1);
    expect(conn.closed).toBe(true);
    expect(await rejection(conn.listDomains())).toMatchObject({ code: 'XEN_CLOSED' });
  });

  it("emits libxl's domain events and disasters", async () => {
    const { handle, events } = fakeHandle();
    const conn = await LibxlConnection.open(fakeAddon(handle, events));
    const seen: unknown[] = [];
    conn.on('domain', (e) => seen.push(e));
    conn.on('error', (e) => seen.push(e));
    // As libxl_event_to_json prints them: the keyed union as "type.<name>", defaults omitted.
    events.emit?.('{"domid":3,"domuuid":"u","for_user":5,"type.domain_shutdown":{"shutdown_reason":2}}');
    events.emit?.('{"domid":3,"for_user":5,"type.domain_death":{}}');
    events.emit?.('{"domid":3,"for_user":5,"type.domain_shutdown":{}}');
    events.error?.(rawError({ code: 'XEN_LIBXL_DISASTER', op: 'libxl', message: 'XEN_LIBXL_DISASTER: libxl cannot go on' }));
    expect(seen[0]).toMatchObject({ type: 'domain_shutdown', domid: 3, watchId: 5, shutdownReason: 2 });
    expect(seen[1]).toMatchObject({ type: 'domain_death', domid: 3, watchId: 5 });
    expect(seen[2]).toMatchObject({ type: 'domain_shutdown', shutdownReason: 0 });
    expect(seen[3]).toBeInstanceOf(XenError);
    expect(seen[3]).toMatchObject({ code: 'XEN_LIBXL_DISASTER' });
    await conn.close();
  });

  it('the native backend opens libxl connections and closes them with itself', async () => {
    const { handle, calls, events } = fakeHandle();
    const backend = new NativeBackend(fakeAddon(handle, events));
    const conn = await backend.openLibxl();
    expect(await conn.domainInfo(7)).toMatchObject({ domid: 7 });
    await backend.close();
    expect(conn.closed).toBe(true);
    expect(calls.filter((c) => c[0] === 'close')).toHaveLength(1);
    expect(await rejection(backend.openLibxl())).toMatchObject({ code: 'XEN_CLOSED' });
  });

  it('leaves other errors alone', () => {
    const type = new TypeError('x');
    expect(fromLibxl(type)).toBe(type);
  });
});

describe('remusStart', () => {
  it('fills in the defaults xl remus sets, which libxl will not assume for colo', () => {
    expect(remusDefaults({ blackhole: 'True', allow_unsafe: 'True' })).toEqual({ blackhole: 'True', allow_unsafe: 'True', colo: 'False', userspace_colo_proxy: 'False', interval: 200 });
    expect(remusDefaults('{"interval":50,"colo":"<default>"}')).toEqual({ interval: 50, colo: 'False', userspace_colo_proxy: 'False', blackhole: 'False' });
    expect(remusDefaults({ colo: 'True' })).toEqual({ colo: 'True', userspace_colo_proxy: 'False', blackhole: 'False' });
  });

  it('refuses an info that is not a JSON object', () => {
    expect(() => remusDefaults('not json')).toThrow(TypeError);
    expect(() => remusDefaults([] as unknown as Record<string, unknown>)).toThrow(TypeError);
  });
});
