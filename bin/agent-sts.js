#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in dist/ (built by `npm install` via the prepare script).
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildEntry, buildFreshness } from './build-freshness.js';
import { nodeVersionProblem } from './node-version.js';
const tooOld = nodeVersionProblem(process.versions.node);
if (tooOld) {
  console.error(tooOld);
  process.exit(1);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const build = buildFreshness(root);
if (build === 'missing') {
  console.error('agent-sts: dist/ is missing. Run `npm install` (or `npm run build`) in the project first.');
  process.exit(1);
}
if (build === 'stale')
  console.error('agent-sts: warning: src/ has changed since dist/ was built, so this runs the older build. Run `npm run build` to use the current source.');
const { runCli } = await import(pathToFileURL(buildEntry(root)).href);
await runCli(process.argv);
