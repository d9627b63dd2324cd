// Inventory, access reviews and signals through a real broker: signals on the exchanges' own audit
// records, on the agent_sts.signals counter and at a signed webhook; the inventory API (filters,
// one identity with its blast radius under a policy of several rules) and access reviews (JSON, CSV).
import { AggregationTemporality, MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signatureOf } from '../../src/approvals/approval-webhook.js';
import { createTelemetry } from '../../src/telemetry/otel.js';
import { startWebhookReceiver, type ReceivedHook } from '../fakes/http.js';
import { JWT_TYPE, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

class TestMetricReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Sum of the counter's data points by their `signal` attribute. */
function signalCounts(rm: ResourceMetrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sm of rm.scopeMetrics)
    for (const m of sm.metrics)
      if (m.descriptor.name === 'agent_sts.signals') for (const dp of m.dataPoints) out[String(dp.attributes.signal)] = (out[String(dp.attributes.signal)] ?? 0) + (dp.value as number);
  return out;
}

const SECRET = 'signal-webhook-secret-0123456789';
const DAY = 86_400_000;

describe('inventory, access reviews and signals', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>> | undefined;
  let hooks: ReceivedHook[] = [];
  const secrets: string[] = [];
  const reader = new TestMetricReader();
  const provider = new MeterProvider({ readers: [reader] });

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    hooks = receiver.hooks;
    e2e = await startE2eBroker({
      name: 'agsts-inventory',
      ci: { audience: 'agent-sts-test', algorithms: ['RS256'], attributes: { owner: 'team', env: 'env' } },
      env: { SIGNAL_SECRET: SECRET },
      // signals are counted on the broker's own meter (what telemetry exports)
      telemetry: createTelemetry({ meterProvider: provider }),
      config: {
        server: { host: '127.0.0.1', port: 0, trustProxy: true },
        credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
        targets: [
          { name: 'billing-api', audiences: ['billing-api'], issuer: 'tokens', scopes: ['invoices:read', 'invoices:write'] },
          { name: 'reports', audiences: ['reports'], issuer: 'tokens', scopes: ['read', 'export'] },
          { name: 'payouts', audiences: ['payouts'], issuer: 'tokens', scopes: ['pay'] },
          { name: 'vpn-api', audiences: ['vpn-api'], issuer: 'tokens', scopes: ['read'] },
        ],
        policy: {
          rules: [{ id: 'legacy', workload: { provider: 'ci', subject: 'test://legacy-bot' }, grants: [{ target: 'reports', scopes: ['read'] }] }],
          documents: [
            {
              apiVersion: 'agent-sts.dev/v2',
              kind: 'Policy',
              metadata: { name: 'billing', owners: ['billing@example.com'] },
              spec: {
                rules: [
                  { name: 'agents', workloads: [{ provider: 'ci', subjectPattern: 'test://billing-.+' }], grants: [{ target: 'billing-api', scopes: ['invoices:read', 'invoices:write'] }, { target: 'reports', scopes: ['read', 'export'] }] },
                  { name: 'pay', workloads: [{ provider: 'ci', subject: 'test://billing-bot', attributes: { env: 'prod' } }], grants: [{ target: 'payouts', scopes: ['pay'] }] },
                ],
              },
            },
            {
              apiVersion: 'agent-sts.dev/v2',
              kind: 'Policy',
              metadata: { name: 'ops', owners: ['ops@example.com'] },
              spec: { rules: [{ name: 'vpn', workloads: [{ provider: 'ci', subjectPattern: 'test://.*' }], grants: [{ target: 'vpn-api', scopes: ['read'], when: 'inNetwork(env.clientAddress, "10.0.0.0/8")' }] }] },
            },
          ],
        },
        signals: { denialBurst: { threshold: 3, window: '1m' }, webhook: { url: `${receiver.base}/signals`, secret: { fromEnv: 'SIGNAL_SECRET' } } },
      },
    });
    broker = e2e.broker;
    // History signals start once the stored history is loaded (empty here, so at once).
    for (let i = 0; i < 100 && !broker.composed.inventory.view.stats().warmed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(broker.composed.inventory.view.stats().warmed).toBe(true);
  });
  afterAll(async () => {
    await e2e?.close();
    await receiver?.close();
    await provider.shutdown();
  });

  const db = () => broker.composed.db;

  async function exchange(sub: string, o: { audience?: string; scope?: string; from?: string; claims?: Record<string, unknown> } = {}) {
    const token = await e2e.attest(sub, o.claims);
    secrets.push(token);
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: JWT_TYPE });
    if (o.audience) form.set('audience', o.audience);
    if (o.scope) form.set('scope', o.scope);
    const res = await fetch(`${broker.url}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...(o.from ? { 'x-forwarded-for': o.from } : {}) }, body: form });
    const json = (await res.json()) as Record<string, unknown>;
    if (typeof json.access_token === 'string') secrets.push(json.access_token);
    const record = await db().auditEvent.findFirst({ where: { requestId: res.headers.get('x-request-id')! } });
    return { status: res.status, json, flags: record?.flags ? record.flags.split(',') : [] };
  }

  const get = (path: string, token = TEST_AUDITOR_TOKEN) => fetch(`${broker.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const getJson = async (path: string, token?: string) => {
    const res = await get(path, token);
    return { status: res.status, type: res.headers.get('content-type'), json: (await res.json()) as Record<string, unknown> };
  };
  const bot = (o: Parameters<typeof exchange>[1]) => exchange('billing-bot', { claims: { team: 'billing-team', env: 'prod' }, ...o });

  describe('signals', () => {
    it('flags the first use of a target on the exchange\'s own audit record, once per target', async () => {
      const a = await bot({ audience: 'billing-api', scope: 'invoices:read', from: '10.1.1.10' });
      expect(a.status, JSON.stringify(a.json)).toBe(200);
      expect(a.flags).toEqual(['first_use_of_target']);
      expect((await bot({ audience: 'billing-api', scope: 'invoices:read', from: '10.1.1.20' })).flags).toEqual([]);
      expect((await bot({ audience: 'reports', scope: 'read', from: '10.1.1.30' })).flags).toEqual(['first_use_of_target']);
      expect((await exchange('legacy-bot', { audience: 'reports', scope: 'read', from: '10.3.3.3' })).flags).toEqual(['first_use_of_target']);
    });

    it('flags a client network the identity was never seen from (another /24), not a new address in a known one', async () => {
      expect((await bot({ audience: 'billing-api', scope: 'invoices:read', from: '10.1.1.99' })).flags).toEqual([]);
      expect((await bot({ audience: 'billing-api', scope: 'invoices:read', from: '192.168.5.5' })).flags).toEqual(['new_network']);
    });

    it('flags a burst of denials (3 within a minute here) once', async () => {
      const flags = [];
      for (let i = 0; i < 4; i++) {
        const r = await exchange('stranger-bot', { audience: 'payouts', scope: 'pay', from: '10.2.2.2' });
        expect(r.status).toBe(400);
        flags.push(r.flags);
      }
      expect(flags).toEqual([[], [], ['denial_burst'], []]);
    });

    it('counts every raised signal on the agent_sts.signals counter, by signal', async () => {
      const { resourceMetrics } = await reader.collect();
      expect(signalCounts(resourceMetrics)).toEqual({ first_use_of_target: 3, new_network: 1, denial_burst: 1 });
      // The same as the audit records say.
      const flagged = await db().auditEvent.findMany({ where: { flags: { not: null } }, select: { flags: true } });
      expect(flagged.flatMap((r) => r.flags!.split(',')).sort()).toEqual(['denial_burst', 'first_use_of_target', 'first_use_of_target', 'first_use_of_target', 'new_network']);
    });

    it('posts each flagged exchange to the signed webhook: its request id and signals, never a token', async () => {
      await expect.poll(() => hooks.length).toBe(5);
      for (const h of hooks) {
        expect(h.signature).toBe(signatureOf(SECRET, h.body));
        for (const s of secrets) expect(h.body).not.toContain(s);
      }
      const notices = hooks.map((h) => JSON.parse(h.body) as Record<string, unknown>);
      const burst = notices.find((n) => (n.signals as string[]).includes('denial_burst'))!;
      expect(burst).toMatchObject({ workload_subject: 'test://stranger-bot', provider: 'ci', target: 'payouts', outcome: 'deny', client_network: '10.2.2.0/24' });
      expect(await db().auditEvent.count({ where: { requestId: burst.request_id as string, flags: 'denial_burst' } })).toBe(1);
    });
  });

  describe('inventory API', () => {
    beforeAll(async () => {
      const now = Date.now();
      const details = JSON.stringify({ providerType: 'oidc', attributes: {} });
      // Not seen for 60 days: stale, and its grants unused.
      await db().identity.create({ data: { kind: 'workload', subject: 'test://billing-old', providerName: 'ci', attributes: details, firstSeenAt: new Date(now - 120 * DAY), lastSeenAt: new Date(now - 60 * DAY) } });
      // Active for 90 days, but only ever read invoices: over-granted.
      await db().identity.create({ data: { kind: 'workload', subject: 'test://billing-active', providerName: 'ci', attributes: details, owner: 'finance', firstSeenAt: new Date(now - 90 * DAY), lastSeenAt: new Date(now - 3600_000) } });
      await db().identityTargetUse.create({
        data: { subject: 'test://billing-active', target: 'billing-api', firstUsedAt: new Date(now - 90 * DAY), lastUsedAt: new Date(now - DAY), uses: 40, scopes: JSON.stringify([{ scope: 'invoices:read', lastUsedAt: new Date(now - DAY).toISOString() }]) },
      });
    });

    const subjects = async (query: string) => {
      const r = await getJson(`/v1/inventory/identities${query}`);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return (r.json.identities as { subject: string }[]).map((i) => i.subject).sort();
    };

    it('lists identities with their flags, and filters by stale, unowned, overGranted, kind and provider', async () => {
      const all = (await getJson('/v1/inventory/identities')).json.identities as { subject: string; flags: string[]; owner: string | null }[];
      const by = Object.fromEntries(all.map((i) => [i.subject, i]));
      expect(Object.keys(by).sort()).toEqual(['test://billing-active', 'test://billing-bot', 'test://billing-old', 'test://legacy-bot', 'test://stranger-bot']);
      expect(by['test://billing-bot']).toMatchObject({ owner: 'billing-team', flags: [] });
      expect(by['test://billing-old']).toMatchObject({ owner: 'billing@example.com', flags: ['stale', 'over_granted'] });
      expect(by['test://billing-active']).toMatchObject({ owner: 'finance', flags: ['over_granted'] });
      expect(by['test://legacy-bot']).toMatchObject({ owner: null, flags: ['unowned'] });
      expect(await subjects('?stale=true')).toEqual(['test://billing-old']);
      expect(await subjects('?unowned=true')).toEqual(['test://legacy-bot', 'test://stranger-bot']);
      expect(await subjects('?overGranted=true')).toEqual(['test://billing-active', 'test://billing-old']);
      expect(await subjects('?kind=human')).toEqual([]);
      expect(await subjects('?provider=ci&stale=false&limit=2')).toHaveLength(2);
    });

    it('pages with a cursor', async () => {
      const first = (await getJson('/v1/inventory/identities?limit=3')).json;
      expect((first.identities as unknown[]).length).toBe(3);
      const second = (await getJson(`/v1/inventory/identities?limit=3&cursor=${first.next_cursor as string}`)).json;
      expect((second.identities as unknown[]).length).toBe(2);
      expect(second.next_cursor).toBeNull();
    });

    it('shows one identity: seen, owner, open tasks, live credentials (no secret), used targets and its blast radius under the policy in force', async () => {
      const r = await getJson(`/v1/inventory/identities/workload/${encodeURIComponent('test://billing-bot')}`, TEST_ADMIN_TOKEN);
      expect(r.status).toBe(200);
      const d = r.json as unknown as Awaited<ReturnType<TestBroker['composed']['inventory']['service']['show']>> & {};
      expect(d).toMatchObject({ kind: 'workload', subject: 'test://billing-bot', provider: 'ci', owner: 'billing-team', owner_source: 'recorded', details: { provider_type: 'oidc', attributes: { owner: 'billing-team', env: 'prod' } } });
      expect(d.networks).toEqual(['10.1.1.0/24', '192.168.5.0/24']);
      expect(d.open_tasks.count).toBe(5);
      expect(d.live_credentials.count).toBe(5);
      expect(d.live_credentials.credentials.map((c: { target: string }) => c.target).sort()).toEqual(['billing-api', 'billing-api', 'billing-api', 'billing-api', 'reports']);
      expect(d.used.map((u: { target: string; uses: number }) => `${u.target}:${u.uses}`).sort()).toEqual(['billing-api:4', 'reports:1']);
      const radius = (d.blast_radius.pairs as { target: string; scope: string; rules: string[]; requires?: string }[]).map((p) => `${p.target} ${p.scope} ${p.rules.join('+')}${p.requires ? ` [${p.requires}]` : ''}`).sort();
      expect(radius).toEqual([
        'billing-api invoices:read billing/agents',
        'billing-api invoices:write billing/agents',
        'payouts pay billing/pay',
        'reports export billing/agents',
        'reports read billing/agents',
        'vpn-api read ops/vpn [condition]',
      ]);
      expect(d.grants.map((g: { rule: string; owners: string[] }) => `${g.rule}:${g.owners.join(',')}`).sort()).toEqual(['billing/agents:billing@example.com', 'billing/pay:billing@example.com', 'ops/vpn:ops@example.com']);
      const text = JSON.stringify(d);
      const logs = broker.logs.join('\n');
      for (const s of secrets) {
        expect(text).not.toContain(s);
        expect(logs).not.toContain(s);
      }
      expect(text).not.toMatch(/fingerprint/i);
    });

    it('recommends removing grants not used for unusedGrantAfterDays, naming target, scope and rule', async () => {
      // The subject may also be given unencoded after the kind.
      const d = (await getJson('/v1/inventory/identities/workload/test://billing-active')).json as { recommendations: { text: string }[] };
      expect(d.recommendations.map((r) => r.text).sort()).toEqual([
        'remove target billing-api scope invoices:write from rule billing/agents',
        'remove target reports scope export from rule billing/agents',
        'remove target reports scope read from rule billing/agents',
      ]);
    });

    it('refuses callers without the auditor or admin role, bad queries and unknown identities with problem+json', async () => {
      expect((await get('/v1/inventory/identities', '')).status).toBe(401);
      expect((await get('/v1/inventory/identities', 'not-a-role-token')).status).toBe(401);
      const bad = await getJson('/v1/inventory/identities?stale=maybe');
      expect(bad).toMatchObject({ status: 400, type: expect.stringContaining('application/problem+json') });
      expect(String(bad.json.detail)).toContain('stale');
      expect((await getJson('/v1/inventory/identities?cursor=bm90LWpzb24')).status).toBe(400);
      expect((await getJson('/v1/inventory/identities?color=red')).status).toBe(400);
      expect((await getJson('/v1/inventory/identities/robot/x')).status).toBe(400);
      const missing = await getJson(`/v1/inventory/identities/workload/${encodeURIComponent(`test://nobody/${'x'.repeat(150)}`)}`);
      expect(missing).toMatchObject({ status: 404, type: expect.stringContaining('application/problem+json'), json: { title: 'identity not found' } });
      expect((await getJson('/v1/inventory/review')).status).toBe(400);
      expect((await getJson('/v1/inventory/review?identity=a&target=b')).status).toBe(400);
      expect((await getJson('/v1/inventory/review?identity=test://nobody')).status).toBe(404);
      expect((await getJson('/v1/inventory/review?target=reports&window=forever')).status).toBe(400);
    });

    it('reviews one identity: what policy allows, what was used in the window, what to remove', async () => {
      const r = await getJson(`/v1/inventory/review?identity=${encodeURIComponent('test://billing-active')}&window=30d`);
      expect(r.status).toBe(200);
      const rows = (r.json.rows as { target: string; scope: string; decision: string; note: string }[]).map((x) => `${x.target} ${x.scope} ${x.decision}`).sort();
      expect(rows).toEqual([
        'billing-api invoices:read keep',
        'billing-api invoices:write remove',
        'reports export remove',
        'reports read remove',
        'vpn-api read review',
      ]);
      expect(r.json.summary).toMatchObject({ rows: 5, keep: 1, remove: 3, review: 1 });
      const own = (await getJson(`/v1/inventory/review?identity=${encodeURIComponent('test://billing-bot')}`)).json.rows as { target: string; scope: string; decision: string; uses_in_window: number }[];
      expect(own.find((x) => x.target === 'billing-api' && x.scope === 'invoices:read')).toMatchObject({ decision: 'keep', uses_in_window: 4 });
      // Seen for the first time today: too new to judge.
      expect(own.find((x) => x.target === 'payouts')).toMatchObject({ decision: 'review' });
    });

    it('reviews one target across identities and exports CSV for reviewers', async () => {
      const res = await get('/v1/inventory/review?target=billing-api&window=30d&format=csv');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/csv');
      expect(res.headers.get('content-disposition')).toContain('access-review.csv');
      const lines = (await res.text()).trim().split('\r\n');
      expect(lines[0]).toBe('kind,subject,owner,target,scope,allowed_by,requires,last_used_at,uses_in_window,decision,note');
      const cells = lines.slice(1).map((l) => l.split(','));
      const of = (subject: string, scope: string) => cells.find((c) => c[1] === subject && c[4] === scope)?.[9];
      expect(of('test://billing-bot', 'invoices:read')).toBe('keep');
      expect(of('test://billing-active', 'invoices:read')).toBe('keep');
      expect(of('test://billing-active', 'invoices:write')).toBe('remove');
      expect(of('test://billing-old', 'invoices:read')).toBe('remove');
      expect(cells.some((c) => c[1] === 'test://legacy-bot')).toBe(false);
      // Reads of the inventory are audited.
      expect(await db().auditEvent.count({ where: { action: 'inventory.read', reason: { contains: 'target billing-api' } } })).toBe(1);
    });
  });
});
