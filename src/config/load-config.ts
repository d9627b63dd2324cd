import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument, LineCounter, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors/sts-errors.js';
import { AppConfigSchema, liveLimitsOf, type RawAppConfig } from './config-schema.js';
import { trustProviderCatalog } from '../trust-providers/catalog.js';
import { credentialIssuerCatalog } from '../credential-issuers/catalog.js';
import { GITHUB_IMMUTABLE_PINS } from '../trust-providers/github-actions/github-actions-provider.js';
import { checkGrantLifetimes, checkModelGrants, type IssuerFacts } from '../policy/grant-lifetimes.js';
import { parseDuration } from '../lib/clock.js';
import { describeWhere, lineFinder, readPolicyPath, validateDocument, type LoadedDocument } from '../policy/policy-document.js';
import { compilePolicyModel, type ModelRule, type PolicyModel } from '../policy/policy-model.js';

export type AppConfig = RawAppConfig;

export function formatIssues(prefix: string, error: z.ZodError): string[] {
  return error.issues.map((i) => {
    const path = [prefix, ...i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))].join('').replace(/^\./, '');
    return `${path || '(root)'}: ${i.message}`;
  });
}

/** Deployment values from the environment override the file (read by the caller, passed in). */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out = structuredClone(raw);
  const section = (k: string) => ((out[k] ??= {}) as Record<string, unknown>);
  if (env.DATABASE_URL) section('storage').url = env.DATABASE_URL;
  if (env.AGENT_STS_KEK) section('keys').kek = { fromEnv: 'AGENT_STS_KEK' };
  else if (env.AGENT_STS_KEK_FILE) section('keys').kek = { fromFile: env.AGENT_STS_KEK_FILE };
  if (env.HOST) section('server').host = env.HOST;
  if (env.PORT) section('server').port = /^\d+$/.test(env.PORT) ? Number(env.PORT) : env.PORT;
  if (env.AGENT_STS_ISSUER) section('server').issuer = env.AGENT_STS_ISSUER;
  if (env.AGENT_STS_LOG_LEVEL) section('logging').level = env.AGENT_STS_LOG_LEVEL;
  return out;
}

/** Parses YAML text, reporting syntax errors with line and column. */
export function parseYaml(text: string, file: string): Record<string, unknown> {
  return parseYamlWithLines(text, file).value;
}

/** Where the configuration came from: lets policy problems name file and line. */
export interface ConfigSource {
  file?: string;
  /** Line of a path in the file (the deepest node that exists). */
  lineOf?: (path: readonly (string | number)[]) => number | undefined;
  /** Relative `policy.dir` resolves against this (the configuration file's directory). */
  baseDir?: string;
}

/** parseYaml, plus a way to find the line of any path (for problems found after parsing). */
export function parseYamlWithLines(text: string, file: string): { value: Record<string, unknown>; lineOf: NonNullable<ConfigSource['lineOf']> } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length)
    throw new ConfigError(
      doc.errors.map((e) => {
        const at = lineCounter.linePos(e.pos[0]);
        return `${file}:${at.line}:${at.col}: ${e.message.split('\n')[0]}`;
      }),
    );
  const value = doc.toJS() as unknown;
  const lineOf = lineFinder(doc as Document, lineCounter);
  if (value === null || value === undefined) return { value: {}, lineOf };
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError([`${file}: the top level must be a mapping`]);
  return { value: value as Record<string, unknown>, lineOf };
}

