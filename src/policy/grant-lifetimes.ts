import { parseDuration } from '../lib/clock.js';
import type { IssuerCapabilities } from '../credential-issuers/credential-issuer.js';
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
  issuers: ReadonlyMap<string, { type: string; capabilities: IssuerCapabilities }>;
  /** tokens.accessTokenMaxTtl as configured. */
  accessTokenMaxTtl: string | number;
}

/**
 * Every grant whose lifetime its target's issuer cannot honour: a maximum below the issuer's
 * minimum (nothing could ever be issued) or above its maximum (the policy promises more than the
 * issuer gives). One problem per grant, `policy.rules[i] (id).grants[j]...: ...`, saying what to change.
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
      const effective = grantTtlCap(own, cap);
      const { minTtlSeconds: min, maxTtlSeconds: max, minTtlReason, maxTtlReason } = issuer.capabilities;
      if (effective >= min && effective <= max) return;

      const where = `policy.rules[${i}] (${rule.id}).grants[${j}]`;
      const written = typeof g.maxTtl === 'number' ? `${g.maxTtl}s` : g.maxTtl;
      const capped = own !== undefined && own > cap;
      const [path, subject] =
        own === undefined
          ? [where, `no maxTtl, so tokens.accessTokenMaxTtl (${formatDuration(cap)}) applies; for target ${g.target} that`]
          : [`${where}.maxTtl`, `${written}${capped ? ` (capped to ${formatDuration(cap)} by tokens.accessTokenMaxTtl)` : ''} for target ${g.target}`];
      const of = `issuer ${target.issuer} (${issuer.type}`;
      if (effective < min) {
        const raise = [own !== undefined && own < min ? 'maxTtl' : undefined, effective === cap && cap < min ? 'tokens.accessTokenMaxTtl' : undefined].filter(Boolean).join(' and ');
        problems.push(`${path}: ${subject} is below the minimum lifetime of ${of}, ${min} s)${minTtlReason ? `: ${minTtlReason}` : ''}; raise ${raise} to at least ${formatDuration(min)}, or grant this target from another issuer`);
      } else {
        const fix = own === undefined ? `give the grant maxTtl: ${formatDuration(max)}` : `lower maxTtl to at most ${formatDuration(max)}`;
        problems.push(`${path}: ${subject} is above the maximum lifetime of ${of}, ${max} s)${maxTtlReason ? `: ${maxTtlReason}` : ''}; ${fix}`);
      }
    }),
  );
  return problems;
}
