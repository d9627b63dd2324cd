/**
 * The SQLite writer thread (see sqlite-batch.ts). One connection, statements prepared once
 * per shape, one transaction per batch. Values are bound parameters; identifiers come from the
 * constant column lists of batch.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { batchRows, batchUpdates, missingRow, type Batch, type Value } from './batch.js';

const { file, driver } = workerData as { file: string; driver: string };
const Database = createRequire(import.meta.url)(driver) as typeof BetterSqlite3;
const db = new Database(file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
// Keep the hot index pages in memory (64 MiB; the default is 2 MiB).
db.pragma('cache_size = -65536');

const statements = new Map<string, BetterSqlite3.Statement>();
function prepared(sql: string): BetterSqlite3.Statement {
  let s = statements.get(sql);
  if (!s) statements.set(sql, (s = db.prepare(sql)));
  return s;
}

/** Prisma's SQLite adapter stores DateTime as ISO 8601 with an explicit offset; so do we. */
function bind(v: Value | undefined): string | number | null {
  if (v === undefined || v === null) return null;
  return v instanceof Date ? v.toISOString().replace('Z', '+00:00') : v;
}

const write = db.transaction((b: Batch) => {
  for (const { table, columns, rows, suffix } of batchRows(b)) {
    if (!rows.length) continue;
    const stmt = prepared(`INSERT INTO "${table}" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})${suffix ?? ''}`);
    for (const r of rows) stmt.run(columns.map((c) => bind(r[c])));
  }
  for (const u of batchUpdates(b)) {
    const stmt = prepared(`UPDATE "${u.table}" SET ${u.set.map(([c]) => `"${c}" = ?`).join(', ')} WHERE "id" = ?`);
    if (stmt.run([...u.set.map(([, v]) => bind(v)), u.id]).changes !== 1) throw new Error(missingRow(u.table, u.id));
  }
});

/** Epoch of the last batch that failed: later batches of that epoch chain on rolled-back rows. */
let failedEpoch = -1;

parentPort!.on('message', ({ id, batch }: { id: number; batch: Batch }) => {
  if (batch.epoch === failedEpoch) {
    parentPort!.postMessage({ id, error: 'an earlier batch of this audit chain failed; resend' });
    return;
  }
  try {
    write(batch);
    parentPort!.postMessage({ id });
  } catch (e) {
    failedEpoch = batch.epoch;
    parentPort!.postMessage({ id, error: (e as Error).message });
  }
});
