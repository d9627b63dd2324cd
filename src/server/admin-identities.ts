import { z } from 'zod';
import type { FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import { IdentityNotBlocked, validateKill, type KillSummary, type KillSwitch } from '../tasks/kill-switch.js';
import type { RoleAuth } from './role-auth.js';
import { adminGuard, sendProblem, type AdminApp } from './admin-instances.js';
import { readJsonBody, refuseBody } from './json-body.js';

const KillBody = z.object({ reason: z.string().min(1).max(1000), kind: z.enum(['workload', 'human']).default('workload') }).strict();

export function killJson(s: KillSummary) {
  return {
    subject: s.subject,
    kind: s.kind,
    reason: s.reason,
    blocked_by: s.blockedBy,
    created_at: s.createdAt.toISOString(),
    newly_blocked: s.newlyBlocked,
    tasks_ended: s.tasksEnded,
    tasks_ending: s.tasksEnding,
    credentials: { revoked: s.credentials.revoked, revocation_pending: s.credentials.pending, expires_naturally: s.credentials.expiresNaturally },
  };
}

/**
 * The kill switch over HTTP (admin role): `POST /v1/admin/identities/{subject}/kill` with
 * `{reason, kind?}`, `POST …/{subject}/restore`, `GET /v1/admin/identities/blocked`. Subjects
 * are URL-encoded in the path (they contain `://`).
 */
export function registerIdentityAdmin(app: AdminApp, deps: { roles: RoleAuth; killSwitch: KillSwitch; ctxOf: (req: FastifyRequest) => CallContext }) {
  const base = '/v1/admin/identities';
  const admin = adminGuard(deps);

  app.get(`${base}/blocked`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const rows = await deps.killSwitch.list();
    return { blocked: rows.map((r) => ({ subject: r.subject, kind: r.kind, reason: r.reason, blocked_by: r.blockedBy, created_at: r.createdAt.toISOString() })) };
  });

  app.post<{ Params: { subject: string } }>(`${base}/:subject/kill`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = readJsonBody(req, KillBody);
    if (!body.ok) return refuseBody(reply, body);
    const problem = validateKill(req.params.subject, body.value.reason);
    if (problem) return sendProblem(reply, 400, 'invalid request', problem);
    const summary = await deps.killSwitch.kill(req.params.subject, body.value, { ...deps.ctxOf(req), principal });
    return reply.code(200).send(killJson(summary));
  });

  app.post<{ Params: { subject: string } }>(`${base}/:subject/restore`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    try {
      const r = await deps.killSwitch.restore(req.params.subject, { ...deps.ctxOf(req), principal });
      return { restored: r.subject, kind: r.kind };
    } catch (e) {
      if (e instanceof IdentityNotBlocked) return sendProblem(reply, 404, 'not blocked', 'this subject is not blocked');
      throw e;
    }
  });
}
