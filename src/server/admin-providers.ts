import { z } from 'zod';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Logger } from '../log/logger.js';
import type { ProviderRecord, ProviderSet, ProviderStats } from '../trust-providers/provider-set.js';
import { ProviderChangeRefused, type ChangeContext, type ProviderAdmin } from '../trust-providers/provider-admin.js';
import { problem } from './http-errors.js';
import type { RoleAuth } from './role-auth.js';

const CreateBody = z.object({ name: z.string(), type: z.string(), config: z.unknown(), enabled: z.boolean().default(true) }).strict();
const UpdateBody = z.object({ type: z.string().optional(), config: z.unknown(), enabled: z.boolean().optional() }).strict();

export function providerJson(r: ProviderRecord, stats?: ProviderStats) {
  return {
    name: r.name,
    type: r.type,
    source: r.source,
    read_only: r.source === 'config',
    enabled: r.enabled,
    ...(r.config !== undefined ? { config: r.config } : {}),
    ...(r.updatedAt ? { updated_at: r.updatedAt.toISOString(), updated_by: r.updatedBy } : {}),
    ...(stats ? { stats } : {}),
  };
}

/**
 * `/v1/admin/trust-providers`: platform teams register, change, disable and remove trust providers
 * at runtime. Every change is validated with the plugin's own schema and against the live set
 * (no two instances may claim one issuer and audience), audited before it is applied, and takes
 * effect on this replica at once and on the others at their next poll. Config-file providers are
 * listed read-only.
 */
export function registerProviderAdmin(
  app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>,
  deps: { roles: RoleAuth; providers: ProviderSet; admin: ProviderAdmin; audit: Pick<AuditLog, 'append'>; ctxOf: (req: FastifyRequest) => CallContext },
) {
  const send = (reply: FastifyReply, status: number, title: string, detail?: string) =>
    reply.code(status).type('application/problem+json').send(problem(status, title, detail));

  async function admin(req: FastifyRequest, reply: FastifyReply): Promise<string | undefined> {
    const r = await deps.roles.check(req.headers.authorization, 'admin', deps.ctxOf(req));
    if (r.ok) return r.principal;
    if (r.status === 401) reply.header('www-authenticate', 'Bearer');
    await send(reply, r.status, r.status === 401 ? 'unauthorized' : 'forbidden', r.detail);
    return undefined;
  }

  function jsonBody<T>(req: FastifyRequest, schema: z.ZodType<T>): { ok: true; value: T } | { ok: false; detail: string } {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') return { ok: false, detail: 'content type must be application/json' };
    let raw: unknown;
    try {
      raw = JSON.parse(typeof req.body === 'string' ? req.body : '');
    } catch {
      return { ok: false, detail: 'request body is not valid JSON' };
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) return { ok: false, detail: parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ') };
    return { ok: true, value: parsed.data };
  }

  /** Runs a change; a refused one becomes its problem+json answer. */
  async function run(req: FastifyRequest, reply: FastifyReply, fn: (ctx: ChangeContext) => Promise<unknown>, principal: string, status = 200) {
    const c = deps.ctxOf(req);
    try {
      const out = await fn({ principal, requestId: c.requestId, clientAddress: c.clientAddress });
      return reply.code(status).send(out);
    } catch (e) {
      if (e instanceof ProviderChangeRefused) return send(reply, e.status, e.title, e.message);
      throw e;
    }
  }

  const base = '/v1/admin/trust-providers';

  app.get(base, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    return { trust_providers: deps.providers.records().map((r) => providerJson(r, deps.providers.stats(r.name))) };
  });

  app.get<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const r = deps.providers.record(req.params.name);
    return r ? providerJson(r, deps.providers.stats(r.name)) : send(reply, 404, 'trust provider not found');
  });

  app.post(base, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = jsonBody(req, CreateBody);
    if (!body.ok) return send(reply, 400, 'invalid request', body.detail);
    reply.header('location', `${base}/${body.value.name}`);
    return run(req, reply, async (ctx) => providerJson(await deps.admin.create(ctx, body.value)), principal, 201);
  });

  app.put<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = jsonBody(req, UpdateBody);
    if (!body.ok) return send(reply, 400, 'invalid request', body.detail);
    return run(req, reply, async (ctx) => providerJson(await deps.admin.update(ctx, req.params.name, body.value)), principal);
  });

  for (const action of ['enable', 'disable'] as const) {
    app.post<{ Params: { name: string } }>(`${base}/:name/${action}`, async (req, reply) => {
      const principal = await admin(req, reply);
      if (!principal) return reply;
      return run(req, reply, async (ctx) => providerJson(await deps.admin.setEnabled(ctx, req.params.name, action === 'enable')), principal);
    });
  }

  app.delete<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    return run(req, reply, async (ctx) => {
      await deps.admin.remove(ctx, req.params.name);
      return { deleted: req.params.name };
    }, principal);
  });

  app.post<{ Params: { name: string } }>(`${base}/:name/refresh-keys`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const provider = deps.providers.get(req.params.name);
    if (!provider) return send(reply, 404, 'trust provider not found');
    if (!provider.refreshKeys) return send(reply, 409, 'this trust provider has no remote keys');
    await provider.refreshKeys();
    const ctx = deps.ctxOf(req);
    await deps.audit.append({ event: { requestId: ctx.requestId, action: 'admin.trust-provider.refresh-keys', outcome: 'success', reason: `by ${principal}`, providerName: provider.name, clientAddress: ctx.clientAddress } });
    return { refreshed: provider.name };
  });
}
