// The end of `npm run build`, after tsc: what tsc does not do itself.
// - lib/native/addon.d.ts, the typed contract of the raw addon, is a declaration file, and
//   tsc never copies .d.ts inputs; the emitted declarations of lib/native/ import it.
// - the CLI entry point must be executable for `npx xenode` and the bin link.
import { chmodSync, copyFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
copyFileSync(join(root, 'lib', 'native', 'addon.d.ts'), join(root, 'dist', 'native', 'addon.d.ts'));
chmodSync(join(root, 'dist', 'cli', 'main.js'), 0o755);
