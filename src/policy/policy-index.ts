import type { BlendedIdentity } from '../core/types.js';
import type { ModelRule } from './policy-model.js';

/**
 * Rules grouped so a decision only looks at rules that could apply: per target (or agent
 * tokens), then by the workload's exact subject or trust provider; rules with neither (pattern or
 * attribute matchers only) are always candidates of their target. Cost per decision grows with
 * the rules of one target and subject, not with the size of the policy set.
 */
interface Bucket {
  bySubject: Map<string, ModelRule[]>;
  byProvider: Map<string, ModelRule[]>;
  rest: ModelRule[];
  /** Every rule of the bucket, in policy order. */
  all: ModelRule[];
}

const newBucket = (): Bucket => ({ bySubject: new Map(), byProvider: new Map(), rest: [], all: [] });

function add(b: Bucket, rule: ModelRule): void {
  b.all.push(rule);
  const push = (m: Map<string, ModelRule[]>, k: string) => {
    const list = m.get(k) ?? m.set(k, []).get(k)!;
    if (list[list.length - 1] !== rule) list.push(rule);
  };
  for (const w of rule.workloads) {
    if (w.subject !== undefined) push(b.bySubject, w.subject);
    else if (w.provider !== undefined) push(b.byProvider, w.provider);
    else if (b.rest[b.rest.length - 1] !== rule) b.rest.push(rule);
  }
}

const EMPTY: readonly ModelRule[] = [];

function candidates(b: Bucket | undefined, id: BlendedIdentity): readonly ModelRule[] {
  if (!b) return EMPTY;
  const s = b.bySubject.get(id.workload.subject) ?? EMPTY;
  const p = b.byProvider.get(id.workload.provider) ?? EMPTY;
  const r = b.rest;
  if (!p.length && !r.length) return s;
  if (!s.length && !r.length) return p;
  if (!s.length && !p.length) return r;
  // Keep policy order (first rule wins ties) and drop duplicates of multi-matcher rules.
  return [...new Set([...s, ...p, ...r])].sort((a, b) => a.order - b.order);
}

export function buildPolicyIndex(rules: readonly ModelRule[]) {
  const byTarget = new Map<string, Bucket>();
  const agentTokens = newBucket();
  const everyAgentRule = newBucket();
  const humansByTarget = new Map<string, ModelRule[]>();
  const humanAgentTokens: ModelRule[] = [];
  for (const rule of rules) {
    if (rule.side === 'human') {
      for (const t of rule.grants.keys()) (humansByTarget.get(t) ?? humansByTarget.set(t, []).get(t)!).push(rule);
      if (rule.agentTokenTtl !== undefined) humanAgentTokens.push(rule);
      continue;
    }
    add(everyAgentRule, rule);
    if (rule.agentTokenTtl !== undefined) add(agentTokens, rule);
    for (const t of rule.grants.keys()) add(byTarget.get(t) ?? byTarget.set(t, newBucket()).get(t)!, rule);
  }
  return {
    /** Agent rules that may grant `target` (or agent tokens) to this workload, in policy order. */
    agentCandidates(id: BlendedIdentity, target: string | undefined): readonly ModelRule[] {
      return candidates(target === undefined ? agentTokens : byTarget.get(target), id);
    },
    /** Agent rules whose matchers could select this workload, whatever they grant (for explanations of a denial). */
    identityCandidates(id: BlendedIdentity): readonly ModelRule[] {
      return candidates(everyAgentRule, id);
    },
    /** Every agent rule granting `target`, whoever it is for (its closest miss explains a denial). */
    grantingRules(target: string | undefined): readonly ModelRule[] {
      return (target === undefined ? agentTokens : byTarget.get(target))?.all ?? EMPTY;
    },
    humanCandidates(target: string | undefined): readonly ModelRule[] {
      return target === undefined ? humanAgentTokens : (humansByTarget.get(target) ?? EMPTY);
    },
  };
}
export type PolicyIndex = ReturnType<typeof buildPolicyIndex>;
