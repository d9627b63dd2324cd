import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import { ApprovalDecisionRefused, approvalJson, type ApprovalService } from '../approvals/approval-service.js';
import type { RoleAuth } from './role-auth.js';
import { roleGuard, sendProblem, type AdminApp } from './admin-instances.js';
import { readJsonBody, refuseBody } from './json-body.js';

const DecideBody = z.object({ reason: z.string().trim().min(1).max(1000) }).strict();
const ListQuery = z.object({ state: z.enum(['pending', 'approved', 'denied', 'expired']).optional() }).strict();

/**
 * Just-in-time approvals over HTTP (admin role): `GET /v1/admin/approvals?state=pending`,
 * `GET /v1/admin/approvals/{id}`, `POST …/{id}/approve` and `POST …/{id}/deny` with `{reason}`.
 * Holding the admin role is not enough to decide: the principal must also be an approver the
 * policy named, and never the identity the request is for (approval-service.ts).
 */
export function registerApprovalAdmin(app: AdminApp, deps: { roles: RoleAuth; approvals: ApprovalService; ctxOf: (req: FastifyRequest) => CallContext }) {
  const base = '/v1/admin/approvals';

  /** Like adminGuard, but keeps the groups of a person (approvers may name groups). */
  const adminRole = roleGuard(deps, 'admin');
  async function admin(req: FastifyRequest, reply: FastifyReply): Promise<{ principal: string; groups: string[] } | undefined> {
    const who = await adminRole(req, reply);
    return who && { principal: who.principal, groups: who.groups ?? [] };
  }

  app.get(base, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const q = ListQuery.safeParse(req.query);
    if (!q.success) return sendProblem(reply, 400, 'invalid query', q.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; '));
    const rows = await deps.approvals.list({ state: q.data.state, now: deps.ctxOf(req).now });
    return { approvals: rows.map(approvalJson) };
  });

  app.get<{ Params: { id: string } }>(`${base}/:id`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const r = await deps.approvals.get(req.params.id, deps.ctxOf(req).now);
    return r ? approvalJson(r) : sendProblem(reply, 404, 'approval not found');
  });

  for (const verdict of ['approve', 'deny'] as const) {
    app.post<{ Params: { id: string } }>(`${base}/:id/${verdict}`, async (req, reply) => {
      const who = await admin(req, reply);
      if (!who) return reply;
      const body = readJsonBody(req, DecideBody);
      if (!body.ok) return refuseBody(reply, body);
      const ctx = deps.ctxOf(req);
      try {
        const r = await deps.approvals.decide(req.params.id, verdict, body.value.reason, { ...who, requestId: ctx.requestId, clientAddress: ctx.clientAddress, now: ctx.now });
        return approvalJson(r);
      } catch (e) {
        if (e instanceof ApprovalDecisionRefused) return sendProblem(reply, e.status, e.title, e.message);
        throw e;
      }
    });
  }
}
