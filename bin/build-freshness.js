// Whether dist/ is older than the TypeScript it is built from (a source checkout after `git pull`
// or an edit, before `npm run build`). Used by the launcher (a warning) and the benchmarks (a
// rebuild). Plain JavaScript: the launcher runs before anything is compiled.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The compiled CLI's entry point under a project root: what the launcher imports. */
export const buildEntry = (root) => join(root, 'dist', 'cli', 'main.js');

function newestSourceMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSourceMtime(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * `missing` (no dist/ build), `stale` (a source file under src/ is newer than the build), or
 * `fresh`. Without src/ (an installed package, the container image) the build is all there is:
 * `fresh`.
 */
export function buildFreshness(root) {
  let builtAt;
  try {
    builtAt = statSync(buildEntry(root)).mtimeMs;
  } catch {
    return 'missing';
  }
  let srcAt;
  try {
    srcAt = newestSourceMtime(join(root, 'src'));
  } catch {
    return 'fresh';
  }
  return srcAt > builtAt ? 'stale' : 'fresh';
}
