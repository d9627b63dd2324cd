import { Prisma } from './generated/sqlite/client.js';
import type { Db } from './prisma-client.js';
import { batchRows, batchUpdates, missingRow, type Batch, type BatchWriter } from './batch.js';

/** PostgreSQL binds at most 65,535 parameters per statement (SQLite 32,766): stay below both. */
const MAX_BOUND_PARAMETERS = 30_000;

/** Batches in flight at once: the next one's inserts run while the current one commits. */
const PIPELINE = 2;

const ident = (name: string) => Prisma.raw(`"${name}"`);

export const EARLIER_BATCH_FAILED = 'an earlier batch of this audit chain failed; resend';

/**
 * PostgreSQL (and any Prisma client): multi-row INSERTs with bound parameters, one interactive
 * transaction per batch, two batches in flight on separate pool connections. Order is kept by the
 * chain head: a batch writes its rows, then waits until the batch before it has settled, and
 * moves the head only from the sequence number its first record chains on (`UPDATE … WHERE seq =
 * prev`, or a plain INSERT for a chain's first batch). A batch chained on one that failed finds
 * the head elsewhere and rolls back whole, so the audit log's epochs see failures in order, as
 * they do with the SQLite writer thread.
 */
export function createPrismaBatchWriter(db: Db): BatchWriter {
  /** Settles when the last batch handed to commit() has settled; carries its epoch and outcome. */
  let last: Promise<{ epoch: number; ok: boolean }> = Promise.resolve({ epoch: -1, ok: true });

  function statementsOf(b: Batch): Prisma.Sql[] {
    const statements: Prisma.Sql[] = [];
    for (const { table, columns, rows } of batchRows(b)) {
      if (table === 'AuditChainHead') continue;
      const size = Math.floor(MAX_BOUND_PARAMETERS / columns.length);
      for (let i = 0; i < rows.length; i += size) {
        const values = rows.slice(i, i + size).map((r) => Prisma.sql`(${Prisma.join(columns.map((c) => r[c] ?? null))})`);
        statements.push(Prisma.sql`INSERT INTO ${ident(table)} (${Prisma.join(columns.map(ident))}) VALUES ${Prisma.join(values)}`);
      }
    }
    return statements;
  }

  async function write(b: Batch, before: Promise<{ epoch: number; ok: boolean }>): Promise<void> {
    const statements = statementsOf(b);
    const updates = batchUpdates(b).map((u) => {
      const set = Prisma.join(u.set.map(([c, v]) => Prisma.sql`${ident(c)} = ${v}`));
      return { u, sql: Prisma.sql`UPDATE ${ident(u.table)} SET ${set} WHERE "id" = ${u.id}${u.from === undefined ? Prisma.empty : Prisma.sql` AND "state" = ${u.from}`}` };
    });
    const first = b.auditRows[0]?.seq;
    const prevSeq = typeof first === 'number' ? first - 1 : undefined;
    const { chainId, seq, hash } = b.head;
    await db.$transaction(async (tx) => {
      for (const s of statements) await tx.$executeRaw(s);
      const previous = await before;
      if (!previous.ok && previous.epoch === b.epoch) throw new Error(EARLIER_BATCH_FAILED);
      if (prevSeq === 0 || prevSeq === undefined) {
        // A chain's first batch creates the head; it must not exist yet (`WHERE FALSE`: no update).
        const n = await tx.$executeRaw`INSERT INTO "AuditChainHead" ("chainId", "seq", "hash", "updatedAt") VALUES (${chainId}, ${seq}, ${hash}, ${b.time})
          ON CONFLICT ("chainId") DO UPDATE SET "seq" = excluded."seq", "hash" = excluded."hash", "updatedAt" = excluded."updatedAt"${prevSeq === 0 ? Prisma.sql` WHERE FALSE` : Prisma.empty}`;
        if (n !== 1) throw new Error(`audit chain ${chainId} already has records; nothing of this batch was written`);
      } else {
        const n = await tx.$executeRaw`UPDATE "AuditChainHead" SET "seq" = ${seq}, "hash" = ${hash}, "updatedAt" = ${b.time} WHERE "chainId" = ${chainId} AND "seq" = ${prevSeq}`;
        if (n !== 1) throw new Error(EARLIER_BATCH_FAILED);
      }
      // An update that finds no row is a bug upstream: roll the whole batch back rather than
      // audit a state change that did not happen. Inserts first, so an update may name a new row.
      for (const { u, sql } of updates) if ((await tx.$executeRaw(sql)) !== 1) throw new Error(missingRow(u));
    });
  }

  return {
    maxInFlight: PIPELINE,
    commit(b) {
      const before = last;
      const done = write(b, before);
      last = done.then(
        () => ({ epoch: b.epoch, ok: true }),
        () => ({ epoch: b.epoch, ok: false }),
      );
      return done;
    },
    async close() {
      await last;
    },
  };
}
