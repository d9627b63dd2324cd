import { z } from 'zod';
import type { Db } from '../storage/prisma-client.js';
import type { AuditRow } from './audit-event.js';
import { FINGERPRINT_JTI_PATTERN, fingerprintCandidates } from '../lib/crypto.js';

/**
 * A credential fingerprint as the broker stores it: `sha256:` + 64 hex digits (SHA-256 of the
 * issued `access_token` value), or `jwt:<jti>:sha256:<64 hex>` for a JWT agent-sts signed
 * (lib/crypto.ts `ownJwtFingerprint`); `agent-sts audit fingerprint` computes it from a token.
 * Anything else is refused without being echoed: a raw token pasted here must not end up in an
 * error or in the `audit.read` record of this very query.
 */
const Fingerprint = z
  .string()
  .max(200)
  .regex(
    new RegExp(`^(jwt:${FINGERPRINT_JTI_PATTERN}:)?(sha256:)?[0-9a-fA-F]{64}$`),
    'must be sha256:<64 hex digits> or jwt:<jti>:sha256:<64 hex digits>; compute it from a token with `agent-sts audit fingerprint`',
  )
  .transform((s) => {
    const jwt = /^jwt:[^:]+:/.exec(s)?.[0] ?? '';
    return `${jwt}sha256:${s.slice(jwt.length).replace(/^sha256:/, '').toLowerCase()}`;
  });

/** The filters an auditor can combine (all exact matches; `since` inclusive, `until` exclusive). */
export const AuditFilterSchema = z
  .object({
    workload: z.string().min(1).max(1024).optional(),
    human: z.string().min(1).max(1024).optional(),
    target: z.string().min(1).max(1024).optional(),
    /** Credential issuer instance. */
    issuer: z.string().min(1).max(128).optional(),
    outcome: z.enum(['allow', 'deny', 'error', 'success', 'failure']).optional(),
    action: z.string().min(1).max(128).optional(),
    policyVersion: z.string().min(1).max(200).optional(),
    task: z.string().min(1).max(128).optional(),
    fingerprint: Fingerprint.optional(),
    since: z.coerce.date().optional(),
    until: z.coerce.date().optional(),
  })
  .strict();
export type AuditFilter = z.infer<typeof AuditFilterSchema>;

export const AuditQuerySchema = AuditFilterSchema.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().regex(/^[A-Za-z0-9_-]+$/).max(200).optional(),
}).strict();
export type AuditQuery = z.infer<typeof AuditQuerySchema>;

export const AuditExportSchema = AuditFilterSchema.extend({
  /** Oldest first (default) or newest first. */
  order: z.enum(['asc', 'desc']).default('asc'),
}).strict();
export type AuditExport = z.infer<typeof AuditExportSchema>;

export type Order = 'asc' | 'desc';

interface Cursor { t: number; id: string }
const encodeCursor = (c: Cursor) => Buffer.from(JSON.stringify(c)).toString('base64url');
function decodeCursor(s: string): Cursor {
  const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Cursor;
  if (typeof c.t !== 'number' || !Number.isFinite(c.t) || typeof c.id !== 'string') throw new Error('bad cursor');
  return c;
}

export class InvalidCursor extends Error {
  constructor() {
    super('cursor is not valid');
  }
}

function filterWhere(q: AuditFilter): Record<string, unknown>[] {
  const where: Record<string, unknown>[] = [];
  if (q.workload) where.push({ workloadSubject: q.workload });
  if (q.human) where.push({ humanSubject: q.human });
  if (q.target) where.push({ target: q.target });
  if (q.issuer) where.push({ issuerName: q.issuer });
  if (q.outcome) where.push({ outcome: q.outcome });
  if (q.action) where.push({ action: q.action });
  if (q.policyVersion) where.push({ policyVersion: q.policyVersion });
  if (q.task) where.push({ taskId: q.task });
  if (q.fingerprint) where.push({ credentialFingerprint: { in: fingerprintCandidates(q.fingerprint) } });
  if (q.since) where.push({ time: { gte: q.since } });
  if (q.until) where.push({ time: { lt: q.until } });
  return where;
}

/**
 * Keyset condition: strictly after (time, id) in the given order. Written as `time <= t AND (time < t
 * OR id < c)` rather than `time < t OR (time = t AND id < c)`: the outer bound lets both databases
 * walk the time index (or a subject/target + time index) from the cursor on and stop at the page
 * size; the plain OR form sorted the whole remaining range on SQLite for every page.
 */
function after(c: Cursor, order: Order): Record<string, unknown> {
  const t = new Date(c.t);
  const [strict, loose] = order === 'desc' ? (['lt', 'lte'] as const) : (['gt', 'gte'] as const);
  return { AND: [{ time: { [loose]: t } }, { OR: [{ time: { [strict]: t } }, { id: { [strict]: c.id } }] }] };
}

async function page(db: Db, filter: AuditFilter, order: Order, limit: number, from?: Cursor): Promise<{ records: AuditRow[]; next?: Cursor }> {
  const where = filterWhere(filter);
  if (from) where.push(after(from, order));
  const rows = (await db.auditEvent.findMany({ where: { AND: where }, orderBy: [{ time: order }, { id: order }], take: limit + 1 })) as AuditRow[];
  const records = rows.slice(0, limit);
  const last = records[records.length - 1];
  return { records, next: rows.length > limit && last ? { t: last.time.getTime(), id: last.id } : undefined };
}

