import type { AuditLog } from '../audit/audit-log.js';
import type { Db } from '../storage/prisma-client.js';
import { sha256Hex } from '../lib/crypto.js';
import { ProviderValidationError, type ProviderRecord, type ProviderSet } from './provider-set.js';

/** A change the caller cannot make; `status` is the HTTP status the admin API answers with. */
export class ProviderChangeRefused extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    readonly title: string,
    detail: string,
  ) {
    super(detail);
  }
}

/** Who asks, for the audit record and `updatedBy`. */
export interface ChangeContext {
  principal: string;
  requestId: string;
  clientAddress?: string;
}

/** Secrets never travel through the admin API (nor land in its table): only references to them. */
function inlineSecretPaths(v: unknown, path = 'config'): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => inlineSecretPaths(x, `${path}[${i}]`));
  if (v && typeof v === 'object')
    return Object.entries(v).flatMap(([k, x]) => (k === 'insecureValue' ? [`${path}.${k}`] : inlineSecretPaths(x, `${path}.${k}`)));
  return [];
}

/**
 * Changes to runtime trust providers, shared by the admin API and the CLI. Each change is checked
 * against the table as it is now (not this replica's last poll), validated with the plugin's schema
 * and against the live set (no two instances may claim one issuer and audience), recorded in the
 * audit log before it is applied (a change that then fails gets a `failure` record), and in force
 * on this replica when the call returns; other replicas follow at their next poll.
 */
export function createProviderAdmin(deps: { providers: ProviderSet; db: Db; audit: Pick<AuditLog, 'append'> }) {
  async function runtimeRecord(name: string): Promise<ProviderRecord> {
    await deps.providers.reload();
    const r = deps.providers.record(name);
    if (!r) throw new ProviderChangeRefused(404, 'trust provider not found', `no trust provider named "${name}"`);
    if (r.source === 'config') throw new ProviderChangeRefused(409, 'read-only', `"${name}" is declared in the config file; change it there`);
    return r;
  }

  function check(name: string, next: { type: string; config: unknown; enabled: boolean }): void {
    const secrets = inlineSecretPaths(next.config);
    if (secrets.length) throw new ProviderChangeRefused(400, 'invalid trust provider', `${secrets.join(', ')}: send secrets by reference (fromEnv / fromFile), never inline`);
    try {
      const config = deps.providers.validate(name, next.type, next.config);
      if (next.enabled) deps.providers.checkFits({ name, type: next.type, config });
    } catch (e) {
      if (e instanceof ProviderValidationError) throw new ProviderChangeRefused(400, 'invalid trust provider', e.problems.join('; '));
      throw e;
    }
  }

  async function apply(ctx: ChangeContext, action: string, name: string, next: { type: string; config: unknown; enabled: boolean } | null, write: () => Promise<unknown>): Promise<void> {
    const summary = next ? `; type ${next.type}, enabled ${next.enabled}, config sha256 ${sha256Hex(JSON.stringify(next.config)).slice(0, 16)}` : '';
    const event = { requestId: ctx.requestId, action: `admin.trust-provider.${action}`, providerName: name, clientAddress: ctx.clientAddress };
    await deps.audit.append({ event: { ...event, outcome: 'allow', reason: `by ${ctx.principal}${summary}` } });
    try {
      await write();
    } catch (e) {
      const code = (e as { code?: string }).code;
      await deps.audit.append({ event: { ...event, outcome: 'failure', reason: `by ${ctx.principal}: not applied (${code ?? 'storage error'})` } });
      if (code === 'P2002') throw new ProviderChangeRefused(409, 'conflict', `a trust provider named "${name}" exists`);
      if (code === 'P2025') throw new ProviderChangeRefused(404, 'trust provider not found', `no trust provider named "${name}"`);
      throw e;
    }
    await deps.providers.reload(true);
  }

  const current = (name: string) => deps.providers.record(name)!;

  return {
    async create(ctx: ChangeContext, p: { name: string; type: string; config: unknown; enabled?: boolean }): Promise<ProviderRecord> {
      await deps.providers.reload();
      if (deps.providers.record(p.name)) throw new ProviderChangeRefused(409, 'conflict', `a trust provider named "${p.name}" exists`);
      const next = { type: p.type, config: p.config, enabled: p.enabled ?? true };
      check(p.name, next);
      await apply(ctx, 'create', p.name, next, () =>
        deps.db.trustProvider.create({ data: { name: p.name, type: next.type, config: JSON.stringify(next.config), enabled: next.enabled, updatedBy: ctx.principal } }),
      );
      return current(p.name);
    },
    async update(ctx: ChangeContext, name: string, p: { type?: string; config: unknown; enabled?: boolean }): Promise<ProviderRecord> {
      const r = await runtimeRecord(name);
      const next = { type: p.type ?? r.type, config: p.config, enabled: p.enabled ?? r.enabled };
      check(name, next);
      await apply(ctx, 'update', name, next, () =>
        deps.db.trustProvider.update({ where: { name }, data: { type: next.type, config: JSON.stringify(next.config), enabled: next.enabled, updatedBy: ctx.principal } }),
      );
      return current(name);
    },
    async setEnabled(ctx: ChangeContext, name: string, enabled: boolean): Promise<ProviderRecord> {
      const r = await runtimeRecord(name);
      const next = { type: r.type, config: r.config, enabled };
      if (enabled) check(name, next);
      await apply(ctx, enabled ? 'enable' : 'disable', name, enabled ? next : null, () =>
        deps.db.trustProvider.update({ where: { name }, data: { enabled, updatedBy: ctx.principal } }),
      );
      return current(name);
    },
    async remove(ctx: ChangeContext, name: string): Promise<void> {
      await runtimeRecord(name);
      await apply(ctx, 'delete', name, null, () => deps.db.trustProvider.delete({ where: { name } }));
    },
  };
}
export type ProviderAdmin = ReturnType<typeof createProviderAdmin>;
