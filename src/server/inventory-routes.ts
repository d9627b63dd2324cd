import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { AuditLog } from '../audit/audit-log.js';
import type { CallContext } from '../core/types.js';
import { fingerprint } from '../lib/crypto.js';
import { reviewCsv, reviewJson, ReviewQuerySchema, UnknownIdentity, type AccessReviewer } from '../inventory/access-review.js';
import { IdentityKindSchema, InvalidCursor, ListQuerySchema, type InventoryService } from '../inventory/inventory-service.js';
import { roleGuard, sendProblem, type AdminApp } from './admin-instances.js';
import type { RoleAuth } from './role-auth.js';

export interface InventoryRouteDeps {
  roles: RoleAuth;
  ctxOf: (req: FastifyRequest) => CallContext;
  service: InventoryService;
  review: AccessReviewer;
  audit: Pick<AuditLog, 'append'>;
}

const issues = (e: z.ZodError) => e.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; ');

/**
 * The identity inventory and access reviews, for auditors and admins:
 * `GET /v1/inventory/identities` (filters kind, provider, stale, unowned, overGranted),
 * `GET /v1/inventory/identities/{kind}/{subject}` (subject URL-encoded) and
 * `GET /v1/inventory/review?identity=…[&kind=human] | ?target=…` (`window`, `format=json|csv`).
 * Every read is audited (`inventory.read`, by whom and what); answers never hold a secret.
 */
export function registerInventoryRoutes(app: AdminApp, deps: InventoryRouteDeps) {
  /** The principal (auditor or admin), or undefined once the refusal is sent. */
  const readerGuard = roleGuard(deps, ['auditor', 'admin']);
  const reader = async (req: FastifyRequest, reply: FastifyReply) => (await readerGuard(req, reply))?.principal;

  function audited(req: FastifyRequest, principal: string, what: string) {
    const ctx = deps.ctxOf(req);
    return deps.audit.append({ event: { requestId: ctx.requestId, action: 'inventory.read', outcome: 'success', reason: `by ${principal}: ${what}`, clientAddress: ctx.clientAddress } });
  }

  app.get('/v1/inventory/identities', async (req, reply) => {
    const principal = await reader(req, reply);
    if (!principal) return reply;
    const q = ListQuerySchema.safeParse(req.query);
    if (!q.success) return sendProblem(reply, 400, 'invalid query', issues(q.error));
    try {
      const page = await deps.service.list(q.data);
      await audited(req, principal, `inventory list ${JSON.stringify({ ...q.data, cursor: undefined })}`);
      return reply.header('cache-control', 'no-store').send(page);
    } catch (e) {
      if (e instanceof InvalidCursor) return sendProblem(reply, 400, 'invalid query', 'cursor is not valid');
      throw e;
    }
  });

  // A wildcard, not a parameter: subjects are often longer than a path parameter may be (100 characters).
  app.get<{ Params: { kind: string; '*': string } }>('/v1/inventory/identities/:kind/*', async (req, reply) => {
    const principal = await reader(req, reply);
    if (!principal) return reply;
    const kind = IdentityKindSchema.safeParse(req.params.kind);
    if (!kind.success) return sendProblem(reply, 400, 'invalid request', 'kind must be workload or human');
    const subject = req.params['*'];
    if (!subject || subject.length > 1024) return sendProblem(reply, 400, 'invalid request', 'subject: 1 to 1024 characters (URL-encoded)');
    const detail = await deps.service.show(kind.data, subject);
    if (!detail) return sendProblem(reply, 404, 'identity not found', `the inventory has no ${kind.data} with this subject (an identity appears after its first exchange)`);
    await audited(req, principal, `inventory show ${kind.data} ${subject}`);
    return reply.header('cache-control', 'no-store').send(detail);
  });

  app.get('/v1/inventory/review', async (req, reply) => {
    const principal = await reader(req, reply);
    if (!principal) return reply;
    const q = ReviewQuerySchema.safeParse(req.query);
    if (!q.success) return sendProblem(reply, 400, 'invalid query', issues(q.error));
    let review;
    try {
      review = await deps.review.review(q.data);
    } catch (e) {
      if (e instanceof UnknownIdentity) return sendProblem(reply, 404, 'identity not found', e.message);
      throw e;
    }
    // A name that is no target may be something pasted by mistake (a token): only its fingerprint is recorded.
    const of = q.data.identity ? `${q.data.kind} ${q.data.identity}` : `target ${review.targetKnown ? q.data.target : `(unknown, fingerprint ${fingerprint(q.data.target!)})`}`;
    await audited(req, principal, `access review of ${of} over ${q.data.window} (${q.data.format})`);
    reply.header('cache-control', 'no-store');
    if (q.data.format === 'csv')
      return reply.type('text/csv; charset=utf-8').header('content-disposition', 'attachment; filename="access-review.csv"').send(reviewCsv(review));
    return reply.send(reviewJson(review));
  });
}
