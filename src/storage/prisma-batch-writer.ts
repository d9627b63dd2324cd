import { Prisma } from './generated/sqlite/client.js';
import type { Db } from './prisma-client.js';
import { batchRows, batchUpdates, missingRow, type BatchWriter } from './batch.js';

/** PostgreSQL binds at most 65,535 parameters per statement (SQLite 32,766): stay below both. */
const MAX_BOUND_PARAMETERS = 30_000;

const ident = (name: string) => Prisma.raw(`"${name}"`);

/** PostgreSQL (and any Prisma client): multi-row INSERTs with bound parameters, in one Prisma transaction. */
export function createPrismaBatchWriter(db: Db): BatchWriter {
  return {
    // Batches could commit out of order on separate pool connections: one at a time.
    maxInFlight: 1,
    async commit(b) {
      const statements: Prisma.Sql[] = [];
      for (const { table, columns, rows, suffix } of batchRows(b)) {
        const size = Math.floor(MAX_BOUND_PARAMETERS / columns.length);
        for (let i = 0; i < rows.length; i += size) {
          const values = rows.slice(i, i + size).map((r) => Prisma.sql`(${Prisma.join(columns.map((c) => r[c] ?? null))})`);
          statements.push(
            Prisma.sql`INSERT INTO ${ident(table)} (${Prisma.join(columns.map(ident))}) VALUES ${Prisma.join(values)}${Prisma.raw(suffix ?? '')}`,
          );
        }
      }
      const updates = batchUpdates(b).map((u) => {
        const set = Prisma.join(u.set.map(([c, v]) => Prisma.sql`${ident(c)} = ${v}`));
        return { u, sql: Prisma.sql`UPDATE ${ident(u.table)} SET ${set} WHERE "id" = ${u.id}` };
      });
      if (!updates.length) {
        await db.$transaction(statements.map((s) => db.$executeRaw(s)));
        return;
      }
      // An update that finds no row is a bug upstream: roll the whole batch back rather than
      // audit a state change that did not happen. Inserts first, so an update may name a new row.
      await db.$transaction(async (tx) => {
        for (const s of statements) await tx.$executeRaw(s);
        for (const { u, sql } of updates) if ((await tx.$executeRaw(sql)) !== 1) throw new Error(missingRow(u.table, u.id));
      });
    },
    async close() {},
  };
}
