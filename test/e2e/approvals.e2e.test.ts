// Just-in-time approval through HTTP: a grant with an approval obligation answers
// authorization_pending with an approval id and notifies a signed webhook; an approver decides
// through the admin API; the agent's retry then succeeds (or is refused after a denial).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWT_TYPE, postToken, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { signatureOf } from '../../src/approvals/approval-webhook.js';
import { startWebhookReceiver, type ReceivedHook } from '../fakes/http.js';

const WEBHOOK_SECRET = `whsec-${randomBytes(8).toString('hex')}`;
const OTHER_ADMIN_TOKEN = `other-${randomBytes(12).toString('hex')}`;

describe('just-in-time approval', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>> | undefined;
  let hooks: ReceivedHook[] = [];
  const issuedTokens: string[] = [];

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    hooks = receiver.hooks;
    const hookUrl = `${receiver.base}/hook`;

    e2e = await startE2eBroker({
      name: 'agsts-approvals',
      ci: { audience: 'agent-sts-test', algorithms: ['RS256'] },
      env: { OTHER_ADMIN_TOKEN, WEBHOOK_SECRET },
      config: {
        auth: {
          auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
          admins: [
            { name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' } },
            { name: 'other-admin', token: { fromEnv: 'OTHER_ADMIN_TOKEN' } },
          ],
          // The agent itself holds the admin role (and is even named an approver): it still may not approve its own request.
          roles: [{ role: 'admin', provider: 'ci', subjectPattern: 'test://billing-bot' }],
        },
        approvals: { webhook: { url: hookUrl, secret: { fromEnv: 'WEBHOOK_SECRET' } } },
        credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
        targets: [
          { name: 'payouts', audiences: ['payouts'], issuer: 'tokens', scopes: ['pay', 'refund'] },
          { name: 'reports', audiences: ['reports'], issuer: 'tokens', scopes: ['read'] },
        ],
        policy: {
          documents: [
            {
              apiVersion: 'agent-sts.dev/v2',
              kind: 'Policy',
              metadata: { name: 'payments', owners: ['payments@example.com'] },
              spec: {
                rules: [
                  {
                    name: 'agents',
                    workloads: [{ provider: 'ci', subjectPattern: 'test://billing-.+' }],
                    grants: [
                      { target: 'payouts', scopes: ['pay', 'refund'], maxTtl: '5m', obligations: { approval: { approvers: ['bootstrap:test-admin', 'ci:test://billing-bot'], window: '15m' } } },
                      { target: 'reports', scopes: ['read'] },
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
  afterAll(async () => {
    await e2e?.close();
    await receiver?.close();
  });

  const signAgent = (sub = 'billing-bot') => e2e.attest(sub);
  const exchange = async (scope: string, sub = 'billing-bot') => {
    const token = await signAgent(sub);
    issuedTokens.push(token);
    return postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: JWT_TYPE, audience: 'payouts', scope });
  };
  const admin = async (method: 'GET' | 'POST', path: string, body?: unknown, token = TEST_ADMIN_TOKEN, contentType = 'application/json') => {
    const res = await fetch(`${broker.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, type: res.headers.get('content-type') ?? '', json: (await res.json()) as Record<string, unknown> };
  };
  const waitForHooks = async (n: number) => {
    for (let i = 0; i < 100 && hooks.length < n; i++) await new Promise((r) => setTimeout(r, 20));
    expect(hooks.length).toBe(n);
  };
  const audit = async (action: string) => {
    const res = await fetch(`${broker.url}/v1/audit?action=${action}&limit=100`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
    return ((await res.json()) as { records: Array<Record<string, unknown>> }).records;
  };

  let firstId = '';

  it('answers authorization_pending with an approval id and notifies the signed webhook (no token in it)', async () => {
    const r = await exchange('pay');
    expect(r.status, r.text).toBe(400);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json.error).toBe('authorization_pending');
    firstId = r.json.approval_id as string;
    expect(firstId).toMatch(/^apr_/);
    expect(r.json.error_description).toBe(`approval required: request ${firstId} is waiting for a decision`);

    await waitForHooks(1);
    const hook = hooks[0]!;
    expect(hook.signature).toBe(signatureOf(WEBHOOK_SECRET, hook.body));
    const notice = JSON.parse(hook.body) as Record<string, unknown>;
    expect(notice).toMatchObject({
      approval_id: firstId, workload_subject: 'test://billing-bot', human_subject: null, target: 'payouts', scopes: ['pay'],
      approvers: ['bootstrap:test-admin', 'ci:test://billing-bot'], decide_url: `${broker.url}/v1/admin/approvals/${firstId}`,
    });
    expect(Date.parse(notice.expires_at as string)).toBeGreaterThan(Date.now() + 14 * 60_000);
    for (const t of issuedTokens) expect(hook.body).not.toContain(t);
  });

  it('answers the same id on a retry, without a new request or a second webhook', async () => {
    const r = await exchange('pay');
    expect(r.json).toMatchObject({ error: 'authorization_pending', approval_id: firstId });
    await new Promise((res) => setTimeout(res, 100));
    expect(hooks).toHaveLength(1);
    const list = await admin('GET', '/v1/admin/approvals?state=pending');
    expect(list.status).toBe(200);
    expect((list.json.approvals as unknown[]).length).toBe(1);
  });

  it('refuses callers without the admin role (401/403) and bad bodies (problem+json)', async () => {
    const none = await fetch(`${broker.url}/v1/admin/approvals`);
    expect(none.status).toBe(401);
    expect(none.headers.get('content-type')).toContain('application/problem+json');
    const auditor = await admin('GET', '/v1/admin/approvals', undefined, TEST_AUDITOR_TOKEN);
    expect(auditor.status).toBe(401);
    const otherAgent = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'x' }, await signAgent('billing-helper'));
    expect(otherAgent.status).toBe(403);

    const noReason = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, {});
    expect(noReason.status).toBe(400);
    expect(noReason.type).toContain('application/problem+json');
    const extra = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'ok', by: 'me' });
    expect(extra.status).toBe(400);
    const notJson = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, '{reason', TEST_ADMIN_TOKEN);
    expect(notJson.status).toBe(400);
    const wrongType = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, 'reason=ok', TEST_ADMIN_TOKEN, 'application/x-www-form-urlencoded');
    expect(wrongType.status).toBe(415);
    const badState = await admin('GET', '/v1/admin/approvals?state=maybe');
    expect(badState.status).toBe(400);
    expect((await admin('GET', '/v1/admin/approvals/apr_nope')).status).toBe(404);
    expect((await admin('POST', '/v1/admin/approvals/apr_nope/approve', { reason: 'ok' })).status).toBe(404);
  });

  it('refuses self-approval and an admin who is not a named approver (403)', async () => {
    const self = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'I need it' }, await signAgent('billing-bot'));
    expect(self.status).toBe(403);
    expect(self.json.detail).toContain('cannot be decided by the identity it is for');
    const other = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'looks fine' }, OTHER_ADMIN_TOKEN);
    expect(other.status).toBe(403);
    expect(other.json.detail).toContain('not an approver');
    expect((await admin('GET', `/v1/admin/approvals/${firstId}`)).json.state).toBe('pending');
  });

  it('issues on the retry once approved, for repeated exchanges within the window', async () => {
    const ok = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'month-end payout run' });
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ id: firstId, state: 'approved', decided_by: 'bootstrap:test-admin', reason: 'month-end payout run' });
    const again = await admin('POST', `/v1/admin/approvals/${firstId}/deny`, { reason: 'changed my mind' });
    expect(again.status).toBe(409);

    for (let i = 0; i < 2; i++) {
      const r = await exchange('pay');
      expect(r.status, r.text).toBe(200);
      expect(r.json.access_token).toBeTypeOf('string');
      expect(r.json.expires_in).toBeLessThanOrEqual(300);
    }
    const issued = (await audit('token.exchange')).filter((e) => e.outcome === 'allow');
    expect(issued.length).toBe(2);
    expect(issued[0]!.reason).toContain(`approval ${firstId} approved`);
  });

  it('asks for a separate approval for another request key (other scope)', async () => {
    const r = await exchange('pay refund');
    expect(r.json.error).toBe('authorization_pending');
    expect(r.json.approval_id).not.toBe(firstId);
    await waitForHooks(2);
  });

  it('refuses with invalid_request after a denial (reason only in the audit record)', async () => {
    const r = await exchange('refund');
    const id = r.json.approval_id as string;
    expect(r.json.error).toBe('authorization_pending');
    const deny = await admin('POST', `/v1/admin/approvals/${id}/deny`, { reason: 'no refunds this week' });
    expect(deny.status).toBe(200);
    expect(deny.json.state).toBe('denied');
    const after = await exchange('refund');
    expect(after.status).toBe(400);
    expect(after.json).toEqual({ error: 'invalid_request', error_description: 'the approval request was denied' });
    const refused = (await audit('token.exchange')).filter((e) => e.outcome === 'deny');
    expect(refused.some((e) => String(e.reason).includes('no refunds this week'))).toBe(true);
  });

  it('opens a new request after the window lapses (expired approvals neither issue nor can be decided)', async () => {
    await broker.composed.db.policyApproval.update({ where: { id: firstId }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect((await admin('GET', `/v1/admin/approvals/${firstId}`)).json.state).toBe('expired');
    const r = await exchange('pay');
    expect(r.json.error).toBe('authorization_pending');
    expect(r.json.approval_id).not.toBe(firstId);
    const late = await admin('POST', `/v1/admin/approvals/${firstId}/approve`, { reason: 'late' });
    expect(late.status).toBe(409);
    expect((await admin('GET', '/v1/admin/approvals?state=expired')).json.approvals).toHaveLength(1);
  });

  it('audits request, approve, deny and notify', async () => {
    expect((await audit('approval.request')).length).toBe(4);
    const approve = await audit('approval.approve');
    expect(approve.filter((e) => e.outcome === 'success').map((e) => e.reason)).toEqual(['approved by bootstrap:test-admin: month-end payout run']);
    expect(approve.filter((e) => e.outcome === 'deny').length).toBe(2);
    expect((await audit('approval.deny')).filter((e) => e.outcome === 'success')[0]!.reason).toBe('denied by bootstrap:test-admin: no refunds this week');
    await waitForHooks(4);
    expect((await audit('approval.notify')).every((e) => e.outcome === 'success')).toBe(true);
  });
});
