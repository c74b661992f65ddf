import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests start real servers and share one PostgreSQL; files run in parallel on
    // separate databases/schemas, so two workers fit the 2-core machines.
    maxWorkers: 2,
    globalSetup: ['test/support/global-setup.ts'],
  },
});
