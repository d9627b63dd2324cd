import type { BlendedIdentity, Decision } from '../core/types.js';
import { ConfigError } from '../errors/sts-errors.js';
import { paramItems } from '../credential-issuers/grant-params.js';
import { conditionInput, type ConditionInput, type PolicyEnvironment } from './cel-conditions.js';
import type { LoadedDocument } from './policy-document.js';
import { buildPolicyIndex } from './policy-index.js';
import { checkAgentRule, checkHumanRule, STAGE_RANK, type PolicyRequest, type RuleAllows, type RuleMiss, type RuleResult, type Stage } from './policy-match.js';
import { asLoaded, compilePolicyModel, type ModelRule, type Obligations, type PolicyModel } from './policy-model.js';
import type { PolicyConfig } from './policy-schema.js';

export type { PolicyRequest } from './policy-match.js';

export interface PolicyEngineOptions {
  agentTokenMaxTtl: number;
  accessTokenMaxTtl: number;
  /** v2 documents already loaded from files (policy.dir); inline `policy.documents` are read from `policy`. */
  documents?: LoadedDocument[];
}

/** One rule as `explain` saw it. */
export interface RuleTrace {
  rule: string;
  side: 'agent' | 'human';
  source: string;
  matched: boolean;
  /** Where it stopped (when not matched). */
  stage?: Stage;
  reason: string;
}

export interface Explanation {
  decision: Decision;
  rules: RuleTrace[];
}

const DENIAL: Record<Stage, NonNullable<Decision['denial']>> = { identity: 'identity', human: 'human', target: 'target', condition: 'identity', scope: 'scope' };

/** How many more rules of each kind a denial checks to name the closest one (see explainingMisses). */
const EXPLAIN_LIMIT = 16;

/**
 * Compiles the policy set once (v1 rules and v2 documents into one model, anchored patterns,
 * compiled CEL, an index by target and subject) and decides requests. Deny by default; a
 * condition that cannot be evaluated denies. With a person present (an agent acting for a
 * human), a credential needs an agent rule AND a human rule for the same target: scopes are the
 * intersection, the lifetime the shorter cap (a v1 rule's human conditions make it both at once).
 * Throws ConfigError when the set does not compile.
 */
export function createPolicyEngine(policy: PolicyConfig, opts: PolicyEngineOptions) {
  const inline = asLoaded(policy.documents ?? []);
  const { model, problems } = compilePolicyModel({ rules: policy.rules, documents: [...inline.documents, ...(opts.documents ?? [])] }, opts);
  if (inline.problems.length || problems.length) throw new ConfigError([...inline.problems, ...problems]);
  return createEngineFromModel(model);
}

