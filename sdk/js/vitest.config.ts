import { defineConfig } from 'vitest/config';

export default defineConfig({
  define: { __VERSION__: JSON.stringify('0.0.0-test') },
  test: {
    environment: 'happy-dom',
    include: ['test/**/*.test.ts'],
    // The e2e suite (e2e/) runs in real Chromium through node:test, not here.
    restoreMocks: true,
  },
});
