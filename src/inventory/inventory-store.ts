import type { Db } from '../storage/prisma-client.js';

/** Client networks kept per identity (newest last). */
export const MAX_NETWORKS = 32;

/** What one replica saw of an identity since its last flush (merged into the row, never overwriting newer data). */
export interface IdentityDelta {
  kind: string;
  subject: string;
  providerName: string;
  /** JSON of inventory-view.ts SeenIdentity.details. */
  attributes: string;
  owner?: string;
  firstSeenAt: Date;
  lastSeenAt: Date;
  networks: readonly string[];
}

/** Uses of one target by one workload that this replica saw since its last flush. */
export interface UseDelta {
  subject: string;
  target: string;
  firstUsedAt: Date;
  lastUsedAt: Date;
  uses: number;
  /** scope -> when this replica last saw it granted. */
  scopes: ReadonlyMap<string, Date>;
}

export interface IdentityRow {
  subject: string;
  kind: string;
  providerName: string;
  firstSeenAt: Date;
  lastSeenAt: Date;
  owner: string | null;
  attributes: string;
  networks: string;
  disabledAt: Date | null;
  disabledReason: string | null;
}

export interface UseRow {
  subject: string;
  target: string;
  firstUsedAt: Date;
  lastUsedAt: Date;
  uses: number;
  scopes: string;
}

/** One used scope of a target, as stored in IdentityTargetUse.scopes (a JSON array of these). */
export interface ScopeUse {
  scope: string;
  lastUsedAt: string;
}

const later = (a: Date, b: Date) => (a.getTime() >= b.getTime() ? a : b);

