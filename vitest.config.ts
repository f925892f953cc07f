import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { PlainSummaryReporter } from './test/infra/summary-reporter.js';

const src = (ws: string): string => fileURLToPath(new URL(`./${ws}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // Workspace packages resolve to their TypeScript sources (as the "inferq-source" export condition does for tsc).
    alias: {
      '@inferq/shared': src('shared'),
      '@inferq/producer': src('producer'),
      '@inferq/workers': src('workers'),
    },
  },
  test: {
    include: ['shared/src/**/*.test.ts', 'producer/src/**/*.test.ts', 'workers/src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/infra/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 300_000,
    pool: 'forks',
    reporters: ['default', new PlainSummaryReporter()],
  },
});
