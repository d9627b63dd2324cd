import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { z } from 'zod';
import { HumanPresenceSchema, PolicyDuration, WorkloadMatchSchema } from './policy-schema.js';

/**
 * Policy v2 documents: versioned, named, owned YAML files (`apiVersion: agent-sts.dev/v2`).
 * `kind: Policy` holds rules; `kind: PolicyCeiling` is the organisation's upper bound that
 * Policy rules may not exceed (checked at load, see policy-ceiling.ts).
 */
export const POLICY_API_VERSION = 'agent-sts.dev/v2';

const name = z.string().regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only');

const MetadataSchema = z
  .object({
    name,
    description: z.string().optional(),
    /** Who answers for this document (team, e-mail): at least one. */
    owners: z.array(z.string().min(1)).min(1, 'name at least one owner'),
  })
  .strict();

/** A person, by identity provider instance, issuer, subject (or pattern), groups, roles, e-mail domain. All given conditions must hold. */
export const HumanMatchV2Schema = z
  .object({
    provider: z.string().optional(),
    issuer: z.string().optional(),
    subject: z.string().optional(),
    subjectPattern: z.string().optional(),
    /** At least one of these groups. */
    groups: z.array(z.string()).min(1).optional(),
    /** At least one of these roles. */
    roles: z.array(z.string()).min(1).optional(),
    emailDomains: z.array(z.string()).min(1).optional(),
  })
  .strict()
  .refine((h) => !(h.subject && h.subjectPattern), 'use either subject or subjectPattern, not both')
  .refine((h) => Object.values(h).some((v) => v !== undefined), 'a human matcher needs at least one condition: never every person');

/** A scope, optionally with parameters the issuer's templates receive (Decision.scopeParams). */
const ScopeSchema = z.union([
  z.string().min(1),
  z.object({ name: z.string().min(1), params: z.record(z.string(), z.string()).default({}) }).strict(),
]);

export const ObligationsSchema = z
  .object({
    /** Passed to the issuer (e.g. AWS session tags). */
    sessionTags: z.record(z.string(), z.string()).optional(),
    /** Someone must approve each issuance (approvals/approval-service.ts; without an approval service such grants are refused). */
    approval: z.object({ approvers: z.array(z.string().min(1)).min(1), window: PolicyDuration }).strict().optional(),
  })
  .strict();

export const GrantV2Schema = z
  .object({
    target: z.string().min(1),
    scopes: z.array(ScopeSchema).default([]),
    maxTtl: PolicyDuration.optional(),
    /** Overrides the rule's `human` for this target. */
    human: HumanPresenceSchema.optional(),
    /** CEL condition for this grant only (in addition to the rule's). */
    when: z.string().min(1).optional(),
    obligations: ObligationsSchema.optional(),
  })
  .strict();

export const RuleV2Schema = z
  .object({
    name,
    description: z.string().optional(),
    /** Agent rule: the workloads it grants to (any of). */
    workloads: z.array(WorkloadMatchSchema).min(1).optional(),
    /** Human rule: the people it grants to (any of); only ever counts together with an agent rule. */
    humans: z.array(HumanMatchV2Schema).min(1).optional(),
    /** Agent rules: must a person be present (`required`), may one (`optional`, default), or never (`forbidden`). */
    human: HumanPresenceSchema.optional(),
    /** CEL condition over identity, request, env and delegation. */
    when: z.string().min(1).optional(),
    agentToken: z.object({ maxTtl: PolicyDuration.optional() }).strict().optional(),
    grants: z.array(GrantV2Schema).default([]),
  })
  .strict()
  .refine((r) => Boolean(r.workloads) !== Boolean(r.humans), 'give exactly one of workloads (an agent rule) or humans (a human rule)')
  .refine((r) => !(r.humans && r.human), '`human` (presence) belongs to agent rules; a human rule always has a person');

export const PolicyDocumentSchema = z
  .object({
    apiVersion: z.literal(POLICY_API_VERSION),
    kind: z.literal('Policy'),
    metadata: MetadataSchema,
    spec: z.object({ rules: z.array(RuleV2Schema).default([]) }).strict(),
  })
  .strict();

export const CeilingLimitSchema = z
  .object({
    /** The workloads this limit covers (one matcher; compared with each rule's matchers at load). */
    workloads: WorkloadMatchSchema,
    /** Most an agent token may last for these workloads; omitted: not capped by the ceiling. */
    agentToken: z.object({ maxTtl: PolicyDuration }).strict().optional(),
    targets: z
      .array(
        z
          .object({ target: z.string().min(1), scopes: z.array(z.string().min(1)).optional(), maxTtl: PolicyDuration.optional() })
          .strict(),
      )
      .default([]),
  })
  .strict();

