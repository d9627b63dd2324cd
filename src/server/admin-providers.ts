import type { FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { ProviderSet } from '../trust-providers/provider-set.js';
import type { ProviderAdmin } from '../trust-providers/provider-admin.js';
import type { RoleAuth } from './role-auth.js';
import { adminGuard, registerInstanceRoutes, sendProblem, type AdminApp } from './admin-instances.js';

/**
 * `/v1/admin/trust-providers`: runtime trust providers (no two instances may claim one issuer and
 * audience), with per-provider verification stats, plus `POST …/{name}/refresh-keys`.
 */
export function registerProviderAdmin(
  app: AdminApp,
  deps: { roles: RoleAuth; providers: ProviderSet; admin: ProviderAdmin; audit: Pick<AuditLog, 'append'>; ctxOf: (req: FastifyRequest) => CallContext },
) {
  const base = '/v1/admin/trust-providers';
  registerInstanceRoutes(app, deps, {
    base,
    listKey: 'trust_providers',
    kind: 'trust provider',
    records: deps.providers.records,
    record: deps.providers.record,
    extra: (r) => ({ stats: deps.providers.stats(r.name) }),
    admin: deps.admin,
  });
  const admin = adminGuard(deps);

  app.post<{ Params: { name: string } }>(`${base}/:name/refresh-keys`, async (req, reply) => {
    const principal = await admin(req, reply);
    if (!principal) return reply;
    const provider = deps.providers.get(req.params.name);
    if (!provider) return sendProblem(reply, 404, 'trust provider not found');
    if (!provider.refreshKeys) return sendProblem(reply, 409, 'this trust provider has no remote keys');
    await provider.refreshKeys();
    const ctx = deps.ctxOf(req);
    await deps.audit.append({ event: { requestId: ctx.requestId, action: 'admin.trust-provider.refresh-keys', outcome: 'success', reason: `by ${principal}`, providerName: provider.name, clientAddress: ctx.clientAddress } });
    return { refreshed: provider.name };
  });
}
