import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import { InstanceChangeRefused, type ChangeContext } from '../lib/instance-admin.js';
import type { PolicyAdmin } from '../policy/policy-admin.js';
import type { PolicySet } from '../policy/policy-set.js';
import { adminGuard, sendProblem, type AdminApp } from './admin-instances.js';
import { mediaType, readJsonBody, refuseBody } from './json-body.js';
import type { RoleAuth } from './role-auth.js';
import { EnvInputSchema, IdentityInputSchema, RequestInputSchema, toEnv, toIdentity, toRequest } from '../policy/policy-cases.js';

const BASE = '/v1/admin/policies';
const YAML_TYPES = new Set(['application/yaml', 'application/x-yaml', 'text/yaml']);
const JsonBody = z.object({ content: z.string().min(1) }).strict();

/** The policy set in force: version, documents (source and hash, never content) and the last reload error. */
export function policyStatusJson(set: PolicySet) {
  const err = set.lastError();
  return {
    version: set.version,
    documents: set.documents().map((d) => ({
      name: d.name,
      kind: d.kind,
      source: d.source,
      ...(d.file ? { file: d.file } : {}),
      sha256: d.sha256,
      ...(d.updatedAt ? { updated_at: d.updatedAt.toISOString(), updated_by: d.updatedBy } : {}),
    })),
    last_error: err ? { at: err.at.toISOString(), problems: err.problems } : null,
  };
}

/** The YAML of a PUT: `application/yaml` as is, or JSON `{ "content": "..." }`. */
function readContent(req: FastifyRequest): { ok: true; value: string } | { ok: false; status: 400 | 415; detail: string } {
  if (YAML_TYPES.has(mediaType(req))) {
    const text = typeof req.body === 'string' ? req.body : '';
    return text.trim() ? { ok: true, value: text } : { ok: false, status: 400, detail: 'request body is empty' };
  }
  if (mediaType(req) !== 'application/json') return { ok: false, status: 415, detail: 'content type must be application/yaml or application/json' };
  const r = readJsonBody(req, JsonBody);
  return r.ok ? { ok: true, value: r.value.content } : r;
}

/**
 * `GET /v1/admin/policies` (status), `PUT|DELETE /v1/admin/policies/{name}` (uploaded documents,
 * see policy-admin.ts) and `POST /v1/admin/policies/reload` (re-read policy.dir and the table now).
 * Admin role only.
 */
const ExplainBody = z.object({ identity: IdentityInputSchema, request: RequestInputSchema, env: EnvInputSchema.optional() }).strict();

export function registerPolicyAdmin(app: AdminApp, deps: { roles: RoleAuth; ctxOf: (req: FastifyRequest) => CallContext; set: PolicySet; admin: PolicyAdmin }) {
  const admin = adminGuard(deps);

  async function run(req: FastifyRequest, reply: FastifyReply, principal: string, fn: (ctx: ChangeContext) => Promise<unknown>) {
    const c = deps.ctxOf(req);
    try {
      return reply.send(await fn({ principal, requestId: c.requestId, clientAddress: c.clientAddress }));
    } catch (e) {
      if (e instanceof InstanceChangeRefused) return sendProblem(reply, e.status, e.title, e.message);
      throw e;
    }
  }

  app.get(BASE, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    return policyStatusJson(deps.set);
  });

  /**
   * Explains one decision with the set in force: every rule considered, matched or not, and why
   * (the same as `agent-sts policy evaluate`). Body: `{ identity, request, env? }` in the format of
   * policy test cases. Read-only: decides nothing, issues nothing.
   */
  app.post(`${BASE}/explain`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const body = readJsonBody(req, ExplainBody);
    if (!body.ok) return refuseBody(reply, body);
    const e = deps.set.engine().explain(toIdentity(body.value.identity), toRequest(body.value.request), toEnv(body.value.env));
    return reply.header('cache-control', 'no-store').send(e);
  });

  app.post(`${BASE}/reload`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const r = await deps.set.reload(true);
    if (r.problems.length) return sendProblem(reply, 400, 'invalid policy', `${r.problems.join('; ')} (the previous set ${r.version} stays in force)`);
    return policyStatusJson(deps.set);
  });

  app.put<{ Params: { name: string } }>(`${BASE}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = readContent(req);
    if (!body.ok) return refuseBody(reply, body);
    return run(req, reply, principal, (ctx) => deps.admin.put(ctx, req.params.name, body.value));
  });

  app.delete<{ Params: { name: string } }>(`${BASE}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    return run(req, reply, principal, (ctx) => deps.admin.remove(ctx, req.params.name));
  });
}
