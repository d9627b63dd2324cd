import { z } from 'zod';
import type { FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { TaskService } from '../tasks/task-service.js';
import { adminGuard, sendProblem, type AdminApp } from './admin-instances.js';
import { readJsonBody, refuseBody } from './json-body.js';
import { sendTaskEnd, type TaskRouteDeps } from './task-routes.js';

/** Why an operator acts: required, it goes to the audit record with who. */
export const OperatorReason = z.string().trim().min(1).max(1000);
const ReasonBody = z.object({ reason: OperatorReason }).strict();
/** Task ids (`t_…`) and credential ids (UUIDv7) are short and plain: anything else is not one of ours. */
const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** What an operator's revocation of one credential came to (HTTP answer and CLI line). */
export async function revokeCredentialAsOperator(
  deps: { tasks: Pick<TaskService, 'revokeOne'> },
  credentialId: string,
  who: string,
  reason: string,
  ctx: CallContext,
): Promise<OperatorRevocation | undefined> {
  const r = await deps.tasks.revokeOne(credentialId, `revoked by ${who}: ${reason}`, ctx);
  if (!r) return undefined;
  const c = r.credential;
  return {
    credential_id: c.id, task_id: c.taskId, target: c.target, fate: r.fate, state: c.state, expires_at: c.expiresAt.toISOString(),
    ...(r.offlineValidUntil ? { offline_valid_until: r.offlineValidUntil.toISOString() } : {}),
  };
}

/** `offline_valid_until`: an agent-sts-jwt access token, now refused by introspection, that offline verifiers accept until then. */
export interface OperatorRevocation {
  credential_id: string;
  task_id: string;
  target: string;
  fate: string;
  state: string;
  expires_at: string;
  offline_valid_until?: string;
}

/**
 * Incident response between "nothing" and the kill switch (admin role): end one task
 * (`POST /v1/admin/tasks/{id}/end`, every credential in it and its sub-agents' tasks revoked, the
 * same answer and signed receipt as the agent's own `DELETE /v1/tasks/{id}`) or revoke one
 * credential at its target (`POST /v1/admin/credentials/{id}/revoke`, its task lives on). Both take
 * `{reason}`; who and why are in the lifecycle records (`task.end`, `credential.revoke`).
 */
export function registerTaskAdmin(
  app: AdminApp,
  deps: Pick<TaskRouteDeps, 'roles' | 'ctxOf' | 'signer' | 'issuerUrl' | 'clock' | 'db'> & { tasks: Pick<TaskService, 'endTask' | 'revokeOne'> },
) {
  const admin = adminGuard(deps);
  const reasonOf = (req: FastifyRequest) => readJsonBody(req, ReasonBody);

  app.post<{ Params: { id: string } }>('/v1/admin/tasks/:id/end', async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = reasonOf(req);
    if (!body.ok) return refuseBody(reply, body);
    if (!ID.test(req.params.id)) return sendProblem(reply, 404, 'task not found');
    const result = await deps.tasks.endTask(req.params.id, `ended by ${principal}: ${body.value.reason}`, deps.ctxOf(req));
    if (!result) return sendProblem(reply, 404, 'task not found');
    return sendTaskEnd(reply, result, deps);
  });

  app.post<{ Params: { id: string } }>('/v1/admin/credentials/:id/revoke', async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = reasonOf(req);
    if (!body.ok) return refuseBody(reply, body);
    if (!ID.test(req.params.id)) return sendProblem(reply, 404, 'credential not found');
    const r = await revokeCredentialAsOperator(deps, req.params.id, principal, body.value.reason, deps.ctxOf(req));
    if (!r) return sendProblem(reply, 404, 'credential not found');
    reply.header('cache-control', 'no-store');
    return reply.code(r.fate === 'revocation_pending' ? 202 : 200).send(r);
  });
}