export function createEngineFromModel(model: PolicyModel) {
  const { version } = model;
  const index = buildPolicyIndex(model.rules);

  function evaluate(id: BlendedIdentity, req: PolicyRequest, where: PolicyEnvironment = {}): Decision {
    const input = lazyInput(id, req, where);
    const target = req.kind === 'credential' ? req.target : undefined;
    const agentResults = index.agentCandidates(id, target).map((r) => checkAgentRule(r, id, req, input));
    const allow = decideFrom(id, req, agentResults, input);
    if (allow) return allow;
    return deny(id, req, [...agentResults, ...explainingMisses(id, req, target, agentResults, input)].sort((a, b) => a.rule.order - b.rule.order), input);
  }

  /**
   * For a denial, besides the candidates already checked: rules that could select this workload
   * (whatever they grant) and rules that grant the target (whoever they are for), to name the
   * closest. Bounded (EXPLAIN_LIMIT each, first in policy order) so that a denial costs about the
   * same with 10 or 10,000 rules; `explain` still checks every rule.
   */
  function explainingMisses(id: BlendedIdentity, req: PolicyRequest, target: string | undefined, checked: RuleResult[], input: () => ConditionInput): RuleResult[] {
    // Short lists: a linear search is cheaper than a Set here.
    const out: RuleResult[] = [];
    const known = (r: ModelRule) => checked.some((c) => c.rule === r) || out.some((c) => c.rule === r);
    const take = (rules: readonly ModelRule[]) => {
      let n = 0;
      for (const r of rules) {
        if (n >= EXPLAIN_LIMIT) break;
        if (r.side !== 'agent' || known(r)) continue;
        n++;
        out.push(checkAgentRule(r, id, req, input));
      }
    };
    take(index.identityCandidates(id, EXPLAIN_LIMIT + checked.length));
    take(index.grantingRules(target));
    take(model.rules.slice(0, 1));
    return out;
  }

  function lazyInput(id: BlendedIdentity, req: PolicyRequest, where: PolicyEnvironment): () => ConditionInput {
    let cached: ConditionInput | undefined;
    return () => (cached ??= conditionInput(id, req, where));
  }

  function humanResults(id: BlendedIdentity, req: PolicyRequest, input: () => ConditionInput): RuleResult[] {
    return index.humanCandidates(req.kind === 'credential' ? req.target : undefined).map((r) => checkHumanRule(r, id.human!, req, input));
  }

  /** The best allowed option, or undefined. */
  function decideFrom(id: BlendedIdentity, req: PolicyRequest, agentResults: RuleResult[], input: () => ConditionInput): Decision | undefined {
    let best: Decision | undefined;
    const consider = (d: Decision | string) => {
      if (typeof d !== 'string' && (!best || d.ttlCapSeconds > best.ttlCapSeconds || (d.ttlCapSeconds === best.ttlCapSeconds && d.grantedScopes.length > best.grantedScopes.length))) best = d;
    };
    const agents = agentResults.filter((r): r is RuleAllows => r.ok);
    if (!agents.length) return undefined;
    if (!id.human) {
      // As in v1: the longest lifetime wins, the first rule on a tie.
      for (const a of agents) {
        const d = allowOf(req, a, undefined, id);
        if (typeof d !== 'string' && (!best || d.ttlCapSeconds > best.ttlCapSeconds)) best = d;
      }
      return best;
    }
    let humans: RuleAllows[] | undefined;
    for (const a of agents) {
      // A v1 rule carries its own human conditions: it is both sides of the intersection.
      if (a.rule.v1) consider(allowOf(req, a, a, id));
      else for (const h of (humans ??= humanResults(id, req, input).filter((r): r is RuleAllows => r.ok))) consider(allowOf(req, a, h, id));
    }
    return best;
  }

  /** Joins an agent option with a human option; a string says why they do not combine. */
  function allowOf(req: PolicyRequest, a: RuleAllows, h: RuleAllows | undefined, id: BlendedIdentity): Decision | string {
    const target = req.kind === 'credential' ? req.target : undefined;
    const both = h && h !== a ? h : undefined;
    const scopes = both ? a.scopes.filter((s) => both.scopes.includes(s)) : a.scopes;
    if (both && !scopes.length && (a.scopes.length || both.scopes.length)) return `scopes of ${a.rule.id} and ${both.rule.id} do not intersect`;
    const merged = mergeObligations(a, both, scopes);
    if (typeof merged === 'string') return merged;
    const reasons = [target ? `rule ${a.rule.id} grants ${target}` : `rule ${a.rule.id} allows an agent token`];
    if (both) reasons.push(`rule ${both.rule.id} allows ${id.human!.subject} the same (intersection)`);
    return {
      allow: true,
      policyId: a.rule.id,
      policyVersion: version,
      target,
      grantedScopes: scopes,
      ttlCapSeconds: Math.min(a.ttl, both?.ttl ?? Infinity),
      reasons,
      decidingRules: { agent: a.rule.id, ...(h ? { human: h.rule.id } : {}) },
      ...merged,
    };
  }

  function deny(id: BlendedIdentity, req: PolicyRequest, results: RuleResult[], input: () => ConditionInput): Decision {
    const target = req.kind === 'credential' ? req.target : undefined;
    const base = { allow: false as const, policyVersion: version, target, grantedScopes: [], ttlCapSeconds: 0 };
    const agents = results.filter((r): r is RuleAllows => r.ok);
    if (agents.length) {
      // The agent is allowed; the person is not (or the two do not combine).
      const hs = humanResults(id, req, input);
      const misses = hs.filter((r): r is RuleMiss => !r.ok);
      const c = closestOf(misses, () => true);
      const pairProblem = hs.some((r) => r.ok) ? agents.flatMap((a) => hs.filter((h): h is RuleAllows => h.ok).map((h) => allowOf(req, a, h, id))).find((d) => typeof d === 'string') : undefined;
      const reason = pairProblem
        ? `agent rule ${agents[0]!.rule.id} and a human rule allow it, but ${pairProblem}`
        : `agent rule ${agents[0]!.rule.id} allows it, but no rule allows human ${id.human!.subject} for ${target ?? 'an agent token'} (both must)${c ? `: closest human rule ${c.rule.id}: ${c.reason}` : ''}`;
      return { ...base, policyId: agents[0]!.rule.id, reasons: [reason], denial: (pairProblem && /^(scopes|parameter) /.test(pairProblem)) || c?.stage === 'scope' ? 'scope' : 'human' };
    }
    const misses = results.filter((r): r is RuleMiss => !r.ok);
    const grants = (r: ModelRule) => (target === undefined ? r.agentTokenTtl !== undefined : r.grants.has(target));
    const closest = closestOf(misses, grants);
    let furthest: Stage = 'identity';
    let furthestGranting: Stage | undefined;
    for (const m of misses) {
      if (STAGE_RANK[m.stage] > STAGE_RANK[furthest]) furthest = m.stage;
      if (grants(m.rule) && (!furthestGranting || STAGE_RANK[m.stage] > STAGE_RANK[furthestGranting])) furthestGranting = m.stage;
    }
    // The OAuth error follows the furthest stage any rule reached; rules that grant what is asked decide it when there are any.
    const stage = furthestGranting && furthestGranting !== 'identity' ? furthestGranting : STAGE_RANK[furthest] >= STAGE_RANK.target ? 'target' : furthest;
    return {
      ...base,
      policyId: closest?.rule.id,
      reasons: [closest ? `closest rule ${closest.rule.id}: ${closest.reason}` : 'no policy rule exists'],
      denial: DENIAL[stage],
    };
  }

  /** Every rule, matched or not and why, plus the decision (the same one `evaluate` returns). */
  function explain(id: BlendedIdentity, req: PolicyRequest, where: PolicyEnvironment = {}): Explanation {
    const input = lazyInput(id, req, where);
    const rules = model.rules.map((r): RuleTrace => {
      if (r.side === 'human' && !id.human) return { rule: r.id, side: r.side, source: r.source, matched: false, stage: 'human', reason: 'human rule: no person in this request' };
      const res = r.side === 'agent' ? checkAgentRule(r, id, req, input) : checkHumanRule(r, id.human!, req, input);
      return res.ok
        ? { rule: r.id, side: r.side, source: r.source, matched: true, reason: `matches; grants ${res.scopes.join(' ') || (req.kind === 'agent-token' ? 'an agent token' : 'no scopes')} for ${res.ttl}s` }
        : { rule: r.id, side: r.side, source: r.source, matched: false, stage: res.stage, reason: res.reason };
    });
    return { decision: evaluate(id, req, where), rules };
  }

  return { evaluate, explain, version, model };
}

