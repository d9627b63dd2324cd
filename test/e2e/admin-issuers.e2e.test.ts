// Credential issuers registered at runtime through the admin API, against a real broker (SQLite
// store) and the real PostgreSQL: the admin login is given once as {"seal": ...} and stored only
// sealed under the KEK; the issuer mints at once on this replica and on a second one; a disabled
// issuer mints nothing but still revokes at task end; removal is refused while it has live
// credentials; config-file issuers are read-only; every change is audited without the secret.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestSqliteUrl, PG_ADMIN_URL, pgRoleExists, dropPgRolesWithPrefix } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TEST_ADMIN_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const PREFIX = 'agsrti_';


describe('credential issuers registered at runtime', () => {
  let workloads: FakeIssuer;
  let broker: TestBroker;
  let replica: TestBroker;
  let drop: () => Promise<void>;

  const config = (url: string) => ({
    storage: { url },
    server: { host: '127.0.0.1', port: 0, providerReloadInterval: '1s' },
    trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [
      { name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] },
      { name: 'db', audiences: ['db'], issuer: 'pg-runtime', issuerRegisteredAtRuntime: true, scopes: ['read'] },
      { name: 'ledger', audiences: ['ledger'], issuer: 'pg-ledger', issuerRegisteredAtRuntime: true, scopes: ['write'] },
      // Asks for DPoP-bound tokens of an issuer not known until runtime.
      { name: 'bound-db', audiences: ['bound-db'], issuer: 'pg-bound', issuerRegisteredAtRuntime: true, scopes: ['read'], dpop: 'optional' },
    ],
    policy: {
      rules: [{ id: 'assistant', workload: { subject: 'test://assistant' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }, { target: 'bound-db', scopes: ['read'], maxTtl: '5m' }] }],
      // A grant no issuer in the file can be checked against: its issuer is registered later.
      documents: [
        {
          apiVersion: 'agent-sts.dev/v2',
          kind: 'Policy',
          metadata: { name: 'ledger', owners: ['team@example.com'] },
          spec: { rules: [{ name: 'bookkeeper', workloads: [{ provider: 'ci', subject: 'test://bookkeeper' }], agentToken: { maxTtl: '10m' }, grants: [{ target: 'ledger', scopes: [{ name: 'write', params: { role: 'ledger_writer' } }], maxTtl: '5m' }] }] },
        },
      ],
    },
  });

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    const s = createTestSqliteUrl('agsts-admin-issuers');
    drop = s.drop;
    broker = await startBroker(config(s.url));
    replica = await startBroker(config(s.url), { env: { TEST_KEK: broker.env.TEST_KEK } });
  });
  afterAll(async () => {
    await replica?.close();
    await broker?.close();
    await workloads?.close();
    await drop?.();
    await dropPgRolesWithPrefix(PREFIX);
  });

  const api = async (b: TestBroker, method: string, path: string, body?: unknown) => {
    const res = await fetch(`${b.url}/v1/admin/credential-issuers${path}`, {
      method,
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const agentToken = async (b: TestBroker) => {
    const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: await workloads.sign({ sub: 'assistant', aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    return r.json.access_token as string;
  };
  const dbLogin = (b: TestBroker, agent: string) =>
    postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
  const pgConfig = (adminUrl: unknown) => ({ adminUrl, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX });

  it('answers temporarily_unavailable for a target whose runtime issuer is not registered yet', async () => {
    const r = await dbLogin(broker, await agentToken(broker));
    expect(r.status).toBe(503);
    expect(r.json.error).toBe('temporarily_unavailable');
  });

  it('refuses an inline secret, a sealed value of another issuer and a bad config, as problem+json 400', async () => {
    const inline = await api(broker, 'POST', '', { name: 'pg-runtime', type: 'postgres', config: pgConfig({ insecureValue: PG_ADMIN_URL }) });
    expect(inline.status).toBe(400);
    expect(inline.type).toContain('application/problem+json');
    expect(inline.json.detail).toMatch(/config\.adminUrl\.insecureValue/);
    expect(inline.text).not.toContain(PG_ADMIN_URL);

    // A sealed secret made for another issuer name does not open for this one.
    const other = await api(broker, 'POST', '', { name: 'pg-other', type: 'postgres', config: pgConfig({ seal: PG_ADMIN_URL }) });
    expect(other.status, other.text).toBe(201);
    const stolen = (other.json.config as { adminUrl: unknown }).adminUrl;
    const moved = await api(broker, 'POST', '', { name: 'pg-runtime', type: 'postgres', config: pgConfig(stolen) });
    expect(moved.status).toBe(400);
    expect(moved.json.detail).toMatch(/does not open for issuer "pg-runtime"/);
    expect((await api(broker, 'DELETE', '/pg-other')).status).toBe(200);

    const bad = await api(broker, 'POST', '', { name: 'pg-runtime', type: 'postgres', config: { ...pgConfig({ seal: PG_ADMIN_URL }), rolePrefx: 'x' } });
    expect(bad.status).toBe(400);
    expect(bad.json.detail).toMatch(/rolePrefx|Unrecognized/);
    const unknownType = await api(broker, 'POST', '', { name: 'pg-runtime', type: 'oracle', config: {} });
    expect(unknownType.status).toBe(400);
    expect(unknownType.json.detail).toMatch(/unknown type "oracle"/);
  });

  it('registers an issuer with a sealed secret: it mints at once, on both replicas, and never shows the secret', async () => {
    const created = await api(broker, 'POST', '', { name: 'pg-runtime', type: 'postgres', config: pgConfig({ seal: PG_ADMIN_URL }) });
    expect(created.status, created.text).toBe(201);
    expect(created.text).not.toContain(PG_ADMIN_URL);
    expect(created.json).toMatchObject({ name: 'pg-runtime', type: 'postgres', source: 'api', enabled: true, capabilities: { revocable: true } });
    expect((created.json.config as { adminUrl: { sealed: string } }).adminUrl.sealed).toMatch(/^v1\./);

    // At rest: the table holds the envelope, not the URL.
    const row = await broker.composed.db.credentialIssuerInstance.findUniqueOrThrow({ where: { name: 'pg-runtime' } });
    expect(row.config).not.toContain('postgres://');

    const r = await dbLogin(broker, await agentToken(broker));
    expect(r.status, r.text).toBe(200);
    const role = (r.json.credentials as { username: string }).username;
    expect(await pgRoleExists(role)).toBe(true);

    // The other replica picks it up at its next poll.
    const deadline = Date.now() + 5000;
    let onReplica = await dbLogin(replica, await agentToken(replica));
    while (onReplica.status !== 200 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 250));
      onReplica = await dbLogin(replica, await agentToken(replica));
    }
    expect(onReplica.status, onReplica.text).toBe(200);

    // Listing: the config-file issuer read-only, the runtime one with its capabilities.
    const list = await api(broker, 'GET', '');
    expect(list.json.credential_issuers).toEqual([
      expect.objectContaining({ name: 'tokens', source: 'config', read_only: true }),
      expect.objectContaining({ name: 'pg-runtime', source: 'api', read_only: false, updated_by: 'bootstrap:test-admin' }),
    ]);
    expect((await api(broker, 'PUT', '/tokens', { config: {} })).status).toBe(409);
  });

  it('shows what the policy in force asks of a runtime issuer that it cannot give, as start-up would for the file', async () => {
    const config = { adminUrl: { seal: PG_ADMIN_URL }, roles: { write: 'pg_write_all_data' }, rolePrefix: PREFIX };
    const created = await api(broker, 'POST', '', { name: 'pg-ledger', type: 'postgres', config });
    expect(created.status, created.text).toBe(201);
    const problems = created.json.policy_problems as string[];
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^policy\.documents\[0\].*target ledger \(issuer pg-ledger, postgres\): .*ledger_writer/);
    expect(problems[0]).not.toContain(PG_ADMIN_URL);
    expect((await api(broker, 'GET', '/pg-ledger')).json.policy_problems).toEqual(problems);
    // What it shows is what the issuer refuses when asked (fail closed): nothing is created.
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await workloads.sign({ sub: 'bookkeeper', aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    const refused = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: r.json.access_token as string, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'ledger', scope: 'write', requested_token_type: PG_CREDS });
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.error).toBe('invalid_scope');

    // Fixed by the issuer: the role becomes grantable.
    const sealed = (created.json.config as { adminUrl: unknown }).adminUrl;
    const fixed = await api(broker, 'PUT', '/pg-ledger', { config: { ...config, adminUrl: sealed, grantableRoles: { write: ['ledger_writer'] } } });
    expect(fixed.status, fixed.text).toBe(200);
    expect(fixed.json.policy_problems).toEqual([]);

    // Issuers of the file were checked at start-up: their answers carry no such field.
    const list = (await api(broker, 'GET', '')).json.credential_issuers as Record<string, unknown>[];
    expect(list.find((i) => i.name === 'tokens')).not.toHaveProperty('policy_problems');
    for (const i of list) expect(Array.isArray(i.policy_problems), String(i.name)).toBe(i.source === 'api');
    expect((await api(broker, 'DELETE', '/pg-ledger')).status).toBe(200);
  });

  it('a disabled issuer mints nothing but still revokes at task end; removal waits until nothing is live', async () => {
    const agent = await agentToken(broker);
    const r = await dbLogin(broker, agent);
    expect(r.status, r.text).toBe(200);
    const role = (r.json.credentials as { username: string }).username;

    expect((await api(broker, 'POST', '/pg-runtime/disable')).json).toMatchObject({ enabled: false });
    const refused = await dbLogin(broker, agent);
    expect(refused.status).toBe(503);
    expect(refused.json.error).toBe('temporarily_unavailable');

    const removeLive = await api(broker, 'DELETE', '/pg-runtime');
    expect(removeLive.status).toBe(409);
    expect(removeLive.json.detail).toMatch(/credential\(s\) that are not yet revoked or expired; disable it/);

    // Ending every task that holds one of its credentials revokes them through the disabled issuer.
    const tasks = await broker.composed.db.credential.findMany({ where: { issuerName: 'pg-runtime', state: 'active' }, select: { taskId: true } });
    for (const taskId of new Set(tasks.map((t) => t.taskId))) await broker.composed.taskService.endTask(taskId, 'test', { requestId: 'test-end', now: new Date() });
    expect(await pgRoleExists(role)).toBe(false);

    expect((await api(broker, 'DELETE', '/pg-runtime')).status).toBe(200);
    expect((await api(broker, 'GET', '/pg-runtime')).status).toBe(404);
  });

  it('a runtime issuer that cannot bind tokens to a DPoP key leaves a target with dpop out of service, and says why', async () => {
    const created = await api(broker, 'POST', '', { name: 'pg-bound', type: 'postgres', config: pgConfig({ seal: PG_ADMIN_URL }) });
    expect(created.status, created.text).toBe(201);
    expect(created.json.policy_problems).toEqual([expect.stringMatching(/^targets\[\d\] \(bound-db\)\.dpop: issuer pg-bound \(postgres\) cannot bind its credentials to a DPoP key/)]);
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await agentToken(broker), subject_token_type: ACCESS_TOKEN_TYPE, audience: 'bound-db', scope: 'read', requested_token_type: PG_CREDS });
    expect(r.status, r.text).toBe(503);
    expect(r.json.error).toBe('temporarily_unavailable');
    expect(await broker.composed.db.credential.count({ where: { issuerName: 'pg-bound' } })).toBe(0); // nothing was issued
    await broker.composed.audit.drain();
    const rec = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { requestId: r.headers.get('x-request-id')! } });
    expect(rec.reason).toMatch(/sets dpop: optional, which issuer pg-bound \(postgres\) cannot honour/);
    expect((await api(broker, 'DELETE', '/pg-bound')).status).toBe(200);
  });

  it('audits every change, by whom, without the secret', async () => {
    await broker.composed.audit.drain();
    const events = await broker.composed.db.auditEvent.findMany({ where: { action: { startsWith: 'admin.credential-issuer.' } }, orderBy: { seq: 'asc' } });
    expect(events.map((e) => `${e.action}:${e.target}`)).toEqual(
      expect.arrayContaining(['admin.credential-issuer.create:credential-issuer:pg-runtime', 'admin.credential-issuer.disable:credential-issuer:pg-runtime', 'admin.credential-issuer.delete:credential-issuer:pg-runtime']),
    );
    for (const e of events) {
      expect(e.reason).toMatch(/^by bootstrap:test-admin/);
      expect(JSON.stringify(e)).not.toContain(PG_ADMIN_URL);
    }
  });
});
