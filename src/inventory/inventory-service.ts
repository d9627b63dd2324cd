import { z } from 'zod';
import type { Clock } from '../lib/clock.js';
import { INSTANCE_NAME } from '../lib/instance-set.js';
import type { PolicyEngine } from '../policy/policy-engine.js';
import type { Db } from '../storage/prisma-client.js';
import { detailsOf, grantCatalog, grantPairs, unusedGrants, usesFromRows, type GrantPair, type TargetUse } from './identity-analysis.js';
import { parseNetworks, type IdentityRow } from './inventory-store.js';

export interface InventorySettings {
  staleAfterDays: number;
  unusedGrantAfterDays: number;
}

export interface InventoryServiceDeps {
  db: Db;
  /** The policy set in force. */
  engine: () => PolicyEngine;
  clock: Clock;
  settings: InventorySettings;
  /** Writes this replica's pending inventory first (the API reads what it has just seen). */
  beforeRead?: () => Promise<unknown>;
}

const DAY_MS = 86_400_000;
const boolParam = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

export const IdentityKindSchema = z.enum(['workload', 'human']);

/** GET /v1/inventory/identities query (the CLI builds the same filter). */
export const ListQuerySchema = z
  .object({
    kind: IdentityKindSchema.optional(),
    provider: z.string().regex(INSTANCE_NAME, 'a trust provider name').optional(),
    stale: boolParam.optional(),
    unowned: boolParam.optional(),
    overGranted: boolParam.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().regex(/^[A-Za-z0-9_-]+$/).max(2000).optional(),
  })
  .strict();
export type ListQuery = z.infer<typeof ListQuerySchema>;

export type IdentityFlag = 'stale' | 'unowned' | 'over_granted';

export class InvalidCursor extends Error {
  constructor() {
    super('cursor is not valid');
  }
}

const encodeCursor = (c: { k: string; s: string }) => Buffer.from(JSON.stringify(c)).toString('base64url');
function decodeCursor(text: string): { k: string; s: string } {
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as { k?: unknown; s?: unknown };
    if (typeof c.k === 'string' && typeof c.s === 'string') return { k: c.k, s: c.s };
  } catch {
    /* below */
  }
  throw new InvalidCursor();
}

/**
 * The identity inventory as auditors read it: who was seen, by which provider, when first and
 * last, who owns it, what it used, what the policy in force lets it obtain (blast radius) and
 * what it holds without using (least-privilege recommendations). Reads the stored inventory,
 * which lags each replica by at most its flush interval.
 */