/** Closest miss: one that grants what is asked beats one that does not, then the furthest stage; first rule wins ties. */
function closestOf(misses: RuleMiss[], grants: (r: ModelRule) => boolean): RuleMiss | undefined {
  let best: { m: RuleMiss; rank: number } | undefined;
  for (const m of misses) {
    const rank = STAGE_RANK[m.stage] + (m.near ? 0.5 : 0) + (grants(m.rule) ? 10 : 0);
    if (!best || rank > best.rank) best = { m, rank };
  }
  return best?.m;
}

/**
 * One parameter of a scope both sides grant: the same value, or the items (comma-separated) both
 * allow, in the agent's order; undefined when they have none in common. A parameter only one side
 * gives is taken as it is (a parameter narrows a scope; no parameter is the scope's full extent).
 * A `permissions` parameter whose items are all `name:read|write|admin` on both sides (GitHub's
 * shape, where each level includes the ones below it) intersects by name at the weaker level:
 * `contents:write` ∩ `contents:read` = `contents:read`.
 */
function intersectParam(key: string, agent: string, human: string): string | undefined {
  if (agent === human) return agent;
  if (key === 'permissions') {
    const a = permissionLevels(agent);
    const h = permissionLevels(human);
    if (a && h) {
      const common = [...a].filter(([name]) => h.has(name)).map(([name, level]) => `${name}:${LEVELS[Math.min(level, h.get(name)!)]}`);
      return common.length ? common.join(',') : undefined;
    }
  }
  const theirs = new Set(paramItems(human));
  const common = paramItems(agent).filter((x) => theirs.has(x));
  return common.length ? [...new Set(common)].join(',') : undefined;
}

