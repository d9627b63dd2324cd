import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors/sts-errors.js';
import { loadConfigFile } from '../config/load-config.js';
import { parsePolicyFile } from './policy-document.js';
import { createPolicyEngine } from './policy-engine.js';

const LIMITS = { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900 };

function problemsOf(files: Record<string, string>): string[] {
  const documents = [];
  const problems: string[] = [];
  for (const [file, text] of Object.entries(files)) {
    const r = parsePolicyFile(file, text);
    documents.push(...r.documents);
    problems.push(...r.problems);
  }
  try {
    createPolicyEngine({ rules: [] }, { ...LIMITS, documents });
  } catch (e) {
    problems.push(...(e as ConfigError).problems);
  }
  return problems;
}

const policy = (rules: string) => `apiVersion: agent-sts.dev/v2
kind: Policy
metadata:
  name: team-a
  owners: [team-a@acme.test]
spec:
  rules:
${rules}`;

const ceiling = `apiVersion: agent-sts.dev/v2
kind: PolicyCeiling
metadata: { name: org, owners: [security@acme.test] }
spec:
  limits:
    - workloads: { provider: dev, subjectPattern: 'dev://team-a/.*' }
      agentToken: { maxTtl: 30m }
      targets:
        - { target: api, scopes: [read, write], maxTtl: 10m }
`;

describe('policy v2 documents: load errors name file, line and reason', () => {
  it('refuses a condition that does not parse', () => {
    const p = problemsOf({ 'team.yaml': policy(`    - name: r1\n      workloads: [{ subject: 'dev://x' }]\n      when: 'request.lifetime <='\n`) });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^team\.yaml:10: spec\.rules\[0\]\.when: condition does not parse/);
  });

  it('refuses a condition over an unknown variable or field (typed at load)', () => {
    const p = problemsOf({ 'team.yaml': policy(`    - name: r1\n      workloads: [{ subject: 'dev://x' }]\n      grants:\n        - { target: api, when: 'reqest.lifetime < 5' }\n        - { target: db, when: 'request.lifetim < 5' }\n`) });
    expect(p[0]).toMatch(/^team\.yaml:11: spec\.rules\[0\]\.grants\[0\]\.when: condition is not valid: Unknown variable: reqest/);
    expect(p[1]).toMatch(/^team\.yaml:12: spec\.rules\[0\]\.grants\[1\]\.when: condition is not valid: No such key: lifetim/);
  });

  it('refuses a condition that is not a bool', () => {
    const p = problemsOf({ 'team.yaml': policy(`    - name: r1\n      workloads: [{ subject: 'dev://x' }]\n      when: request.target\n`) });
    expect(p[0]).toContain('team.yaml:10: spec.rules[0].when: condition must be a bool expression, not string');
  });

  it('refuses schema errors with their line', () => {
    const p = problemsOf({
      'team.yaml': policy(`    - name: r1\n      workloads: [{ subject: 'dev://x' }]\n      humans: [{ groups: [sre] }]\n    - name: r2\n      workloads: [{ subject: 'dev://y' }]\n      grants: [{ target: api, maxTtl: soon }]\n`),
    });
    expect(p).toContain('team.yaml:8: spec.rules[0]: give exactly one of workloads (an agent rule) or humans (a human rule)');
    expect(p).toContain('team.yaml:13: spec.rules[1].grants[0].maxTtl: a duration like 90s, 15m, 2h');
  });

  it('refuses a document without apiVersion v2, kind, or owners', () => {
    expect(problemsOf({ 'a.yaml': 'apiVersion: agent-sts.dev/v1\nkind: Policy\n' })).toEqual(['a.yaml:1: apiVersion: apiVersion must be agent-sts.dev/v2 (got "agent-sts.dev/v1")']);
    expect(problemsOf({ 'a.yaml': 'apiVersion: agent-sts.dev/v2\nkind: Rules\n' })[0]).toContain('a.yaml:2: kind: kind must be Policy or PolicyCeiling');
    expect(problemsOf({ 'a.yaml': 'apiVersion: agent-sts.dev/v2\nkind: Policy\nmetadata: { name: x, owners: [] }\nspec: { rules: [] }\n' })[0]).toContain('a.yaml:3: metadata.owners: name at least one owner');
  });

  it('refuses two documents with one name and YAML syntax errors', () => {
    const doc = policy('    []\n').replace('    []', '    - { name: r, workloads: [{ subject: s }] }');
    expect(problemsOf({ 'a.yaml': doc, 'b.yaml': doc })[0]).toMatch(/^b\.yaml:4: metadata\.name: document name "team-a" is also used at a\.yaml:4/);
    expect(problemsOf({ 'c.yaml': 'apiVersion: [\n' })[0]).toMatch(/^c\.yaml:\d+: /);
  });
});

