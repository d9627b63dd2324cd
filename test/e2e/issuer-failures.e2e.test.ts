// Upstream failures of the database and AWS issuers through the real broker: the target down (or
// answering 500) gives an RFC 6749 error without internals, one audit record with outcome
// `error`, and no credential row of that issuer left `active` or `issuing` (a planned row is
// closed as `failed`). The github-app and vault cases are in issuers.e2e.test.ts.
import { closedPort } from '../fakes/http.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const OWN = { accessKeyId: 'AKIAFAILAGENTSTS0001', secretAccessKey: 'fail-agent-sts-secret/abcdefghijklmnopqr' };
const ROLE = 'arn:aws:iam::111122223333:role/deploy';

describe('issuer upstream failures through the token endpoint', () => {
  let issuer: FakeIssuer;
  let sts: FakeSts;
  let broker: TestBroker;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    issuer = await startFakeOidcIssuer();
    sts = await startFakeSts({ region: 'eu-west-1', keys: [{ ...OWN, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAFAIL' } }], roles: [{ arn: ROLE, roleId: 'AROAFAILDEPLOY000001' }] });
    const down = await closedPort();
    const s = createTestSqliteUrl('agsts-issuer-failures');
    drop = s.drop;
    broker = await startBroker(
      {
        storage: { url: s.url },
        trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
        credentialIssuers: [
          { name: 'pg-down', type: 'postgres', config: { adminUrl: { insecureValue: `postgres://postgres@127.0.0.1:${down}/postgres` }, roles: { read: 'pg_read_all_data' } } },
          { name: 'my-down', type: 'mysql', config: { adminUrl: { insecureValue: `mysql://root@127.0.0.1:${down}/` }, grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] } } },
          { name: 'aws-down', type: 'aws-sts', config: { region: 'eu-west-1', endpoint: `http://127.0.0.1:${down}`, credentials: { accessKeyId: OWN.accessKeyId, secretAccessKey: { fromEnv: 'OWN_SECRET' } }, roles: { deploy: { roleArn: ROLE } } } },
          { name: 'aws', type: 'aws-sts', config: { region: 'eu-west-1', endpoint: sts.url, credentials: { accessKeyId: OWN.accessKeyId, secretAccessKey: { fromEnv: 'OWN_SECRET' } }, roles: { deploy: { roleArn: ROLE } } } },
        ],
        targets: [
          { name: 'pg', audiences: ['pg'], issuer: 'pg-down', scopes: ['read'] },
          { name: 'my', audiences: ['my'], issuer: 'my-down', scopes: ['read'] },
          { name: 'aws-down', audiences: ['aws-down'], issuer: 'aws-down', scopes: ['deploy'] },
          { name: 'aws', audiences: ['aws'], issuer: 'aws', scopes: ['deploy'] },
        ],
        policy: {
          rules: [
            {
              id: 'r', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '1h' },
              grants: [{ target: 'pg', scopes: ['read'], maxTtl: '30m' }, { target: 'my', scopes: ['read'], maxTtl: '30m' }, { target: 'aws-down', scopes: ['deploy'], maxTtl: '30m' }, { target: 'aws', scopes: ['deploy'], maxTtl: '30m' }],
            },
          ],
        },
      },
      { env: { OWN_SECRET: OWN.secretAccessKey } },
    );
  });
  afterAll(async () => {
    sts?.failWith(null);
    await broker?.close();
    await issuer?.close();
    await sts?.close();
    await drop?.();
  });

  it('/readyz stays 200 but says "degraded", naming each issuer whose upstream is down and why, without its secrets', async () => {
    const res = await fetch(`${broker.url}/readyz`);
    const text = await res.text();
    expect(res.status).toBe(200);
    const body = JSON.parse(text) as { status: string; checks: Record<string, string>; issuers: Record<string, string> };
    expect(body.status).toBe('degraded');
    expect(body.checks).toEqual({ database: 'ok', signingKeys: 'ok' });
    expect(body.issuers.aws).toBe('ok');
    for (const down of ['pg-down', 'my-down', 'aws-down']) expect(body.issuers[down], down).toMatch(/refused|unreachable|timed out|failed/);
    expect(text).not.toContain(OWN.secretAccessKey);
    expect(text).not.toMatch(/postgres:\/\/|mysql:\/\//);
  });

  it.each([
    ['postgres admin connection refused', 'pg', 'read', 'pg-down', () => {}],
    ['mysql admin connection refused', 'my', 'read', 'my-down', () => {}],
    ['STS unreachable', 'aws-down', 'deploy', 'aws-down', () => {}],
    ['STS answers 500', 'aws', 'deploy', 'aws', () => sts.failWith(500)],
  ])('%s -> 503 temporarily_unavailable, audited as error, no row left active', async (_name, audience, scope, issuerName, fault) => {
    const start = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await issuer.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(start.status, start.text).toBe(200);
    fault();
    try {
      const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: String(start.json.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience, scope, requested_lifetime: '900' });
      expect(r.status, r.text).toBe(503);
      expect(r.json.error).toBe('temporarily_unavailable');
      expect(r.text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|node_modules|\.[cm]?[jt]s:\d+|secret/i);
      const events = await broker.composed.db.auditEvent.findMany({ where: { requestId: r.headers.get('x-request-id')! } });
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ outcome: 'error', taskId: String(start.json.task_id) });
      expect(await broker.composed.db.credential.count({ where: { issuerName, state: { in: ['active', 'issuing'] } } })).toBe(0);
    } finally {
      sts.failWith(null);
    }
    expect(broker.logs.join('\n')).not.toContain(OWN.secretAccessKey);
  });
});
