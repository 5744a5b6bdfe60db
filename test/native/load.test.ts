/**
 * How the native layer loads and reports failure, without needing the addon built:
 * importing xenode loads nothing native, a missing or broken addon is XEN_UNAVAILABLE
 * with the fix, and raw addon errors become XenErrors.
 */
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import type { NativeAddon, RawXenError, XsHandle } from '../../lib/native/addon.js';
import { NativeBackend } from '../../lib/native/backend.js';
import { fromNative } from '../../lib/native/errors.js';
import { loadAddonFrom } from '../../lib/native/load.js';
import { rejection } from '../helpers/rejection.js';

function rawError(fields: Omit<RawXenError, 'name'>): RawXenError {
  const err = new Error(fields.message) as RawXenError;
  Object.assign(err, { name: 'XenError', ...fields });
  return err;
}

describe('loading the native addon', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-load-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('does not happen when xenode is imported', async () => {
    await import('../../lib/index.js');
    const cache = createRequire(import.meta.url).cache;
    expect(Object.keys(cache).filter((file) => file.endsWith('.node'))).toEqual([]);
  });

  it('is XEN_UNAVAILABLE with the fix when the addon is not built', () => {
    const root = join(dir, 'not-built');
    let err: unknown;
    try {
      loadAddonFrom(root);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'native.load' });
    expect((err as Error).message).toBe(
      'the xenode native addon is not built (Xen headers were missing at install): apt-get install libxen-dev && npm rebuild xenode, or use { backend: "mock" }',
    );
  });

  it('is XEN_UNAVAILABLE naming the file when the addon cannot be loaded', async () => {
    const root = join(dir, 'broken');
    await mkdir(join(root, 'build', 'Release'), { recursive: true });
    await writeFile(join(root, 'build', 'Release', 'xenode.node'), 'not a shared object');
    expect(() => loadAddonFrom(root)).toThrow(/xenode native addon at .*xenode\.node cannot be loaded .*npm rebuild xenode/);
  });
});

describe('raw addon errors', () => {
  it('become XenErrors named after the contract operation', () => {
    const err = fromNative(
      rawError({ code: 'ENOENT', errno: 2, op: 'xs_read', path: '/a', message: 'ENOENT: no such file or directory (xs_read /a)' }),
      'xenstore.read',
      '/a',
    );
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ name: 'XenError', code: 'ENOENT', errno: 2, op: 'xenstore.read', path: '/a' });
    expect((err as Error).message).toBe('ENOENT: no such node (xenstore.read /a)');
  });

  it('keep the failed step of XEN_UNAVAILABLE, which tells the fix', () => {
    const raw = rawError({ code: 'XEN_UNAVAILABLE', errno: 2, op: 'xs_open', path: '/run/xs.sock', message: 'cannot connect to xenstored (ENOENT)' });
    expect(fromNative(raw, 'xenstore.connect')).toMatchObject({ code: 'XEN_UNAVAILABLE', errno: 2, op: 'xs_open', path: '/run/xs.sock', message: raw.message });
  });

  it('keep XEN_ codes and their messages, re-labelled with the operation', () => {
    const err = fromNative(rawError({ code: 'XEN_CLOSED', op: 'xs_write', path: '/b', message: 'xs_write: the handle is closed' }), 'xenstore.write', '/b');
    expect(err).toMatchObject({ code: 'XEN_CLOSED', op: 'xenstore.write', path: '/b', message: 'xenstore.write: the handle is closed' });
  });

  it('leave argument errors alone', () => {
    const type = new TypeError('path must be a string');
    expect(fromNative(type, 'xenstore.read')).toBe(type);
  });
});

describe('the native backend over an addon whose library is missing', () => {
  const unavailable = rawError({
    code: 'XEN_UNAVAILABLE',
    op: 'dlopen',
    message: "libxenstore.so.4 cannot be loaded (libxenstore.so.4: cannot open shared object file): this needs Xen's libraries",
  });
  // Only the XenStore part: the hypervisor interfaces are not used here.
  const addon = {
    xenVersion: '4.17.0',
    openXenStore: () => Promise.reject(unavailable),
    XsHandle: class {} as unknown as NativeAddon['XsHandle'],
  } as unknown as NativeAddon;

  it('rejects openXenStore with XEN_UNAVAILABLE', async () => {
    const backend = new NativeBackend(addon);
    expect(backend.name).toBe('native');
    const err = await rejection(backend.openXenStore());
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'dlopen' });
    expect((err as Error).message).toContain('libxenstore.so.4');
    await backend.close();
    await backend.close();
    expect(await rejection(backend.openXenStore())).toMatchObject({ code: 'XEN_CLOSED' });
  });

  it('closes the connections it opened', async () => {
    let closed = 0;
    const handle = { transport: 'socket', closed: false, close: async () => void closed++ } as unknown as XsHandle;
    const backend = new NativeBackend({ ...addon, openXenStore: async () => handle });
    const conn = await backend.openXenStore();
    expect(conn.domid).toBe(0);
    await backend.close();
    expect(closed).toBe(1);
  });
});
