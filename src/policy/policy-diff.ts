import { formatDuration } from './grant-lifetimes.js';
import type { HumanMatcher, ModelRule, PolicyModel, WorkloadMatcher } from './policy-model.js';

/**
 * `policy diff`: what each kind of identity gains or loses between two policy sets.
 *
 * Method: every rule is flattened into grant lines, one per (who, condition, target): who is one
 * workload matcher (provider, subject or pattern, attributes, and for v1 rules the human
 * conditions) or one human matcher; the condition is the rule's and grant's CEL text; the value
 * is the scopes (with parameters), the lifetime cap, human presence and obligations. Lines only in
 * the new set are gained, only in the old set lost, in both with another value changed.
 * Limits: identities are compared by how they are written, not by what they match (a rewritten
 * pattern that matches the same subjects shows as lost + gained, two overlapping patterns are not
 * merged); conditions are compared textually; rule names are ignored, so moving a grant between
 * rules or documents is no change.
 */
interface GrantLine {
  key: string;
  scopes: Map<string, string>;
  ttl: number;
  extra: string;
}

function workloadText(w: WorkloadMatcher): string {
  const parts = [w.provider && `provider=${w.provider}`, w.subject !== undefined && `subject=${w.subject}`, w.subjectPattern !== undefined && `subject~${w.subjectPattern}`];
  for (const [k, v] of [...w.attributes].sort(([a], [b]) => a.localeCompare(b))) parts.push(`${k}∈{${[...v].sort().join(',')}}`);
  return parts.filter(Boolean).join(' ') || 'any workload';
}

function humanText(h: HumanMatcher): string {
  const list = (name: string, v?: string[]) => v && `${name}∈{${[...v].sort().join(',')}}`;
  const parts = [h.provider && `provider=${h.provider}`, h.issuer && `issuer=${h.issuer}`, list('subject', h.subjects), h.subjectPattern !== undefined && `subject~${h.subjectPattern}`, list('groups', h.groups), list('roles', h.roles), list('emailDomain', h.emailDomains)];
  return parts.filter(Boolean).join(' ') || 'any person';
}

export function grantLines(model: PolicyModel): GrantLine[] {
  const out: GrantLine[] = [];
  const who = (r: ModelRule): string[] =>
    r.side === 'human'
      ? r.humans.map((h) => `human ${humanText(h)}`)
      : r.workloads.map((w) => `workload ${workloadText(w)}${r.v1 && r.humans.length ? ` with human ${r.humans.map(humanText).join(' | ')}` : ''}`);
  for (const r of model.rules) {
    for (const w of who(r)) {
      if (r.agentTokenTtl !== undefined)
        out.push({ key: `${w}${r.when ? ` if (${r.when.source})` : ''} -> (agent token)`, scopes: new Map(), ttl: r.agentTokenTtl, extra: r.side === 'agent' ? `human ${r.presence}` : '' });
      for (const g of r.grants.values()) {
        const conds = [r.when?.source, g.when?.source].filter(Boolean).map((c) => `(${c})`).join(' && ');
        out.push({
          key: `${w}${conds ? ` if ${conds}` : ''} -> ${g.target}`,
          scopes: new Map([...g.scopes].map(([s, p]) => [s, Object.keys(p).length ? `${s}${JSON.stringify(p)}` : s])),
          ttl: g.ttl,
          extra: [r.side === 'agent' ? `human ${g.human ?? r.presence}` : '', g.obligations ? `obligations ${JSON.stringify(g.obligations)}` : ''].filter(Boolean).join('; '),
        });
      }
    }
  }
  return out;
}

/** Merges lines with the same key (two rules granting the same to the same who): union of scopes, longest lifetime. */
function byKey(lines: GrantLine[]): Map<string, GrantLine> {
  const m = new Map<string, GrantLine>();
  for (const l of lines) {
    const had = m.get(l.key);
    if (!had) m.set(l.key, { ...l, scopes: new Map(l.scopes) });
    else {
      for (const [s, t] of l.scopes) had.scopes.set(s, t);
      had.ttl = Math.max(had.ttl, l.ttl);
      if (l.extra !== had.extra) had.extra = [had.extra, l.extra].filter(Boolean).join(' | ');
    }
  }
  return m;
}

const show = (l: GrantLine) => `${[...l.scopes.values()].join(' ') || '(no scopes)'}; ${formatDuration(l.ttl)}${l.extra ? `; ${l.extra}` : ''}`;

/** Lines `+ gained`, `- lost`, `~ changed`, sorted by who and target. */
export function diffPolicies(before: PolicyModel, after: PolicyModel): string[] {
  const a = byKey(grantLines(before));
  const b = byKey(grantLines(after));
  const out: string[] = [];
  for (const key of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const o = a.get(key);
    const n = b.get(key);
    if (!o) out.push(`+ ${key}: ${show(n!)}`);
    else if (!n) out.push(`- ${key}: ${show(o)}`);
    else {
      const gained = [...n.scopes.values()].filter((s) => ![...o.scopes.values()].includes(s));
      const lost = [...o.scopes.values()].filter((s) => ![...n.scopes.values()].includes(s));
      const changes = [
        gained.length && `gains scopes ${gained.join(' ')}`,
        lost.length && `loses scopes ${lost.join(' ')}`,
        o.ttl !== n.ttl && `lifetime ${formatDuration(o.ttl)} -> ${formatDuration(n.ttl)}`,
        o.extra !== n.extra && `${o.extra || '(none)'} -> ${n.extra || '(none)'}`,
      ].filter(Boolean);
      if (changes.length) out.push(`~ ${key}: ${changes.join('; ')}`);
    }
  }
  return out;
}
