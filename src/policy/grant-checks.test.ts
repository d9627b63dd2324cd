import { describe, expect, it } from 'vitest';
import { configProblems } from '../../test/support/config.js';
import { compilePolicySet, validateConfig } from '../config/load-config.js';
import { parsePolicyFile } from './policy-document.js';

// v2 grants against the issuers of their targets, when the policy set loads (start-up, reload,
// admin upload): lifetimes the issuer cannot honour and scope parameters / session tags it refuses,
// each with the grant's file, line and path.

const issuers = [
  { name: 'gh', type: 'github-app', config: { appId: 1, privateKey: { fromEnv: 'GH' }, installationId: 2, repositories: [{ id: 3, name: 'app' }], scopes: { read: { permissions: { contents: 'read' } } } } },
  { name: 'aws-prod', type: 'aws-sts', config: { region: 'eu-west-1', roles: { deploy: { roleArn: 'arn:aws:iam::111122223333:role/deploy' } } } },
  { name: 'app-pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG' }, roles: { write: 'app_writer' }, grantableRoles: { write: ['ledger_writer'] } } },
  { name: 'tokens', type: 'agent-sts-jwt' },
  { name: 'vault', type: 'vault', config: { endpoint: 'https://vault.test:8200', token: { fromEnv: 'VT' }, mounts: ['database'], scopes: { read: { path: 'database/creds/ro' } } } },
];
const targets = [
  { name: 'github', audiences: ['github'], issuer: 'gh' },
  { name: 'aws-deploy', audiences: ['aws-deploy'], issuer: 'aws-prod' },
  { name: 'db', audiences: ['db'], issuer: 'app-pg' },
  { name: 'api', audiences: ['api'], issuer: 'tokens' },
  { name: 'secrets', audiences: ['secrets'], issuer: 'vault' },
  { name: 'runtime', audiences: ['runtime'], issuer: 'registered-later', issuerRegisteredAtRuntime: true },
];
const doc = (grants: unknown[], human?: string) => ({
  apiVersion: 'agent-sts.dev/v2',
  kind: 'Policy',
  metadata: { name: 'team', owners: ['team@example.com'] },
  spec: { rules: [{ name: 'agents', workloads: [{ subject: 'test://agent' }], ...(human ? { human } : {}), grants }] },
});
const config = (grants: unknown[], opts: { accessTokenMaxTtl?: string; human?: string } = {}) => ({
  keys: { kek: { insecureValue: 'x'.repeat(44) } },
  tokens: { accessTokenMaxTtl: opts.accessTokenMaxTtl ?? '15m' },
  credentialIssuers: issuers,
  targets,
  policy: { documents: [doc(grants, opts.human)] },
});
const problems = configProblems;

describe('v2 grant lifetimes against issuer capabilities', () => {
  it('accepts lifetimes every issuer can honour', () => {
    expect(problems(config([{ target: 'github', scopes: ['read'], maxTtl: '1h' }, { target: 'aws-deploy', scopes: ['deploy'], maxTtl: '15m' }], { accessTokenMaxTtl: '2h' }))).toEqual([]);
  });

  it('refuses a v2 maxTtl above the maximum of its issuer (GitHub tokens live one hour)', () => {
    expect(problems(config([{ target: 'github', scopes: ['read'], maxTtl: '2h' }], { accessTokenMaxTtl: '3h' }))).toEqual([
      'policy.documents[0].spec.rules[0].grants[0].maxTtl: 2h for target github is above the maximum lifetime of issuer gh (github-app, 3600 s): ' +
        'GitHub installation tokens live one hour and cannot be extended; lower maxTtl to at most 1h',
    ]);
  });

  it('refuses a v2 grant below the minimum of its issuer, naming tokens.accessTokenMaxTtl when that is the cap', () => {
    expect(problems(config([{ target: 'aws-deploy', scopes: ['deploy'], maxTtl: '5m' }]))).toEqual([
      'policy.documents[0].spec.rules[0].grants[0].maxTtl: 5m for target aws-deploy is below the minimum lifetime of issuer aws-prod (aws-sts, 900 s): ' +
        'AssumeRole cannot issue sessions shorter than 15 minutes; raise maxTtl to at least 15m, or grant this target from another issuer',
    ]);
    expect(problems(config([{ target: 'aws-deploy', scopes: ['deploy'] }], { accessTokenMaxTtl: '10m' }))[0]).toMatch(
      /grants\[0\]: no maxTtl, so tokens.accessTokenMaxTtl \(10m\) applies; .*raise tokens.accessTokenMaxTtl to at least 15m/,
    );
  });
});

describe('v2 scope parameters and session tags against the issuer', () => {
  it('accepts parameters within the issuer configuration', () => {
    expect(
      problems(
        config([
          { target: 'db', scopes: [{ name: 'write', params: { role: 'ledger_writer' } }] },
          { target: 'aws-deploy', scopes: [{ name: 'deploy', params: { actions: 's3:GetObject' } }], maxTtl: '15m', obligations: { sessionTags: { team: '${workload.attributes.team}' } } },
          { target: 'github', scopes: [{ name: 'read', params: { repositories: 'app', permissions: 'contents:read' } }] },
          { target: 'api', scopes: [{ name: 'read', params: { ledger: 'eu' } }] },
          // an issuer registered at runtime is not known here: checked when it issues
          { target: 'runtime', scopes: [{ name: 'read', params: { anything: 'x' } }] },
        ]),
      ),
    ).toEqual([]);
  });

  it('refuses a role outside the allow-list, with the grant path, target and issuer', () => {
    expect(problems(config([{ target: 'db', scopes: [{ name: 'write', params: { role: 'postgres' } }] }]))).toEqual([
      'policy.documents[0].spec.rules[0].grants[0]: target db (issuer app-pg, postgres): scope write: role "postgres" is not allowed for this scope ' +
        "(the issuer allows: app_writer, ledger_writer; add it to the issuer's grantableRoles to allow it)",
    ]);
  });

  it('refuses what an issuer cannot carry: tags on a database login, parameters on vault, a wider GitHub permission', () => {
    const p = problems(
      config([
        { target: 'db', scopes: ['write'], obligations: { sessionTags: { team: 'a' } } },
        { target: 'secrets', scopes: [{ name: 'read', params: { path: 'other' } }] },
        { target: 'github', scopes: [{ name: 'read', params: { permissions: 'contents:write' } }] },
      ]),
    );
    expect(p).toHaveLength(3);
    expect(p[0]).toMatch(/grants\[0\]: target db .*postgres issuers cannot carry session tags/);
    expect(p[1]).toMatch(/grants\[1\]: target secrets .*vault issuers take no scope parameters/);
    expect(p[2]).toMatch(/grants\[2\]: target github .*contents:write is wider than the scope's contents:read/);
  });

  it('names file and line for a document read from a file, on reload too', () => {
    const cfg = validateConfig(config([]));
    const text = [
      'apiVersion: agent-sts.dev/v2',
      'kind: Policy',
      'metadata: { name: other, owners: [o@example.com] }',
      'spec:',
      '  rules:',
      '    - name: bots',
      "      workloads: [{ subject: 'test://bot' }]",
      '      grants:',
      '        - target: db',
      '          scopes: [{ name: write, params: { role: superuser } }]',
      '',
    ].join('\n');
    const file = parsePolicyFile('/policies/other.yaml', text);
    expect(file.problems).toEqual([]);
    const r = compilePolicySet(cfg, file.documents);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatch(/^\/policies\/other.yaml:9: spec.rules\[0\].grants\[0\]: target db \(issuer app-pg, postgres\): scope write: role "superuser" is not allowed/);
  });
});
