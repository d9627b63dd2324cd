import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Batch, BatchWriter } from './batch.js';

/**
 * SQLite group commits run on a writer thread with its own connection (WAL, synchronous=FULL):
 * better-sqlite3 is synchronous, and on the event loop each commit's fsync would stall every
 * request in flight. The thread answers each batch once its transaction is durable, or with the
 * error that rolled it back. Reads and the rare writes elsewhere keep using Prisma; WAL lets them
 * run beside the writer, and busy_timeout orders the writers.
 */
/** URL of tsx's ESM register API (development and tests only; the package's own `exports` entry). */
function tsxEsmApi(): string {
  const pkgJson = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgJson, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(join(dirname(pkgJson), pkg.exports['./esm/api']!.import.default)).href;
}

export function createSqliteBatchWriter(file: string): BatchWriter {
  const isTs = import.meta.url.endsWith('.ts');
  const script = new URL(`./sqlite-batch-worker.${isTs ? 'ts' : 'js'}`, import.meta.url);
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  let worker: Worker | undefined;
  let nextId = 0;
  const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  function failAll(e: Error): void {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  }

  function start(): Worker {
    // Under the test runner the source is TypeScript: the thread registers tsx, then loads it.
    const w = isTs
      ? new Worker(`import(${JSON.stringify(tsxEsmApi())}).then((m) => { m.register(); return import(${JSON.stringify(script.href)}); })`, { eval: true, workerData: { file, driver } })
      : new Worker(script, { workerData: { file, driver } });
    w.on('message', (m: { id: number; error?: string }) => {
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (!pending.size) w.unref();
      if (m.error === undefined) p.resolve();
      else p.reject(new Error(m.error));
    });
    w.on('error', (e) => failAll(new Error(`the SQLite writer thread failed: ${e.message}`)));
    w.on('exit', (code) => {
      if (worker === w) worker = undefined; // the next commit starts a new thread
      failAll(new Error(`the SQLite writer thread exited (code ${code}); nothing of this batch is known to be written`));
    });
    w.unref();
    return w;
  }

  return {
    // The thread applies batches in order: the next one is ready while the current one syncs.
    maxInFlight: 4,
    commit(batch: Batch): Promise<void> {
      worker ??= start();
      const id = ++nextId;
      const w = worker;
      return new Promise<void>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        w.ref(); // an idle writer does not keep the process alive; a busy one does
        w.postMessage({ id, batch });
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w) await w.terminate();
    },
  };
}
