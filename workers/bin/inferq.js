#!/usr/bin/env node
// The `inferq` bin. It is committed, unlike dist/, so npm links it at install time even
// in a fresh clone that has not been built yet; it runs the built CLI.
import module from 'node:module';
import { existsSync } from 'node:fs';
import { URL } from 'node:url';

// Node 22.1+ keeps compiled code on disk between runs, which shortens every later start; Node 20 lacks it.
if (typeof module.enableCompileCache === 'function') module.enableCompileCache();

const cli = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(cli)) {
  await import(cli.href);
} else {
  process.stderr.write('inferq: the CLI is not built yet: run `npm run build` in the inferq repository first\n');
  process.exitCode = 1;
}
