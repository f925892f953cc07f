import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';
import { PlainSummaryReporter } from './test/infra/summary-reporter.js';

const src = (ws: string): string => fileURLToPath(new URL(`./${ws}/src/index.ts`, import.meta.url));

/** Suites under test/ that need no server (they run with the unit tests). */
const UNIT_IN_TEST = ['test/package-deps.test.ts', 'test/examples.test.ts', 'test/infra/**/*.test.ts', 'test/helpers/**/*.test.ts'];

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
    testTimeout: 60_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // Workers spawned by the suites serve no HTTP port unless a suite asks for one (many run at once).
    env: { INFERQ_HTTP_PORT: '0' },
    reporters: ['default', new PlainSummaryReporter()],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['shared/src/**/*.test.ts', 'producer/src/**/*.test.ts', 'workers/src/**/*.test.ts', ...UNIT_IN_TEST],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...UNIT_IN_TEST],
          // Starts each server the first time a suite asks for it (test/infra/servers.ts).
          globalSetup: ['test/infra/global-setup.ts'],
        },
      },
    ],
  },
});
