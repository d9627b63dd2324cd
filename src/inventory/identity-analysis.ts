import type { BlendedIdentity } from '../core/types.js';
import type { PolicyEngine, PolicyRequest, RuleTrace } from '../policy/policy-engine.js';
import type { PolicyModel } from '../policy/policy-model.js';
import { parseScopes, type IdentityRow, type UseRow } from './inventory-store.js';

/**
 * What the current policy set lets one identity obtain, worked out with the policy engine itself
 * (evaluate / explain per target and scope), never by matching rules a second time.
 */

/** One target+scope an identity could obtain (or, `requires`, could obtain under a condition). */
export interface GrantPair {
  target: string;
  /** null: a credential without scope (a grant that names no scopes). */
  scope: string | null;
  /** Rules that allow it (agent rules; for a person: human rules). */
  rules: string[];
  /** Owners of those rules' documents. */
  owners: string[];
  /** Set when it is not obtainable as things are: `condition` (a `when` is false now) or `person` (only when acting for a person). */
  requires?: 'condition' | 'person';
  /** Why (the rule trace) when `requires` is set. */
  note?: string;
  /** The grant needs an approver each time (just-in-time approval). */
  approval?: boolean;
}

/** Use of one target: the stored IdentityTargetUse row (workloads) or the audit records (people). */
export interface TargetUse {
  target: string;
  firstUsedAt?: Date;
  lastUsedAt: Date;
  uses: number;
  /** scope -> last used. */
  scopes: Map<string, Date>;
}

interface Catalog {
  version: string;
  /** target -> its scopes across every grant, and whether some grant names no scope. */
  targets: Map<string, { scopes: Set<string>; scopeless: Set<string> }>;
  owners: Map<string, readonly string[]>;
  /** rule -> target -> the scopes its grant names. */
  grants: Map<string, Map<string, ReadonlySet<string>>>;
}

const catalogs = new WeakMap<PolicyModel, Catalog>();

/** Every target and scope the policy set grants to anyone (the candidates of a blast radius). */
export function grantCatalog(engine: Pick<PolicyEngine, 'model'>): Catalog {
  const cached = catalogs.get(engine.model);
  if (cached) return cached;
  const targets: Catalog['targets'] = new Map();
  const owners = new Map<string, readonly string[]>();
  const grants: Catalog['grants'] = new Map();
  for (const rule of engine.model.rules) {
    if (rule.owners?.length) owners.set(rule.id, rule.owners);
    grants.set(rule.id, new Map([...rule.grants.values()].map((g) => [g.target, new Set(g.scopes.keys())])));
    for (const g of rule.grants.values()) {
      const t = targets.get(g.target) ?? targets.set(g.target, { scopes: new Set(), scopeless: new Set() }).get(g.target)!;
      for (const s of g.scopes.keys()) t.scopes.add(s);
      if (!g.scopes.size) t.scopeless.add(rule.id);
    }
  }
  const c = { version: engine.model.version, targets, owners, grants };
  catalogs.set(engine.model, c);
  return c;
}

const FAR = new Date(8.64e15);