export function createInventoryService(deps: InventoryServiceDeps) {
  const now = () => deps.clock.now();
  const staleBefore = (at: Date) => new Date(at.getTime() - deps.settings.staleAfterDays * DAY_MS);
  const unusedSince = (at: Date) => new Date(at.getTime() - deps.settings.unusedGrantAfterDays * DAY_MS);

  /** Owner: the recorded one (provider attribute or policy owners when last allowed), else the owners of the rules granting it now. */
  function ownerOf(row: IdentityRow, pairs: readonly GrantPair[]): { owner: string | null; source: 'recorded' | 'policy' | null } {
    if (row.owner) return { owner: row.owner, source: 'recorded' };
    const owners = [...new Set(pairs.filter((p) => !p.requires).flatMap((p) => p.owners))];
    return owners.length ? { owner: owners.join(', '), source: 'policy' } : { owner: null, source: null };
  }

  function assess(row: IdentityRow, pairs: readonly GrantPair[], uses: ReadonlyMap<string, TargetUse>, at: Date) {
    const { owner, source } = ownerOf(row, pairs);
    const recommendations = row.kind === 'workload' ? unusedGrants(pairs, uses, row.firstSeenAt, unusedSince(at)) : [];
    const flags: IdentityFlag[] = [];
    if (row.lastSeenAt < staleBefore(at)) flags.push('stale');
    // A person answers for themselves; only workloads need an owner.
    if (row.kind === 'workload' && !owner) flags.push('unowned');
    if (recommendations.length) flags.push('over_granted');
    return { owner, ownerSource: source, flags, recommendations };
  }

  async function list(q: ListQuery) {
    await deps.beforeRead?.();
    const at = now();
    const engine = deps.engine();
    const where: Record<string, unknown>[] = [];
    if (q.kind) where.push({ kind: q.kind });
    if (q.provider) where.push({ providerName: q.provider });
    if (q.stale !== undefined) where.push({ lastSeenAt: q.stale ? { lt: staleBefore(at) } : { gte: staleBefore(at) } });
    let after = q.cursor ? decodeCursor(q.cursor) : undefined;
    const out: ReturnType<typeof summaryJson>[] = [];
    let done = false;
    // Owner and over-granting depend on the policy in force: filtered here, page by page.
    while (!done && out.length < q.limit) {
      const page = (await deps.db.identity.findMany({
        where: { AND: [...where, ...(after ? [{ OR: [{ kind: { gt: after.k } }, { kind: after.k, subject: { gt: after.s } }] }] : [])] },
        orderBy: [{ kind: 'asc' }, { subject: 'asc' }],
        take: q.limit,
      })) as IdentityRow[];
      const workloads = page.filter((r) => r.kind === 'workload').map((r) => r.subject);
      const useRows = workloads.length ? await deps.db.identityTargetUse.findMany({ where: { subject: { in: workloads } } }) : [];
      let i = 0;
      for (; i < page.length && out.length < q.limit; i++) {
        const row = page[i]!;
        after = { k: row.kind, s: row.subject };
        const uses = row.kind === 'workload' ? usesFromRows(useRows.filter((u) => u.subject === row.subject)) : new Map<string, TargetUse>();
        const a = assess(row, grantPairs(engine, row, { now: at, detail: false }), uses, at);
        if (q.unowned !== undefined && q.unowned !== a.flags.includes('unowned')) continue;
        if (q.overGranted !== undefined && q.overGranted !== a.flags.includes('over_granted')) continue;
        out.push(summaryJson(row, a));
      }
      done = page.length < q.limit && i === page.length;
    }
    return { identities: out, policy_version: engine.version, next_cursor: !done && after ? encodeCursor(after) : null };
  }

  function summaryJson(row: IdentityRow, a: ReturnType<typeof assess>) {
    return {
      kind: row.kind,
      subject: row.subject,
      provider: row.providerName,
      first_seen_at: row.firstSeenAt.toISOString(),
      last_seen_at: row.lastSeenAt.toISOString(),
      owner: a.owner,
      flags: a.flags,
      unused_grants: a.recommendations.length,
      disabled_at: row.disabledAt?.toISOString() ?? null,
    };
  }

  /** Audit records of a person's credentials (people have no IdentityTargetUse rows). */
  async function humanUses(subject: string, since: Date, targets: string[]): Promise<Map<string, TargetUse>> {
    const groups = await deps.db.auditEvent.groupBy({
      by: ['target', 'grantedScope'],
      where: { humanSubject: subject, action: 'token.exchange', outcome: 'allow', time: { gte: since }, target: { in: targets } },
      _count: { _all: true },
      _max: { time: true },
    });
    const out = new Map<string, TargetUse>();
    for (const g of groups) {
      if (!g.target || !g._max.time) continue;
      const u = out.get(g.target) ?? out.set(g.target, { target: g.target, lastUsedAt: g._max.time, uses: 0, scopes: new Map() }).get(g.target)!;
      u.uses += g._count._all;
      if (g._max.time > u.lastUsedAt) u.lastUsedAt = g._max.time;
      for (const s of g.grantedScope?.split(' ').filter(Boolean) ?? []) if ((u.scopes.get(s) ?? new Date(0)) < g._max.time) u.scopes.set(s, g._max.time);
    }
    return out;
  }

  /** Everything about one identity; undefined when the inventory never saw it. */
  async function show(kind: 'workload' | 'human', subject: string) {
    await deps.beforeRead?.();
    const at = now();
    const row = (await deps.db.identity.findUnique({ where: { kind_subject: { kind, subject } } })) as IdentityRow | null;
    if (!row) return undefined;
    const engine = deps.engine();
    const pairs = grantPairs(engine, row, { now: at, detail: true });
    const uses =
      kind === 'workload'
        ? usesFromRows(await deps.db.identityTargetUse.findMany({ where: { subject }, orderBy: { target: 'asc' } }))
        : await humanUses(subject, unusedSince(at), [...grantCatalog(engine).targets.keys()]);
    const a = assess(row, pairs, uses, at);
    const by = kind === 'workload' ? { workloadSubject: subject } : { humanSubject: subject };
    const openWhere = { ...by, state: { in: ['open', 'ending'] } };
    const liveWhere = { state: 'active', expiresAt: { gt: at }, task: by };
    const [openCount, tasks, liveCount, credentials, block] = await Promise.all([
      deps.db.task.count({ where: openWhere }),
      deps.db.task.findMany({ where: openWhere, orderBy: { createdAt: 'asc' }, take: 100, select: { id: true, state: true, purpose: true, createdAt: true, deadline: true, parentTaskId: true } }),
      deps.db.credential.count({ where: liveWhere }),
      // Id, target and expiry only: never a fingerprint or a revocation handle.
      deps.db.credential.findMany({ where: liveWhere, orderBy: { expiresAt: 'asc' }, take: 100, select: { id: true, target: true, issuerName: true, taskId: true, expiresAt: true } }),
      deps.db.identityBlock.findUnique({ where: { subject } }),
    ]);
    return {
      ...summaryJson(row, a),
      owner_source: a.ownerSource,
      details: detailsOf(row),
      networks: parseNetworks(row.networks),
      disabled: row.disabledAt ? { at: row.disabledAt.toISOString(), reason: row.disabledReason } : null,
      blocked: block && block.kind === kind ? { reason: block.reason, blocked_by: block.blockedBy, at: block.createdAt.toISOString() } : null,
      open_tasks: { count: openCount, tasks: tasks.map((t) => ({ id: t.id, state: t.state, purpose: t.purpose, created_at: t.createdAt.toISOString(), deadline: t.deadline.toISOString(), parent_task_id: t.parentTaskId })) },
      live_credentials: { count: liveCount, credentials: credentials.map((c) => ({ id: c.id, target: c.target, issuer: c.issuerName, task_id: c.taskId, expires_at: c.expiresAt.toISOString() })) },
      used: [...uses.values()].map(useJson),
      grants: grantsByRule(pairs, grantCatalog(engine).owners),
      blast_radius: { policy_version: engine.version, pairs: pairs.map(pairJson) },
      recommendations: a.recommendations.map((r) => ({ text: r.text, rule: r.rule, target: r.target, scope: r.scope, last_used_at: r.lastUsedAt })),
    };
  }

  return { list, show, assess };
}
export type InventoryService = ReturnType<typeof createInventoryService>;

