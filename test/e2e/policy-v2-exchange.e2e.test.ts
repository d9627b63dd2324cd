// Policy v2 through the token endpoint: a v2 grant issues, a CEL condition on the client network
// denies, and a grant with an approval obligation waits for an approval (approvals.e2e.test.ts has the flow).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWT_TYPE, postToken, TEST_ADMIN_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

describe('policy v2 at the token endpoint', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;

  beforeAll(async () => {
    e2e = await startE2eBroker({
      name: 'agsts-policy-v2',
      ci: { audience: 'agent-sts-test', algorithms: ['RS256'] },
      config: {
        credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
        targets: [
          { name: 'billing-api', audiences: ['billing-api'], issuer: 'tokens', scopes: ['invoices:read'] },
          { name: 'payouts', audiences: ['payouts'], issuer: 'tokens', scopes: ['pay'] },
          { name: 'vpn-api', audiences: ['vpn-api'], issuer: 'tokens', scopes: ['read'] },
        ],
        policy: {
          documents: [
            {
              apiVersion: 'agent-sts.dev/v2',
              kind: 'Policy',
              metadata: { name: 'billing', owners: ['billing@example.com'] },
              spec: {
                rules: [
                  {
                    name: 'agents',
                    workloads: [{ provider: 'ci', subjectPattern: 'test://billing-.+' }],
                    grants: [
                      { target: 'billing-api', scopes: ['invoices:read'], maxTtl: '5m' },
                      { target: 'payouts', scopes: ['pay'], obligations: { approval: { approvers: ['cfo'], window: '15m' } } },
                      { target: 'vpn-api', scopes: ['read'], when: 'inNetwork(env.clientAddress, "10.0.0.0/8")' },
                    ],
                  },
                ],
              },
            },
          ],
        },
      },
    });
    broker = e2e.broker;
  });
  afterAll(() => e2e?.close());

  const exchange = async (audience: string, scope: string) =>
    postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await e2e.attest('billing-bot'), subject_token_type: JWT_TYPE, audience, scope });

  it('issues what a v2 grant allows, capped by its maxTtl', async () => {
    const r = await exchange('billing-api', 'invoices:read');
    expect(r.status, r.text).toBe(200);
    expect(r.json.expires_in).toBeLessThanOrEqual(300);
  });

  it('denies when a condition is false (client not in the network)', async () => {
    const r = await exchange('vpn-api', 'read');
    expect(r.status, r.text).toBe(400);
    expect(r.json.error).toBe('invalid_request');
  });

  it('answers authorization_pending for a grant that requires approval instead of issuing it', async () => {
    const r = await exchange('payouts', 'pay');
    expect(r.status, r.text).toBe(400);
    expect(r.json).toMatchObject({ error: 'authorization_pending', approval_id: expect.stringMatching(/^apr_/) });
    expect(r.json.access_token).toBeUndefined();
  });

  it('explains a decision through the admin API: each rule considered and why, with the set in force', async () => {
    const ask = (body: unknown, auth = `Bearer ${TEST_ADMIN_TOKEN}`) =>
      fetch(`${broker.url}/v1/admin/policies/explain`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const allow = await ask({ identity: { workload: { provider: 'ci', subject: 'test://billing-bot' } }, request: { target: 'billing-api', scopes: ['invoices:read'] } });
    expect(allow.status).toBe(200);
    const a = (await allow.json()) as Record<string, unknown>;
    expect(JSON.stringify(a)).toContain('agents');
    expect((a.decision as { allow: boolean }).allow).toBe(true);
    const deny = (await (await ask({ identity: { workload: { provider: 'ci', subject: 'test://stranger' } }, request: { target: 'billing-api', scopes: ['invoices:read'] } })).json()) as { decision: { allow: boolean } };
    expect(deny.decision.allow).toBe(false);
    expect((await ask({ identity: {}, request: {} })).status).toBe(400);
    expect((await ask({ identity: { workload: { provider: 'ci', subject: 'x' } }, request: { target: 't' } }, 'Bearer nope')).status).toBe(401);
  });
});
