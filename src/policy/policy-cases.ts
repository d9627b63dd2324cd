import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYamlText } from 'yaml';
import { z } from 'zod';
import type { BlendedIdentity, Decision } from '../core/types.js';
import { parseDuration } from '../lib/clock.js';
import type { PolicyEnvironment } from './cel-conditions.js';
import type { Explanation, PolicyEngine, PolicyRequest } from './policy-engine.js';
import { PolicyDuration } from './policy-schema.js';

/**
 * The identity / request / environment notation of `policy evaluate` and of `*.test.yaml` cases:
 * what a trust provider would have verified, written by hand.
 */
export const IdentityInputSchema = z
  .object({
    workload: z
      .object({
        provider: z.string().min(1),
        providerType: z.string().min(1).default('oidc'),
        subject: z.string().min(1),
        attributes: z.record(z.string(), z.string()).default({}),
      })
      .strict(),
    human: z
      .object({
        provider: z.string().default('idp'),
        issuer: z.string().default(''),
        subject: z.string().min(1),
        email: z.string().optional(),
        groups: z.array(z.string()).default([]),
        roles: z.array(z.string()).default([]),
      })
      .strict()
      .optional(),
    /** Prior actors (delegation chain), outermost first. */
    actors: z.array(z.string()).default([]),
  })
  .strict();

export const RequestInputSchema = z.union([
  z.object({ agentToken: z.literal(true), lifetime: PolicyDuration.optional() }).strict(),
  z.object({ target: z.string().min(1), scopes: z.array(z.string()).default([]), lifetime: PolicyDuration.optional() }).strict(),
]);

export const EnvInputSchema = z.object({ now: z.string().datetime({ offset: true }).optional(), clientAddress: z.string().optional() }).strict();

export function toIdentity(input: z.infer<typeof IdentityInputSchema>): BlendedIdentity {
  const far = new Date(8.64e15);
  return {
    workload: { kind: 'workload', ...input.workload, claims: {}, expiresAt: far },
    human: input.human && { kind: 'human', ...input.human, expiresAt: far },
    priorActors: input.actors.map((sub) => ({ sub })),
  };
}

export function toRequest(input: z.infer<typeof RequestInputSchema>): PolicyRequest {
  const lifetime = input.lifetime === undefined ? undefined : parseDuration(input.lifetime);
  return 'agentToken' in input ? { kind: 'agent-token', lifetime } : { kind: 'credential', target: input.target, scopes: input.scopes, lifetime };
}

export function toEnv(input: z.infer<typeof EnvInputSchema> | undefined): PolicyEnvironment {
  return { now: input?.now ? new Date(input.now) : undefined, clientAddress: input?.clientAddress };
}

/** Readable explanation: the decision, then every rule and why it matched or not. */
export function formatExplanation(e: Explanation): string[] {
  const d = e.decision;
  const lines = [
    `decision: ${d.allow ? 'ALLOW' : `DENY (${d.denial})`}`,
    ...d.reasons.map((r) => `  reason: ${r}`),
    `  policy version: ${d.policyVersion}`,
  ];
  if (d.allow) {
    lines.push(`  deciding rules: agent ${d.decidingRules?.agent ?? d.policyId}${d.decidingRules?.human ? `, human ${d.decidingRules.human}` : ''}`);
    lines.push(`  scopes: ${d.grantedScopes.join(' ') || '(none)'}; lifetime cap: ${d.ttlCapSeconds}s`);
    if (d.scopeParams) lines.push(`  scope parameters: ${JSON.stringify(d.scopeParams)}`);
    if (d.obligations) lines.push(`  obligations: ${JSON.stringify(d.obligations)}`);
  }
  lines.push('rules considered:');
  for (const r of e.rules) lines.push(`  ${r.matched ? '✓' : '✗'} ${r.rule} (${r.side}, ${r.source}): ${r.matched ? '' : `[${r.stage}] `}${r.reason}`);
  return lines;
}

const CaseSchema = z
  .object({
    name: z.string().min(1),
    identity: IdentityInputSchema,
    request: RequestInputSchema,
    env: EnvInputSchema.optional(),
    expect: z
      .object({
        allow: z.boolean(),
        scopes: z.array(z.string()).optional(),
        ttl: PolicyDuration.optional(),
        /** The deciding agent rule (allow) or the closest rule (deny). */
        rule: z.string().optional(),
        humanRule: z.string().optional(),
        /** A substring of the reasons. */
        reason: z.string().optional(),
      })
      .strict(),
  })
  .strict();
const CaseFileSchema = z.object({ cases: z.array(CaseSchema).min(1) }).strict();

export interface CaseResult {
  file: string;
  name: string;
  passed: boolean;
  /** What differs from the expectation. */
  failures: string[];
  explanation: Explanation;
}

/** Case files of a directory: `*.test.yaml` / `*.test.yml`, sorted. */
export function caseFilesIn(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).filter((f) => /\.test\.ya?ml$/.test(f)).sort().map((f) => join(path, f));
}

/** Runs every case of the files; a file that does not parse throws Error naming it. */
export function runPolicyCases(engine: Pick<PolicyEngine, 'explain'>, files: string[]): CaseResult[] {
  const results: CaseResult[] = [];
  for (const file of files) {
    const parsed = CaseFileSchema.safeParse(parseYamlText(readFileSync(file, 'utf8')));
    if (!parsed.success) throw new Error(`${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    for (const c of parsed.data.cases) {
      const explanation = engine.explain(toIdentity(c.identity), toRequest(c.request), toEnv(c.env));
      const failures = compare(explanation.decision, c.expect);
      results.push({ file, name: c.name, passed: !failures.length, failures, explanation });
    }
  }
  return results;
}

function compare(d: Decision, x: z.infer<typeof CaseSchema>['expect']): string[] {
  const f: string[] = [];
  if (d.allow !== x.allow) f.push(`expected ${x.allow ? 'allow' : 'deny'}, got ${d.allow ? 'allow' : 'deny'}`);
  if (x.scopes && JSON.stringify([...d.grantedScopes].sort()) !== JSON.stringify([...x.scopes].sort())) f.push(`expected scopes [${x.scopes.join(' ')}], got [${d.grantedScopes.join(' ')}]`);
  if (x.ttl !== undefined && parseDuration(x.ttl) !== d.ttlCapSeconds) f.push(`expected lifetime cap ${parseDuration(x.ttl)}s, got ${d.ttlCapSeconds}s`);
  const rule = d.decidingRules?.agent ?? d.policyId;
  if (x.rule && x.rule !== rule) f.push(`expected rule ${x.rule}, got ${rule ?? '(none)'}`);
  if (x.humanRule && x.humanRule !== d.decidingRules?.human) f.push(`expected human rule ${x.humanRule}, got ${d.decidingRules?.human ?? '(none)'}`);
  if (x.reason && !d.reasons.join('; ').includes(x.reason)) f.push(`expected a reason containing "${x.reason}"`);
  return f;
}
