/**
 * The SQLite checkpoint thread (see sqlite-batch-writer.ts): copies the WAL back into the database
 * file with PASSIVE checkpoints on its own connection, so neither the writer thread nor the event
 * loop stops for it. A PASSIVE checkpoint takes no lock that a writer waits for; it copies what is
 * committed and leaves the rest to the next round.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';

const { file, driver, everyMs } = workerData as { file: string; driver: string; everyMs: number };
const Database = createRequire(import.meta.url)(driver) as typeof BetterSqlite3;
const db = new Database(file);
db.pragma('busy_timeout = 5000');
db.pragma('wal_autocheckpoint = 0');

let failures = 0;
setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    failures = 0;
  } catch (e) {
    // Reported once per run of failures; the writer's own (rare) checkpoints still bound the WAL.
    if (failures++ === 0) parentPort!.postMessage({ error: (e as Error).message });
  }
}, everyMs);
