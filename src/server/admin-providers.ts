import { z } from 'zod';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { Db } from '../storage/prisma-client.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Logger } from '../log/logger.js';
import { sha256Hex } from '../lib/crypto.js';
import { ProviderValidationError, type ProviderRecord, type ProviderSet } from '../trust-providers/provider-set.js';
import { problem } from './http-errors.js';
import type { RoleAuth } from './role-auth.js';

const CreateBody = z.object({ name: z.string(), type: z.string(), config: z.unknown(), enabled: z.boolean().default(true) }).strict();
const UpdateBody = z.object({ type: z.string().optional(), config: z.unknown(), enabled: z.boolean().optional() }).strict();

/** Secrets never travel through the admin API (nor land in its table): only references to them. */
function inlineSecretPaths(v: unknown, path = 'config'): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => inlineSecretPaths(x, `${path}[${i}]`));
  if (v && typeof v === 'object')
    return Object.entries(v).flatMap(([k, x]) => (k === 'insecureValue' ? [`${path}.${k}`] : inlineSecretPaths(x, `${path}.${k}`)));
  return [];
}

export function providerJson(r: ProviderRecord) {
  return {
    name: r.name,
    type: r.type,
    source: r.source,
    read_only: r.source === 'config',
    enabled: r.enabled,
    ...(r.config !== undefined ? { config: r.config } : {}),
    ...(r.updatedAt ? { updated_at: r.updatedAt.toISOString(), updated_by: r.updatedBy } : {}),
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
  deps: { roles: RoleAuth; providers: ProviderSet; db: Db; audit: Pick<AuditLog, 'append'>; logger: Logger; ctxOf: (req: FastifyRequest) => CallContext },
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

  /** Validates, audits, applies, reloads. Returns the record or answers with a problem. */
  async function change(
    req: FastifyRequest,
    reply: FastifyReply,
    principal: string,
    action: 'create' | 'update' | 'enable' | 'disable' | 'delete',
    name: string,
    next: { type: string; config: unknown; enabled: boolean } | null,
    apply: () => Promise<unknown>,
  ) {
    if (next) {
      await deps.providers.reload(); // validate against the table as it is now, not this replica's last poll
      const secrets = inlineSecretPaths(next.config);
      if (secrets.length) return send(reply, 400, 'invalid trust provider', `${secrets.join(', ')}: send secrets by reference (fromEnv / fromFile), never inline`);
      try {
        const config = deps.providers.validate(name, next.type, next.config);
        if (next.enabled) deps.providers.checkFits({ name, type: next.type, config });
      } catch (e) {
        if (e instanceof ProviderValidationError) return send(reply, 400, 'invalid trust provider', e.problems.join('; '));
        throw e;
      }
    }
    const ctx = deps.ctxOf(req);
    const summary = next ? `; type ${next.type}, enabled ${next.enabled}, config sha256 ${sha256Hex(JSON.stringify(next.config)).slice(0, 16)}` : '';
    // The decision is on record before the change is made; a change that then fails gets its own record.
    await deps.audit.append({ event: { requestId: ctx.requestId, action: `admin.trust-provider.${action}`, outcome: 'allow', reason: `by ${principal}${summary}`, providerName: name, clientAddress: ctx.clientAddress } });
    try {
      await apply();
    } catch (e) {
      await deps.audit.append({ event: { requestId: ctx.requestId, action: `admin.trust-provider.${action}`, outcome: 'failure', reason: `by ${principal}: not applied (${(e as { code?: string }).code ?? 'storage error'})`, providerName: name, clientAddress: ctx.clientAddress } });
      if ((e as { code?: string }).code === 'P2002') return send(reply, 409, 'conflict', `a trust provider named "${name}" exists`);
      if ((e as { code?: string }).code === 'P2025') return send(reply, 404, 'trust provider not found');
      throw e;
    }
    await deps.providers.reload(true);
    return undefined;
  }

  const base = '/v1/admin/trust-providers';

  app.get(base, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    return { trust_providers: deps.providers.records().map(providerJson) };
  });

  app.get<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    if (!(await admin(req, reply))) return reply;
    const r = deps.providers.record(req.params.name);
    return r ? providerJson(r) : send(reply, 404, 'trust provider not found');
  });

  app.post(base, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = jsonBody(req, CreateBody);
    if (!body.ok) return send(reply, 400, 'invalid request', body.detail);
    const { name, type, config, enabled } = body.value;
    await deps.providers.reload();
    if (deps.providers.record(name)) return send(reply, 409, 'conflict', `a trust provider named "${name}" exists`);
    const failed = await change(req, reply, principal, 'create', name, { type, config, enabled }, () =>
      deps.db.trustProvider.create({ data: { name, type, config: JSON.stringify(config), enabled, updatedBy: principal } }),
    );
    if (failed) return failed;
    return reply.code(201).header('location', `${base}/${name}`).send(providerJson(deps.providers.record(name)!));
  });

  /** The runtime record, or a problem answer (404, or 409 for a config-file provider). */
  async function runtimeRecord(name: string, reply: FastifyReply): Promise<ProviderRecord | undefined> {
    await deps.providers.reload();
    const r = deps.providers.record(name);
    if (!r) {
      await send(reply, 404, 'trust provider not found');
      return undefined;
    }
    if (r.source === 'config') {
      await send(reply, 409, 'read-only', `"${name}" is declared in the config file; change it there`);
      return undefined;
    }
    return r;
  }

  app.put<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const body = jsonBody(req, UpdateBody);
    if (!body.ok) return send(reply, 400, 'invalid request', body.detail);
    const r = await runtimeRecord(req.params.name, reply);
    if (!r) return reply;
    const next = { type: body.value.type ?? r.type, config: body.value.config, enabled: body.value.enabled ?? r.enabled };
    const failed = await change(req, reply, principal, 'update', r.name, next, () =>
      deps.db.trustProvider.update({ where: { name: r.name }, data: { type: next.type, config: JSON.stringify(next.config), enabled: next.enabled, updatedBy: principal } }),
    );
    if (failed) return failed;
    return providerJson(deps.providers.record(r.name)!);
  });

  for (const action of ['enable', 'disable'] as const) {
    app.post<{ Params: { name: string } }>(`${base}/:name/${action}`, async (req, reply) => {
      const principal = await admin(req, reply);
      if (!principal) return reply;
      const r = await runtimeRecord(req.params.name, reply);
      if (!r) return reply;
      const enabled = action === 'enable';
      const failed = await change(req, reply, principal, action, r.name, enabled ? { type: r.type, config: r.config, enabled } : null, () =>
        deps.db.trustProvider.update({ where: { name: r.name }, data: { enabled, updatedBy: principal } }),
      );
      if (failed) return failed;
      return providerJson(deps.providers.record(r.name)!);
    });
  }

  app.delete<{ Params: { name: string } }>(`${base}/:name`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const r = await runtimeRecord(req.params.name, reply);
    if (!r) return reply;
    const failed = await change(req, reply, principal, 'delete', r.name, null, () => deps.db.trustProvider.delete({ where: { name: r.name } }));
    if (failed) return failed;
    return { deleted: r.name };
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
