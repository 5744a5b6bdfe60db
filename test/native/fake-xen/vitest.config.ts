// Runs suite.fake.ts only; test/native/fake-xen.test.ts starts it with the fake libraries.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('../../..', import.meta.url)),
  test: { include: ['test/native/fake-xen/*.fake.ts'], testTimeout: 20_000 },
});