/** Newest first; the cursor is opaque (time + id of the last record of the page: keyset pagination). */
export async function queryAudit(db: Db, q: AuditQuery): Promise<{ records: AuditRow[]; nextCursor?: string }> {
  let from: Cursor | undefined;
  if (q.cursor) {
    try {
      from = decodeCursor(q.cursor);
    } catch {
      throw new InvalidCursor();
    }
  }
  const { limit, cursor: _cursor, ...filter } = q;
  const p = await page(db, filter, 'desc', limit, from);
  return { records: p.records, nextCursor: p.next ? encodeCursor(p.next) : undefined };
}

/**
 * Every matching record, one page at a time (keyset pagination on time + id, so each page is an
 * index range scan however deep the export is). Lazy: the next page is read only when the consumer
 * asks for it, which is what gives a streaming answer its backpressure.
 */
export async function* auditPages(db: Db, filter: AuditFilter, opts: { order?: Order; pageSize?: number } = {}): AsyncGenerator<AuditRow[]> {
  const order = opts.order ?? 'asc';
  const pageSize = opts.pageSize ?? 1000;
  let from: Cursor | undefined;
  do {
    const p = await page(db, filter, order, pageSize, from);
    if (p.records.length) yield p.records;
    from = p.next;
  } while (from);
}

/** How many records match (for progress: "done / total"). */
export const countAudit = (db: Db, filter: AuditFilter): Promise<number> => db.auditEvent.count({ where: { AND: filterWhere(filter) } });

/** One line for the `audit.read` record: which filters an auditor used (values are never secrets: fingerprints only). */
export function describeFilters(q: Partial<AuditQuery & AuditExport>): string {
  const parts: string[] = [];
  for (const k of ['workload', 'human', 'target', 'issuer', 'outcome', 'action', 'policyVersion', 'task', 'fingerprint'] as const) if (q[k]) parts.push(`${k}=${q[k]}`);
  if (q.since) parts.push(`since=${q.since.toISOString()}`);
  if (q.until) parts.push(`until=${q.until.toISOString()}`);
  if (q.cursor) parts.push('next page');
  const s = parts.length ? parts.join(', ') : 'no filter';
  return s.length > 600 ? `${s.slice(0, 600)}…` : s;
}

/** The task and credential a record refers to, as they are now. */
export interface RecordLinks {
  task: { id: string; state: string; deadline: string | null; endedAt: string | null } | null;
  credential: { id: string; state: string; expiresAt: string | null; revokedAt: string | null } | null;
}

/**
 * Links of a page of records to their task and credential, in one query for the whole page: the
 * page's tasks by primary key with, nested, the page's credentials. (A credential whose record
 * names no task — a rare repair record — costs a second lookup, by primary key, only then.) A
 * credential whose lifetime ran out is `expired` even before the sweep has marked it; ids no longer
 * in the store are `unknown`.
 */
export async function linksFor(db: Db, rows: AuditRow[], now: Date): Promise<(r: AuditRow) => RecordLinks> {
  const taskIds = [...new Set(rows.flatMap((r) => (r.taskId ? [r.taskId] : [])))];
  const credIds = [...new Set(rows.flatMap((r) => (r.credentialId ? [r.credentialId] : [])))];
  const tasks = new Map<string, RecordLinks['task'] & object>();
  const creds = new Map<string, RecordLinks['credential'] & object>();
  const credSelect = { id: true, state: true, expiresAt: true, revokedAt: true } as const;
  const addCred = (c: { id: string; state: string; expiresAt: Date; revokedAt: Date | null }) =>
    creds.set(c.id, { id: c.id, state: c.state === 'active' && c.expiresAt.getTime() <= now.getTime() ? 'expired' : c.state, expiresAt: c.expiresAt.toISOString(), revokedAt: c.revokedAt?.toISOString() ?? null });
  if (taskIds.length) {
    const found = await db.task.findMany({
      where: { id: { in: taskIds } },
      select: { id: true, state: true, deadline: true, endedAt: true, ...(credIds.length ? { credentials: { where: { id: { in: credIds } }, select: credSelect } } : {}) },
    });
    for (const t of found) {
      tasks.set(t.id, { id: t.id, state: t.state, deadline: t.deadline.toISOString(), endedAt: t.endedAt?.toISOString() ?? null });
      for (const c of (t as { credentials?: Parameters<typeof addCred>[0][] }).credentials ?? []) addCred(c);
    }
  }
  const orphans = rows.flatMap((r) => (r.credentialId && !r.taskId && !creds.has(r.credentialId) ? [r.credentialId] : []));
  if (orphans.length) for (const c of await db.credential.findMany({ where: { id: { in: [...new Set(orphans)] } }, select: credSelect })) addCred(c);
  return (r) => ({
    task: r.taskId ? (tasks.get(r.taskId) ?? { id: r.taskId, state: 'unknown', deadline: null, endedAt: null }) : null,
    credential: r.credentialId ? (creds.get(r.credentialId) ?? { id: r.credentialId, state: 'unknown', expiresAt: null, revokedAt: null }) : null,
  });
}

/** Wire form: dates as ISO strings, delegation chain parsed, flags as a list; links when given. */
export function auditRowToJson(r: AuditRow, links?: RecordLinks) {
  return {
    ...r,
    time: r.time.toISOString(),
    credentialExpiresAt: r.credentialExpiresAt?.toISOString() ?? null,
    delegationChain: r.delegationChain ? (JSON.parse(r.delegationChain) as string[]) : null,
    flags: r.flags ? r.flags.split(',') : null,
    ...(links ?? {}),
  };
}

/** Records with their links, one extra query per page. */
export async function withLinks(db: Db, rows: AuditRow[], now: Date) {
  const link = await linksFor(db, rows, now);
  return rows.map((r) => auditRowToJson(r, link(r)));
}