/** Validates everything and reports every problem at once. */
export function validateConfig(raw: unknown, source: ConfigSource = {}): AppConfig {
  const base = AppConfigSchema.safeParse(raw);
  const problems: string[] = base.success ? [] : formatIssues('', base.error);
  // On a schema error, still check every section that parses on its own, so one typo
  // does not hide the other problems of the file.
  const cfg = base.success ? base.data : sectionwise(raw);
  const seen = (kind: string, names: string[]) => {
    const dup = names.filter((n, i) => names.indexOf(n) !== i);
    for (const d of new Set(dup)) problems.push(`${kind}: name "${d}" is used twice`);
  };
  seen('trustProviders', cfg.trustProviders.map((p) => p.name));
  seen('credentialIssuers', cfg.credentialIssuers.map((p) => p.name));
  seen('targets', cfg.targets.map((t) => t.name));
  seen('policy.rules', cfg.policy.rules.map((r) => r.id));

  const parsed = new Set<object>();
  const parsePlugins = (kind: 'trustProviders' | 'credentialIssuers') =>
    cfg[kind].map((inst, i) => {
      let schema: z.ZodType;
      try {
        schema = (kind === 'trustProviders' ? trustProviderCatalog : credentialIssuerCatalog).get(inst.type).configSchema;
      } catch (e) {
        problems.push(`${kind}[${i}] (${inst.name}).type: ${(e as ConfigError).problems?.[0] ?? (e as Error).message}`);
        return inst;
      }
      const r = schema.safeParse(inst.config ?? {});
      if (!r.success) problems.push(...formatIssues(`${kind}[${i}] (${inst.name}).config`, r.error));
      const out = { ...inst, config: r.success ? r.data : inst.config };
      if (r.success) parsed.add(out);
      return out;
    });
  const trustProviders = parsePlugins('trustProviders');
  const credentialIssuers = parsePlugins('credentialIssuers');

  const issuerNames = new Set(credentialIssuers.map((i) => i.name));
  cfg.targets.forEach((t, i) => {
    if (!issuerNames.has(t.issuer) && !t.issuerRegisteredAtRuntime)
      problems.push(`targets[${i}] (${t.name}).issuer: no credential issuer named "${t.issuer}" in this file (if it is registered through the admin API, set issuerRegisteredAtRuntime: true)`);
    if (issuerNames.has(t.issuer) && t.issuerRegisteredAtRuntime)
      problems.push(`targets[${i}] (${t.name}).issuerRegisteredAtRuntime: "${t.issuer}" is declared in this file`);
    if (!t.resources.length && !t.audiences.length) problems.push(`targets[${i}] (${t.name}): give at least one resource or audience`);
  });
  cfg.auth.roles.forEach((m, i) => {
    // The trust root of the admin API lives in the file: a provider registered through that API
    // could otherwise be used to grant that API to itself.
    if (!trustProviders.some((p) => p.name === m.provider))
      problems.push(`auth.roles[${i}].provider: no trust provider named "${m.provider}" in this file (role mappings may only use providers declared here)`);
    if (m.subjectPattern) {
      try {
        new RegExp(`^(?:${m.subjectPattern})$`);
      } catch (e) {
        problems.push(`auth.roles[${i}].subjectPattern: ${(e as Error).message}`);
      }
    }
  });
  const targetNames = new Set(cfg.targets.map((t) => t.name));
  const providerTypes = new Map(trustProviders.map((p) => [p.name, p.type]));
  cfg.policy.rules.forEach((r, i) => {
    const where = `policy.rules[${i}] (${r.id})`;
    if (r.workload.provider && !providerTypes.has(r.workload.provider)) problems.push(`${where}.workload.provider: no trust provider named "${r.workload.provider}"`);
    if (r.human?.provider && !providerTypes.has(r.human.provider)) problems.push(`${where}.human.provider: no trust provider named "${r.human.provider}"`);
    if (r.workload.subjectPattern) {
      try {
        new RegExp(r.workload.subjectPattern);
      } catch (e) {
        problems.push(`${where}.workload.subjectPattern: ${(e as Error).message}`);
      }
    }
    if (r.workload.provider && providerTypes.get(r.workload.provider) === 'github-actions' && !GITHUB_IMMUTABLE_PINS.some((p) => r.workload.attributes?.[p] !== undefined))
      problems.push(`${where}.workload.attributes: a github-actions rule must pin ${GITHUB_IMMUTABLE_PINS.join(' or ')} (names can be recycled)`);
    r.grants.forEach((g, j) => {
      if (!targetNames.has(g.target)) problems.push(`${where}.grants[${j}].target: no target named "${g.target}"`);
    });
  });
  const documents = policyDocuments(cfg, source, problems);
  // Only issuers whose config parsed: the grant checks read their parsed configs.
  problems.push(...compilePolicySet({ ...cfg, credentialIssuers: credentialIssuers.filter((i) => parsed.has(i)) }, documents).problems);
  // Grant lifetimes against what each issuer declared it can issue (issuers whose config parsed; a
  // name used twice is already an error, the first instance is checked).
  const declared = issuerFacts(credentialIssuers.filter((i) => parsed.has(i)));
  if (cfg.tokens) {
    problems.push(...checkGrantLifetimes({ policy: cfg.policy, targets: cfg.targets, issuers: declared, accessTokenMaxTtl: cfg.tokens.accessTokenMaxTtl }));
  }
  problems.push(...targetIssuerProblems(cfg.targets, declared));
  if (problems.length) throw new ConfigError([...new Set(problems)]);
  // The engine gets every v2 document inline, whether written inline or in policy.dir.
  const { dir: _dir, ...rest } = cfg.policy;
  const policy = documents.length ? { ...rest, documents: documents.map((d) => d.doc) } : rest;
  // The live policy set (policy-set.ts) re-reads policy.dir on change: it needs the resolved path
  // and which documents were written inline.
  policySources.set(policy, { dir: cfg.policy.dir ? resolve(source.baseDir ?? '.', cfg.policy.dir) : undefined, inlineCount: cfg.policy.documents?.length ?? 0 });
  return { ...cfg, policy, trustProviders, credentialIssuers };
}

