import { z } from 'zod';
import { parseDuration, type Clock } from '../lib/clock.js';
import type { PolicyEngine } from '../policy/policy-engine.js';
import type { Db } from '../storage/prisma-client.js';
import { grantCatalog, grantPairs, lastUse, usesFromRows, type GrantPair, type TargetUse } from './identity-analysis.js';
import type { IdentityRow } from './inventory-store.js';
import { IdentityKindSchema, type InventoryService } from './inventory-service.js';

/** GET /v1/inventory/review query. */
export const ReviewQuerySchema = z
  .object({
    identity: z.string().min(1).max(1024).optional(),
    kind: IdentityKindSchema.default('workload'),
    target: z.string().min(1).max(256).optional(),
    window: z.string().regex(/^\d+\s*(s|m|h|d)?$/, 'a duration like 90d, 12h').default('90d'),
    format: z.enum(['json', 'csv']).default('json'),
  })
  .strict()
  .refine((q) => Boolean(q.identity) !== Boolean(q.target), 'give exactly one of identity or target');
export type ReviewQuery = z.infer<typeof ReviewQuerySchema>;

/** keep: allowed and used; remove: allowed, not used in the window; review: allowed, but too new or conditional to judge; not-granted: used in the window, no longer allowed. */
export type ReviewDecision = 'keep' | 'remove' | 'review' | 'not-granted';

export interface ReviewRow {
  kind: string;
  subject: string;
  owner: string | null;
  target: string;
  scope: string | null;
  allowedBy: string[];
  requires?: string;
  lastUsedAt: Date | null;
  usesInWindow: number;
  decision: ReviewDecision;
  note: string;
}

export interface AccessReview {
  identity?: { kind: string; subject: string };
  target?: string;
  /** For a target review: the policy grants the target or someone obtained it in the window. */
  targetKnown?: boolean;
  since: Date;
  until: Date;
  policyVersion: string;
  rows: ReviewRow[];
}

export class UnknownIdentity extends Error {}

const PAGE = 500;

/** subject -> `target NUL scope` (scope '' for any credential of the target) -> credentials obtained in the window (audit records). */
type WindowUses = Map<string, Map<string, number>>;
const tkey = (target: string, scope: string | null) => `${target}\u0000${scope ?? ''}`;

/**
 * Access reviews for people who sign off access: for one identity (every target and scope the
 * policy in force allows it) or one target (every known identity the policy allows it to), what
 * was actually obtained in the window (audit records) and when last (inventory), and what to
 * remove (allowed, unused in the window). Exported as JSON or CSV.
 */
