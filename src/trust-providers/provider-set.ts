import type { Db } from '../storage/prisma-client.js';
import type { Logger } from '../log/logger.js';
import { SubjectTokenRejected, UpstreamUnavailable } from '../errors/sts-errors.js';
import { trustProviderCatalog } from './catalog.js';
import { createTrustRegistry, type TrustRegistry } from './registry.js';
import type { ProviderDeps, TrustProvider } from './trust-provider.js';
import { createInstanceSet, type InstanceTable } from '../lib/instance-set.js';

export { INSTANCE_NAME as PROVIDER_NAME, InstanceValidationError as ProviderValidationError, type InstanceRecord as ProviderRecord } from '../lib/instance-set.js';

/** Verification outcomes of one provider since start (this replica), for admins. */
export interface ProviderStats {
  verified: number;
  rejected: number;
  /** Failures on agent-sts's own side, by UpstreamCause. */
  upstream: Record<string, number>;
  lastUpstreamFailure?: { cause: string; at: string; detail: Record<string, unknown> };
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

  let registry: TrustRegistry = createTrustRegistry([]);
  // Background work (pod watches) runs only in the server, from start() on, for the members in force.
  let started = false;
  const startAll = () => registry.list().forEach((p) => p.start?.());
  const set = createInstanceSet<TrustProvider>({
    kind: 'trust provider',
    configured: opts.configured,
    table: opts.db.trustProvider as unknown as InstanceTable,
    catalog: trustProviderCatalog,
    logger: opts.logger,
    build: create,
    activate: (members) => {
      registry = createTrustRegistry(members.map((m) => m.instance));
      if (started) startAll();
    },
    retire: (p) => p.close?.(),
  });

  /**
   * Throws ProviderValidationError when `candidate` cannot be built (its plugin refuses the
   * config, e.g. an unreadable kubeconfig) or would make the set unbuildable (issuer clash).
   */
  const checkFits = (candidate: { name: string; type: string; config: unknown }) =>
    set.checkFits({ ...candidate, enabled: true }, (next) => createTrustRegistry(next.map((m) => m.instance)));

  return {
    /** Starts the providers' background work (server only), now and for every member added later. */
    start() {
      started = true;
      startAll();
    },
    /** Stops every provider's background work (shutdown). */
    close() {
      started = false;
      set.retireAll();
    },
    reload: set.reload,
    validate: set.validate,
    checkFits,
    /** Every provider, config-file ones first. */
    records: set.records,
    record: set.record,
    stats: statsOf,
    // The TrustRegistry surface, always the current set.
    resolveFor: (token: string, tokenType: string) => registry.resolveFor(token, tokenType),
    get: (name: string) => registry.get(name),
    list: () => registry.list(),
  };
}
export type ProviderSet = ReturnType<typeof createProviderSet>;
