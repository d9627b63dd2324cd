#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in dist/ (built by `npm install` via the prepare script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error('agent-sts: dist/ is missing. Run `npm install` (or `npm run build`) in the project first.');
  process.exit(1);
}
const { runCli } = await import(entry.href);
await runCli(process.argv);