export function createAccessReview(deps: { db: Db; engine: () => PolicyEngine; clock: Clock; inventory: Pick<InventoryService, 'assess'>; beforeRead?: () => Promise<unknown> }) {
  async function windowUses(where: Record<string, unknown>, by: 'workloadSubject' | 'humanSubject', since: Date): Promise<WindowUses> {
    const groups = await deps.db.auditEvent.groupBy({
      by: [by, 'target', 'grantedScope'],
      where: { action: 'token.exchange', outcome: 'allow', time: { gte: since }, credentialId: { not: null }, ...where },
      _count: { _all: true },
    });
    const out: WindowUses = new Map();
    for (const g of groups) {
      const subject = (g as Record<string, unknown>)[by] as string | null;
      // Agent tokens are recorded with the issuer URL as target; target names never hold a ':'.
      if (!subject || !g.target || g.target.includes(':')) continue;
      const mine = out.get(subject) ?? out.set(subject, new Map()).get(subject)!;
      for (const s of [null, ...(g.grantedScope?.split(' ').filter(Boolean) ?? [])]) mine.set(tkey(g.target, s), (mine.get(tkey(g.target, s)) ?? 0) + g._count._all);
    }
    return out;
  }

  function rowsFor(row: IdentityRow, pairs: readonly GrantPair[], uses: ReadonlyMap<string, TargetUse>, counts: ReadonlyMap<string, number>, since: Date): ReviewRow[] {
    const a = deps.inventory.assess(row, pairs, uses, deps.clock.now());
    const out: ReviewRow[] = [];
    const base = { kind: row.kind, subject: row.subject, owner: a.owner };
    const seen = new Set<string>();
    for (const p of pairs) {
      seen.add(tkey(p.target, p.scope));
      const n = counts.get(tkey(p.target, p.scope)) ?? 0;
      const last = lastUse(uses, p.target, p.scope) ?? null;
      const what = p.scope === null ? `target ${p.target}` : `target ${p.target} scope ${p.scope}`;
      let decision: ReviewDecision;
      let note: string;
      if (n > 0) [decision, note] = ['keep', `obtained ${n} time(s) in the window`];
      else if (last && last >= since) [decision, note] = ['keep', `last obtained ${last.toISOString()}`];
      else if (p.requires) [decision, note] = ['review', `obtainable only ${p.requires === 'person' ? 'when acting for a person' : 'when a condition holds'}: ${p.note ?? ''}`.trim()];
      else if (row.firstSeenAt > since) [decision, note] = ['review', `not used yet; first seen ${row.firstSeenAt.toISOString()}, within the window`];
      else [decision, note] = ['remove', p.rules.map((r) => `remove ${what} from rule ${r}`).join('; ')];
      out.push({ ...base, target: p.target, scope: p.scope, allowedBy: p.rules, ...(p.requires ? { requires: p.requires } : {}), lastUsedAt: last, usesInWindow: n, decision, note });
    }
    // Obtained in the window but not allowed any more (the policy changed since).
    for (const [k, n] of counts) {
      const [target, scope] = k.split('\u0000') as [string, string];
      if (seen.has(k)) continue;
      // The any-credential count of a target only stands for itself when no scope was granted.
      if (scope === '' && [...counts.keys()].some((o) => o !== k && o.startsWith(`${target}\u0000`))) continue;
      if (scope === '' && pairs.some((p) => p.target === target)) continue;
      out.push({ ...base, target, scope: scope || null, allowedBy: [], lastUsedAt: lastUse(uses, target, scope || null) ?? null, usesInWindow: n, decision: 'not-granted', note: 'obtained in the window; no rule grants it now' });
    }
    return out;
  }

  async function storedUses(subjects: string[], target?: string): Promise<Map<string, Map<string, TargetUse>>> {
    const rows = subjects.length ? await deps.db.identityTargetUse.findMany({ where: { subject: { in: subjects }, ...(target ? { target } : {}) } }) : [];
    const out = new Map<string, Map<string, TargetUse>>();
    for (const s of subjects) out.set(s, usesFromRows(rows.filter((r) => r.subject === s)));
    return out;
  }

  async function forIdentity(kind: 'workload' | 'human', subject: string, since: Date, until: Date): Promise<AccessReview> {
    const engine = deps.engine();
    const row = (await deps.db.identity.findUnique({ where: { kind_subject: { kind, subject } } })) as IdentityRow | null;
    if (!row) throw new UnknownIdentity(`the inventory has no ${kind} ${subject}`);
    const by = kind === 'workload' ? 'workloadSubject' : 'humanSubject';
    const counts = (await windowUses({ [by]: subject }, by, since)).get(subject) ?? new Map<string, number>();
    const uses = kind === 'workload' ? (await storedUses([subject])).get(subject)! : new Map<string, TargetUse>();
    const pairs = grantPairs(engine, row, { now: until, detail: true });
    return { identity: { kind, subject }, since, until, policyVersion: engine.version, rows: rowsFor(row, pairs, uses, counts, since) };
  }

  async function forTarget(target: string, since: Date, until: Date, onProgress?: (done: number) => void): Promise<AccessReview> {
    const engine = deps.engine();
    const counts = { workload: await windowUses({ target }, 'workloadSubject', since), human: await windowUses({ target }, 'humanSubject', since) };
    const rows: ReviewRow[] = [];
    let after: { kind: string; subject: string } | undefined;
    let done = 0;
    for (;;) {
      const page = (await deps.db.identity.findMany({
        where: after ? { OR: [{ kind: { gt: after.kind } }, { kind: after.kind, subject: { gt: after.subject } }] } : {},
        orderBy: [{ kind: 'asc' }, { subject: 'asc' }],
        take: PAGE,
      })) as IdentityRow[];
      const uses = await storedUses(page.filter((r) => r.kind === 'workload').map((r) => r.subject), target);
      for (const row of page) {
        // A quick decision first; every allowing rule (explain) only for identities it allows.
        const quick = row.kind === 'workload' ? grantPairs(engine, row, { now: until, detail: false, target }) : [true];
        const used = (row.kind === 'workload' ? counts.workload : counts.human).get(row.subject);
        if (!quick.length && !used) continue;
        const pairs = quick.length ? grantPairs(engine, row, { now: until, detail: true, target }).filter((p) => !p.requires) : [];
        if (!pairs.length && !used) continue;
        rows.push(...rowsFor(row, pairs, uses.get(row.subject) ?? new Map(), used ?? new Map(), since));
      }
      done += page.length;
      onProgress?.(done);
      if (page.length < PAGE) break;
      const last = page[page.length - 1]!;
      after = { kind: last.kind, subject: last.subject };
    }
    const targetKnown = grantCatalog(engine).targets.has(target) || counts.workload.size > 0 || counts.human.size > 0;
    return { target, targetKnown, since, until, policyVersion: engine.version, rows };
  }

  return {
    async review(q: Pick<ReviewQuery, 'identity' | 'kind' | 'target' | 'window'>, onProgress?: (done: number) => void): Promise<AccessReview> {
      await deps.beforeRead?.();
      const until = deps.clock.now();
      const since = new Date(until.getTime() - parseDuration(q.window) * 1000);
      return q.identity ? forIdentity(q.kind, q.identity, since, until) : forTarget(q.target!, since, until, onProgress);
    },
  };
}
export type AccessReviewer = ReturnType<typeof createAccessReview>;

