import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { CallContext } from '../core/types.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import type { AuditLog } from '../audit/audit-log.js';
import { auditPages, AuditExportSchema, AuditQuerySchema, describeFilters, InvalidCursor, queryAudit, withLinks } from '../audit/audit-query.js';
import { roleGuard, type AdminApp } from './admin-instances.js';
import { problem } from './http-errors.js';
import type { RoleAuth } from './role-auth.js';

export interface AuditRouteDeps {
  db: Db;
  roles: RoleAuth;
  audit: Pick<AuditLog, 'append'>;
  clock: Clock;
  logger: Logger;
  ctxOf: (req: FastifyRequest) => CallContext;
  /** Records per page of an export (one query each, plus one for the links). */
  exportPageSize?: number;
}

const sendProblem = (reply: FastifyReply, status: number, title: string, detail?: string) =>
  reply.code(status).header('cache-control', 'no-store').type('application/problem+json').send(problem(status, title, detail));

function parseQuery<T>(schema: z.ZodType<T>, query: unknown): { ok: true; value: T } | { ok: false; detail: string } {
  const q = schema.safeParse(query);
  // Issue messages name the parameter and the rule, never the value (a pasted token must not echo).
  return q.success ? { ok: true, value: q.data } : { ok: false, detail: q.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; ') };
}

/**
 * Turns lazily produced chunks into a stream that reads the next chunk only when the socket has
 * taken the previous one (one chunk buffered): an export of millions of records holds one page in
 * memory, not the range. A failure mid-stream destroys the response, so the client sees a
 * truncated transfer, never a silently short export.
 */
export function ndjsonStream(chunks: AsyncIterable<string>, onError: (e: unknown) => void): Readable {
  const stream = Readable.from(chunks, { objectMode: false, highWaterMark: 1 });
  stream.on('error', onError);
  return stream;
}

/**
 * The auditor's API: `GET /v1/audit` (filtered, newest first, cursor-paginated; each record
 * linked to its task and credential as they are now) and `GET /v1/audit/export` (every matching
 * record as JSON lines, streamed). Auditor role only. Every read is itself audited (`audit.read`,
 * who and which filters) before the answer goes out: a read that cannot be recorded is refused.
 */
export function registerAuditRoutes(app: AdminApp, deps: AuditRouteDeps) {
  const auditorGuard = roleGuard(deps, 'auditor');
  // Every answer of the audit API, refusals included, is no-store.
  const auditor = async (req: FastifyRequest, reply: FastifyReply) => (await auditorGuard(req, reply.header('cache-control', 'no-store')))?.principal;

  const recordRead = (req: FastifyRequest, principal: string, what: string) => {
    const ctx = deps.ctxOf(req);
    return deps.audit.append({ event: { requestId: ctx.requestId, action: 'audit.read', outcome: 'success', reason: `by ${principal}: ${what}`, clientAddress: ctx.clientAddress } });
  };

  app.get('/v1/audit', async (req, reply) => {
    const principal = await auditor(req, reply);
    if (!principal) return reply;
    const q = parseQuery(AuditQuerySchema, req.query);
    if (!q.ok) return sendProblem(reply, 400, 'invalid query', q.detail);
    let page;
    try {
      page = await queryAudit(deps.db, q.value);
    } catch (e) {
      if (e instanceof InvalidCursor) return sendProblem(reply, 400, 'invalid query', 'cursor is not valid');
      throw e;
    }
    const records = await withLinks(deps.db, page.records, deps.clock.now());
    await recordRead(req, principal, `query ${describeFilters(q.value)}; ${records.length} record(s)`);
    return reply.header('cache-control', 'no-store').send({ records, next_cursor: page.nextCursor ?? null });
  });

  app.get('/v1/audit/export', async (req, reply) => {
    const principal = await auditor(req, reply);
    if (!principal) return reply;
    const q = parseQuery(AuditExportSchema, req.query);
    if (!q.ok) return sendProblem(reply, 400, 'invalid query', q.detail);
    const { order, ...filter } = q.value;
    await recordRead(req, principal, `export ${describeFilters(filter)}, ${order === 'asc' ? 'oldest' : 'newest'} first`);
    const db = deps.db;
    const now = deps.clock.now();
    const pageSize = deps.exportPageSize ?? 1000;
    async function* lines(): AsyncGenerator<string> {
      for await (const rows of auditPages(db, filter, { order, pageSize })) {
        const records = await withLinks(db, rows, now);
        yield records.map((r) => `${JSON.stringify(r)}\n`).join('');
      }
    }
    const requestId = req.id;
    const body = ndjsonStream(lines(), (e) => deps.logger.error({ requestId, err: { message: (e as Error).message } }, 'audit export failed mid-stream; the response was cut off'));
    return reply.header('cache-control', 'no-store').type('application/x-ndjson').send(body);
  });
}