describe('policy ceiling (organisation level): refused at load, never clipped', () => {
  const rule = (workload: string, grants: string, extra = '') => policy(`    - name: r1\n      workloads: [${workload}]\n${extra}      grants:\n${grants}`);

  it('loads rules within the ceiling (exact subject, narrower pattern)', () => {
    expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }, { provider: dev, subjectPattern: 'dev://team-a/ci-.*' }`, '        - { target: api, scopes: [read], maxTtl: 5m }\n', '      agentToken: { maxTtl: 20m }\n') })).toEqual([]);
  });

  it('refuses a scope beyond the ceiling', () => {
    const p = problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }`, '        - { target: api, scopes: [read, admin], maxTtl: 5m }\n') });
    expect(p).toEqual(['t.yaml:11: spec.rules[0].grants[0]: rule team-a/r1 exceeds ceiling org: scope admin at api is not allowed there (allowed: read write)']);
  });

  it('refuses a lifetime beyond the ceiling, including the default one', () => {
    expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }`, '        - { target: api, scopes: [read], maxTtl: 11m }\n') })[0]).toContain('lifetime 11m at api is above 10m');
    expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }`, '        - { target: api, scopes: [read] }\n') })[0]).toContain('lifetime 15m (tokens.accessTokenMaxTtl, no maxTtl given) at api is above 10m');
  });

  it('refuses a target the ceiling does not list', () => {
    expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }`, '        - { target: prod, scopes: [read], maxTtl: 1m }\n') })[0]).toContain('target prod is not allowed there');
  });

  it('refuses workloads the ceiling does not provably cover', () => {
    const grant = '        - { target: api, scopes: [read], maxTtl: 1m }\n';
    for (const w of [`{ provider: dev, subject: 'dev://team-b/bot' }`, `{ provider: dev, subjectPattern: 'dev://team-a/x|evil' }`, `{ provider: dev, subjectPattern: 'dev://.*' }`, `{ subject: 'dev://team-a/bot' }`, `{ provider: dev, subjectPattern: 'dev://team-a?/x' }`])
      expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(w, grant) })[0], w).toContain('is not within ceiling org: no limit of it provably covers');
  });

  it('refuses an agent token longer than the ceiling allows', () => {
    expect(problemsOf({ 'org.yaml': ceiling, 't.yaml': rule(`{ provider: dev, subject: 'dev://team-a/bot' }`, '        []\n', '      agentToken: { maxTtl: 1h }\n') })[0]).toContain('allows agent tokens for 1h, above ceiling org');
  });

  it('applies to v1 rules too', () => {
    const documents = parsePolicyFile('org.yaml', ceiling).documents;
    expect(() => createPolicyEngine({ rules: [{ id: 'old', workload: { provider: 'dev', subject: 'dev://team-a/bot' }, grants: [{ target: 'api', scopes: ['admin'] }] }] }, { ...LIMITS, documents })).toThrow(/policy\.rules\[0\] \(old\)\.grants\[0\]: rule old exceeds ceiling org: scope admin/);
  });
});

describe('policy v2 in the configuration file', () => {
  const base = `keys: { kek: { fromEnv: KEK } }
trustProviders:
  - { name: dev, type: oidc, config: { issuer: 'https://dev.test', audience: sts, jwksUri: 'https://dev.test/jwks' } }
credentialIssuers:
  - { name: jwt, type: agent-sts-jwt }
targets:
  - { name: api, audiences: [api], issuer: jwt }
`;

  it('refuses a bad inline document with file, line and reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-v2-'));
    const file = join(dir, 'agent-sts.yaml');
    writeFileSync(file, `${base}policy:\n  documents:\n    - apiVersion: agent-sts.dev/v2\n      kind: Policy\n      metadata: { name: t, owners: [me] }\n      spec:\n        rules:\n          - name: r\n            workloads: [{ provider: dev, subject: 'dev://a' }]\n            when: 'request.lifetime >'\n            grants: [{ target: nope }]\n`);
    let problems: string[] = [];
    try {
      loadConfigFile(file, {});
    } catch (e) {
      problems = (e as ConfigError).problems;
    }
    expect(problems).toContain(`${file}:17: policy.documents[0].spec.rules[0].when: condition does not parse: Unexpected token: EOF`);
    expect(problems).toContain(`${file}:18: policy.documents[0].spec.rules[0].grants[0].target: no target named "nope"`);
  });

  it('loads policy.dir next to v1 rules and refuses a bad file there with its own name and line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-v2-'));
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'policies', 'team.yaml'), policy(`    - name: r\n      workloads: [{ provider: dev, subject: 'dev://a' }]\n      grants: [{ target: api, scopes: [read] }]\n`));
    writeFileSync(join(dir, 'policies', 'team.test.yaml'), 'not: a policy\n');
    const file = join(dir, 'agent-sts.yaml');
    writeFileSync(file, `${base}policy:\n  dir: policies\n  rules:\n    - { id: v1, workload: { provider: dev, subject: 'dev://b' }, grants: [{ target: api }] }\n`);
    const cfg = loadConfigFile(file, {});
    expect(cfg.policy.documents).toHaveLength(1);
    const engine = createPolicyEngine(cfg.policy, LIMITS);
    expect(engine.model.rules.map((r) => r.id)).toEqual(['v1', 'team-a/r']);

    writeFileSync(join(dir, 'policies', 'bad.yaml'), 'apiVersion: agent-sts.dev/v2\nkind: Policy\nmetadata: { name: bad, owners: [x] }\nspec:\n  rules:\n    - { name: r, workloads: [{ subject: s }], bogus: 1 }\n');
    expect(() => loadConfigFile(file, {})).toThrow(/policies\/bad\.yaml:6: spec\.rules\[0\]: Unrecognized key: "bogus"/);
  });
});