const policySources = new WeakMap<object, { dir?: string; inlineCount: number }>();

/**
 * Where a validated configuration's v2 documents came from: `policy.dir` (absolute) and how many
 * of `policy.documents` (the first ones) were written inline; the rest were read from the dir.
 */
export function policySourcesOf(policy: AppConfig['policy']): { dir?: string; inlineCount: number } {
  return policySources.get(policy) ?? { inlineCount: policy.documents?.length ?? 0 };
}

/**
 * Target settings their issuer (when known here) cannot honour: `maxLivePerTask` / `maxLivePerTree`
 * (the issuer must record before it issues), `dpop` and `servedBy` (the issuer must sign agent-sts JWTs).
 */
function targetIssuerProblems(targets: AppConfig['targets'], issuers: ReadonlyMap<string, IssuerFacts>): string[] {
  const problems: string[] = [];
  targets.forEach((t, i) => {
    const issuer = issuers.get(t.issuer);
    if (!issuer) return;
    if (!issuer.capabilities.recordsBeforeIssue)
      for (const { key } of liveLimitsOf(t))
        problems.push(
          `targets[${i}] (${t.name}).${key}: issuer ${t.issuer} (${issuer.type}) creates a credential before agent-sts can record it, so live credentials cannot be counted strictly; only issuers that record first (postgres, mysql) take this limit`,
        );
    if (t.dpop !== 'off' && !issuer.capabilities.ownJwts)
      problems.push(`targets[${i}] (${t.name}).dpop: issuer ${t.issuer} (${issuer.type}) cannot bind its credentials to a DPoP key; only agent-sts-jwt access tokens can be DPoP-bound (set dpop: off)`);
    if (t.servedBy && !issuer.capabilities.ownJwts)
      problems.push(`targets[${i}] (${t.name}).servedBy: issuer ${t.issuer} (${issuer.type}) does not issue agent-sts access tokens, so there is nothing its serving workloads could exchange; only agent-sts-jwt targets take servedBy`);
  });
  return problems;
}

/** What the grant checks know of the issuers declared in the file (parsed configs only; a name used twice: the first). */
function issuerFacts(issuers: readonly { name: string; type: string; config: unknown }[]): Map<string, IssuerFacts> {
  const facts = new Map<string, IssuerFacts>();
  for (const inst of issuers) {
    if (facts.has(inst.name)) continue;
    const plugin = credentialIssuerCatalog.get(inst.type);
    facts.set(inst.name, { type: inst.type, capabilities: plugin.capabilities(inst.config), ...(plugin.checkGrant ? { checkGrant: (g) => plugin.checkGrant!(inst.config, g) } : {}) });
  }
  return facts;
}

/**
 * Compiles v1 rules and the given v2 documents against a validated configuration (its trust
 * providers, targets and token limits; ceilings and lifetimes inside the model; each grant against
 * its issuer: v2 lifetimes, scope parameters and session tags), as at start-up and on every reload.
 * Every problem names where it is and why.
 */