export function parseJsonArray(text: string): unknown[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

export const parseNetworks = (text: string): string[] => parseJsonArray(text).filter((x): x is string => typeof x === 'string');

/** Stored scopes; a plain string (an older form) counts as used when the row was last used. */
export function parseScopes(text: string, fallback: Date): Map<string, Date> {
  const out = new Map<string, Date>();
  for (const x of parseJsonArray(text)) {
    if (typeof x === 'string') out.set(x, fallback);
    else if (x && typeof x === 'object' && typeof (x as ScopeUse).scope === 'string') {
      const at = new Date((x as ScopeUse).lastUsedAt);
      out.set((x as ScopeUse).scope, Number.isNaN(at.getTime()) ? fallback : at);
    }
  }
  return out;
}

export function mergeNetworks(stored: readonly string[], seen: readonly string[]): string[] {
  const out = [...stored];
  for (const n of seen) if (!out.includes(n)) out.push(n);
  return out.slice(-MAX_NETWORKS);
}

/**
 * The merged identity row, or undefined when the delta adds nothing. Replicas merge by rules that
 * do not depend on order: the earliest first-seen, the latest last-seen (whose provider,
 * attributes and owner win), the union of networks.
 */
export function mergeIdentity(row: IdentityRow, d: IdentityDelta): Partial<IdentityRow> | undefined {
  const data: Partial<IdentityRow> = {};
  if (d.firstSeenAt < row.firstSeenAt) data.firstSeenAt = d.firstSeenAt;
  if (d.lastSeenAt >= row.lastSeenAt) {
    if (d.lastSeenAt > row.lastSeenAt) data.lastSeenAt = d.lastSeenAt;
    if (d.providerName !== row.providerName) data.providerName = d.providerName;
    if (d.attributes !== row.attributes) data.attributes = d.attributes;
    if (d.owner !== undefined && d.owner !== row.owner) data.owner = d.owner;
  }
  const networks = JSON.stringify(mergeNetworks(parseNetworks(row.networks), d.networks));
  if (networks !== row.networks) data.networks = networks;
  return Object.keys(data).length ? data : undefined;
}

const scopesJson = (m: ReadonlyMap<string, Date>) =>
  JSON.stringify([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([scope, at]): ScopeUse => ({ scope, lastUsedAt: at.toISOString() })));

/** The merged use row (uses added, earliest first use, latest last use, latest use of each scope), or undefined. */
export function mergeUse(row: UseRow, d: UseDelta): { uses?: { increment: number }; firstUsedAt?: Date; lastUsedAt?: Date; scopes?: string } | undefined {
  const data: { uses?: { increment: number }; firstUsedAt?: Date; lastUsedAt?: Date; scopes?: string } = {};
  if (d.uses > 0) data.uses = { increment: d.uses };
  if (d.firstUsedAt < row.firstUsedAt) data.firstUsedAt = d.firstUsedAt;
  if (d.lastUsedAt > row.lastUsedAt) data.lastUsedAt = d.lastUsedAt;
  const scopes = parseScopes(row.scopes, row.lastUsedAt);
  for (const [s, at] of d.scopes) scopes.set(s, later(scopes.get(s) ?? at, at));
  const json = scopesJson(scopes);
  if (json !== row.scopes) data.scopes = json;
  return Object.keys(data).length ? data : undefined;
}

const isUniqueViolation = (e: unknown) => (e as { code?: string }).code === 'P2002';
const ROUNDS = 4;
const CHUNK = 100;

/**
 * Writes the coalesced inventory of one replica. Rows are merged, never overwritten, with an
 * optimistic check: an update applies only if the row is still as it was read (otherwise it is read
 * again and merged again), so replicas flushing the same identity at once both count. Each chunk
 * of updates is one transaction (one commit). Returns the keys that could not be written (they
 * stay pending for the next flush).
 */
export function createInventoryStore(db: Db) {
  async function writeIdentities(deltas: readonly IdentityDelta[]): Promise<Set<string>> {
    const failed = new Set<string>();
    for (let i = 0; i < deltas.length; i += CHUNK) for (const k of await identityChunk(deltas.slice(i, i + CHUNK))) failed.add(k);
    return failed;
  }

  async function identityChunk(chunk: readonly IdentityDelta[]): Promise<string[]> {
    let todo = [...chunk];
    for (let round = 0; round < ROUNDS && todo.length; round++) {
      const rows = await db.identity.findMany({ where: { OR: todo.map((d) => ({ kind: d.kind, subject: d.subject })) } });
      const byKey = new Map(rows.map((r) => [identityKey(r.kind, r.subject), r]));
      const retry: IdentityDelta[] = [];
      const updates: { d: IdentityDelta; args: Parameters<Db['identity']['updateMany']>[0] }[] = [];
      for (const d of todo) {
        const row = byKey.get(identityKey(d.kind, d.subject));
        if (!row) {
          try {
            await db.identity.create({
              data: { kind: d.kind, subject: d.subject, providerName: d.providerName, attributes: d.attributes, owner: d.owner ?? null, firstSeenAt: d.firstSeenAt, lastSeenAt: d.lastSeenAt, networks: JSON.stringify(d.networks.slice(-MAX_NETWORKS)) },
            });
          } catch (e) {
            // Another replica created it in the meantime: merge into its row next round.
            if (!isUniqueViolation(e)) throw e;
            retry.push(d);
          }
          continue;
        }
        const data = mergeIdentity(row, d);
        if (data)
          updates.push({ d, args: { where: { kind: row.kind, subject: row.subject, firstSeenAt: row.firstSeenAt, lastSeenAt: row.lastSeenAt, networks: row.networks }, data } });
      }
      const counts = updates.length ? await db.$transaction(updates.map((u) => db.identity.updateMany(u.args))) : [];
      counts.forEach((c, j) => c.count === 0 && retry.push(updates[j]!.d));
      todo = retry;
    }
    return todo.map((d) => identityKey(d.kind, d.subject));
  }

  async function writeUses(deltas: readonly UseDelta[]): Promise<Set<string>> {
    const failed = new Set<string>();
    for (let i = 0; i < deltas.length; i += CHUNK) for (const k of await useChunk(deltas.slice(i, i + CHUNK))) failed.add(k);
    return failed;
  }

  async function useChunk(chunk: readonly UseDelta[]): Promise<string[]> {
    let todo = [...chunk];
    for (let round = 0; round < ROUNDS && todo.length; round++) {
      const rows = await db.identityTargetUse.findMany({ where: { OR: todo.map((d) => ({ subject: d.subject, target: d.target })) } });
      const byKey = new Map(rows.map((r) => [useKey(r.subject, r.target), r]));
      const retry: UseDelta[] = [];
      const updates: { d: UseDelta; args: Parameters<Db['identityTargetUse']['updateMany']>[0] }[] = [];
      for (const d of todo) {
        const row = byKey.get(useKey(d.subject, d.target));
        if (!row) {
          try {
            await db.identityTargetUse.create({
              data: { subject: d.subject, target: d.target, firstUsedAt: d.firstUsedAt, lastUsedAt: d.lastUsedAt, uses: d.uses, scopes: scopesJson(d.scopes) },
            });
          } catch (e) {
            if (!isUniqueViolation(e)) throw e;
            retry.push(d);
          }
          continue;
        }
        const data = mergeUse(row, d);
        if (data)
          updates.push({ d, args: { where: { subject: row.subject, target: row.target, firstUsedAt: row.firstUsedAt, lastUsedAt: row.lastUsedAt, uses: row.uses, scopes: row.scopes }, data } });
      }
      const counts = updates.length ? await db.$transaction(updates.map((u) => db.identityTargetUse.updateMany(u.args))) : [];
      counts.forEach((c, j) => c.count === 0 && retry.push(updates[j]!.d));
      todo = retry;
    }
    return todo.map((d) => useKey(d.subject, d.target));
  }

  /** A page of identities with the targets each workload used (warm-up of a replica's view). */
  async function historyPage(after: { kind: string; subject: string } | undefined, limit: number) {
    const rows = await db.identity.findMany({
      where: after ? { OR: [{ kind: { gt: after.kind } }, { kind: after.kind, subject: { gt: after.subject } }] } : {},
      orderBy: [{ kind: 'asc' }, { subject: 'asc' }],
      take: limit,
      select: { kind: true, subject: true, networks: true },
    });
    const workloads = rows.filter((r) => r.kind === 'workload').map((r) => r.subject);
    const uses = workloads.length ? await db.identityTargetUse.findMany({ where: { subject: { in: workloads } }, select: { subject: true, target: true } }) : [];
    return { identities: rows.map((r) => ({ kind: r.kind, subject: r.subject, networks: parseNetworks(r.networks) })), uses };
  }

  /** The history of one identity (a view that could not hold every identity loads the others when they come). */
  async function historyOf(kind: string, subject: string) {
    const row = await db.identity.findUnique({ where: { kind_subject: { kind, subject } }, select: { networks: true } });
    const uses = kind === 'workload' ? await db.identityTargetUse.findMany({ where: { subject }, select: { target: true } }) : [];
    return { networks: row ? parseNetworks(row.networks) : [], targets: uses.map((u) => u.target) };
  }

  /** What other replicas wrote since `since`: identities seen and targets used (kept in step for signals). */
  async function changesSince(since: Date, limit: number) {
    const [identities, uses] = await Promise.all([
      db.identity.findMany({ where: { lastSeenAt: { gte: since } }, select: { kind: true, subject: true, networks: true }, take: limit }),
      db.identityTargetUse.findMany({ where: { lastUsedAt: { gte: since } }, select: { subject: true, target: true }, take: limit }),
    ]);
    return { identities: identities.map((r) => ({ kind: r.kind, subject: r.subject, networks: parseNetworks(r.networks) })), uses, complete: identities.length < limit && uses.length < limit };
  }

  return { writeIdentities, writeUses, historyPage, historyOf, changesSince };
}
export type InventoryStore = ReturnType<typeof createInventoryStore>;

export const identityKey = (kind: string, subject: string) => `${kind}\u0000${subject}`;
export const useKey = (subject: string, target: string) => `${subject}\u0000${target}`;
