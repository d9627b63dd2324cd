import type { BlendedIdentity, HumanContext } from '../core/types.js';
import type { ConditionInput } from './cel-conditions.js';
import type { HumanMatcher, ModelGrant, ModelRule, Presence, WorkloadMatcher } from './policy-model.js';

/** What is asked, independent of HTTP. `lifetime`: the requested lifetime, seconds, when the client asked for one. */
export type PolicyRequest =
  | { kind: 'agent-token'; lifetime?: number }
  | { kind: 'credential'; target: string; scopes: string[]; lifetime?: number };

/** How far a rule got before it failed; later stages are "closer" to allowing. */
export type Stage = 'identity' | 'human' | 'target' | 'condition' | 'scope';
export const STAGE_RANK: Record<Stage, number> = { identity: 0, human: 1, target: 2, condition: 3, scope: 4 };

/** A rule that allows the request (for its side). */
export interface RuleAllows {
  ok: true;
  rule: ModelRule;
  grant?: ModelGrant;
  /** Granted scopes before any intersection: the requested ones, or all of the grant's. */
  scopes: string[];
  ttl: number;
}
export interface RuleMiss {
  ok: false;
  rule: ModelRule;
  stage: Stage;
  reason: string;
  /** The workload's subject matched, its attributes or pins did not: closer than another subject. */
  near?: boolean;
}
export type RuleResult = RuleAllows | RuleMiss;

/** Provider types whose canonical subject contains mutable names: rules must pin an immutable id. */
const REQUIRED_PINS: Record<string, readonly string[]> = {
  'github-actions': ['repository_id', 'repository_owner_id'],
};

function oneWorkload(w: WorkloadMatcher, id: BlendedIdentity): string | undefined {
  const wl = id.workload;
  if (w.provider && w.provider !== wl.provider) return 'trust provider differs';
  if (w.subject !== undefined && w.subject !== wl.subject) return 'workload subject differs';
  if (w.subjectRe && !w.subjectRe.test(wl.subject)) return 'workload subject does not match the pattern';
  for (const [name, accepted] of w.attributes) {
    const actual = wl.attributes[name];
    if (actual === undefined || !accepted.includes(actual)) return `attribute ${name} does not match`;
  }
  const pins = REQUIRED_PINS[wl.providerType];
  if (pins && !pins.some((p) => w.attributes.some(([k]) => k === p)))
    return `rule pins no immutable id (${pins.join(' or ')}); names alone are not trusted`;
  return undefined;
}

function anyOf<M>(matchers: readonly M[], what: string, test: (m: M) => string | undefined): string | undefined {
  let first: string | undefined;
  for (const m of matchers) {
    const r = test(m);
    if (r === undefined) return undefined;
    first ??= r;
  }
  return matchers.length > 1 ? `matches none of its ${matchers.length} ${what} matchers (first: ${first})` : first;
}

function oneHuman(h: HumanMatcher, human: HumanContext): string | undefined {
  if (h.provider && h.provider !== human.provider) return 'human identity provider differs';
  if (h.issuer && h.issuer !== human.issuer) return 'human issuer differs';
  if (h.subjects && !h.subjects.includes(human.subject)) return 'human subject not listed';
  if (h.subjectRe && !h.subjectRe.test(human.subject)) return 'human subject does not match the pattern';
  if (h.groups && !h.groups.some((g) => human.groups.includes(g))) return `human is in none of the groups ${h.groups.join(', ')}`;
  if (h.roles && !h.roles.some((r) => human.roles.includes(r))) return `human has none of the roles ${h.roles.join(', ')}`;
  if (h.emailDomains) {
    const domain = human.email?.split('@')[1]?.toLowerCase();
    if (!domain || !h.emailDomains.includes(domain)) return 'human email domain not allowed';
  }
  return undefined;
}

function presenceMismatch(presence: Presence, id: BlendedIdentity, grant: ModelGrant | undefined): string | undefined {
  const on = grant?.human ? ` for target ${grant.target}` : '';
  if (!id.human) return presence === 'required' ? `rule requires a human principal${on}` : undefined;
  if (presence === 'forbidden') return `rule forbids acting for a human${on}`;
  return undefined;
}

function conditionsFail(rule: ModelRule, grant: ModelGrant | undefined, input: () => ConditionInput): string | undefined {
  for (const [c, what] of [[rule.when, 'rule'], [grant?.when, `grant ${grant?.target}`]] as const) {
    if (!c) continue;
    const r = c.test(input());
    if (!r.ok) return r.error ? `${what} ${r.error} (${c.source}); denied` : `${what} condition is false: ${c.source}`;
  }
  return undefined;
}

function grantFor(rule: ModelRule, req: PolicyRequest): { grant?: ModelGrant; missing?: string } {
  if (req.kind === 'agent-token') return rule.agentTokenTtl === undefined ? { missing: 'rule does not allow agent tokens' } : {};
  const grant = rule.grants.get(req.target);
  return grant ? { grant } : { missing: `rule grants nothing for target ${req.target}` };
}

function allowed(rule: ModelRule, grant: ModelGrant | undefined, req: PolicyRequest): RuleResult {
  if (req.kind === 'agent-token') return { ok: true, rule, scopes: [], ttl: rule.agentTokenTtl! };
  const missing = req.scopes.filter((s) => !grant!.scopes.has(s));
  if (missing.length) return { ok: false, rule, stage: 'scope', reason: `scope not granted by this rule: ${missing.join(' ')}` };
  return { ok: true, rule, grant, scopes: req.scopes.length ? req.scopes : [...grant!.scopes.keys()], ttl: grant!.ttl };
}

/** An agent rule (v1 or v2) for this workload: identity, human presence (and v1 human conditions), target, conditions, scopes. */
export function checkAgentRule(rule: ModelRule, id: BlendedIdentity, req: PolicyRequest, input: () => ConditionInput): RuleResult {
  const miss = (stage: Stage, reason: string): RuleMiss => ({ ok: false, rule, stage, reason });
  const wm = anyOf(rule.workloads, 'workload', (w) => oneWorkload(w, id));
  if (wm) return { ...miss('identity', wm), near: /^(attribute|rule pins)/.test(wm) };
  const { grant, missing } = grantFor(rule, req);
  const pm = presenceMismatch(grant?.human ?? rule.presence, id, grant);
  if (pm) return miss('human', pm);
  if (id.human && rule.humans.length) {
    const hm = anyOf(rule.humans, 'human', (h) => oneHuman(h, id.human!));
    if (hm) return miss('human', hm);
  }
  if (missing) return miss('target', missing);
  const cf = conditionsFail(rule, grant, input);
  if (cf) return miss('condition', cf);
  return allowed(rule, grant, req);
}

/** A v2 human rule for the person the agent acts for. */
export function checkHumanRule(rule: ModelRule, human: HumanContext, req: PolicyRequest, input: () => ConditionInput): RuleResult {
  const miss = (stage: Stage, reason: string): RuleMiss => ({ ok: false, rule, stage, reason });
  const hm = anyOf(rule.humans, 'human', (h) => oneHuman(h, human));
  if (hm) return miss('human', hm);
  const { grant, missing } = grantFor(rule, req);
  if (missing) return miss('target', missing);
  const cf = conditionsFail(rule, grant, input);
  if (cf) return miss('condition', cf);
  return allowed(rule, grant, req);
}
