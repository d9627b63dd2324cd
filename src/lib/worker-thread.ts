import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** URL of tsx's ESM register API (development and tests only; the package's own `exports` entry). */
function tsxEsmApi(): string {
  const pkgJson = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgJson, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(join(dirname(pkgJson), pkg.exports['./esm/api']!.import.default)).href;
}

/**
 * Starts the worker module `<name>.js` next to `from` (an `import.meta.url`). Under the test
 * runner the source is TypeScript: the thread registers tsx first, then imports `<name>.ts`.
 */
export function startModuleWorker(from: string, name: string, workerData: unknown): Worker {
  const isTs = from.endsWith('.ts');
  const script = new URL(`./${name}.${isTs ? 'ts' : 'js'}`, from);
  return isTs
    ? new Worker(`import(${JSON.stringify(tsxEsmApi())}).then((m) => { m.register(); return import(${JSON.stringify(script.href)}); })`, { eval: true, workerData })
    : new Worker(script, { workerData });
}

/**
 * Names the calling thread for the operating system (`/proc/thread-self/comm`, Linux; at most 15
 * bytes), so `top -H`, `ps -L` and `/proc/<pid>/task/*\/comm` tell the broker's threads apart.
 * Best effort: elsewhere, or when /proc is not mounted, the thread keeps its name.
 */
export function nameThisThread(name: string): boolean {
  try {
    writeFileSync('/proc/thread-self/comm', name.slice(0, 15));
    return true;
  } catch {
    return false;
  }
}
