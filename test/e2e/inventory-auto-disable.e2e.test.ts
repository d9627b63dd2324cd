// inventory.autoDisableAfterDays: the sweep leader blocks (kill switch) identities not seen for that
// long, audited as inventory.auto-disable; active ones are left alone, a restored one is not blocked
// again until it has been seen and then goes unseen for the period once more.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWT_TYPE, postToken, TEST_ADMIN_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const DAY = 86_400_000;

describe('auto-disable of identities not seen for inventory.autoDisableAfterDays', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;

  beforeAll(async () => {
    e2e = await startE2eBroker({
      name: 'agsts-auto-disable',
      ci: { audience: 'agent-sts-test', algorithms: ['RS256'] },
      config: {
        inventory: { autoDisableAfterDays: 30 },
        credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
        targets: [{ name: 'reports', audiences: ['reports'], issuer: 'tokens', scopes: ['read'] }],
        policy: { rules: [{ id: 'all', workload: { provider: 'ci', subjectPattern: 'test://.*' }, grants: [{ target: 'reports', scopes: ['read'] }] }] },
      },
    });
    broker = e2e.broker;
    const db = broker.composed.db;
    const now = Date.now();
    const row = (kind: string, subject: string, lastSeenDaysAgo: number) =>
      db.identity.create({ data: { kind, subject, providerName: 'ci', attributes: '{}', firstSeenAt: new Date(now - 200 * DAY), lastSeenAt: new Date(now - lastSeenDaysAgo * DAY) } });
    await row('workload', 'test://dormant', 45);
    await row('workload', 'test://active', 1);
    await row('human', 'bob', 40);
  });
  afterAll(() => e2e?.close());

  const db = () => broker.composed.db;
  const exchange = async (sub: string) =>
    postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await e2e.attest(sub), subject_token_type: JWT_TYPE, audience: 'reports', scope: 'read' });
  const blocked = async () => (await db().identityBlock.findMany({ orderBy: { subject: 'asc' } })).map((b) => `${b.kind} ${b.subject} by ${b.blockedBy}`);

  it('blocks the identities not seen for the period (workload and person), audited, and leaves active ones alone', async () => {
    await expect.poll(blocked, { timeout: 20_000, interval: 250 }).toEqual(['human bob by inventory:auto-disable', 'workload test://dormant by inventory:auto-disable']);
    const records = await db().auditEvent.findMany({ where: { action: 'inventory.auto-disable' }, orderBy: { time: 'asc' } });
    expect(records.map((r) => r.workloadSubject ?? `human ${r.humanSubject}`).sort()).toEqual(['human bob', 'test://dormant']);
    expect(records.every((r) => r.outcome === 'success' && /not seen since .* \(inventory\.autoDisableAfterDays: 30\)/.test(r.reason ?? ''))).toBe(true);
    const dormant = await db().identity.findUnique({ where: { kind_subject: { kind: 'workload', subject: 'test://dormant' } } });
    expect(dormant?.disabledAt).toBeInstanceOf(Date);
    expect(dormant?.disabledReason).toContain('not seen since');
    expect((await db().identity.findUnique({ where: { kind_subject: { kind: 'workload', subject: 'test://active' } } }))?.disabledAt).toBeNull();
  });

  it('refuses the disabled identity\'s exchanges until an admin restores it', async () => {
    expect((await exchange('dormant')).status).toBe(400);
    expect((await exchange('active')).status).toBe(200);
    const res = await fetch(`${broker.url}/v1/admin/identities/${encodeURIComponent('test://dormant')}/restore`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    await expect.poll(async () => (await exchange('dormant')).status, { timeout: 5000, interval: 250 }).toBe(200);
  });

  it('does not block a restored identity again while it stays unseen', async () => {
    const res = await fetch(`${broker.url}/v1/admin/identities/bob/restore`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    // Several sweeps (1 s each here).
    await new Promise((r) => setTimeout(r, 3500));
    expect(await blocked()).toEqual([]);
    expect(await db().auditEvent.count({ where: { action: 'inventory.auto-disable' } })).toBe(2);
  });
});
