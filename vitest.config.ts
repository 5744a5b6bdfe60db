import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/xen/**', 'node_modules/**'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
