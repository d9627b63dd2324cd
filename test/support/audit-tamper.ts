// What an attacker with write access to the database does to the issuance log, as plain SQL on the
// table (bound parameters; identifiers are constants), and how each is undone so a test can go on.
import { hashAuditRow, type AuditRow } from '../../src/audit/audit-event.js';
import type { Database } from '../../src/storage/prisma-client.js';

/** Runs SQL written with `?` placeholders on either store. */
export function sql(d: Database, text: string, ...params: (string | number | null)[]): Promise<number> {
  let i = 0;
  const q = d.provider === 'postgresql' ? text.replace(/\?/g, () => `$${++i}`) : text;
  return d.db.$executeRawUnsafe(q, ...params);
}

export const rowAt = async (d: Database, chainId: string, seq: number): Promise<AuditRow> =>
  (await d.db.auditEvent.findUniqueOrThrow({ where: { chainId_seq: { chainId, seq } } })) as AuditRow;

/** Every column of a row, for putting it back exactly. */
const restoreRow = (d: Database, r: AuditRow) => d.db.auditEvent.create({ data: r });

/** Changes one field of record `seq`. */
export async function editRecord(d: Database, chainId: string, seq: number): Promise<{ row: AuditRow; undo(): Promise<void> }> {
  const row = await rowAt(d, chainId, seq);
  await sql(d, 'UPDATE "AuditEvent" SET "workloadSubject" = ? WHERE "id" = ?', 'test://someone-else', row.id);
  return { row, undo: async () => void (await sql(d, 'UPDATE "AuditEvent" SET "workloadSubject" = ? WHERE "id" = ?', row.workloadSubject, row.id)) };
}

/** Deletes record `seq`. */
export async function deleteRecord(d: Database, chainId: string, seq: number): Promise<{ row: AuditRow; undo(): Promise<void> }> {
  const row = await rowAt(d, chainId, seq);
  await sql(d, 'DELETE FROM "AuditEvent" WHERE "id" = ?', row.id);
  return { row, undo: async () => void (await restoreRow(d, row)) };
}

/** Swaps the positions of records `a` < `b` (their sequence numbers). */
export async function swapRecords(d: Database, chainId: string, a: number, b: number): Promise<{ rows: [AuditRow, AuditRow]; undo(): Promise<void> }> {
  const ra = await rowAt(d, chainId, a);
  const rb = await rowAt(d, chainId, b);
  const swap = async (x: AuditRow, y: AuditRow) => {
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = ? WHERE "id" = ?', -1, x.id);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = ? WHERE "id" = ?', x.seq, y.id);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = ? WHERE "id" = ?', y.seq, x.id);
  };
  await swap(ra, rb);
  return { rows: [ra, rb], undo: () => swap({ ...rb, seq: a }, { ...ra, seq: b }) };
}

/** Renumbers records >= `from` by `delta` (two steps: the unique (chainId, seq) index is checked row by row). */
async function shift(d: Database, chainId: string, from: number, delta: number): Promise<void> {
  await sql(d, 'UPDATE "AuditEvent" SET "seq" = -("seq" + ?) WHERE "chainId" = ? AND "seq" >= ?', delta, chainId, from);
  await sql(d, 'UPDATE "AuditEvent" SET "seq" = -"seq" WHERE "chainId" = ? AND "seq" < 0', chainId);
}

/**
 * Inserts a forged record at position `seq` the way a careful attacker would: later records
 * renumbered, the forged one hashed and linked to its predecessor, the chain head moved on.
 */
export async function insertRecord(d: Database, chainId: string, seq: number): Promise<{ id: string; undo(): Promise<void> }> {
  const prev = await rowAt(d, chainId, seq - 1);
  const head = await d.db.auditChainHead.findUniqueOrThrow({ where: { chainId } });
  await shift(d, chainId, seq, 1);
  const forged: Omit<AuditRow, 'hash'> = { ...prev, id: `forged-${seq}`, seq, requestId: 'forged', outcome: 'allow', prevHash: prev.hash };
  await d.db.auditEvent.create({ data: { ...forged, hash: hashAuditRow(forged) } });
  await sql(d, 'UPDATE "AuditChainHead" SET "seq" = ? WHERE "chainId" = ?', head.seq + 1, chainId);
  return {
    id: forged.id,
    undo: async () => {
      await sql(d, 'DELETE FROM "AuditEvent" WHERE "id" = ?', forged.id);
      await shift(d, chainId, seq + 1, -1);
      await sql(d, 'UPDATE "AuditChainHead" SET "seq" = ? WHERE "chainId" = ?', head.seq, chainId);
    },
  };
}

/** Deletes the last `n` records and moves the chain head back so that it agrees (only a checkpoint can tell). */
export async function truncateTail(d: Database, chainId: string, n: number): Promise<{ lastKept: number; undo(): Promise<void> }> {
  const head = await d.db.auditChainHead.findUniqueOrThrow({ where: { chainId } });
  const rows = (await d.db.auditEvent.findMany({ where: { chainId, seq: { gt: head.seq - n } }, orderBy: { seq: 'asc' } })) as AuditRow[];
  const lastKept = await rowAt(d, chainId, head.seq - n);
  await sql(d, 'DELETE FROM "AuditEvent" WHERE "chainId" = ? AND "seq" > ?', chainId, head.seq - n);
  await sql(d, 'UPDATE "AuditChainHead" SET "seq" = ?, "hash" = ? WHERE "chainId" = ?', lastKept.seq, lastKept.hash, chainId);
  return {
    lastKept: lastKept.seq,
    undo: async () => {
      for (const r of rows) await restoreRow(d, r);
      await sql(d, 'UPDATE "AuditChainHead" SET "seq" = ?, "hash" = ? WHERE "chainId" = ?', head.seq, head.hash, chainId);
    },
  };
}
