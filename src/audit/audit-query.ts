import { z } from 'zod';
import type { Db } from '../storage/prisma-client.js';
import type { AuditRow } from './audit-event.js';

export const AuditQuerySchema = z
  .object({
    workload: z.string().min(1).max(1024).optional(),
    human: z.string().min(1).max(1024).optional(),
    target: z.string().min(1).max(1024).optional(),
    outcome: z.enum(['allow', 'deny', 'error', 'success', 'failure']).optional(),
    action: z.string().min(1).max(128).optional(),
    task: z.string().min(1).max(128).optional(),
    fingerprint: z.string().min(1).max(200).optional(),
    since: z.coerce.date().optional(),
    until: z.coerce.date().optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().regex(/^[A-Za-z0-9_-]+$/).max(200).optional(),
  })
  .strict();
export type AuditQuery = z.infer<typeof AuditQuerySchema>;

interface Cursor { t: number; id: string }
const encodeCursor = (c: Cursor) => Buffer.from(JSON.stringify(c)).toString('base64url');
function decodeCursor(s: string): Cursor {
  const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Cursor;
  if (typeof c.t !== 'number' || typeof c.id !== 'string') throw new Error('bad cursor');
  return c;
}

/** Newest first; the cursor is opaque (time + id of the last record of the page). */
export async function queryAudit(db: Db, q: AuditQuery): Promise<{ records: AuditRow[]; nextCursor?: string }> {
  const where: Record<string, unknown>[] = [];
  if (q.workload) where.push({ workloadSubject: q.workload });
  if (q.human) where.push({ humanSubject: q.human });
  if (q.target) where.push({ target: q.target });
  if (q.outcome) where.push({ outcome: q.outcome });
  if (q.action) where.push({ action: q.action });
  if (q.task) where.push({ taskId: q.task });
  if (q.fingerprint) where.push({ credentialFingerprint: q.fingerprint });
  if (q.since) where.push({ time: { gte: q.since } });
  if (q.until) where.push({ time: { lt: q.until } });
  if (q.cursor) {
    let c: Cursor;
    try {
      c = decodeCursor(q.cursor);
    } catch {
      throw new InvalidCursor();
    }
    const t = new Date(c.t);
    where.push({ OR: [{ time: { lt: t } }, { time: t, id: { lt: c.id } }] });
  }
  const rows = (await db.auditEvent.findMany({
    where: { AND: where },
    orderBy: [{ time: 'desc' }, { id: 'desc' }],
    take: q.limit + 1,
  })) as AuditRow[];
  const page = rows.slice(0, q.limit);
  const last = page[page.length - 1];
  return { records: page, nextCursor: rows.length > q.limit && last ? encodeCursor({ t: last.time.getTime(), id: last.id }) : undefined };
}

export class InvalidCursor extends Error {
  constructor() {
    super('cursor is not valid');
  }
}

/** Wire form: dates as ISO strings, delegation chain parsed. */
export function auditRowToJson(r: AuditRow) {
  return {
    ...r,
    time: r.time.toISOString(),
    credentialExpiresAt: r.credentialExpiresAt?.toISOString() ?? null,
    delegationChain: r.delegationChain ? (JSON.parse(r.delegationChain) as string[]) : null,
  };
}
