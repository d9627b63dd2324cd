import type { BlendedIdentity } from '../core/types.js';
import type { ModelRule } from './policy-model.js';

/**
 * Rules grouped so a decision only looks at rules that could apply: per target (or agent
 * tokens), then by the workload's exact subject, by the literal prefix of a subject pattern
 * (`dev://team-a/.+` -> `dev://team-a/`), or by trust provider; rules with none of these
 * (attribute matchers only, or patterns without a literal prefix) are always candidates of their
 * target. Cost per decision grows with the rules of one target and subject, not with the size of
 * the policy set.
 */
interface Bucket {
  bySubject: Map<string, ModelRule[]>;
  /** prefix length -> prefix -> rules; the lengths are few (one per distinct prefix length). */
  byPrefix: Map<number, Map<string, ModelRule[]>>;
  byProvider: Map<string, ModelRule[]>;
  rest: ModelRule[];
  /** Every rule of the bucket, in policy order. */
  all: ModelRule[];
}

const newBucket = (): Bucket => ({ bySubject: new Map(), byPrefix: new Map(), byProvider: new Map(), rest: [], all: [] });

/** Appends `rule` once (a rule with several matchers in the same list is added once, in order). */
function push(m: Map<string, ModelRule[]>, k: string, rule: ModelRule): void {
  const list = m.get(k) ?? m.set(k, []).get(k)!;
  if (list[list.length - 1] !== rule) list.push(rule);
}

/** Whether `|` appears outside any group or character class: the pattern then has no common prefix. */
function hasTopLevelAlternation(pattern: string): boolean {
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) return true;
  }
  return false;
}

/**
 * The literal text every subject matching `^(?:pattern)$` starts with ('' when unknown). Conservative:
 * it stops at the first metacharacter, class escape or group, and drops a character a quantifier
 * may remove (`ab?` -> `a`), so a rule is never left out of a lookup it could match.
 */
export function literalPrefix(pattern: string): string {
  if (hasTopLevelAlternation(pattern)) return '';
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    let lit: string;
    if (c === '\\') {
      const n = pattern[i + 1];
      // An escaped punctuation character is itself; `\d`, `\w`, `\b`, `\1`, `\u...` are not literals.
      if (n === undefined || /[A-Za-z0-9]/.test(n)) break;
      lit = n;
      i++;
    } else if ('^$.|?*+()[]{}'.includes(c)) break;
    else lit = c;
    const q = pattern[i + 1];
    if (q === '?' || q === '*' || q === '{') break;
    out += lit;
    if (q === '+') break;
  }
  return out;
}

function add(b: Bucket, rule: ModelRule): void {
  b.all.push(rule);
  for (const w of rule.workloads) {
    const prefix = w.subject === undefined && w.subjectPattern !== undefined ? literalPrefix(w.subjectPattern) : '';
    if (w.subject !== undefined) push(b.bySubject, w.subject, rule);
    else if (prefix) push(b.byPrefix.get(prefix.length) ?? b.byPrefix.set(prefix.length, new Map()).get(prefix.length)!, prefix, rule);
    else if (w.provider !== undefined) push(b.byProvider, w.provider, rule);
    else if (b.rest[b.rest.length - 1] !== rule) b.rest.push(rule);
  }
}

const EMPTY: readonly ModelRule[] = [];

/** The lists of `b` that could hold rules for this workload (each in policy order). */
function listsFor(b: Bucket, id: BlendedIdentity): (readonly ModelRule[])[] {
  const subject = id.workload.subject;
  const lists: (readonly ModelRule[])[] = [];
  const s = b.bySubject.get(subject);
  if (s) lists.push(s);
  for (const [length, byPrefix] of b.byPrefix) {
    if (length > subject.length) continue;
    const p = byPrefix.get(subject.slice(0, length));
    if (p) lists.push(p);
  }
  const p = b.byProvider.get(id.workload.provider);
  if (p) lists.push(p);
  if (b.rest.length) lists.push(b.rest);
  return lists;
}

/**
 * The rules of several policy-ordered lists, merged in policy order without duplicates (a rule
 * with several matchers can be in more than one), at most `limit` of them.
 */
function mergeOrdered(lists: (readonly ModelRule[])[], limit = Infinity): readonly ModelRule[] {
  if (lists.length === 0) return EMPTY;
  if (lists.length === 1 && lists[0]!.length <= limit) return lists[0]!;
  const out: ModelRule[] = [];
  const at = lists.map(() => 0);
  let last: ModelRule | undefined;
  while (out.length < limit) {
    let best = -1;
    for (let k = 0; k < lists.length; k++) {
      const r = lists[k]![at[k]!];
      if (r && (best < 0 || r.order < lists[best]![at[best]!]!.order)) best = k;
    }
    if (best < 0) break;
    const r = lists[best]![at[best]!++]!;
    if (r !== last) out.push(r);
    last = r;
  }
  return out;
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
      const b = target === undefined ? agentTokens : byTarget.get(target);
      return b ? mergeOrdered(listsFor(b, id)) : EMPTY;
    },
    /** The first `limit` agent rules (policy order) whose matchers could select this workload, whatever they grant (for explaining a denial). */
    identityCandidates(id: BlendedIdentity, limit: number): readonly ModelRule[] {
      return mergeOrdered(listsFor(everyAgentRule, id), limit);
    },
    /** Every agent rule granting `target` (or agent tokens), whoever it is for, in policy order (its closest miss explains a denial). */
    grantingRules(target: string | undefined): readonly ModelRule[] {
      return (target === undefined ? agentTokens : byTarget.get(target))?.all ?? EMPTY;
    },
    humanCandidates(target: string | undefined): readonly ModelRule[] {
      return target === undefined ? humanAgentTokens : (humansByTarget.get(target) ?? EMPTY);
    },
  };
}
export type PolicyIndex = ReturnType<typeof buildPolicyIndex>;