export function compilePolicySet(cfg: AppConfig, documents: LoadedDocument[]): { model: PolicyModel; problems: string[] } {
  const targetNames = new Set(cfg.targets.map((t) => t.name));
  const providerTypes = new Map(cfg.trustProviders.map((p) => [p.name, p.type]));
  const problems: string[] = [];
  const v2 = compilePolicyModel(
    { rules: cfg.policy.rules, documents },
    { agentTokenMaxTtl: parseDuration(cfg.tokens?.agentTokenMaxTtl ?? '1h'), accessTokenMaxTtl: parseDuration(cfg.tokens?.accessTokenMaxTtl ?? '15m') },
  );
  problems.push(...v2.problems);
  for (const r of v2.model.rules.filter((x) => !x.v1)) {
    r.workloads.forEach((w, k) => {
      if (w.provider && !providerTypes.has(w.provider)) problems.push(`${r.source}.workloads[${k}].provider: no trust provider named "${w.provider}"`);
      if (w.provider && providerTypes.get(w.provider) === 'github-actions' && !GITHUB_IMMUTABLE_PINS.some((p) => w.attributes.some(([a]) => a === p)))
        problems.push(`${r.source}.workloads[${k}].attributes: a github-actions rule must pin ${GITHUB_IMMUTABLE_PINS.join(' or ')} (names can be recycled)`);
    });
    r.humans.forEach((h, k) => {
      if (h.provider && !providerTypes.has(h.provider)) problems.push(`${r.source}.humans[${k}].provider: no trust provider named "${h.provider}"`);
    });
    for (const g of r.grants.values()) if (!targetNames.has(g.target)) problems.push(`${g.source}.target: no target named "${g.target}"`);
  }
  problems.push(...checkModelGrants({ rules: v2.model.rules, targets: cfg.targets, issuers: issuerFacts(cfg.credentialIssuers), accessTokenMaxTtl: parseDuration(cfg.tokens?.accessTokenMaxTtl ?? '15m') }));
  return { model: v2.model, problems };
}

/**
 * What start-up would refuse in the policy in force, had this runtime-registered issuer been
 * declared in the file: the targets it serves (`issuerRegisteredAtRuntime`: a live-credential
 * limit it cannot enforce) and their grants, checked as compilePolicySet and checkGrantLifetimes
 * check the file's issuers (lifetimes, scope parameters, session tags). The admin API shows them
 * as `policy_problems`, so that whoever registers the issuer sees at once what its issuance would
 * refuse (it checks each grant again when asked, and fails closed).
 */
export function runtimeIssuerGrantProblems(cfg: AppConfig, rules: readonly ModelRule[], issuer: { name: string; type: string; config: unknown }): string[] {
  const targets = cfg.targets.filter((t) => t.issuer === issuer.name);
  if (!targets.length) return [];
  try {
    // As stored: defaults are applied by the plugin's schema, as when the instance is built.
    const config = credentialIssuerCatalog.get(issuer.type).configSchema.parse(issuer.config);
    const issuers = issuerFacts([{ ...issuer, config }]);
    const accessTokenMaxTtl = cfg.tokens?.accessTokenMaxTtl ?? '15m';
    return [
      ...targetIssuerProblems(cfg.targets, issuers),
      ...checkGrantLifetimes({ policy: cfg.policy, targets, issuers, accessTokenMaxTtl }),
      ...checkModelGrants({ rules, targets, issuers, accessTokenMaxTtl: parseDuration(accessTokenMaxTtl) }),
    ];
  } catch (e) {
    return [`credential issuer ${issuer.name}: its grants could not be checked (${e instanceof Error ? e.name : 'error'})`];
  }
}

/** v2 documents of policy.documents (inline) and policy.dir, each problem with file and line. */
function policyDocuments(cfg: AppConfig, source: ConfigSource, problems: string[]): LoadedDocument[] {
  const out: LoadedDocument[] = [];
  (cfg.policy.documents ?? []).forEach((raw, i) => {
    const where = (path: readonly (string | number)[]) => {
      const full = ['policy', 'documents', i, ...path];
      return source.file ? describeWhere(source.file, source.lineOf?.(full), full) : describeWhere(undefined, undefined, full);
    };
    const r = validateDocument(raw, where);
    problems.push(...r.problems);
    if (r.doc) out.push({ doc: r.doc, where });
  });
  if (cfg.policy.dir) {
    const r = readPolicyPath(resolve(source.baseDir ?? '.', cfg.policy.dir));
    problems.push(...r.problems);
    out.push(...r.documents);
  }
  return out;
}

/** Each top-level section parsed by itself; a section that does not parse counts as empty. */
function sectionwise(raw: unknown): AppConfig {
  const obj = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
  const shape = AppConfigSchema.shape;
  const empty = { trustProviders: [], credentialIssuers: [], targets: [], policy: { rules: [] }, auth: { auditors: [], admins: [], roles: [], introspectionClients: [] } };
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(shape) as (keyof typeof shape)[]) {
    const r = shape[key].safeParse(obj[key]);
    out[key] = r.success ? r.data : (empty as Record<string, unknown>)[key];
  }
  return out as AppConfig;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv): AppConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`${file}: cannot read the configuration file (${(e as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  try {
    const { value, lineOf } = parseYamlWithLines(text, file);
    return validateConfig(applyEnvOverrides(value, env), { file, lineOf, baseDir: dirname(file) });
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => (p.startsWith(file) ? p : `${file}: ${p}`)));
    throw e;
  }
}
