import type { Db } from '../storage/prisma-client.js';
import type { Logger } from '../log/logger.js';
import { SubjectTokenRejected, UpstreamUnavailable } from '../errors/sts-errors.js';
import { trustProviderCatalog } from './catalog.js';
import { createTrustRegistry, type TrustRegistry } from './registry.js';
import type { ProviderDeps, TrustProvider } from './trust-provider.js';

/** Provider names: the same rule as in the config file. */
export const PROVIDER_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface ProviderRecord {
  name: string;
  type: string;
  /** `config`: declared in the config file (read-only here); `api`: registered at runtime. */
  source: 'config' | 'api';
  enabled: boolean;
  /** The validated config (runtime providers; config-file ones are in the file). */
  config?: unknown;
  updatedAt?: Date;
  updatedBy?: string;
}

export class ProviderValidationError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

/** Verification outcomes of one provider since start (this replica), for admins. */
export interface ProviderStats {
  verified: number;
  rejected: number;
  /** Failures on agent-sts's own side, by UpstreamCause. */
  upstream: Record<string, number>;
  lastUpstreamFailure?: { cause: string; at: string; detail: Record<string, unknown> };
}

interface Built {
  key: string;
  instance: TrustProvider;
}

/**
 * The live set of trusted providers: those of the config file plus the enabled ones registered at
 * runtime (table TrustProvider). Every replica polls the table and swaps in a new registry when it
 * changed; the replica that made a change reloads at once. An instance whose type and config did
 * not change is kept, with its key caches. A set that cannot be built (two instances claiming the
 * same issuer and audience) is refused when written and, should it reach the table anyway, logged
 * while the previous set stays in force.
 */
export function createProviderSet(opts: {
  configured: { name: string; type: string; config: unknown }[];
  db: Db;
  logger: Logger;
  depsFor: (name: string) => ProviderDeps;
}) {
  const stats = new Map<string, ProviderStats>();
  const statsOf = (name: string): ProviderStats => {
    let s = stats.get(name);
    if (!s) stats.set(name, (s = { verified: 0, rejected: 0, upstream: {} }));
    return s;
  };

  /**
   * Counts each verification's outcome and logs failures on agent-sts's side with their cause:
   * callers only see a generic temporary error, admins must see which side broke.
   */
  function instrument(p: TrustProvider): TrustProvider {
    const verify = p.verify.bind(p);
    return {
      ...p,
      verify: async (input, ctx) => {
        const s = statsOf(p.name);
        try {
          const id = await verify(input, ctx);
          s.verified++;
          return id;
        } catch (e) {
          if (e instanceof UpstreamUnavailable) {
            const cause = String(e.detail?.cause ?? 'unclassified');
            s.upstream[cause] = (s.upstream[cause] ?? 0) + 1;
            s.lastUpstreamFailure = { cause, at: ctx.now.toISOString(), detail: e.detail ?? {} };
            opts.logger.warn({ provider: p.name, providerType: p.type, requestId: ctx.requestId, cause, detail: e.detail }, 'trust provider could not verify: the failure is on agent-sts\'s side');
          } else if (e instanceof SubjectTokenRejected) s.rejected++;
          throw e;
        }
      },
    };
  }
  const create = (name: string, type: string, config: unknown) => instrument(trustProviderCatalog.get(type).create(name, config, opts.depsFor(name)));

  const fixed = opts.configured.map((p) => create(p.name, p.type, p.config));
  let registry: TrustRegistry = createTrustRegistry(fixed);
  let built = new Map<string, Built>();
  let records: ProviderRecord[] = [];
  let stamp = '';

  const configured: ProviderRecord[] = opts.configured.map((p) => ({ name: p.name, type: p.type, source: 'config', enabled: true }));

  /** Validates a runtime provider against its plugin's schema; returns the parsed config. */
  function validate(name: string, type: string, config: unknown): unknown {
    const problems: string[] = [];
    if (!PROVIDER_NAME.test(name)) problems.push('name: lower-case letters, digits and -, at most 63');
    if (configured.some((c) => c.name === name)) problems.push(`name: "${name}" is declared in the config file and cannot be changed here`);
    if (!trustProviderCatalog.types().includes(type)) problems.push(`type: unknown type "${type}" (known: ${trustProviderCatalog.types().join(', ')})`);
    if (problems.length) throw new ProviderValidationError(problems);
    const parsed = trustProviderCatalog.get(type).configSchema.safeParse(config);
    if (!parsed.success) throw new ProviderValidationError(parsed.error.issues.map((i) => `config.${i.path.join('.') || '(root)'}: ${i.message}`));
    return parsed.data;
  }

  function instanceFor(row: { name: string; type: string; config: string }, reuse: Map<string, Built>): Built {
    const key = `${row.type}\u0000${row.config}`;
    const old = reuse.get(row.name);
    if (old && old.key === key) return old;
    const parsed = trustProviderCatalog.get(row.type).configSchema.parse(JSON.parse(row.config));
    return { key, instance: create(row.name, row.type, parsed) };
  }

  async function reload(force = false): Promise<void> {
    const agg = await opts.db.trustProvider.aggregate({ _count: { _all: true }, _max: { updatedAt: true } });
    const next = `${agg._count._all}/${agg._max.updatedAt?.toISOString() ?? '-'}`;
    if (!force && next === stamp) return;
    const rows = await opts.db.trustProvider.findMany({ orderBy: { name: 'asc' } });
    const nextBuilt = new Map<string, Built>();
    const active: TrustProvider[] = [...fixed];
    const nextRecords: ProviderRecord[] = [];
    for (const row of rows) {
      nextRecords.push({ name: row.name, type: row.type, source: 'api', enabled: row.enabled, config: JSON.parse(row.config), updatedAt: row.updatedAt, updatedBy: row.updatedBy });
      if (!row.enabled) continue;
      try {
        const b = instanceFor(row, built);
        nextBuilt.set(row.name, b);
        active.push(b.instance);
      } catch (e) {
        opts.logger.error({ provider: row.name, err: { message: (e as Error).message } }, 'a registered trust provider could not be built; it trusts nothing until fixed');
      }
    }
    try {
      registry = createTrustRegistry(active);
    } catch (e) {
      opts.logger.error({ err: { message: (e as Error).message } }, 'the registered trust providers conflict; the previous set stays in force');
      return;
    }
    built = nextBuilt;
    records = nextRecords;
    stamp = next;
  }

  /**
   * Throws ProviderValidationError when `candidate` cannot be built (its plugin refuses the
   * config, e.g. an unreadable kubeconfig) or would make the set unbuildable (issuer clash).
   */
  function checkFits(candidate: { name: string; type: string; config: unknown }): void {
    const others = registry.list().filter((p) => p.name !== candidate.name);
    try {
      createTrustRegistry([...others, create(candidate.name, candidate.type, candidate.config)]);
    } catch (e) {
      throw new ProviderValidationError([(e as Error).message]);
    }
  }

  return {
    reload,
    validate,
    checkFits,
    /** Every provider, config-file ones first. */
    records: (): ProviderRecord[] => [...configured, ...records],
    record: (name: string): ProviderRecord | undefined => [...configured, ...records].find((r) => r.name === name),
    stats: statsOf,
    // The TrustRegistry surface, always the current set.
    resolveFor: (token: string, tokenType: string) => registry.resolveFor(token, tokenType),
    get: (name: string) => registry.get(name),
    list: () => registry.list(),
  };
}
export type ProviderSet = ReturnType<typeof createProviderSet>;