/** Permission levels, weakest first: each includes the ones before it. */
const LEVELS = ['read', 'write', 'admin'] as const;
const LEVELED_ITEM = /^([A-Za-z0-9_-]+):(read|write|admin)$/;

/** name → the highest level the value lists for it, in first-seen order; undefined unless every item is `name:level`. */
function permissionLevels(value: string): Map<string, number> | undefined {
  const out = new Map<string, number>();
  for (const item of paramItems(value)) {
    const m = LEVELED_ITEM.exec(item);
    if (!m) return undefined;
    const level = LEVELS.indexOf(m[2] as (typeof LEVELS)[number]);
    out.set(m[1]!, Math.max(level, out.get(m[1]!) ?? 0));
  }
  return out.size ? out : undefined;
}

/** Obligations and scope parameters of both sides; a conflict refuses the pair (fail closed). */
function mergeObligations(a: RuleAllows, h: RuleAllows | undefined, scopes: string[]): Pick<Decision, 'obligations' | 'scopeParams'> | string {
  const sides = h ? [a, h] : [a];
  // Maps, not object literals: a tag, scope or parameter may be named like an Object.prototype member.
  const tags = new Map<string, string>();
  let approval: Obligations['approval'];
  for (const s of sides) {
    for (const [k, v] of Object.entries(s.grant?.obligations?.sessionTags ?? {})) {
      if (tags.has(k) && tags.get(k) !== v) return `session tag ${k} differs between ${a.rule.id} and ${h!.rule.id}`;
      tags.set(k, v);
    }
    const ap = s.grant?.obligations?.approval;
    if (ap) approval = approval ? { approvers: [...new Set([...approval.approvers, ...ap.approvers])], windowSeconds: Math.min(approval.windowSeconds, ap.windowSeconds) } : { ...ap };
  }
  const scopeParams = new Map<string, Map<string, string>>();
  for (const scope of scopes)
    for (const s of sides)
      for (const [k, v] of Object.entries(s.grant?.scopes.get(scope) ?? {})) {
        const p = scopeParams.get(scope) ?? scopeParams.set(scope, new Map()).get(scope)!;
        const had = p.get(k);
        const both = had === undefined ? v : intersectParam(k, had, v);
        if (both === undefined) return `parameter ${k} of scope ${scope} has nothing in common between ${a.rule.id} (${had}) and ${h!.rule.id} (${v})`;
        p.set(k, both);
      }
  const obligations: Obligations = { ...(tags.size ? { sessionTags: Object.fromEntries(tags) } : {}), ...(approval ? { approval } : {}) };
  return {
    ...(Object.keys(obligations).length ? { obligations } : {}),
    ...(scopeParams.size ? { scopeParams: Object.fromEntries([...scopeParams].map(([scope, p]) => [scope, Object.fromEntries(p)])) } : {}),
  };
}

export type PolicyEngine = ReturnType<typeof createEngineFromModel>;
