import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Native modules (better-sqlite3) and the schema engine's WebAssembly are happier in processes than threads.
    pool: 'forks',
    // Each test file creates its own databases, so files may run in parallel.
    fileParallelism: true,
  },
});
