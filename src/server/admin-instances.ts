import { z } from 'zod';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { Logger } from '../log/logger.js';
import { InstanceChangeRefused, type ChangeContext, type InstanceAdmin } from '../lib/instance-admin.js';
import type { InstanceRecord } from '../lib/instance-set.js';
import { problem } from './http-errors.js';
import { readJsonBody, refuseBody } from './json-body.js';
import type { Role, RoleAuth } from './role-auth.js';

const CreateBody = z.object({ name: z.string(), type: z.string(), config: z.unknown(), enabled: z.boolean().default(true) }).strict();
const UpdateBody = z.object({ type: z.string().optional(), config: z.unknown(), enabled: z.boolean().optional() }).strict();

/** The admin API's view of one instance (runtime configs may hold sealed secrets: ciphertext only). */
export function instanceJson(r: InstanceRecord, extra: Record<string, unknown> = {}) {
  return {
    name: r.name,
    type: r.type,
    source: r.source,
    read_only: r.source === 'config',
    enabled: r.enabled,
    ...(r.config !== undefined ? { config: r.config } : {}),
    ...(r.updatedAt ? { updated_at: r.updatedAt.toISOString(), updated_by: r.updatedBy } : {}),
    ...extra,
  };
}

export type AdminApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

export interface InstanceRoutes {
  /** e.g. `/v1/admin/trust-providers`. */
  base: string;
  /** Key of the list in the collection answer, e.g. `trust_providers`. */
  listKey: string;
  /** "trust provider", "credential issuer". */
  kind: string;
  records(): InstanceRecord[];
  record(name: string): InstanceRecord | undefined;
  /** Extra fields of one instance in answers (stats, capabilities). */
  extra?(r: InstanceRecord): Record<string, unknown>;
  admin: InstanceAdmin;
}

/**
 * Role check of a route (one role, or any of several); on refusal the problem+json answer is sent
 * (401 with `WWW-Authenticate: Bearer`, or 403) and undefined returned. Resolves to who the caller
 * is (and a person's groups).
 */
export function roleGuard(deps: { roles: RoleAuth; ctxOf: (req: FastifyRequest) => CallContext }, role: Role | readonly Role[]) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<{ principal: string; groups?: string[] } | undefined> => {
    const r = await deps.roles.check(req.headers.authorization, role, deps.ctxOf(req));
    if (r.ok) return r;
    if (r.status === 401) reply.header('www-authenticate', 'Bearer');
    await sendProblem(reply, r.status, r.status === 401 ? 'unauthorized' : 'forbidden', r.detail);
    return undefined;
  };
}

/** Admin-role check; on refusal the problem+json answer is sent and undefined returned. */
export function adminGuard(deps: { roles: RoleAuth; ctxOf: (req: FastifyRequest) => CallContext }) {
  const guard = roleGuard(deps, 'admin');
  return async (req: FastifyRequest, reply: FastifyReply): Promise<string | undefined> => (await guard(req, reply))?.principal;
}

export const sendProblem = (reply: FastifyReply, status: number, title: string, detail?: string) =>
  reply.code(status).type('application/problem+json').send(problem(status, title, detail));

/**
 * CRUD routes for runtime plugin instances under `base`: platform teams register, change, disable
 * and remove instances at runtime. Every change goes through the kind's InstanceAdmin (validated
 * with the plugin's own schema and against the live set, audited before it is applied, in force on
 * this replica at once and on the others at their next poll). Config-file instances are listed
 * read-only.
 */
export function registerInstanceRoutes(app: AdminApp, deps: { roles: RoleAuth; ctxOf: (req: FastifyRequest) => CallContext }, k: InstanceRoutes) {
  const send = sendProblem;
  const admin = adminGuard(deps);
  const json = (r: InstanceRecord) => instanceJson(r, k.extra?.(r));

  /** Runs a change; a refused one becomes its problem+json answer. */
  async function run(req: FastifyRequest, reply: FastifyReply, fn: (ctx: ChangeContext) => Promise<unknown>, principal: string, status = 200) {
    const c = deps.ctxOf(req);
    try {
      const out = await fn({ principal, requestId: c.requestId, clientAddress: c.clientAddress });
      return reply.code(status).send(out);
    } catch (e) {
      if (e instanceof InstanceChangeRefused) return send(reply, e.status, e.title, e.message);
      throw e;
    }
  }

  const base = k.base;

  app.get(base, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    return { [k.listKey]: k.records().map(json) };
  });

  app.get<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const r = k.record(req.params.name);
    return r ? json(r) : send(reply, 404, `${k.kind} not found`);
  });

  app.post(base, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = readJsonBody(req, CreateBody);
    if (!body.ok) return refuseBody(reply, body);
    reply.header('location', `${base}/${body.value.name}`);
    return run(req, reply, async (ctx) => json(await k.admin.create(ctx, body.value)), principal, 201);
  });

  app.put<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = readJsonBody(req, UpdateBody);
    if (!body.ok) return refuseBody(reply, body);
    return run(req, reply, async (ctx) => json(await k.admin.update(ctx, req.params.name, body.value)), principal);
  });

  for (const action of ['enable', 'disable'] as const) {
    app.post<{ Params: { name: string } }>(`${base}/:name/${action}`, async (req, reply) => {
      const principal = await admin(req, reply);
      if (!principal) return reply;
      return run(req, reply, async (ctx) => json(await k.admin.setEnabled(ctx, req.params.name, action === 'enable')), principal);
    });
  }

  app.delete<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    return run(req, reply, async (ctx) => {
      await k.admin.remove(ctx, req.params.name);
      return { deleted: req.params.name };
    }, principal);
  });
}
