import { parseDuration } from '../lib/clock.js';
import { noGrantParameters, type GrantRequirements, type IssuerCapabilities } from '../credential-issuers/credential-issuer.js';
import type { ModelRule } from './policy-model.js';
import type { PolicyConfig } from './policy-schema.js';

/**
 * The longest lifetime a grant gives, seconds: its maxTtl (parsed), capped by
 * tokens.accessTokenMaxTtl, which is also what applies when the grant sets none.
 */
export function grantTtlCap(grantTtl: number | undefined, accessTokenMaxTtl: number): number {
  return Math.min(grantTtl ?? accessTokenMaxTtl, accessTokenMaxTtl);
}

/** 900 -> "15m", 3600 -> "1h", 90 -> "90s": the config's own duration syntax. */
export function formatDuration(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

export interface GrantLifetimeCheck {
  policy: PolicyConfig;
  targets: readonly { name: string; issuer: string }[];
  /** Issuer instances declared in the file whose config parsed: name -> type and declared capabilities. */
  issuers: ReadonlyMap<string, IssuerFacts>;
  /** tokens.accessTokenMaxTtl as configured. */
  accessTokenMaxTtl: string | number;
}

/** An issuer instance as load-time checks see it: its type, declared capabilities and grant check. */
export interface IssuerFacts {
  type: string;
  capabilities: IssuerCapabilities;
  /** The plugin's checkGrant for this instance's config (absent: it takes no parameters and no session tags). */
  checkGrant?: (grant: GrantRequirements) => string[];
}

/** The problem with a grant's lifetime for its issuer (undefined when the issuer can honour it). */
function lifetimeProblem(g: { where: string; target: string; own?: number; written?: string; effective: number; cap: number }, issuerName: string, issuer: IssuerFacts): string | undefined {
  const { minTtlSeconds: min, maxTtlSeconds: max, minTtlReason, maxTtlReason } = issuer.capabilities;
  const { where, own, effective, cap } = g;
  if (effective >= min && effective <= max) return undefined;
  const capped = own !== undefined && own > cap;
  const [path, subject] =
    own === undefined
      ? [where, `no maxTtl, so tokens.accessTokenMaxTtl (${formatDuration(cap)}) applies; for target ${g.target} that`]
      : [`${where}.maxTtl`, `${g.written ?? formatDuration(own)}${capped ? ` (capped to ${formatDuration(cap)} by tokens.accessTokenMaxTtl)` : ''} for target ${g.target}`];
  const of = `issuer ${issuerName} (${issuer.type}`;
  if (effective < min) {
    const raise = [own !== undefined && own < min ? 'maxTtl' : undefined, effective === cap && cap < min ? 'tokens.accessTokenMaxTtl' : undefined].filter(Boolean).join(' and ');
    return `${path}: ${subject} is below the minimum lifetime of ${of}, ${min} s)${minTtlReason ? `: ${minTtlReason}` : ''}; raise ${raise} to at least ${formatDuration(min)}, or grant this target from another issuer`;
  }
  const fix = own === undefined ? `give the grant maxTtl: ${formatDuration(max)}` : `lower maxTtl to at most ${formatDuration(max)}`;
  return `${path}: ${subject} is above the maximum lifetime of ${of}, ${max} s)${maxTtlReason ? `: ${maxTtlReason}` : ''}; ${fix}`;
}

/**
 * Every v1 grant whose lifetime its target's issuer cannot honour: a maximum below the issuer's
 * minimum (nothing could ever be issued) or above its maximum (the policy promises more than the
 * issuer gives). One problem per grant, `policy.rules[i] (id).grants[j]...: ...`, saying what to change.
 * (v2 grants: checkModelGrants.)
 */
export function checkGrantLifetimes(input: GrantLifetimeCheck): string[] {
  const problems: string[] = [];
  const cap = parseDuration(input.accessTokenMaxTtl);
  const targets = new Map(input.targets.map((t) => [t.name, t]));
  input.policy.rules.forEach((rule, i) =>
    rule.grants.forEach((g, j) => {
      const target = targets.get(g.target);
      const issuer = target && input.issuers.get(target.issuer);
      if (!target || !issuer) return; // reported elsewhere (unknown target or issuer, or an issuer config that does not parse)
      const own = g.maxTtl !== undefined ? parseDuration(g.maxTtl) : undefined;
      const written = typeof g.maxTtl === 'number' ? `${g.maxTtl}s` : g.maxTtl;
      const p = lifetimeProblem({ where: `policy.rules[${i}] (${rule.id}).grants[${j}]`, target: g.target, own, written, effective: grantTtlCap(own, cap), cap }, target.issuer, issuer);
      if (p) problems.push(p);
    }),
  );
  return problems;
}

/**
 * Every grant of the compiled set (v1 rules and v2 documents) against the issuer of its target,
 * for issuers whose configuration is known here (declared in the config file): v2 lifetimes the
 * issuer cannot honour (as checkGrantLifetimes does for v1), and scope parameters and session tags
 * the issuer refuses (its checkGrant: unknown parameters, a role outside its allow-list, a
 * repository or permission beyond its configuration). Each problem starts with the grant's
 * file:line and path. Targets of issuers registered at runtime are checked at issue time instead.
 */
export function checkModelGrants(input: { rules: readonly ModelRule[]; targets: readonly { name: string; issuer: string }[]; issuers: ReadonlyMap<string, IssuerFacts>; accessTokenMaxTtl: number }): string[] {
  const problems: string[] = [];
  const targets = new Map(input.targets.map((t) => [t.name, t]));
  for (const rule of input.rules)
    for (const g of rule.grants.values()) {
      const target = targets.get(g.target);
      const issuer = target && input.issuers.get(target.issuer);
      if (!target || !issuer) continue;
      if (!rule.v1) {
        const p = lifetimeProblem({ where: g.source, target: g.target, own: g.maxTtl, effective: g.ttl, cap: input.accessTokenMaxTtl }, target.issuer, issuer);
        if (p) problems.push(p);
      }
      // A grant decides alone unless a human rule may add to it: v1 rules hold both sides; an agent rule that requires a person never does.
      const standalone = rule.v1 || (rule.side === 'agent' && (g.human ?? rule.presence) !== 'required');
      const requirements: GrantRequirements = { scopes: g.scopes, ...(g.obligations?.sessionTags ? { sessionTags: g.obligations.sessionTags } : {}), standalone };
      const found = issuer.checkGrant ? issuer.checkGrant(requirements) : noGrantParameters(issuer.type, requirements);
      for (const p of found) problems.push(`${g.source}: target ${g.target} (issuer ${target.issuer}, ${issuer.type}): ${p}`);
    }
  return problems;
}
