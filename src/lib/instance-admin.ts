import type { AuditLog } from '../audit/audit-log.js';
import type { AuditEventInput } from '../audit/audit-event.js';
import { sha256Hex } from './crypto.js';
import { InstanceValidationError, type InstanceRecord, type InstanceTable } from './instance-set.js';

/** A change the caller cannot make; `status` is the HTTP status the admin API answers with. */
export class InstanceChangeRefused extends Error {
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

export interface Candidate {
  type: string;
  config: unknown;
  enabled: boolean;
}

export interface InstanceAdminOptions {
  /** "trust provider", "credential issuer": used in messages. */
  kind: string;
  /** Audit action prefix, e.g. `admin.trust-provider`. */
  auditAction: string;
  /** Fields of the audit record that name the instance. */
  auditFields(name: string): Partial<AuditEventInput>;
  set: {
    reload(force?: boolean): Promise<void>;
    record(name: string): InstanceRecord | undefined;
    validate(name: string, type: string, config: unknown): unknown;
    /** Throws InstanceValidationError when the candidate cannot join the live set. */
    checkFits(name: string, candidate: Candidate & { config: unknown }): void;
  };
  table: InstanceTable;
  audit: Pick<AuditLog, 'append'>;
  /**
   * Turns the config as given into the config as stored (e.g. seals secrets given by value),
   * refusing what may not be stored; throws InstanceChangeRefused. Runs before validation.
   */
  prepare(name: string, config: unknown): unknown;
  /** Refuses a removal that would strand something (e.g. live credentials of an issuer). */
  beforeRemove?(name: string): Promise<void>;
}

/**
 * Changes to runtime plugin instances, shared by the admin API and the CLI. Each change is checked
 * against the table as it is now (not this replica's last poll), validated with the plugin's schema
 * and against the live set, recorded in the audit log before it is applied (a change that then
 * fails gets a `failure` record), and in force on this replica when the call returns; other
 * replicas follow at their next poll.
 */
export function createInstanceAdmin(o: InstanceAdminOptions) {
  const notFound = (name: string) => new InstanceChangeRefused(404, `${o.kind} not found`, `no ${o.kind} named "${name}"`);

  async function runtimeRecord(name: string): Promise<InstanceRecord> {
    await o.set.reload();
    const r = o.set.record(name);
    if (!r) throw notFound(name);
    if (r.source === 'config') throw new InstanceChangeRefused(409, 'read-only', `"${name}" is declared in the config file; change it there`);
    return r;
  }

  /** Validates; the config is stored as given (defaults stay the plugin's, not frozen in the table). */
  function check(name: string, next: Candidate): Candidate {
    try {
      const config = o.set.validate(name, next.type, next.config);
      if (next.enabled) o.set.checkFits(name, { ...next, config });
      return next;
    } catch (e) {
      if (e instanceof InstanceValidationError) throw new InstanceChangeRefused(400, `invalid ${o.kind}`, e.problems.join('; '));
      throw e;
    }
  }

  async function apply(ctx: ChangeContext, action: string, name: string, next: Candidate | null, write: () => Promise<unknown>): Promise<void> {
    const summary = next ? `; type ${next.type}, enabled ${next.enabled}, config sha256 ${sha256Hex(JSON.stringify(next.config)).slice(0, 16)}` : '';
    const event = { requestId: ctx.requestId, action: `${o.auditAction}.${action}`, clientAddress: ctx.clientAddress, ...o.auditFields(name) };
    try {
      await auditedWrite(o.audit, event, ctx.principal, summary, write);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'P2002') throw new InstanceChangeRefused(409, 'conflict', `a ${o.kind} named "${name}" exists`);
      if (code === 'P2025') throw notFound(name);
      throw e;
    }
    await o.set.reload(true);
  }

  const current = (name: string) => o.set.record(name)!;

  return {
    async create(ctx: ChangeContext, p: { name: string; type: string; config: unknown; enabled?: boolean }): Promise<InstanceRecord> {
      await o.set.reload();
      if (o.set.record(p.name)) throw new InstanceChangeRefused(409, 'conflict', `a ${o.kind} named "${p.name}" exists`);
      const next = check(p.name, { type: p.type, config: o.prepare(p.name, p.config), enabled: p.enabled ?? true });
      await apply(ctx, 'create', p.name, next, () =>
        o.table.create({ data: { name: p.name, type: next.type, config: JSON.stringify(next.config), enabled: next.enabled, updatedBy: ctx.principal } }),
      );
      return current(p.name);
    },
    async update(ctx: ChangeContext, name: string, p: { type?: string; config: unknown; enabled?: boolean }): Promise<InstanceRecord> {
      const r = await runtimeRecord(name);
      const next = check(name, { type: p.type ?? r.type, config: o.prepare(name, p.config), enabled: p.enabled ?? r.enabled });
      await apply(ctx, 'update', name, next, () =>
        o.table.update({ where: { name }, data: { type: next.type, config: JSON.stringify(next.config), enabled: next.enabled, updatedBy: ctx.principal } }),
      );
      return current(name);
    },
    async setEnabled(ctx: ChangeContext, name: string, enabled: boolean): Promise<InstanceRecord> {
      const r = await runtimeRecord(name);
      const next = { type: r.type, config: r.config, enabled };
      if (enabled) check(name, next);
      await apply(ctx, enabled ? 'enable' : 'disable', name, enabled ? next : null, () =>
        o.table.update({ where: { name }, data: { enabled, updatedBy: ctx.principal } }),
      );
      return current(name);
    },
    async remove(ctx: ChangeContext, name: string): Promise<void> {
      await runtimeRecord(name);
      await o.beforeRemove?.(name);
      await apply(ctx, 'delete', name, null, () => o.table.delete({ where: { name } }));
    },
  };
}
export type InstanceAdmin = ReturnType<typeof createInstanceAdmin>;

/**
 * An admin change: audited (`allow`, by whom, with a summary) before it is applied, then written;
 * a write that fails gets a `failure` record and is rethrown (Prisma's `code` tells callers why).
 */
export async function auditedWrite(
  audit: Pick<AuditLog, 'append'>,
  event: Omit<AuditEventInput, 'outcome' | 'reason'>,
  principal: string,
  summary: string,
  write: () => Promise<unknown>,
): Promise<void> {
  await audit.append({ event: { ...event, outcome: 'allow', reason: `by ${principal}${summary}` } });
  try {
    await write();
  } catch (e) {
    const code = (e as { code?: string }).code;
    await audit.append({ event: { ...event, outcome: 'failure', reason: `by ${principal}: not applied (${code ?? 'storage error'})` } });
    throw e;
  }
}

/** Paths of inline secret values (`insecureValue`) in a config: never accepted at runtime. */
export function inlineSecretPaths(v: unknown, path = 'config'): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => inlineSecretPaths(x, `${path}[${i}]`));
  if (v && typeof v === 'object')
    return Object.entries(v).flatMap(([k, x]) => (k === 'insecureValue' ? [`${path}.${k}`] : inlineSecretPaths(x, `${path}.${k}`)));
  return [];
}