export function reviewSummary(r: AccessReview) {
  const count = (d: ReviewDecision) => r.rows.filter((x) => x.decision === d).length;
  return { rows: r.rows.length, keep: count('keep'), remove: count('remove'), review: count('review'), not_granted: count('not-granted') };
}

export function reviewJson(r: AccessReview) {
  return {
    ...(r.identity ? { identity: r.identity } : { target: r.target }),
    window: { since: r.since.toISOString(), until: r.until.toISOString() },
    policy_version: r.policyVersion,
    summary: reviewSummary(r),
    rows: r.rows.map((x) => ({
      kind: x.kind, subject: x.subject, owner: x.owner, target: x.target, scope: x.scope, allowed_by: x.allowedBy, ...(x.requires ? { requires: x.requires } : {}),
      last_used_at: x.lastUsedAt?.toISOString() ?? null, uses_in_window: x.usesInWindow, decision: x.decision, note: x.note,
    })),
  };
}

const CSV_COLUMNS = ['kind', 'subject', 'owner', 'target', 'scope', 'allowed_by', 'requires', 'last_used_at', 'uses_in_window', 'decision', 'note'] as const;

/**
 * RFC 4180 CSV (CRLF, quoted when needed). A cell that a spreadsheet would run as a formula
 * (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`: subjects and notes come from outside.
 */
export function reviewCsv(r: AccessReview): string {
  const cell = (v: string | number | null | undefined): string => {
    let s = v === null || v === undefined ? '' : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [CSV_COLUMNS.join(',')];
  for (const x of r.rows)
    lines.push(
      [x.kind, x.subject, x.owner, x.target, x.scope, x.allowedBy.join(' '), x.requires, x.lastUsedAt?.toISOString(), x.usesInWindow, x.decision, x.note].map(cell).join(','),
    );
  return `${lines.join('\r\n')}\r\n`;
}
