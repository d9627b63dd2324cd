// Policy lifetimes against what each credential issuer declares it can issue (its capabilities),
// checked when the configuration loads: a grant whose maximum is below the issuer's minimum can
// never be issued, one above its maximum promises what the issuer cannot give. Both are config
// errors naming the rule, grant, target, issuer and bound, printed by `agent-sts config check`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { configProblems } from '../support/config.js';
import { validateConfig } from '../../src/config/load-config.js';
import { credentialIssuerCatalog } from '../../src/credential-issuers/catalog.js';
import { UNBOUNDED_TTL_SECONDS } from '../../src/credential-issuers/credential-issuer.js';
import { createLogger } from '../../src/log/logger.js';
import { testIssuerDeps } from '../support/issuer-deps.js';
import { describeRun, runAgentSts } from '../support/cli.js';

const ROLE = 'arn:aws:iam::111122223333:role/deploy';
const issuers = {
  jwt: { name: 'tokens', type: 'agent-sts-jwt' },
  pg: { name: 'app-pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG' }, roles: { read: 'reader' } } },
  my: { name: 'app-my', type: 'mysql', config: { adminUrl: { fromEnv: 'MY' }, grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] } } },
  gh: { name: 'gh', type: 'github-app', config: { appId: 1, privateKey: { fromEnv: 'GH' }, installationId: 2, repositories: [{ id: 3 }], scopes: { read: { permissions: { contents: 'read' } } } } },
  vault: { name: 'vault', type: 'vault', config: { endpoint: 'https://vault.test:8200', token: { fromEnv: 'VT' }, mounts: ['database'], scopes: { read: { path: 'database/creds/ro' } } } },
  aws: { name: 'aws-prod', type: 'aws-sts', config: { region: 'eu-west-1', roles: { deploy: { roleArn: ROLE } } } },
};
const targetOf = { jwt: 'api', pg: 'pg-db', my: 'my-db', gh: 'github', vault: 'secrets', aws: 'aws-deploy' } as const;
type Key = keyof typeof issuers;

function config(grants: { issuer: Key; maxTtl?: string | number }[], opts: { accessTokenMaxTtl?: string; aws?: Record<string, unknown> } = {}) {
  return {
    keys: { kek: { insecureValue: 'x'.repeat(44) } },
    ...(opts.accessTokenMaxTtl ? { tokens: { accessTokenMaxTtl: opts.accessTokenMaxTtl } } : {}),
    credentialIssuers: (Object.keys(issuers) as Key[]).map((k) => structuredClone(k === 'aws' && opts.aws ? { ...issuers.aws, config: { ...issuers.aws.config, ...opts.aws } } : issuers[k])),
    targets: (Object.keys(issuers) as Key[]).map((k) => ({ name: targetOf[k], audiences: [targetOf[k]], issuer: issuers[k].name })),
    policy: { rules: [{ id: 'agents', workload: { subject: 'test://agent' }, grants: grants.map((g) => ({ target: targetOf[g.issuer], ...(g.maxTtl !== undefined ? { maxTtl: g.maxTtl } : {}) })) }] },
  };
}

const problems = configProblems;

