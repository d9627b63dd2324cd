import { parseDuration } from '../lib/clock.js';
import { sha256Hex } from '../lib/crypto.js';
import { compileCondition, type Condition } from './cel-conditions.js';
import { grantTtlCap } from './grant-lifetimes.js';
import { describeWhere, validateDocument, type CeilingDocument, type LoadedDocument, type PolicyDocument } from './policy-document.js';
import type { PolicyRule } from './policy-schema.js';
import { checkCeilings } from './policy-ceiling.js';

/**
 * The one internal model both policy formats compile into: v1 `policy.rules` and v2 documents.
 * Patterns are anchored regular expressions, durations seconds (already capped by the
 * configured maxima), conditions compiled CEL programs.
 */
export type Presence = 'required' | 'optional' | 'forbidden';

export interface WorkloadMatcher {
  provider?: string;
  subject?: string;
  subjectPattern?: string;
  subjectRe?: RegExp;
  /** name -> accepted values. */
  attributes: [string, string[]][];
}

export interface HumanMatcher {
  provider?: string;
  issuer?: string;
  subjects?: string[];
  subjectPattern?: string;
  subjectRe?: RegExp;
  groups?: string[];
  roles?: string[];
  emailDomains?: string[];
}

export interface Obligations {
  sessionTags?: Record<string, string>;
  approval?: { approvers: string[]; windowSeconds: number };
}

export interface ModelGrant {
  target: string;
  /** Where it was written (config path or file:line), for load errors. */
  source: string;
  /** scope -> its parameters (empty object when none). Insertion order = written order. */
  scopes: Map<string, Record<string, string>>;
  /** Effective cap, seconds (grant maxTtl capped by tokens.accessTokenMaxTtl). */
  ttl: number;
  /** The grant's own maxTtl, seconds, when it gives one (for load-time messages). */
  maxTtl?: number;
  human?: Presence;
  when?: Condition;
  obligations?: Obligations;
}

export interface ModelRule {
  /** v1: the rule id; v2: `<document name>/<rule name>`. */
  id: string;
  /** Index in the policy set (first rule wins ties, as in v1). */
  order: number;
  /** Where it was written, for explanations. */
  source: string;
  description?: string;
  /** v2: the owners of its document (`metadata.owners`); v1 rules have none. */
  owners?: readonly string[];
  /** `agent`: grants to workloads; `human`: grants to people (only together with an agent rule). */
  side: 'agent' | 'human';
  /** v1 rule: its human conditions are part of the same rule, so it counts for both sides at once. */
  v1: boolean;
  workloads: WorkloadMatcher[];
  humans: HumanMatcher[];
  presence: Presence;
  when?: Condition;
  agentTokenTtl?: number;
  grants: Map<string, ModelGrant>;
}

export interface PolicySetInput {
  rules: PolicyRule[];
  /** v2 documents, with where-information when loaded from files. */
  documents: LoadedDocument[];
}

export interface ModelLimits {
  agentTokenMaxTtl: number;
  accessTokenMaxTtl: number;
}

export interface PolicyModel {
  rules: ModelRule[];
  ceilings: { name: string; doc: CeilingDocument }[];
  /** `sha256:` + 16 hex of the canonical content: recorded with every decision. */
  version: string;
  /** Names of the v2 documents, for messages. */
  documents: string[];
}

/** Plain documents (already in a config object) with path-only locations. */
export function asLoaded(documents: readonly unknown[], prefix = 'policy.documents'): { documents: LoadedDocument[]; problems: string[] } {
  const out: LoadedDocument[] = [];
  const problems: string[] = [];
  documents.forEach((raw, i) => {
    const where = (path: readonly (string | number)[]) => describeWhere(undefined, undefined, [prefix, i, ...path]);
    const r = validateDocument(raw, where);
    problems.push(...r.problems);
    if (r.doc) out.push({ doc: r.doc, where });
  });
  return { documents: out, problems };
}