/** The identity as a policy request sees it, from its last verified attributes. */
export function identityForPolicy(row: Pick<IdentityRow, 'kind' | 'subject' | 'providerName' | 'attributes'>): BlendedIdentity {
  const details = parseObject(row.attributes);
  if (row.kind === 'human') {
    const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    return {
      // A person alone obtains nothing: only human rules are looked at, with no workload.
      workload: { kind: 'workload', provider: '', providerType: '', subject: '', attributes: {}, claims: {}, expiresAt: FAR },
      human: {
        kind: 'human', provider: row.providerName, issuer: typeof details.issuer === 'string' ? details.issuer : '', subject: row.subject,
        email: typeof details.email === 'string' ? details.email : undefined, groups: strings(details.groups), roles: strings(details.roles), expiresAt: FAR,
      },
      priorActors: [],
    };
  }
  const attrs = details.attributes && typeof details.attributes === 'object' ? (details.attributes as Record<string, unknown>) : {};
  return {
    workload: {
      kind: 'workload', provider: row.providerName, providerType: typeof details.providerType === 'string' ? details.providerType : '', subject: row.subject,
      attributes: Object.fromEntries(Object.entries(attrs).filter((e): e is [string, string] => typeof e[1] === 'string')), claims: {}, expiresAt: FAR,
    },
    priorActors: [],
  };
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The attributes (workloads) or groups/roles/email (people) to show; never anything else. */
export function detailsOf(row: Pick<IdentityRow, 'kind' | 'attributes'>): Record<string, unknown> {
  const d = parseObject(row.attributes);
  if (row.kind === 'human') return { issuer: d.issuer ?? null, email: d.email ?? null, groups: Array.isArray(d.groups) ? d.groups : [], roles: Array.isArray(d.roles) ? d.roles : [] };
  return { provider_type: d.providerType ?? null, attributes: d.attributes ?? {} };
}

/**
 * Every target and scope the identity could obtain now under `engine`. `detail`: also every rule
 * that allows each (explain), and what it could obtain under a condition or only for a person;
 * without it, one evaluate per target and scope names the deciding rule only (for lists).
 */
export function grantPairs(engine: Pick<PolicyEngine, 'evaluate' | 'explain' | 'model'>, row: Pick<IdentityRow, 'kind' | 'subject' | 'providerName' | 'attributes'>, o: { now: Date; detail: boolean; target?: string }): GrantPair[] {
  const cat = grantCatalog(engine);
  const id = identityForPolicy(row);
  const human = row.kind === 'human';
  const out: GrantPair[] = [];
  const ownersOf = (rules: string[]) => [...new Set(rules.flatMap((r) => cat.owners.get(r) ?? []))];
  for (const [target, t] of cat.targets) {
    if (o.target !== undefined && target !== o.target) continue;
    const scopes: (string | null)[] = [...t.scopes].sort();
    if (t.scopeless.size) scopes.push(null);
    for (const scope of scopes) {
      const req: PolicyRequest = { kind: 'credential', target, scopes: scope === null ? [] : [scope] };
      const pick = (rules: string[]) => (scope === null ? rules.filter((r) => t.scopeless.has(r)) : rules);
      if (!human && !o.detail) {
        const d = engine.evaluate(id, req, { now: o.now });
        if (d.allow && d.policyId) out.push({ target, scope, rules: [d.policyId], owners: ownersOf([d.policyId]), ...(d.obligations?.approval ? { approval: true } : {}) });
        continue;
      }
      const e = engine.explain(id, req, { now: o.now });
      const side = human ? 'human' : 'agent';
      const matched = pick(e.rules.filter((r) => r.side === side && r.matched).map((r) => r.rule));
      if (matched.length && (human || e.decision.allow)) {
        out.push({ target, scope, rules: matched, owners: ownersOf(matched), ...(e.decision.obligations?.approval ? { approval: true } : {}) });
        continue;
      }
      if (human) continue;
      // Only rules whose grant names this target and scope: a rule stops at `human` before it looks at targets.
      const grantsIt = (rule: string) => {
        const g = cat.grants.get(rule)?.get(target);
        return Boolean(g && (scope === null ? g.size === 0 : g.has(scope)));
      };
      const conditional = e.rules.filter((r) => r.side === 'agent' && conditionalMiss(r) && grantsIt(r.rule));
      const rules = conditional.map((r) => r.rule);
      if (rules.length) {
        const first = conditional.find((r) => r.rule === rules[0])!;
        out.push({ target, scope, rules, owners: ownersOf(rules), requires: first.stage === 'condition' ? 'condition' : 'person', note: first.reason });
      }
    }
  }
  return out;
}

/** A rule this workload matches that stops only at a condition or at needing a person present. */
function conditionalMiss(r: RuleTrace): boolean {
  if (r.matched) return false;
  return r.stage === 'condition' || (r.stage === 'human' && /requires a human/.test(r.reason));
}

/** Stored uses of a workload by target. */
export function usesFromRows(rows: readonly UseRow[]): Map<string, TargetUse> {
  return new Map(rows.map((r) => [r.target, { target: r.target, firstUsedAt: r.firstUsedAt, lastUsedAt: r.lastUsedAt, uses: r.uses, scopes: parseScopes(r.scopes, r.lastUsedAt) }]));
}

/** When the identity last obtained this target+scope (a scope-less pair: any credential for the target). */
export function lastUse(uses: ReadonlyMap<string, TargetUse>, target: string, scope: string | null): Date | undefined {
  const u = uses.get(target);
  if (!u) return undefined;
  return scope === null ? u.lastUsedAt : u.scopes.get(scope);
}

export interface Recommendation {
  target: string;
  scope: string | null;
  rule: string;
  lastUsedAt: string | null;
  text: string;
}

/**
 * Least privilege: every grant the identity holds (not conditional) that it has not used since
 * `since`, as "remove target X scope Y from rule R" (one per rule that grants it). Nothing for an
 * identity first seen after `since`: it has not had the time to use it.
 */
export function unusedGrants(pairs: readonly GrantPair[], uses: ReadonlyMap<string, TargetUse>, firstSeenAt: Date, since: Date): Recommendation[] {
  if (firstSeenAt > since) return [];
  const out: Recommendation[] = [];
  for (const p of pairs) {
    if (p.requires) continue;
    const last = lastUse(uses, p.target, p.scope);
    if (last && last >= since) continue;
    for (const rule of p.rules)
      out.push({
        target: p.target, scope: p.scope, rule, lastUsedAt: last?.toISOString() ?? null,
        text: p.scope === null ? `remove target ${p.target} from rule ${rule}` : `remove target ${p.target} scope ${p.scope} from rule ${rule}`,
      });
  }
  return out;
}
