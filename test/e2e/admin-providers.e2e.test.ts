// The admin API for trust providers through HTTP against a real broker (SQLite store): a provider
// registered at runtime is trusted at once and on a second replica sharing the database, a
// disabled one trusts nothing, config-file providers are read-only, bad input is a problem+json
// 400, and admins are identities verified by a config-file trust provider (the bootstrap token
// can be disabled). Every change is in the audit log, with who made it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { JWT_TYPE, postToken, startBroker, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

describe('trust providers registered at runtime', () => {
  let platform: FakeIssuer; // the platform repository's CI: its tokens carry the admin role
  let runtime: FakeIssuer; // a workload issuer nobody trusts until an admin registers it
  let broker: TestBroker;
  let replica: TestBroker;
  let noBootstrap: TestBroker;
  let drop: () => Promise<void>;

  const config = (url: string, bootstrapDisabled = false) => ({
    storage: { url },
    server: { host: '127.0.0.1', port: 0, providerReloadInterval: '1s' },
    auth: {
      auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
      admins: [{ name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' }, disabled: bootstrapDisabled }],
      roles: [{ role: 'admin', provider: 'platform', subjectPattern: 'platform://deploy-bot', attributes: { environment: 'prod' } }],
    },
    trustProviders: [{ name: 'platform', type: 'oidc', config: { issuer: platform.issuer, audience: 'agent-sts-admin', subjectTemplate: 'platform://{sub}', attributes: { environment: 'environment' } } }],
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [{ name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] }],
    policy: { rules: [{ id: 'runtime-agents', workload: { subjectPattern: 'rt://.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '5m' }] }] },
  });

  beforeAll(async () => {
    platform = await startFakeOidcIssuer();
    runtime = await startFakeOidcIssuer();
    const s = createTestSqliteUrl('agsts-admin-providers');
    drop = s.drop;
    broker = await startBroker(config(s.url));
    replica = await startBroker(config(s.url), { env: { TEST_KEK: broker.env.TEST_KEK } });
    noBootstrap = await startBroker(config(s.url, true), { env: { TEST_KEK: broker.env.TEST_KEK } });
  });
  afterAll(async () => {
    await noBootstrap?.close();
    await replica?.close();
    await broker?.close();
    await platform?.close();
    await runtime?.close();
    await drop?.();
  });

  const api = async (b: TestBroker, method: string, path: string, body?: unknown, auth = `Bearer ${TEST_ADMIN_TOKEN}`) => {
    const res = await fetch(`${b.url}/v1/admin/trust-providers${path}`, {
      method,
      headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const runtimeConfig = () => ({ issuer: runtime.issuer, audience: 'sts', subjectTemplate: 'rt://{sub}' });
  const startup = async (b: TestBroker) => postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: await runtime.sign({ sub: 'planner', aud: 'sts' }), subject_token_type: JWT_TYPE });
  const waitFor = async (check: () => Promise<boolean>, what: string) => {
    for (let i = 0; i < 40; i++) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const audit = async (action: string) => {
    const res = await fetch(`${broker.url}/v1/audit?limit=100`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
    const { records } = (await res.json()) as { records: { action: string; outcome: string; reason: string; providerName?: string }[] };
    return records.filter((r) => r.action === action);
  };

  it('before registration the issuer is not trusted', async () => {
    const r = await startup(broker);
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_request');
  });

  it('registers a provider; exchanges with it work at once here and on the other replica within its poll', async () => {
    const created = await api(broker, 'POST', '', { name: 'runtime-ci', type: 'oidc', config: runtimeConfig() });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ name: 'runtime-ci', type: 'oidc', source: 'api', read_only: false, enabled: true, updated_by: 'bootstrap:test-admin' });
    const r = await startup(broker);
    expect(r.status, r.text).toBe(200);
    await waitFor(async () => (await startup(replica)).status === 200, 'the replica to trust the new provider');
    expect((await audit('admin.trust-provider.create'))[0]).toMatchObject({ outcome: 'allow', reason: expect.stringContaining('by bootstrap:test-admin'), providerName: 'runtime-ci' });
  });

  it('lists config-file providers read-only beside runtime ones, and refuses to change them', async () => {
    const list = await api(broker, 'GET', '');
    expect(list.status).toBe(200);
    expect(list.json.trust_providers).toEqual([
      expect.objectContaining({ name: 'platform', source: 'config', read_only: true }),
      expect.objectContaining({ name: 'runtime-ci', source: 'api', read_only: false, config: runtimeConfig() }),
    ]);
    for (const [method, path, body] of [['PUT', '/platform', { config: {} }], ['DELETE', '/platform', undefined], ['POST', '/platform/disable', undefined]] as const) {
      const r = await api(broker, method, path, body);
      expect(r.status, `${method} ${path}`).toBe(409);
      expect(r.type).toContain('application/problem+json');
    }
  });

  it.each([
    ['unknown type', { name: 'x1', type: 'nope', config: {} }, /type: unknown type "nope"/],
    ['config fails the plugin schema (path named)', { name: 'x2', type: 'oidc', config: { issuer: 'not a url', audience: 'sts' } }, /config\.issuer/],
    ['misspelled config key', { name: 'x3', type: 'oidc', config: { ...{ issuer: 'https://x.test', audience: 'sts' }, audiance: 'x' } }, /config/],
    ['bad name', { name: 'Bad Name', type: 'oidc', config: { issuer: 'https://x.test', audience: 'sts' } }, /name:/],
    ['same issuer and audience as a live provider', { name: 'x4', type: 'oidc', config: { issuer: 'REPLACED', audience: 'sts' } }, /both claim issuer/],
    ['an inline secret', { name: 'x5', type: 'oidc', config: { issuer: 'https://x.test', audience: 'sts', token: { insecureValue: 's3cret-value' } } }, /send secrets by reference/],
    ['unknown body field', { name: 'x6', type: 'oidc', config: {}, owner: 'me' }, /unrecognized key/i],
    [
      'a config the plugin cannot build (kubeconfig file missing)',
      { name: 'x7', type: 'kubernetes', config: { clusterName: 'c', issuer: 'https://k8s.test', audience: 'sts', mode: 'tokenreview', kubeconfig: '/nonexistent/kubeconfig' } },
      /ENOENT|no such file/i,
    ],
  ])('refuses %s with a problem+json 400', async (_name, body, detail) => {
    const b = body as { config: { issuer?: string } };
    if (b.config.issuer === 'REPLACED') b.config.issuer = runtime.issuer;
    const r = await api(broker, 'POST', '', body);
    expect(r.status).toBe(400);
    expect(r.type).toContain('application/problem+json');
    expect(String(r.json.detail)).toMatch(detail);
    expect(JSON.stringify(r.json)).not.toContain('s3cret-value');
  });

  it('refuses a duplicate name (409) and non-JSON bodies (415)', async () => {
    expect((await api(broker, 'POST', '', { name: 'runtime-ci', type: 'oidc', config: runtimeConfig() })).status).toBe(409);
    const res = await fetch(`${broker.url}/v1/admin/trust-providers`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'text/plain' }, body: 'x' });
    expect(res.status).toBe(415);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
  });

  it('disabling stops trust on every replica; enabling restores it', async () => {
    const d = await api(broker, 'POST', '/runtime-ci/disable');
    expect(d.status).toBe(200);
    expect(d.json.enabled).toBe(false);
    expect((await startup(broker)).status).toBe(400);
    await waitFor(async () => (await startup(replica)).status === 400, 'the replica to stop trusting the disabled provider');
    expect((await api(broker, 'POST', '/runtime-ci/enable')).status).toBe(200);
    expect((await startup(broker)).status).toBe(200);
    expect((await audit('admin.trust-provider.disable'))).toHaveLength(1);
  });

  it('an update takes effect (new audience) and a delete removes trust', async () => {
    const u = await api(broker, 'PUT', '/runtime-ci', { config: { ...runtimeConfig(), audience: 'other' } });
    expect(u.status).toBe(200);
    expect((await startup(broker)).status).toBe(400); // token still says aud=sts
    expect((await api(broker, 'DELETE', '/runtime-ci')).status).toBe(200);
    expect((await api(broker, 'GET', '/runtime-ci')).status).toBe(404);
    expect((await audit('admin.trust-provider.update'))).toHaveLength(1);
    expect((await audit('admin.trust-provider.delete'))).toHaveLength(1);
  });

  it('an identity with the admin role (verified by the config-file provider) may act; the bootstrap token can be disabled', async () => {
    const adminToken = await platform.sign({ sub: 'deploy-bot', aud: 'agent-sts-admin', environment: 'prod' });
    const r = await api(noBootstrap, 'POST', '', { name: 'runtime-two', type: 'oidc', config: runtimeConfig() }, `Bearer ${adminToken}`);
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    expect(r.json.updated_by).toBe('platform:platform://deploy-bot');
    // The disabled bootstrap token is refused on that replica.
    expect((await api(noBootstrap, 'GET', '', undefined)).status).toBe(401);
    await api(noBootstrap, 'DELETE', '/runtime-two', undefined, `Bearer ${adminToken}`);
  });

  it("a failure on agent-sts's side is a generic 503 for the caller, and classified for admins (stats, log)", async () => {
    expect((await api(broker, 'POST', '', { name: 'keys-down', type: 'oidc', config: { issuer: 'https://down.test', jwksUri: 'http://127.0.0.1:9/jwks', audience: 'sts' } })).status).toBe(201);
    const token = await runtime.sign({ iss: 'https://down.test', sub: 'x', aud: 'sts' });
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: JWT_TYPE });
    expect(r.status).toBe(503);
    expect(r.json).toEqual({ error: 'temporarily_unavailable', error_description: expect.not.stringMatching(/127\.0\.0\.1|jwks|keys-unavailable/) });
    const got = await api(broker, 'GET', '/keys-down');
    expect(got.json.stats).toMatchObject({ verified: 0, rejected: 0, upstream: { 'keys-unavailable': 1 }, lastUpstreamFailure: { cause: 'keys-unavailable' } });
    expect(broker.logs.some((l) => l.includes('"cause":"keys-unavailable"') && l.includes('"provider":"keys-down"'))).toBe(true);
    expect(broker.logs.join('\n')).not.toContain(token);
    await api(broker, 'DELETE', '/keys-down');
  });

  it('a verified identity without the role gets 403; a bad credential 401; an auditor credential is not an admin one', async () => {
    const staging = await platform.sign({ sub: 'deploy-bot', aud: 'agent-sts-admin', environment: 'staging' });
    const other = await platform.sign({ sub: 'someone-else', aud: 'agent-sts-admin', environment: 'prod' });
    for (const t of [staging, other]) {
      const r = await api(broker, 'POST', '', { name: 'x9', type: 'oidc', config: runtimeConfig() }, `Bearer ${t}`);
      expect(r.status).toBe(403);
      expect(r.type).toContain('application/problem+json');
    }
    const forged = `${staging.slice(0, -4)}AAAA`;
    expect((await api(broker, 'GET', '', undefined, `Bearer ${forged}`)).status).toBe(401);
    expect((await api(broker, 'GET', '', undefined, `Bearer ${TEST_AUDITOR_TOKEN}`)).status).toBe(401);
    expect((await api(broker, 'GET', '', undefined, '')).status).toBe(401);
    expect((await api(broker, 'GET', '/x9')).status).toBe(404);
  });
});
