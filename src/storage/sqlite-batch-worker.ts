/**
 * The SQLite writer thread (see sqlite-batch-writer.ts). One connection, statements prepared once
 * per shape, one transaction per batch (and the single-use claims of the replay table, so that
 * their fsync is not on the event loop either). Values are bound parameters; identifiers come from the
 * constant column lists of batch.ts.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { batchRows, batchUpdates, CLAIM_SQL, missingRow, type Batch, type Claim, type Value } from './batch.js';
import { nameThisThread } from '../lib/worker-thread.js';

nameThisThread('ags-writer');

const { file, driver } = workerData as { file: string; driver: string };
const Database = createRequire(import.meta.url)(driver) as typeof BetterSqlite3;
const db = new Database(file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
// Keep the hot index pages in memory (64 MiB; the default is 2 MiB).
db.pragma('cache_size = -65536');
// The checkpoint thread copies the WAL back (sqlite-checkpoint-worker.ts): a checkpoint here, at the
// default of every 1,000 pages, fell inside a commit every ~70 ms under load and cost ~10 % of the
// throughput (bench/README.md). This one runs every 10,000 pages (~40 MiB of WAL), when that thread
// has copied all but its last ~10 ms: it copies the rest, and the WAL starts over.
db.pragma('wal_autocheckpoint = 10000');

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

function apply(b: Batch): void {
  for (const { table, columns, rows, suffix } of batchRows(b)) {
    if (!rows.length) continue;
    const stmt = prepared(`INSERT INTO "${table}" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})${suffix ?? ''}`);
    for (const r of rows) stmt.run(columns.map((c) => bind(r[c])));
  }
  for (const u of batchUpdates(b)) {
    const stmt = prepared(`UPDATE "${u.table}" SET ${u.set.map(([c]) => `"${c}" = ?`).join(', ')} WHERE "id" = ?${u.from === undefined ? '' : ' AND "state" = ?'}`);
    const params = [...u.set.map(([, v]) => bind(v)), u.id];
    if (u.from !== undefined) params.push(u.from);
    if (stmt.run(params).changes !== 1) throw new Error(missingRow(u));
  }
}

/** A single-use claim (batch.ts CLAIM_SQL): whether this one took the key. */
function claim(c: Claim): boolean {
  return prepared(CLAIM_SQL).run(c.provider, c.key, bind(c.createdAt), bind(c.expiresAt)).changes === 1;
}

type Msg = { id: number; batch: Batch } | { id: number; claim: Claim };
export type Outcome = { id: number; error?: string; claimed?: boolean };

/** One transaction for one message, or for every message that queued while the last one committed; a claim's answer. */
const commit = db.transaction((ms: Msg[]) => ms.map((m) => ('claim' in m ? claim(m.claim) : (apply(m.batch), undefined))));

/** Epoch of the last batch that failed: later batches of that epoch chain on rolled-back rows. */
let failedEpoch = -1;
const chainedOnFailure = (m: Msg) => 'batch' in m && m.batch.epoch === failedEpoch;

function one(m: Msg): Outcome {
  if (chainedOnFailure(m)) return { id: m.id, error: 'an earlier batch of this audit chain failed; resend' };
  try {
    const [claimed] = commit([m]);
    return claimed === undefined ? { id: m.id } : { id: m.id, claimed };
  } catch (e) {
    if ('batch' in m) failedEpoch = m.batch.epoch;
    return { id: m.id, error: (e as Error).message };
  }
}

/**
 * Group commit on this side too: every batch that arrived while the last transaction was syncing
 * is taken off the port at once (receiveMessageOnPort) and committed in one transaction, so the
 * thread never idles while work waits and the event loop can send each turn's records at once.
 * Batches stay in order. If the joint transaction fails, nothing of it was written and the
 * batches are committed one by one, in order, so only the one at fault (and those chained on it)
 * fail, exactly as if they had come one at a time.
 */
parentPort!.on('message', (first: Msg) => {
  const msgs = [first];
  for (let m; (m = receiveMessageOnPort(parentPort!)); ) msgs.push(m.message as Msg);
  let outcomes: Outcome[];
  if (msgs.length > 1 && !msgs.some(chainedOnFailure)) {
    try {
      const claimed = commit(msgs);
      outcomes = msgs.map((m, i) => (claimed[i] === undefined ? { id: m.id } : { id: m.id, claimed: claimed[i] }));
    } catch {
      outcomes = msgs.map(one);
    }
  } else outcomes = msgs.map(one);
  parentPort!.postMessage(outcomes);
});