export const CeilingDocumentSchema = z
  .object({
    apiVersion: z.literal(POLICY_API_VERSION),
    kind: z.literal('PolicyCeiling'),
    metadata: MetadataSchema,
    spec: z.object({ limits: z.array(CeilingLimitSchema).default([]) }).strict(),
  })
  .strict();

export type PolicyDocument = z.infer<typeof PolicyDocumentSchema>;
export type CeilingDocument = z.infer<typeof CeilingDocumentSchema>;
export type AnyPolicyDocument = PolicyDocument | CeilingDocument;
export type RuleV2 = z.infer<typeof RuleV2Schema>;
export type GrantV2 = z.infer<typeof GrantV2Schema>;
export type HumanMatchV2 = z.infer<typeof HumanMatchV2Schema>;

type PathKey = string | number;

/** A parsed document and how to say where something in it is (`file:line: path`). */
export interface LoadedDocument {
  doc: AnyPolicyDocument;
  /** `file:line: path` (or just the path when the source has no file). */
  where(path: readonly PathKey[]): string;
}

export function formatPath(path: readonly PathKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${p}`)).join('');
}

/** Maps a path inside a YAML document to its line (the deepest node of the path that exists). */
export function lineFinder(yamlDoc: Document, counter: LineCounter) {
  return (path: readonly PathKey[]): number | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const node = yamlDoc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node?.range) return counter.linePos(node.range[0]).line;
    }
    return undefined;
  };
}

export function describeWhere(file: string | undefined, line: number | undefined, path: readonly PathKey[]): string {
  const p = formatPath(path);
  if (!file) return p || '(document)';
  return `${file}${line ? `:${line}` : ''}${p ? `: ${p}` : ''}`;
}

/** Validates one document (already plain data). Problems are `where: reason`. */
export function validateDocument(raw: unknown, where: (path: readonly PathKey[]) => string): { doc?: AnyPolicyDocument; problems: string[] } {
  const obj = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : undefined;
  if (!obj) return { problems: [`${where([])}: a policy document must be a mapping`] };
  if (obj.apiVersion !== POLICY_API_VERSION)
    return { problems: [`${where(['apiVersion'])}: apiVersion must be ${POLICY_API_VERSION} (got ${JSON.stringify(obj.apiVersion ?? null)})`] };
  const schema = obj.kind === 'Policy' ? PolicyDocumentSchema : obj.kind === 'PolicyCeiling' ? CeilingDocumentSchema : undefined;
  if (!schema) return { problems: [`${where(['kind'])}: kind must be Policy or PolicyCeiling (got ${JSON.stringify(obj.kind ?? null)})`] };
  const r = schema.safeParse(obj);
  if (r.success) return { doc: r.data, problems: [] };
  return { problems: r.error.issues.map((i) => `${where(i.path as PathKey[])}: ${i.message}`) };
}

/** Parses a YAML file of one or more documents (`---`), with file and line in every problem. */
export function parsePolicyFile(file: string, text: string): { documents: LoadedDocument[]; problems: string[] } {
  const counter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: counter, prettyErrors: false });
  const documents: LoadedDocument[] = [];
  const problems: string[] = [];
  for (const yamlDoc of Array.isArray(docs) ? docs : [docs]) {
    if (yamlDoc.errors.length) {
      for (const e of yamlDoc.errors) problems.push(`${file}:${counter.linePos(e.pos[0]).line}: ${e.message.split('\n')[0]}`);
      continue;
    }
    const raw: unknown = yamlDoc.toJS();
    if (raw === null || raw === undefined) continue;
    const lineOf = lineFinder(yamlDoc as Document, counter);
    const where = (path: readonly PathKey[]) => describeWhere(file, lineOf(path), path);
    const r = validateDocument(raw, where);
    problems.push(...r.problems);
    if (r.doc) documents.push({ doc: r.doc, where });
  }
  return { documents, problems };
}

/** Policy files of a directory (`*.yaml`, `*.yml`, not `*.test.yaml`), sorted by name, or one file. */
export function policyFilesIn(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => /\.ya?ml$/.test(f) && !/\.test\.ya?ml$/.test(f))
    .sort()
    .map((f) => join(path, f));
}

export function readPolicyPath(path: string): { documents: LoadedDocument[]; problems: string[] } {
  const documents: LoadedDocument[] = [];
  const problems: string[] = [];
  let files: string[];
  try {
    files = policyFilesIn(path);
  } catch (e) {
    return { documents, problems: [`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})`] };
  }
  for (const file of files) {
    const r = parsePolicyFile(file, readFileSync(file, 'utf8'));
    documents.push(...r.documents);
    problems.push(...r.problems);
  }
  return { documents, problems };
}
