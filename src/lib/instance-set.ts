import type { ZodType } from 'zod';
import type { Logger } from '../log/logger.js';
import type { PluginCatalog } from './plugin-registry.js';

/**
 * A live set of plugin instances of one kind (trust providers, credential issuers): those of the
 * config file plus those registered at runtime in a table. Every replica polls the table and swaps
 * in the new set when it changed; the replica that made a change reloads at once. An instance whose
 * type and config did not change is kept (with its caches, pools and clients); a replaced or
 * removed one is retired. A set that cannot be activated (e.g. two providers claiming one issuer)
 * is refused when written and, should it reach the table anyway, logged while the previous set
 * stays in force.
 */

/** Instance names: the same rule as in the config file. */
export const INSTANCE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface InstanceRecord {
  name: string;
  type: string;
  /** `config`: declared in the config file (read-only at runtime); `api`: registered at runtime. */
  source: 'config' | 'api';
  enabled: boolean;
  /** The validated config (runtime instances; config-file ones are in the file). */
  config?: unknown;
  updatedAt?: Date;
  updatedBy?: string;
}

export class InstanceValidationError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

/** A row of a runtime instance table (TrustProvider, CredentialIssuerInstance). */
export interface InstanceRow {
  name: string;
  type: string;
  config: string;
  enabled: boolean;
  updatedAt: Date;
  updatedBy: string;
}

/** The part of a Prisma model delegate the set and its admin use (both tables have this shape). */
export interface InstanceTable {
  aggregate(args: { _count: { _all: true }; _max: { updatedAt: true } }): Promise<{ _count: { _all: number }; _max: { updatedAt: Date | null } }>;
  findMany(args: { orderBy: { name: 'asc' } }): Promise<InstanceRow[]>;
  create(args: { data: Omit<InstanceRow, 'updatedAt'> }): Promise<unknown>;
  update(args: { where: { name: string }; data: Partial<Omit<InstanceRow, 'name' | 'updatedAt'>> }): Promise<unknown>;
  delete(args: { where: { name: string } }): Promise<unknown>;
}

export interface Member<I> {
  name: string;
  enabled: boolean;
  instance: I;
}

export interface InstanceSetOptions<I> {
  /** "trust provider", "credential issuer": used in messages. */
  kind: string;
  configured: { name: string; type: string; config: unknown }[];
  table: InstanceTable;
  catalog: PluginCatalog<{ type: string; configSchema: ZodType }>;
  logger: Logger;
  /** Builds one instance (may throw: the plugin refuses the config). */
  build(name: string, type: string, config: unknown): I;
  /** Makes `members` the current set; throws when they cannot coexist (the previous set stays). */
  activate(members: Member<I>[]): void;
  /** Whether disabled runtime instances are built too (issuers: to revoke what they issued). */
  buildDisabled?: boolean;
  /** Called for an instance that left the set (after activation). */
  retire?(instance: I): void;
}

export function createInstanceSet<I>(opts: InstanceSetOptions<I>) {
  const fixed: Member<I>[] = opts.configured.map((c) => ({ name: c.name, enabled: true, instance: opts.build(c.name, c.type, c.config) }));
  const configured: InstanceRecord[] = opts.configured.map((c) => ({ name: c.name, type: c.type, source: 'config', enabled: true }));
  let built = new Map<string, { key: string; instance: I }>();
  let members: Member<I>[] = fixed;
  let records: InstanceRecord[] = [];
  let stamp = '';
  opts.activate(members);

  /** Validates a runtime instance against its plugin's schema; returns the parsed config. */
  function validate(name: string, type: string, config: unknown): unknown {
    const problems: string[] = [];
    if (!INSTANCE_NAME.test(name)) problems.push('name: lower-case letters, digits and -, at most 63');
    if (configured.some((c) => c.name === name)) problems.push(`name: "${name}" is declared in the config file and cannot be changed here`);
    if (!opts.catalog.types().includes(type)) problems.push(`type: unknown type "${type}" (known: ${opts.catalog.types().join(', ')})`);
    if (problems.length) throw new InstanceValidationError(problems);
    const parsed = opts.catalog.get(type).configSchema.safeParse(config);
    if (!parsed.success) throw new InstanceValidationError(parsed.error.issues.map((i) => `config.${i.path.join('.') || '(root)'}: ${i.message}`));
    return parsed.data;
  }

  function instanceFor(row: InstanceRow, reuse: Map<string, { key: string; instance: I }>) {
    const key = `${row.type}\u0000${row.config}`;
    const old = reuse.get(row.name);
    if (old && old.key === key) return old;
    const parsed = opts.catalog.get(row.type).configSchema.parse(JSON.parse(row.config));
    return { key, instance: opts.build(row.name, row.type, parsed) };
  }

  async function reload(force = false): Promise<void> {
    const agg = await opts.table.aggregate({ _count: { _all: true }, _max: { updatedAt: true } });
    const next = `${agg._count._all}/${agg._max.updatedAt?.toISOString() ?? '-'}`;
    if (!force && next === stamp) return;
    const rows = await opts.table.findMany({ orderBy: { name: 'asc' } });
    const nextBuilt = new Map<string, { key: string; instance: I }>();
    const nextMembers: Member<I>[] = [...fixed];
    const nextRecords: InstanceRecord[] = [];
    for (const row of rows) {
      nextRecords.push({ name: row.name, type: row.type, source: 'api', enabled: row.enabled, config: JSON.parse(row.config), updatedAt: row.updatedAt, updatedBy: row.updatedBy });
      if (!row.enabled && !opts.buildDisabled) continue;
      try {
        const b = instanceFor(row, built);
        nextBuilt.set(row.name, b);
        nextMembers.push({ name: row.name, enabled: row.enabled, instance: b.instance });
      } catch (e) {
        opts.logger.error({ instance: row.name, err: { message: (e as Error).message } }, `a registered ${opts.kind} could not be built; it is out of service until fixed`);
      }
    }
    try {
      opts.activate(nextMembers);
    } catch (e) {
      opts.logger.error({ err: { message: (e as Error).message } }, `the registered ${opts.kind}s conflict; the previous set stays in force`);
      return;
    }
    const kept = new Set([...nextBuilt.values()].map((b) => b.instance));
    for (const old of built.values()) if (!kept.has(old.instance)) opts.retire?.(old.instance);
    built = nextBuilt;
    members = nextMembers;
    records = nextRecords;
    stamp = next;
  }

  /**
   * Throws InstanceValidationError when `candidate` cannot be built (its plugin refuses the config)
   * or would make the set impossible to activate. `check` sees the would-be members.
   */
  function checkFits(candidate: { name: string; type: string; config: unknown; enabled: boolean }, check: (next: Member<I>[]) => void): void {
    try {
      const instance = opts.build(candidate.name, candidate.type, candidate.config);
      try {
        check([...members.filter((m) => m.name !== candidate.name), { name: candidate.name, enabled: candidate.enabled, instance }]);
      } finally {
        opts.retire?.(instance);
      }
    } catch (e) {
      throw new InstanceValidationError([(e as Error).message]);
    }
  }

  const all = (): InstanceRecord[] => [...configured, ...records];
  return {
    reload,
    validate,
    checkFits,
    /** Every instance, config-file ones first. */
    records: all,
    record: (name: string): InstanceRecord | undefined => all().find((r) => r.name === name),
    /** The members currently in force. */
    members: (): readonly Member<I>[] => members,
    /** Retires every instance (shutdown). */
    retireAll: () => members.forEach((m) => opts.retire?.(m.instance)),
  };
}
export type InstanceSet<I> = ReturnType<typeof createInstanceSet<I>>;