describe('grant lifetimes against issuer capabilities', () => {
  it('accepts a policy every issuer can honour (defaults and explicit maxTtl)', () => {
    expect(
      problems(
        config([
          { issuer: 'jwt', maxTtl: '5m' },
          { issuer: 'pg', maxTtl: '10m' },
          { issuer: 'my' },
          { issuer: 'gh', maxTtl: '1h' },
          { issuer: 'vault', maxTtl: 3600 },
          { issuer: 'aws', maxTtl: '15m' },
        ], { accessTokenMaxTtl: '1h' }),
      ),
    ).toEqual([]);
    // The default tokens.accessTokenMaxTtl (15m) fits AWS's 900 s minimum exactly.
    expect(problems(config([{ issuer: 'aws' }, { issuer: 'gh' }]))).toEqual([]);
  });

  it('refuses a grant maximum below the minimum lifetime of its issuer (AssumeRole: 900 s)', () => {
    expect(problems(config([{ issuer: 'jwt' }, { issuer: 'aws', maxTtl: '5m' }]))).toEqual([
      'policy.rules[0] (agents).grants[1].maxTtl: 5m for target aws-deploy is below the minimum lifetime of issuer aws-prod (aws-sts, 900 s): ' +
        'AssumeRole cannot issue sessions shorter than 15 minutes; raise maxTtl to at least 15m, or grant this target from another issuer',
    ]);
  });

  it('names tokens.accessTokenMaxTtl when it is what keeps the grant below the minimum', () => {
    expect(problems(config([{ issuer: 'aws' }], { accessTokenMaxTtl: '10m' }))).toEqual([
      'policy.rules[0] (agents).grants[0]: no maxTtl, so tokens.accessTokenMaxTtl (10m) applies; for target aws-deploy that is below the minimum lifetime of issuer aws-prod (aws-sts, 900 s): ' +
        'AssumeRole cannot issue sessions shorter than 15 minutes; raise tokens.accessTokenMaxTtl to at least 15m, or grant this target from another issuer',
    ]);
    expect(problems(config([{ issuer: 'aws', maxTtl: '30m' }], { accessTokenMaxTtl: '10m' }))[0]).toMatch(
      /^policy\.rules\[0\] \(agents\)\.grants\[0\]\.maxTtl: 30m \(capped to 10m by tokens\.accessTokenMaxTtl\) for target aws-deploy is below .*; raise tokens\.accessTokenMaxTtl to at least 15m/,
    );
  });

  it('refuses a grant maximum above the maximum lifetime of its issuer (GitHub: 1 hour)', () => {
    expect(problems(config([{ issuer: 'gh', maxTtl: '2h' }], { accessTokenMaxTtl: '4h' }))).toEqual([
      'policy.rules[0] (agents).grants[0].maxTtl: 2h for target github is above the maximum lifetime of issuer gh (github-app, 3600 s): ' +
        'GitHub installation tokens live one hour and cannot be extended; lower maxTtl to at most 1h',
    ]);
    expect(problems(config([{ issuer: 'gh' }], { accessTokenMaxTtl: '2h' }))).toEqual([
      'policy.rules[0] (agents).grants[0]: no maxTtl, so tokens.accessTokenMaxTtl (2h) applies; for target github that is above the maximum lifetime of issuer gh (github-app, 3600 s): ' +
        'GitHub installation tokens live one hour and cannot be extended; give the grant maxTtl: 1h',
    ]);
  });

  it('takes the AWS maximum from the configured role maxima, and the JWT maximum from its documented cap', () => {
    const aws = { maxDuration: '30m', roles: { deploy: { roleArn: ROLE }, long: { roleArn: `${ROLE}-long`, maxDuration: '2h' } } };
    expect(problems(config([{ issuer: 'aws', maxTtl: '2h' }], { accessTokenMaxTtl: '12h', aws }))).toEqual([]);
    expect(problems(config([{ issuer: 'aws', maxTtl: '3h' }], { accessTokenMaxTtl: '12h', aws })).join('\n')).toMatch(/maxTtl: 3h for target aws-deploy is above the maximum lifetime of issuer aws-prod \(aws-sts, 7200 s\).*lower maxTtl to at most 2h$/);
    expect(problems(config([{ issuer: 'jwt', maxTtl: '2d' }], { accessTokenMaxTtl: '3d' })).join('\n')).toMatch(/maxTtl: 2d for target api is above the maximum lifetime of issuer tokens \(agent-sts-jwt, 86400 s\)/);
  });

  it('checks only issuers whose configuration parses (their own errors come first, once)', () => {
    const raw = config([{ issuer: 'aws', maxTtl: '5m' }]);
    (raw.credentialIssuers.find((i) => i.name === 'aws-prod') as unknown as { config: Record<string, unknown> }).config = { region: 'nowhere', roles: { deploy: { roleArn: ROLE } } };
    const p = problems(raw);
    expect(p.some((x) => x.startsWith('credentialIssuers[5] (aws-prod).config.region'))).toBe(true);
    expect(p.some((x) => x.includes('minimum lifetime'))).toBe(false);
  });

  it('every plugin declares the same capabilities statically and on its instance', () => {
    const logger = createLogger({ level: 'silent' });
    const expected: Record<string, { revocable: boolean; minTtlSeconds: number; maxTtlSeconds: number }> = {
      tokens: { revocable: false, minTtlSeconds: 1, maxTtlSeconds: 86_400 },
      'app-pg': { revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS },
      'app-my': { revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS },
      gh: { revocable: true, minTtlSeconds: 1, maxTtlSeconds: 3600 },
      vault: { revocable: true, minTtlSeconds: 1, maxTtlSeconds: 768 * 3600 },
      'aws-prod': { revocable: true, minTtlSeconds: 900, maxTtlSeconds: 3600 },
    };
    const cfg = validateConfig(config([]));
    for (const inst of cfg.credentialIssuers) {
      const plugin = credentialIssuerCatalog.get(inst.type);
      const declared = plugin.capabilities(inst.config);
      expect(declared, inst.name).toMatchObject(expected[inst.name]!);
      const issuer = plugin.create(inst.name, inst.config, testIssuerDeps(logger, {}, inst.name));
      expect(issuer.capabilities, inst.name).toEqual(declared);
    }
  });
});

describe('agent-sts config check prints lifetime problems with the file name', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'agsts-lifetimes-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('exits non-zero and prints the grant, target, issuer and bound', async () => {
    const file = join(dir, 'agent-sts.yaml');
    writeFileSync(
      file,
      `keys:
  kek: { insecureValue: "${randomBytes(32).toString('base64')}" }
credentialIssuers:
  - name: aws-prod
    type: aws-sts
    config: { region: eu-west-1, roles: { deploy: { roleArn: "${ROLE}" } } }
targets:
  - { name: aws-deploy, audiences: [aws-deploy], issuer: aws-prod, scopes: [deploy] }
policy:
  rules:
    - id: ci
      workload: { subject: "dev://ci" }
      grants:
        - { target: aws-deploy, scopes: [deploy], maxTtl: 5m }
`,
    );
    const r = await runAgentSts(['config', 'check', file], { cwd: dir });
    expect(r.code, describeRun(r)).not.toBe(0);
    expect(r.stderr).toContain(`${file}: policy.rules[0] (ci).grants[0].maxTtl: 5m for target aws-deploy is below the minimum lifetime of issuer aws-prod (aws-sts, 900 s)`);
    expect(r.stdout).toBe('');
  });
});

