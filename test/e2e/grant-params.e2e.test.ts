// Policy v2 scope parameters and session-tag obligations reach the issuers' upstream requests,
// through the real broker (SQLite store) and the fakes: AWS AssumeRole carries the session policy
// built from the grant (or the role's template filled with a parameter) and the session tags
// (identity values rendered); the GitHub installation-token request carries the narrowed
// repositories and permissions, and for an agent acting for a person their intersection; the
// PostgreSQL login joins the role the grant chose from the issuer's allow-list, not the default.
// A policy naming a role outside the allow-list is refused when uploaded, with the reason.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG_ADMIN_URL } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { startFakeGitHub, type FakeGitHub } from '../fakes/github-api.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TEST_ADMIN_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';

const REGION = 'eu-west-1';
const OWN = { accessKeyId: 'AKIAE2EGRANTPARAMS01', secretAccessKey: 'e2e-grant-params-secret/abcdefghijklmnop' };
const DEPLOY_ROLE = 'arn:aws:iam::111122223333:role/deploy';
const READER_ROLE = 'arn:aws:iam::111122223333:role/reader';
const INSTALLATION_ID = 4242;
const PREFIX = `agsgp${randomBytes(2).toString('hex')}_`;
const ROLE = { default: `${PREFIX}writer`, ledger: `${PREFIX}ledger` };
const app = (() => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), publicKey };
})();

async function pgAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const policy = {
  apiVersion: 'agent-sts.dev/v2',
  kind: 'Policy',
  metadata: { name: 'team', owners: ['team@example.com'] },
  spec: {
    rules: [
      {
        name: 'agents',
        workloads: [{ provider: 'ci', subject: 'test://agent' }],
        agentToken: { maxTtl: '1h' },
        grants: [
          {
            target: 'aws',
            scopes: [
              { name: 'deploy', params: { actions: 's3:GetObject,s3:ListBucket', resources: 'arn:aws:s3:::reports,arn:aws:s3:::reports/*' } },
              { name: 'bucket', params: { bucket: 'reports' } },
            ],
            maxTtl: '15m',
            obligations: { sessionTags: { team: '${workload.attributes.team}', 'cost-center': 'cc-42' } },
          },
          { target: 'github', scopes: [{ name: 'code', params: { repositories: 'payments,102', permissions: 'contents:read' } }], maxTtl: '10m' },
          { target: 'db', scopes: [{ name: 'write', params: { role: ROLE.ledger } }], maxTtl: '10m' },
        ],
      },
      {
        name: 'assistant',
        workloads: [{ provider: 'ci', subject: 'test://assistant' }],
        human: 'required',
        agentToken: { maxTtl: '1h' },
        grants: [{ target: 'github', scopes: [{ name: 'code', params: { repositories: 'payments,web', permissions: 'contents:read,issues:write' } }], maxTtl: '10m' }],
      },
      { name: 'sre', humans: [{ provider: 'corp', groups: ['sre'] }], agentToken: { maxTtl: '1h' }, grants: [{ target: 'github', scopes: [{ name: 'code', params: { repositories: 'payments,docs', permissions: 'issues:read,contents:write' } }] }] },
      { name: 'docs-writers', humans: [{ provider: 'corp', groups: ['docs'] }], agentToken: { maxTtl: '1h' }, grants: [{ target: 'github', scopes: [{ name: 'code', params: { repositories: 'docs' } }] }] },
    ],
  },
};

