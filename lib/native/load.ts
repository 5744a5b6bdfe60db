/**
 * Loads the native addon, lazily: importing xenode never loads it; the first native
 * backend does. node-gyp-build picks build/Release (a local build) or a prebuild from
 * prebuilds/<platform>-<arch>/ that matches this Node and libc.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { debuglog } from 'node:util';
import { XenError } from '../errors.js';
import type { NativeAddon } from './addon.js';

const debug = debuglog('xenode:native');
const require = createRequire(import.meta.url);

/** The package root: two levels above this file, in lib/native/ and in dist/native/ alike. */
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let loaded: NativeAddon | undefined;

/**
 * The addon, loaded on the first call. Throws `XEN_UNAVAILABLE` with the fix when it is
 * not built or cannot be loaded; a failure is not remembered, so a rebuild is picked up.
 */
export function loadAddon(): NativeAddon {
  loaded ??= loadAddonFrom(packageRoot);
  return loaded;
}

/** Loads the addon of the package at `root`. @internal Exported for tests. */
export function loadAddonFrom(root: string): NativeAddon {
  const nodeGypBuild = require('node-gyp-build') as { (dir: string): unknown; path(dir: string): string };
  let file: string;
  try {
    file = nodeGypBuild.path(root);
  } catch (err) {
    debug('no addon under %s: %s', root, (err as Error).message);
    throw new XenError(
      'XEN_UNAVAILABLE',
      'the xenode native addon is not built (Xen headers were missing at install): apt-get install libxen-dev && npm rebuild xenode, or use { backend: "mock" }',
      { op: 'native.load', path: root, cause: err },
    );
  }
  debug('loading %s', file);
  let addon: unknown;
  try {
    addon = require(file);
  } catch (err) {
    const reason = ((err as Error).message ?? String(err)).split('\n')[0];
    throw new XenError(
      'XEN_UNAVAILABLE',
      `the xenode native addon at ${file} cannot be loaded (${reason}): rebuild it with npm rebuild xenode, or use { backend: "mock" }`,
      { op: 'native.load', path: file, cause: err },
    );
  }
  if (typeof (addon as NativeAddon | null)?.openXenStore !== 'function') {
    throw new XenError('XEN_UNAVAILABLE', `${file} is not the xenode addon: rebuild it with npm rebuild xenode`, { op: 'native.load', path: file });
  }
  return addon as NativeAddon;
}
