import { parseDuration } from '../lib/clock.js';
import { sha256Hex } from '../lib/crypto.js';
import type { BlendedIdentity, Decision } from '../core/types.js';
import type { PolicyConfig, PolicyRule } from './policy-schema.js';
import { grantTtlCap } from './grant-lifetimes.js';

/** What is asked, independent of HTTP. */
export type PolicyRequest =
  | { kind: 'agent-token' }
  | { kind: 'credential'; target: string; scopes: string[] };

/** Provider types whose canonical subject contains mutable names: rules must pin an immutable id. */
const REQUIRED_PINS: Record<string, readonly string[]> = {
  'github-actions': ['repository_id', 'repository_owner_id'],
};

interface CompiledRule {
  rule: PolicyRule;
  subjectRe?: RegExp;
  agentTokenTtl?: number;
  grants: Map<string, { scopes: Set<string>; ttl?: number }>;
}

type Stage = 'identity' | 'human' | 'target' | 'scope';
const STAGE_RANK: Record<Stage, number> = { identity: 0, human: 1, target: 2, scope: 3 };

export interface PolicyEngineOptions {
  agentTokenMaxTtl: number;
  accessTokenMaxTtl: number;
}

/** Compiles the rules once (anchored patterns, parsed durations) and evaluates requests against them. Deny by default. */
export function createPolicyEngine(policy: PolicyConfig, opts: PolicyEngineOptions) {
  const version = `sha256:${sha256Hex(JSON.stringify(policy)).slice(0, 16)}`;
  const compiled: CompiledRule[] = policy.rules.map((rule) => ({
    rule,
    subjectRe: rule.workload.subjectPattern ? new RegExp(`^(?:${rule.workload.subjectPattern})$`) : undefined,
    agentTokenTtl: rule.agentToken ? Math.min(parseDuration(rule.agentToken.maxTtl ?? opts.agentTokenMaxTtl), opts.agentTokenMaxTtl) : undefined,
    grants: new Map(
      rule.grants.map((g) => [
        g.target,
        { scopes: new Set(g.scopes), ttl: g.maxTtl !== undefined ? parseDuration(g.maxTtl) : undefined },
      ]),
    ),
  }));

  function workloadMismatch(c: CompiledRule, id: BlendedIdentity): string | undefined {
    const w = c.rule.workload;
    const wl = id.workload;
    if (w.provider && w.provider !== wl.provider) return 'trust provider differs';
    if (w.subject && w.subject !== wl.subject) return 'workload subject differs';
    if (c.subjectRe && !c.subjectRe.test(wl.subject)) return 'workload subject does not match the pattern';
    for (const [name, expected] of Object.entries(w.attributes ?? {})) {
      const actual = wl.attributes[name];
      const ok = Array.isArray(expected) ? actual !== undefined && expected.includes(actual) : actual === expected;
      if (!ok) return `attribute ${name} does not match`;
    }
    const pins = REQUIRED_PINS[wl.providerType];
    if (pins && !pins.some((p) => w.attributes?.[p] !== undefined))
      return `rule pins no immutable id (${pins.join(' or ')}); names alone are not trusted`;
    return undefined;
  }

  function humanMismatch(c: CompiledRule, id: BlendedIdentity): string | undefined {
    const h = c.rule.human;
    const presence = h?.presence ?? 'optional';
    if (!id.human) return presence === 'required' ? 'rule requires a human principal' : undefined;
    if (presence === 'forbidden') return 'rule forbids acting for a human';
    if (!h) return undefined;
    if (h.provider && h.provider !== id.human.provider) return 'human identity provider differs';
    if (h.subjects && !h.subjects.includes(id.human.subject)) return 'human subject not listed';
    if (h.groups && !h.groups.some((g) => id.human!.groups.includes(g))) return 'human is in none of the required groups';
    if (h.emailDomains) {
      const domain = id.human.email?.split('@')[1]?.toLowerCase();
      if (!domain || !h.emailDomains.map((d) => d.toLowerCase()).includes(domain)) return 'human email domain not allowed';
    }
    return undefined;
  }

  function evaluate(id: BlendedIdentity, req: PolicyRequest): Decision {
    // Closest rule: one that grants the requested target beats one that does not; then the furthest stage reached.
    let closest: { rule: string; stage: Stage; reason: string; rank: number } | undefined;
    // The OAuth error follows the furthest stage any rule reached (an identity some rule accepts gets invalid_target, not invalid_request).
    // Rules that grant what is asked decide it when there are any (a missing human beats "target not granted elsewhere").
    let furthest: Stage = 'identity';
    let furthestGranting: Stage | undefined;
    const miss = (rule: string, stage: Stage, reason: string) => {
      if (STAGE_RANK[stage] > STAGE_RANK[furthest]) furthest = stage;
      const c = compiled.find((x) => x.rule.id === rule)!;
      const grants = req.kind === 'credential' ? c.grants.has(req.target) : c.agentTokenTtl !== undefined;
      if (grants && (!furthestGranting || STAGE_RANK[stage] > STAGE_RANK[furthestGranting])) furthestGranting = stage;
      const rank = STAGE_RANK[stage] + (grants ? 10 : 0);
      if (!closest || rank > closest.rank) closest = { rule, stage, reason, rank };
    };
    let best: Decision | undefined;
    for (const c of compiled) {
      const id_ = c.rule.id;
      const wm = workloadMismatch(c, id);
      if (wm) { miss(id_, 'identity', wm); continue; }
      const hm = humanMismatch(c, id);
      if (hm) { miss(id_, 'human', hm); continue; }
      if (req.kind === 'agent-token') {
        if (c.agentTokenTtl === undefined) { miss(id_, 'target', 'rule does not allow agent tokens'); continue; }
        if (!best || c.agentTokenTtl > best.ttlCapSeconds)
          best = allow(id_, undefined, [], c.agentTokenTtl, `rule ${id_} allows an agent token`);
        continue;
      }
      const grant = c.grants.get(req.target);
      if (!grant) { miss(id_, 'target', `rule grants nothing for target ${req.target}`); continue; }
      const missing = req.scopes.filter((s) => !grant.scopes.has(s));
      if (missing.length) { miss(id_, 'scope', `scope not granted by this rule: ${missing.join(' ')}`); continue; }
      const scopes = req.scopes.length ? req.scopes : [...grant.scopes];
      const ttl = grantTtlCap(grant.ttl, opts.accessTokenMaxTtl);
      if (!best || ttl > best.ttlCapSeconds) best = allow(id_, req.target, scopes, ttl, `rule ${id_} grants ${req.target}`);
    }
    if (best) return best;
    return {
      allow: false,
      policyVersion: version,
      policyId: closest?.rule,
      target: req.kind === 'credential' ? req.target : undefined,
      grantedScopes: [],
      ttlCapSeconds: 0,
      reasons: [closest ? `closest rule ${closest.rule}: ${closest.reason}` : 'no policy rule exists'],
      denial:
        furthestGranting && furthestGranting !== 'identity'
          ? furthestGranting
          : STAGE_RANK[furthest] >= STAGE_RANK.target
            ? 'target'
            : furthest,
    };
  }

  function allow(policyId: string, target: string | undefined, scopes: string[], ttl: number, reason: string): Decision {
    return { allow: true, policyId, policyVersion: version, target, grantedScopes: scopes, ttlCapSeconds: ttl, reasons: [reason] };
  }

  return { evaluate, version };
}
export type PolicyEngine = ReturnType<typeof createPolicyEngine>;