describe('grant parameters and obligations at the issuers', { timeout: 60_000 }, () => {
  let e2e: E2eBroker;
  let corp: FakeIssuer;
  let sts: FakeSts;
  let gh: FakeGitHub;
  let broker: TestBroker;

  beforeAll(async () => {
    corp = await startFakeOidcIssuer();
    sts = await startFakeSts({
      region: REGION,
      keys: [{ ...OWN, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAGRANTPARAMS' } }],
      roles: [{ arn: DEPLOY_ROLE, roleId: 'AROAGRANTPARAMSDEPLOY' }, { arn: READER_ROLE, roleId: 'AROAGRANTPARAMSREADER' }],
    });
    gh = await startFakeGitHub({
      appId: 99, publicKey: app.publicKey, installationId: INSTALLATION_ID,
      repositories: [{ id: 101, name: 'payments' }, { id: 102, name: 'web' }, { id: 103, name: 'docs' }],
      permissions: { contents: 'write', issues: 'write', metadata: 'read' },
    });
    await pgAdmin(async (c) => {
      for (const r of Object.values(ROLE)) await c.query(`CREATE ROLE ${c.escapeIdentifier(r)} NOLOGIN`);
    });
    e2e = await startE2eBroker({
      name: 'agsts-grant-params',
      pgRolePrefix: PREFIX,
      ci: { attributes: { team: 'team' } },
      moreTrustProviders: [{ name: 'corp', type: 'oidc', config: { issuer: corp.issuer, audience: 'sts', human: true } }],
      env: { OWN_SECRET: OWN.secretAccessKey, GH_APP_KEY: app.privatePem },
      config: {
        credentialIssuers: [
          {
            name: 'aws-prod', type: 'aws-sts',
            config: {
              region: REGION, endpoint: sts.url, iamEndpoint: sts.iamUrl, credentials: { accessKeyId: OWN.accessKeyId, secretAccessKey: { fromEnv: 'OWN_SECRET' } },
              roles: {
                deploy: { roleArn: DEPLOY_ROLE },
                bucket: { roleArn: READER_ROLE, sessionPolicy: { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::${param.bucket}/${task_id}/*' }] } },
              },
            },
          },
          {
            name: 'gh', type: 'github-app',
            config: {
              appId: 99, privateKey: { fromEnv: 'GH_APP_KEY' }, installationId: INSTALLATION_ID, baseUrl: gh.baseUrl,
              repositories: [{ id: 101, name: 'payments' }, { id: 102, name: 'web' }, { id: 103, name: 'docs' }],
              scopes: { code: { permissions: { contents: 'write', issues: 'write' } } },
            },
          },
          { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { write: ROLE.default }, grantableRoles: { write: [ROLE.ledger] }, rolePrefix: PREFIX } },
        ],
        targets: [
          { name: 'aws', audiences: ['aws'], issuer: 'aws-prod', scopes: ['deploy', 'bucket'] },
          { name: 'github', audiences: ['github'], issuer: 'gh', scopes: ['code'] },
          { name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['write'] },
        ],
        policy: { documents: [policy] },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    await e2e?.close();
    await Promise.all([corp?.close(), sts?.close(), gh?.close()]);
  });

  /** Startup exchange: the workload's attestation (with the person's token as subject when it acts for one) -> agent token. */
  const agentToken = async (sub: string, person?: string) => {
    const attestation = await e2e.attest(sub, { team: 'payments' });
    const r = await postToken(broker.url, {
      grant_type: TOKEN_EXCHANGE,
      ...(person ? { subject_token: person, subject_token_type: JWT_TYPE, actor_token: attestation, actor_token_type: JWT_TYPE } : { subject_token: attestation, subject_token_type: JWT_TYPE }),
    });
    expect(r.status, r.text).toBe(200);
    return { token: String(r.json.access_token), task: String(r.json.task_id) };
  };
  const exchange = (agent: string, audience: string, scope: string, requested: string, person?: string) =>
    postToken(broker.url, {
      grant_type: TOKEN_EXCHANGE,
      ...(person
        ? { subject_token: person, subject_token_type: JWT_TYPE, actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE }
        : { subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE }),
      audience, scope, requested_token_type: requested,
    });
  const tokenRequests = () => gh.calls.filter((c) => c.method === 'POST' && /\/access_tokens$/.test(c.path) && c.status === 201);

  it('AWS: the session policy from actions/resources and the obligation tags, identity values rendered', async () => {
    const a = await agentToken('agent');
    const r = await exchange(a.token, 'aws', 'deploy', TOKEN_TYPE.awsCredentials);
    expect(r.status, r.text).toBe(200);
    const call = sts.assumeRoleCalls.at(-1)!;
    expect(call).toMatchObject({ RoleArn: DEPLOY_ROLE, status: 200 });
    expect(JSON.parse(call.Policy!)).toEqual({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: ['s3:GetObject', 's3:ListBucket'], Resource: ['arn:aws:s3:::reports', 'arn:aws:s3:::reports/*'] }],
    });
    expect(call.Tags).toEqual([
      { Key: 'agent-sts:task', Value: a.task },
      { Key: 'agent-sts:subject', Value: 'test://agent' },
      { Key: 'team', Value: 'payments' },
      { Key: 'cost-center', Value: 'cc-42' },
    ]);
  });

  it("AWS: a role's template gets the grant's parameter", async () => {
    const a = await agentToken('agent');
    const r = await exchange(a.token, 'aws', 'bucket', TOKEN_TYPE.awsCredentials);
    expect(r.status, r.text).toBe(200);
    const call = sts.assumeRoleCalls.at(-1)!;
    expect(call.RoleArn).toBe(READER_ROLE);
    expect(JSON.parse(call.Policy!).Statement[0].Resource).toBe(`arn:aws:s3:::reports/${a.task}/*`);
  });

  it('GitHub: the installation token is asked for the granted repositories and permissions only', async () => {
    const a = await agentToken('agent');
    const before = tokenRequests().length;
    const r = await exchange(a.token, 'github', 'code', TOKEN_TYPE.githubInstallationToken);
    expect(r.status, r.text).toBe(200);
    expect(tokenRequests()).toHaveLength(before + 1);
    expect(tokenRequests().at(-1)!.body).toEqual({ repository_ids: [101, 102], permissions: { contents: 'read' } });
    const creds = r.json.credentials as { repositories: { id: number }[]; permissions: Record<string, string> };
    expect(creds.repositories.map((x) => x.id)).toEqual([101, 102]);
    expect(creds.permissions).toEqual({ contents: 'read', metadata: 'read' });
  });

  it('GitHub, an agent acting for a person: the parameters of both rules intersect', async () => {
    const alice = await corp.sign({ sub: 'alice', aud: 'sts', groups: ['sre'] });
    const a = await agentToken('assistant', alice);
    const r = await exchange(a.token, 'github', 'code', TOKEN_TYPE.githubInstallationToken, alice);
    expect(r.status, r.text).toBe(200);
    // agent: payments, web + contents:read, issues:write; person: payments, docs + issues:read,
    // contents:write -> payments only, each permission at the weaker of the two levels
    expect(tokenRequests().at(-1)!.body).toEqual({ repository_ids: [101], permissions: { contents: 'read', issues: 'read' } });

    // another person whose rule shares no repository with the agent's: refused, nothing asked of GitHub
    const bob = await corp.sign({ sub: 'bob', aud: 'sts', groups: ['docs'] });
    const forBob = await agentToken('assistant', bob);
    const before = gh.calls.length;
    const refused = await exchange(forBob.token, 'github', 'code', TOKEN_TYPE.githubInstallationToken, bob);
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.error).toBe('invalid_scope');
    expect(String(refused.json.error_description)).not.toMatch(/docs|payments|repositories/);
    expect(gh.calls.length).toBe(before);
  });

  it('PostgreSQL: the login joins the role the grant chose, not the default one', async () => {
    const a = await agentToken('agent');
    const r = await exchange(a.token, 'db', 'write', TOKEN_TYPE.postgresCredentials);
    expect(r.status, r.text).toBe(200);
    const login = (r.json.credentials as { username: string }).username;
    const memberOf = await pgAdmin(async (c) =>
      (await c.query<{ rolname: string }>('SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1', [login])).rows.map((x) => x.rolname),
    );
    expect(memberOf).toEqual([ROLE.ledger]);
  });

  it('refuses an uploaded policy whose parameter names a role outside the issuer allow-list; the set in force is unchanged', async () => {
    const before = await (await fetch(`${broker.url}/v1/admin/policies`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).json() as { version: string };
    const yaml = [
      'apiVersion: agent-sts.dev/v2',
      'kind: Policy',
      'metadata: { name: sneaky, owners: [x@example.com] }',
      'spec:',
      '  rules:',
      '    - name: bots',
      "      workloads: [{ provider: ci, subject: 'test://bot' }]",
      '      grants:',
      '        - target: db',
      '          scopes: [{ name: write, params: { role: postgres } }]',
      '',
    ].join('\n');
    const res = await fetch(`${broker.url}/v1/admin/policies/sneaky`, { method: 'PUT', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'application/yaml' }, body: yaml });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/api:sneaky:9: spec.rules\[0\].grants\[0\]: target db \(issuer pg, postgres\): scope write: role "postgres" is not allowed for this scope/);
    const after = await (await fetch(`${broker.url}/v1/admin/policies`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).json() as { version: string };
    expect(after.version).toBe(before.version);
  });

  it('keeps secrets out of the logs', () => {
    const logs = broker.logs.join('\n');
    expect(logs).not.toContain(OWN.secretAccessKey);
    expect(logs).not.toContain('BEGIN RSA PRIVATE KEY');
    for (const t of gh.tokens) expect(logs).not.toContain(t);
  });
});