export function pairJson(p: GrantPair) {
  return { target: p.target, scope: p.scope, rules: p.rules, owners: p.owners, ...(p.requires ? { requires: p.requires, note: p.note } : {}), ...(p.approval ? { approval: true } : {}) };
}

function useJson(u: TargetUse) {
  return {
    target: u.target,
    first_used_at: u.firstUsedAt?.toISOString() ?? null,
    last_used_at: u.lastUsedAt.toISOString(),
    uses: u.uses,
    scopes: [...u.scopes].map(([scope, at]) => ({ scope, last_used_at: at.toISOString() })),
  };
}

/** The grants the identity holds now, by rule: target -> scopes (conditional ones apart). */
function grantsByRule(pairs: readonly GrantPair[], owners: ReadonlyMap<string, readonly string[]>) {
  const byRule = new Map<string, { rule: string; owners: string[]; targets: Map<string, { scopes: string[]; requires?: string }> }>();
  for (const p of pairs)
    for (const rule of p.rules) {
      const r = byRule.get(rule) ?? byRule.set(rule, { rule, owners: [...(owners.get(rule) ?? [])], targets: new Map() }).get(rule)!;
      const t = r.targets.get(p.target) ?? r.targets.set(p.target, { scopes: [], ...(p.requires ? { requires: p.requires } : {}) }).get(p.target)!;
      if (p.scope !== null) t.scopes.push(p.scope);
    }
  return [...byRule.values()].map((r) => ({ rule: r.rule, owners: r.owners, targets: [...r.targets].map(([target, t]) => ({ target, scopes: t.scopes, ...(t.requires ? { requires: t.requires } : {}) })) }));
}