describe.each(['maxLivePerTask', 'maxLivePerTree'] as const)('targets[].%s against the issuer', (key) => {
  const withLimit = (k: Key, n = 3) => {
    const c = config([]);
    c.targets = c.targets.map((t) => (t.issuer === issuers[k].name ? { ...t, [key]: n } : t));
    return c;
  };

  it.each(['pg', 'my'] as const)('accepts it on a %s target (the row is stored before the login exists)', (k) => {
    expect(problems(withLimit(k))).toEqual([]);
  });

  it.each(['jwt', 'gh', 'vault', 'aws'] as const)('refuses it on a %s target, naming target and issuer', (k) => {
    const p = problems(withLimit(k));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(new RegExp(`^targets\\[\\d\\] \\(${targetOf[k]}\\)\\.${key}: issuer ${issuers[k].name} \\(${issuers[k].type}\\) creates a credential before agent-sts can record it`));
  });

  it('refuses a limit that is not a positive integer', () => {
    for (const n of [0, 2.5, -1]) expect(problems(withLimit('pg', n)).join('\n')).toMatch(new RegExp(`targets\\[\\d\\]\\.${key}: `));
  });
});

describe('targets[].dpop against the issuer', () => {
  const withDpop = (k: Key, dpop: unknown) => {
    const c = config([]);
    c.targets = c.targets.map((t) => (t.issuer === issuers[k].name ? { ...t, dpop } : t));
    return c;
  };

  it.each(['off', 'optional', 'required'])('accepts dpop: %s on an agent-sts-jwt target', (mode) => {
    expect(problems(withDpop('jwt', mode))).toEqual([]);
  });

  it.each(['pg', 'my', 'gh', 'vault', 'aws'] as const)('refuses dpop on a %s target, naming target and issuer; off is fine', (k) => {
    expect(problems(withDpop(k, 'off'))).toEqual([]);
    const p = problems(withDpop(k, 'optional'));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(new RegExp(`^targets\\[\\d\\] \\(${targetOf[k]}\\)\\.dpop: issuer ${issuers[k].name} \\(${issuers[k].type}\\) cannot bind its credentials to a DPoP key`));
  });

  it('refuses a value that is not off, optional or required', () => {
    for (const bad of ['on', true, 1, null]) expect(problems(withDpop('jwt', bad)).join('\n'), String(bad)).toMatch(/targets\[\d\]\.dpop: /);
  });
});

describe('targets[].servedBy', () => {
  const withServedBy = (k: Key, servedBy: unknown) => {
    const c = config([]);
    c.targets = c.targets.map((t) => (t.issuer === issuers[k].name ? { ...t, servedBy } : t));
    return c;
  };

  it('accepts workloads by exact subject or by pattern on an agent-sts-jwt target', () => {
    expect(problems(withServedBy('jwt', [{ provider: 'k8s', subject: 'spiffe://cluster.local/ns/mcp/sa/github-mcp' }, { provider: 'ci', subjectPattern: 'test://mcp-[a-z]+' }]))).toEqual([]);
  });

  it.each(['pg', 'my', 'gh', 'vault', 'aws'] as const)('refuses it on a %s target, naming target and issuer', (k) => {
    const p = problems(withServedBy(k, [{ provider: 'ci', subject: 'test://mcp' }]));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(new RegExp(`^targets\\[\\d\\] \\(${targetOf[k]}\\)\\.servedBy: issuer ${issuers[k].name} \\(${issuers[k].type}\\) does not issue agent-sts access tokens`));
  });

  it.each([
    ['a whole provider (neither subject nor pattern)', [{ provider: 'ci' }], /servedBy\[0\]: give exactly one of subject or subjectPattern/],
    ['both subject and pattern', [{ provider: 'ci', subject: 'a', subjectPattern: 'a' }], /servedBy\[0\]: give exactly one/],
    ['an invalid pattern', [{ provider: 'ci', subjectPattern: '(' }], /servedBy\[0\]\.subjectPattern: not a valid regular expression/],
    ['no provider', [{ subject: 'a' }], /servedBy\[0\]\.provider: /],
    ['an unknown key', [{ provider: 'ci', subject: 'a', anyone: true }], /servedBy\[0\]: Unrecognized key: "anyone"/],
    ['an empty list', [], /servedBy: /],
  ])('refuses %s, naming the path', (_name, servedBy, expected) => {
    expect(problems(withServedBy('jwt', servedBy)).join('\n')).toMatch(expected);
  });
});