function anchored(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`);
}

/** Compiles both formats; every problem names where it is (file:line or config path) and why. */
export function compilePolicyModel(input: PolicySetInput, limits: ModelLimits): { model: PolicyModel; problems: string[] } {
  const problems: string[] = [];
  const rules: ModelRule[] = [];
  const ceilings: PolicyModel['ceilings'] = [];
  const ttlOf = (d: string | number | undefined, where: string): number | undefined => {
    if (d === undefined) return undefined;
    try {
      return parseDuration(d);
    } catch (e) {
      problems.push(`${where}: ${(e as Error).message}`);
      return undefined;
    }
  };
  const regex = (pattern: string | undefined, where: string): RegExp | undefined => {
    if (pattern === undefined) return undefined;
    try {
      return anchored(pattern);
    } catch (e) {
      problems.push(`${where}: ${(e as Error).message}`);
      return undefined;
    }
  };
  const condition = (source: string | undefined, where: string): Condition | undefined => {
    if (source === undefined) return undefined;
    try {
      return compileCondition(source);
    } catch (e) {
      problems.push(`${where}: ${(e as Error).message}`);
      return undefined;
    }
  };
  const workload = (w: PolicyRule['workload'], where: string): WorkloadMatcher => ({
    provider: w.provider,
    subject: w.subject,
    subjectPattern: w.subjectPattern,
    subjectRe: regex(w.subjectPattern, `${where}.subjectPattern`),
    attributes: Object.entries(w.attributes ?? {}).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]),
  });

  input.rules.forEach((r, i) => {
    const where = `policy.rules[${i}] (${r.id})`;
    const h = r.human;
    const hasHumanMatch = Boolean(h && (h.provider || h.subjects || h.groups || h.emailDomains));
    rules.push({
      id: r.id,
      order: rules.length,
      source: where,
      description: r.description,
      side: 'agent',
      v1: true,
      workloads: [workload(r.workload, `${where}.workload`)],
      humans: hasHumanMatch ? [{ provider: h!.provider, subjects: h!.subjects, groups: h!.groups, emailDomains: h!.emailDomains?.map((d) => d.toLowerCase()) }] : [],
      presence: h?.presence ?? 'optional',
      agentTokenTtl: r.agentToken ? Math.min(ttlOf(r.agentToken.maxTtl, `${where}.agentToken.maxTtl`) ?? limits.agentTokenMaxTtl, limits.agentTokenMaxTtl) : undefined,
      grants: new Map(
        r.grants.map((g, j) => [
          g.target,
          { target: g.target, source: `${where}.grants[${j}]`, scopes: new Map(g.scopes.map((s) => [s, {}])), ttl: grantTtlCap(ttlOf(g.maxTtl, `${where}.grants[${j}].maxTtl`), limits.accessTokenMaxTtl) },
        ]),
      ),
    });
  });

  const names = new Map<string, string>();
  for (const loaded of input.documents) {
    const { doc, where } = loaded;
    const seen = names.get(doc.metadata.name);
    if (seen) problems.push(`${where(['metadata', 'name'])}: document name "${doc.metadata.name}" is also used at ${seen}`);
    names.set(doc.metadata.name, where(['metadata', 'name']));
    if (doc.kind === 'PolicyCeiling') {
      ceilings.push({ name: doc.metadata.name, doc });
      continue;
    }
    compileDocument(doc, loaded);
  }

  function compileDocument(doc: PolicyDocument, { where }: LoadedDocument) {
    const ruleNames = new Set<string>();
    doc.spec.rules.forEach((r, i) => {
      const at = (...p: (string | number)[]) => where(['spec', 'rules', i, ...p]);
      if (ruleNames.has(r.name)) problems.push(`${at('name')}: rule name "${r.name}" is used twice in ${doc.metadata.name}`);
      ruleNames.add(r.name);
      const targets = new Set<string>();
      const grants = new Map<string, ModelGrant>();
      r.grants.forEach((g, j) => {
        if (targets.has(g.target)) problems.push(`${at('grants', j, 'target')}: target "${g.target}" is granted twice by this rule; merge the grants`);
        targets.add(g.target);
        if (r.humans && g.human)
          problems.push(`${at('grants', j, 'human')}: \`human\` (presence) belongs to agent rules`);
        const maxTtl = ttlOf(g.maxTtl, at('grants', j, 'maxTtl'));
        grants.set(g.target, {
          target: g.target,
          source: at('grants', j),
          scopes: new Map(g.scopes.map((s) => (typeof s === 'string' ? [s, {}] : [s.name, s.params]))),
          ttl: grantTtlCap(maxTtl, limits.accessTokenMaxTtl),
          ...(maxTtl !== undefined ? { maxTtl } : {}),
          human: g.human,
          when: condition(g.when, at('grants', j, 'when')),
          obligations: g.obligations && {
            sessionTags: g.obligations.sessionTags,
            approval: g.obligations.approval && { approvers: g.obligations.approval.approvers, windowSeconds: ttlOf(g.obligations.approval.window, at('grants', j, 'obligations', 'approval', 'window')) ?? 0 },
          },
        });
      });
      rules.push({
        id: `${doc.metadata.name}/${r.name}`,
        order: rules.length,
        source: at(),
        description: r.description,
        owners: doc.metadata.owners,
        side: r.workloads ? 'agent' : 'human',
        v1: false,
        workloads: (r.workloads ?? []).map((w, k) => workload(w, at('workloads', k))),
        humans: (r.humans ?? []).map((h, k) => ({
          provider: h.provider,
          issuer: h.issuer,
          subjects: h.subject !== undefined ? [h.subject] : undefined,
          subjectPattern: h.subjectPattern,
          subjectRe: regex(h.subjectPattern, at('humans', k, 'subjectPattern')),
          groups: h.groups,
          roles: h.roles,
          emailDomains: h.emailDomains?.map((d) => d.toLowerCase()),
        })),
        presence: r.human ?? 'optional',
        when: condition(r.when, at('when')),
        agentTokenTtl: r.agentToken ? Math.min(ttlOf(r.agentToken.maxTtl, at('agentToken', 'maxTtl')) ?? limits.agentTokenMaxTtl, limits.agentTokenMaxTtl) : undefined,
        grants,
      });
    });
  }

  const model: PolicyModel = {
    rules,
    ceilings,
    version: versionOf(input),
    documents: input.documents.map((d) => d.doc.metadata.name),
  };
  problems.push(...checkCeilings(model, input.documents, limits));
  return { model, problems };
}

/**
 * Content hash of the policy set. With v1 rules only it is the hash v1 always used, so a
 * version recorded before v2 existed still names the same policy.
 */
function versionOf(input: PolicySetInput): string {
  const content = input.documents.length ? { rules: input.rules, documents: input.documents.map((d) => d.doc) } : { rules: input.rules };
  return `sha256:${sha256Hex(JSON.stringify(content)).slice(0, 16)}`;
}
