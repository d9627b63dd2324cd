import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { decodeJwt } from 'jose';
import { PG_ADMIN_URL, pgRoleExists } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const PREFIX = 'agslc_';


describe('lifecycle, delegation and failure paths', () => {
  let e2e: E2eBroker;
  let workloads: FakeIssuer;
  let idp: FakeIssuer;
  let broker: TestBroker;

  beforeAll(async () => {
    idp = await startFakeOidcIssuer();
    e2e = await startE2eBroker({
      name: 'agsts-lifecycle',
      pgRolePrefix: PREFIX,
      moreTrustProviders: [{ name: 'corp', type: 'oidc', config: { issuer: idp.issuer, audience: 'sts', human: true } }],
      config: {
        credentialIssuers: [
          { name: 'tokens', type: 'agent-sts-jwt' },
          { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } },
        ],
        targets: [
          { name: 'mcp', resources: ['https://mcp.test/'], issuer: 'tokens', scopes: ['tools:run'] },
          { name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] },
        ],
        policy: {
          rules: [
            { id: 'assistant', workload: { subject: 'test://assistant' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }] },
            { id: 'assistant-for-sre', workload: { subject: 'test://assistant' }, human: { presence: 'required', groups: ['sre'] }, grants: [{ target: 'mcp', scopes: ['tools:run'], maxTtl: '2m' }] },
          ],
        },
      },
    });
    ({ broker, workloads } = e2e);
  });
  afterAll(async () => {
    await e2e?.close();
    await idp?.close();
  });

  const agentToken = async () => (await e2e.agentToken('assistant')).token;

  it('serves RFC 8414 metadata, the JWKS and readiness', async () => {
    const meta = (await (await fetch(`${broker.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(meta).toMatchObject({ issuer: broker.url, token_endpoint: `${broker.url}/oauth2/token`, jwks_uri: `${broker.url}/.well-known/jwks.json`, grant_types_supported: [TOKEN_EXCHANGE] });
    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      expect(k.d).toBeUndefined();
    }
    const ready = await fetch(`${broker.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', signingKeys: 'ok' }, issuers: { tokens: 'ok', pg: 'ok' }, revocations: { pending: 0, oldestPendingSince: null } });
  });

  it('a person plus an agent: sub is the person, act is the agent, and the policy requires the person', async () => {
    const agent = await agentToken();
    const person = await idp.sign({ sub: 'alice', aud: 'sts', email: 'alice@example.com', groups: ['sre'] });
    const r = await postToken(broker.url, {
      grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE,
      actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run',
    });
    expect(r.status, r.text).toBe(200);
    const claims = decodeJwt(r.json.access_token as string);
    expect(claims).toMatchObject({ sub: 'alice', act: { sub: 'test://assistant' }, aud: 'https://mcp.test/', client_id: 'test://assistant', scope: 'tools:run' });
    expect(claims.task_id).toBe(decodeJwt(agent).task_id);

    // without the person the same agent is refused that target; a person outside the group too
    const alone = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(alone.status).toBe(400);
    expect(alone.json.error).toBe('invalid_request');
    expect(alone.json.error_description).not.toMatch(/sre|assistant-for-sre|group/);
    const bob = await idp.sign({ sub: 'bob', aud: 'sts', groups: ['dev'] });
    const wrong = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: bob, subject_token_type: JWT_TYPE, actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(wrong.status).toBe(400);
    // a person's token alone never yields a credential
    const personOnly = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE, resource: 'https://mcp.test/' });
    expect(personOnly.status).toBe(400);
    expect(personOnly.json.error).toBe('invalid_request');
  });

  it('startup for a person: the agent token names the person and the agent as actor', async () => {
    const person = await idp.sign({ sub: 'alice', aud: 'sts', groups: ['sre'] });
    const workload = await workloads.sign({ sub: 'assistant', aud: 'sts' });
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE, actor_token: workload, actor_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    expect(decodeJwt(r.json.access_token as string)).toMatchObject({ sub: 'alice', act: { sub: 'test://assistant' } });
  });

  it('the sweep revokes an expired database login', async () => {
    const agent = await agentToken();
    const r = await e2e.pgLogin(agent, { requested_lifetime: '2' });
    expect(r.status, r.text).toBe(200);
    expect(r.json.expires_in).toBeLessThanOrEqual(2);
    const role = (r.json.credentials as { username: string }).username;
    expect(await pgRoleExists(role)).toBe(true);
    const deadline = Date.now() + 10_000;
    while ((await pgRoleExists(role)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 250));
    expect(await pgRoleExists(role)).toBe(false);
    await broker.composed.audit.drain();
    const cred = await broker.composed.db.credential.findFirstOrThrow({ where: { fingerprint: { not: 'pending' }, target: 'db', state: 'expired' } });
    expect(cred.revokedAt).not.toBeNull();
    const rec = await broker.composed.db.auditEvent.findFirst({ where: { action: 'credential.expire', credentialId: cred.id } });
    expect(rec?.outcome).toBe('success');
  });

  it('fails closed: when the audit record cannot be written, no credential leaves and the login is undone', async () => {
    const agent = await agentToken();
    const db = broker.composed.db;
    await broker.composed.audit.drain();
    await db.$executeRawUnsafe(`CREATE TRIGGER audit_down BEFORE INSERT ON "AuditEvent" BEGIN SELECT RAISE(ABORT, 'disk full'); END;`);
    try {
      const r = await e2e.pgLogin(agent);
      expect(r.status).toBe(500);
      expect(r.json).toEqual({ error: 'server_error', error_description: 'internal error; see the server log' });
      expect(r.text).not.toMatch(/password|disk full|credentials/);
    } finally {
      await db.$executeRawUnsafe('DROP TRIGGER audit_down');
    }
    const failed = await db.credential.findMany({ where: { target: 'db', state: { in: ['issuing', 'active'] } } });
    // The planned row stays "issuing" (its role was dropped); nothing is active.
    expect(failed.filter((c) => c.state === 'active')).toEqual([]);
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    const live = await c.query(`SELECT rolname FROM pg_roles WHERE rolname LIKE '${PREFIX}%' AND rolcanlogin`);
    await c.end();
    expect(live.rows).toEqual([]);
  });

  it('an admin can force a JWKS refresh; others cannot', async () => {
    const denied = await fetch(`${broker.url}/v1/admin/trust-providers/ci/refresh-keys`, { method: 'POST' });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const before = workloads.calls.filter((x) => x.path.endsWith('/jwks')).length;
    const ok = await fetch(`${broker.url}/v1/admin/trust-providers/ci/refresh-keys`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(workloads.calls.filter((x) => x.path.endsWith('/jwks')).length).toBe(before + 1);
    const missing = await fetch(`${broker.url}/v1/admin/trust-providers/nope/refresh-keys`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(missing.status).toBe(404);
  });

  it('pages through the audit log with an opaque cursor and refuses bad queries', async () => {
    await broker.composed.audit.drain();
    const get = async (q: string) => {
      const r = await fetch(`${broker.url}/v1/audit?${q}`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
      return { status: r.status, type: r.headers.get('content-type'), body: (await r.json()) as { records: { id: string; action: string }[]; next_cursor: string | null; title?: string } };
    };
    // Each read adds an audit.read record (newer than the rest): compare everything else.
    const notRead = (r: { action: string }) => r.action !== 'audit.read';
    const all = (await get('limit=1000')).body.records.filter(notRead).map((r) => r.id);
    expect(all.length).toBeGreaterThan(5);
    const paged: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await get(`limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      expect(page.body.records.length).toBeLessThanOrEqual(2);
      paged.push(...page.body.records.filter(notRead).map((r) => r.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(paged).toEqual(all);
    const denies = (await get('outcome=deny&limit=1000')).body.records;
    expect(denies.length).toBeGreaterThan(0);
    for (const bad of ['limit=0', 'limit=abc', 'outcome=maybe', 'cursor=%7B%7D', 'cursor=AAAA', 'since=not-a-date', 'unknown=1']) {
      const r = await get(bad);
      expect(r.status, bad).toBe(400);
      expect(r.type).toMatch(/application\/problem\+json/);
    }
  });

  it('task end needs an agent token of that task', async () => {
    const a = await agentToken();
    const b = await agentToken();
    const taskA = decodeJwt(a).task_id as string;
    expect((await fetch(`${broker.url}/v1/tasks/${taskA}`, { method: 'DELETE' })).status).toBe(401);
    expect((await fetch(`${broker.url}/v1/tasks/${taskA}`, { method: 'DELETE', headers: { authorization: `Bearer ${b}` } })).status).toBe(403);
    expect((await fetch(`${broker.url}/v1/tasks/${taskA}`, { method: 'DELETE', headers: { authorization: `Bearer ${a}` } })).status).toBe(200);
    // idempotent
    const again = await fetch(`${broker.url}/v1/tasks/${taskA}`, { method: 'DELETE', headers: { authorization: `Bearer ${a}` } });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { state: string }).state).toBe('ended');
  });
});
