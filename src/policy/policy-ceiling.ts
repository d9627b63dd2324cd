import { parseDuration } from '../lib/clock.js';
import { formatDuration } from './grant-lifetimes.js';
import type { CeilingDocument, LoadedDocument } from './policy-document.js';
import type { ModelLimits, ModelRule, PolicyModel, WorkloadMatcher } from './policy-model.js';

type Limit = CeilingDocument['spec']['limits'][number];

/**
 * Organisation ceilings (`kind: PolicyCeiling`): every agent rule must stay within every ceiling,
 * or the policy set does not load. We refuse rather than clip: a rule that silently grants less
 * than it says misleads its readers and its `policy test` cases.
 *
 * A rule's workload matcher is within a limit when it provably selects a subset of the limit's
 * workloads: same provider, an exact subject the limit's pattern accepts, the same pattern, or a
 * pattern with the limit's literal prefix (limit written `prefix.*` / `prefix.+`, rule pattern
 * without `|`), and every attribute the limit pins pinned to accepted values. Anything we cannot
 * prove is refused, so a ceiling is exhaustive: workloads it does not cover get nothing.
 * Human rules are not checked: a credential always needs an agent rule too (intersection).
 */
export function checkCeilings(model: PolicyModel, documents: LoadedDocument[], limits: ModelLimits): string[] {
  const problems: string[] = [];
  for (const ceiling of model.ceilings) {
    const loaded = documents.find((d) => d.doc === ceiling.doc)!;
    const entries = ceiling.doc.spec.limits.map((l, i) => {
      let re: RegExp | undefined;
      try {
        re = l.workloads.subjectPattern ? new RegExp(`^(?:${l.workloads.subjectPattern})$`) : undefined;
      } catch (e) {
        problems.push(`${loaded.where(['spec', 'limits', i, 'workloads', 'subjectPattern'])}: ${(e as Error).message}`);
      }
      return { l, re };
    });
    for (const rule of model.rules) {
      if (rule.side !== 'agent') continue;
      rule.workloads.forEach((m, k) => {
        const covering = entries.filter((e) => covers(e.l, e.re, m));
        const who = rule.workloads.length > 1 ? ` (workloads[${k}])` : '';
        if (!covering.length) {
          if (rule.grants.size || rule.agentTokenTtl !== undefined)
            problems.push(`${rule.source}: rule ${rule.id}${who} is not within ceiling ${ceiling.name}: no limit of it provably covers ${describe(m)}`);
          return;
        }
        if (rule.agentTokenTtl !== undefined && !covering.some((e) => !e.l.agentToken || rule.agentTokenTtl! <= parseDuration(e.l.agentToken.maxTtl)))
          problems.push(`${rule.source}: rule ${rule.id}${who} allows agent tokens for ${formatDuration(rule.agentTokenTtl)}, above ceiling ${ceiling.name}`);
        for (const g of rule.grants.values()) {
          const why = covering.map((e) => grantExcess(e.l, g, limits)).filter((w): w is string => w !== undefined);
          if (why.length === covering.length)
            problems.push(`${g.source}: rule ${rule.id}${who} exceeds ceiling ${ceiling.name}: ${why[0]}`);
        }
      });
    }
  }
  return problems;
}

function describe(m: WorkloadMatcher): string {
  const parts = [m.provider && `provider ${m.provider}`, m.subject && `subject ${m.subject}`, m.subjectPattern && `subjectPattern ${m.subjectPattern}`, ...m.attributes.map(([k, v]) => `${k}=${v.join('|')}`)];
  return parts.filter(Boolean).join(', ') || 'every workload';
}

/** Why this grant is beyond the limit, or undefined when it is within. */
function grantExcess(l: Limit, g: ModelRule['grants'] extends Map<string, infer G> ? G : never, limits: ModelLimits): string | undefined {
  const t = l.targets.find((x) => x.target === g.target);
  if (!t) return `target ${g.target} is not allowed there`;
  const extra = t.scopes ? [...g.scopes.keys()].filter((s) => !t.scopes!.includes(s)) : [];
  if (extra.length) return `scope ${extra.join(' ')} at ${g.target} is not allowed there (allowed: ${t.scopes!.join(' ') || 'none'})`;
  if (t.maxTtl !== undefined && g.ttl > parseDuration(t.maxTtl))
    return `lifetime ${formatDuration(g.ttl)}${g.ttl === limits.accessTokenMaxTtl ? ' (tokens.accessTokenMaxTtl, no maxTtl given)' : ''} at ${g.target} is above ${formatDuration(parseDuration(t.maxTtl))}`;
  return undefined;
}

const LITERAL = /^(?:[^\\.*+?()[\]{}|^$]|\\[.\-/*+?()[\]{}|^$\\])*$/;

/** Conservative: true only when every subject the rule accepts is accepted by the limit. */
function covers(l: Limit, re: RegExp | undefined, m: WorkloadMatcher): boolean {
  const w = l.workloads;
  if (w.provider && w.provider !== m.provider) return false;
  if (w.subject !== undefined && m.subject !== w.subject) return false;
  if (w.subjectPattern !== undefined) {
    if (!re) return false;
    if (m.subject !== undefined) {
      if (!re.test(m.subject)) return false;
    } else if (m.subjectPattern === undefined || !patternWithin(m.subjectPattern, w.subjectPattern)) return false;
  }
  for (const [name, accepted] of Object.entries(w.attributes ?? {})) {
    const values = m.attributes.find(([k]) => k === name)?.[1];
    const ok = Array.isArray(accepted) ? accepted : [accepted];
    if (!values || !values.every((v) => ok.includes(v))) return false;
  }
  return true;
}

function patternWithin(rule: string, limit: string): boolean {
  if (rule === limit) return true;
  const wildcard = /^(.*)\.[*+]$/.exec(limit);
  if (!wildcard || !LITERAL.test(wildcard[1]!)) return false;
  const prefix = wildcard[1]!;
  if (rule.includes('|') || !rule.startsWith(prefix)) return false;
  const rest = rule.slice(prefix.length);
  // `prefix?` would make the prefix's last character optional; `.+` needs one more certain character.
  if (limit.endsWith('*')) return !/^[?*+{]/.test(rest);
  return /^[^\\.*+?()[\]{}|^$]/.test(rest) && !/^.[?*{]/.test(rest);
}
