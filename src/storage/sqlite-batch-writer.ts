import type { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { startModuleWorker } from '../lib/worker-thread.js';
import type { Batch, BatchWriter, Claim } from './batch.js';
import type { Outcome } from './sqlite-batch-worker.js';

/**
 * SQLite group commits run on a writer thread with its own connection (WAL, synchronous=FULL):
 * better-sqlite3 is synchronous, and on the event loop each commit's fsync would stall every
 * request in flight. The thread answers each batch once its transaction is durable, or with the
 * error that rolled it back. Reads and the rare writes elsewhere keep using Prisma; WAL lets them
 * run beside the writer, and busy_timeout orders the writers. A third thread checkpoints the WAL
 * (sqlite-checkpoint-worker.ts) so that no commit and no request pays for it.
 */
/** How often the checkpoint thread copies the WAL back into the database file: while writes come, and while idle. */
const CHECKPOINT_BUSY_MS = 10;
const CHECKPOINT_IDLE_MS = 250;

export function createSqliteBatchWriter(file: string): BatchWriter {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  let worker: Worker | undefined;
  let nextId = 0;
  const pending = new Map<number, { resolve: (o: Outcome) => void; reject: (e: Error) => void }>();
  let checkpointer: Worker | undefined;

  function failAll(e: Error): void {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  }

  function start(): Worker {
    const w = startModuleWorker(import.meta.url, 'sqlite-batch-worker', { file, driver });
    checkpointer ??= startCheckpointer();
    w.on('message', (outcomes: Outcome[]) => {
      for (const m of outcomes) {
        const p = pending.get(m.id);
        if (!p) continue;
        pending.delete(m.id);
        if (m.error === undefined) p.resolve(m);
        else p.reject(new Error(m.error));
      }
      if (!pending.size) w.unref();
    });
    w.on('error', (e) => failAll(new Error(`the SQLite writer thread failed: ${e.message}`)));
    w.on('exit', (code) => {
      if (worker === w) worker = undefined; // the next commit starts a new thread
      failAll(new Error(`the SQLite writer thread exited (code ${code}); nothing of this batch is known to be written`));
    });
    w.unref();
    return w;
  }

  function startCheckpointer(): Worker {
    const c = startModuleWorker(import.meta.url, 'sqlite-checkpoint-worker', { file, driver, busyMs: CHECKPOINT_BUSY_MS, idleMs: CHECKPOINT_IDLE_MS });
    c.on('message', (m: { error: string }) => process.emitWarning(`SQLite checkpoint failed (the writer still bounds the WAL): ${m.error}`));
    c.on('error', () => {});
    c.on('exit', () => {
      if (checkpointer === c) checkpointer = undefined; // the next writer thread starts another
    });
    c.unref();
    return c;
  }

  function send(msg: { batch: Batch } | { claim: Claim }): Promise<Outcome> {
    worker ??= start();
    const id = ++nextId;
    const w = worker;
    return new Promise<Outcome>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      w.ref(); // an idle writer does not keep the process alive; a busy one does
      w.postMessage({ id, ...msg });
    });
  }

  return {
    // The thread applies batches in order and joins those that queue while one syncs into the
    // next transaction: send every batch at once, never wait for a slot.
    maxInFlight: Infinity,
    async commit(batch: Batch): Promise<void> {
      await send({ batch });
    },
    async claimOnce(claim: Claim): Promise<boolean> {
      return (await send({ claim })).claimed === true;
    },
    async close() {
      const w = worker;
      worker = undefined;
      const c = checkpointer;
      checkpointer = undefined;
      await c?.terminate();
      if (w) await w.terminate();
    },
  };
}
