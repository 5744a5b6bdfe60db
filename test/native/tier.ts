/**
 * Gate of the native tier: tests that need the built addon. Locally, without it, they
 * skip with one visible warning; with CI=true its absence fails the file (see
 * test/helpers/tools.ts).
 */
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../../lib/native/load.js';
import { requireTool } from '../helpers/tools.js';

/** The package root, where node-gyp-build finds build/Release or prebuilds/. */
export const packageRoot = fileURLToPath(new URL('../..', import.meta.url));

export const hasNativeAddon = requireTool(
  'the xenode native addon',
  () => {
    loadAddon();
    return true;
  },
  { hint: 'apt-get install libxen-dev && npm rebuild xenode' },
);

/** Resolves once `check()` holds, polling every few milliseconds; rejects after `ms`. */
export async function waitFor(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}
