/**
 * The SQLite checkpoint thread (see sqlite-batch-writer.ts): copies the WAL back into the database
 * file with PASSIVE checkpoints on its own connection, so neither the writer thread nor the event
 * loop stops for it. A PASSIVE checkpoint takes no lock that a writer waits for; it copies what is
 * committed and leaves the rest to the next round.
 *
 * Under load it runs every 10 ms. The WAL only starts over when a checkpoint has copied every
 * frame, which under constant writes happens in the writer's own checkpoint (every 10,000 pages):
 * that one stops the writer for whatever this thread has not copied yet. Copied every 100 ms, that
 * was ~11 ms and held every request in flight (the p99 of the exchange bench); every 10 ms it is
 * ~1-2 ms (bench/README.md). While the WAL is idle, it looks every 250 ms.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { nameThisThread } from '../lib/worker-thread.js';

nameThisThread('ags-checkpoint');

const { file, driver, busyMs, idleMs } = workerData as { file: string; driver: string; busyMs: number; idleMs: number };
const Database = createRequire(import.meta.url)(driver) as typeof BetterSqlite3;
const db = new Database(file);
db.pragma('busy_timeout = 5000');
db.pragma('wal_autocheckpoint = 0');

let failures = 0;
let lastLog = -1;
function round(): void {
  let next = idleMs;
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    // The WAL grew since the last round: writes are coming, look again soon.
    if (r && r.log !== lastLog) next = busyMs;
    lastLog = r?.log ?? -1;
    failures = 0;
  } catch (e) {
    // Reported once per run of failures; the writer's own (rare) checkpoints still bound the WAL.
    if (failures++ === 0) parentPort!.postMessage({ error: (e as Error).message });
  }
  setTimeout(round, next);
}
round();
