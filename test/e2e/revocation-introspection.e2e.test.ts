// RFC 7009 revocation, RFC 7662 introspection and the kill switch against a real broker (SQLite
// store) and a real PostgreSQL target: revoked and killed logins stop working at the target (open
// session terminated, new login refused), introspection says only `active`, bad input gets the
// protocol's error (never a 500), and no token or password appears in any log line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { credentialFingerprint } from '../../src/lib/crypto.js';
import { createTestSqliteUrl, PG_ADMIN_URL, dropPgRolesWithPrefix, pgRoleExists } from '../support/databases.js';
import { holdIssuance } from '../support/issuer-deps.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const PREFIX = 'agsrv_';
const RS_SECRET = 'rs-secret-0123456789abcdef';
const OFF_SECRET = 'rs-disabled-0123456789abcdef';

interface PgLogin { host: string; port: number; database: string; username: string; password: string }

async function login(c: PgLogin) {
  const conn = new pg.Client({ host: c.host, port: c.port, database: c.database, user: c.username, password: c.password });
  await conn.connect();
  return conn;
}

/** The login is dead at the target: the open session was terminated and a new login is refused. */
async function expectLoginDead(conn: pg.Client, closed: Promise<void>, c: PgLogin) {
  await closed;
  await expect(conn.query('SELECT 1')).rejects.toThrow();
  const again = new pg.Client({ host: c.host, port: c.port, database: c.database, user: c.username, password: c.password });
  await expect(again.connect()).rejects.toMatchObject({ code: expect.stringMatching(/^28/) });
  await again.end().catch(() => {});
}

describe('revocation, introspection and the kill switch', () => {
  let workloads: FakeIssuer;
  let idp: FakeIssuer;
  let broker: TestBroker;
  let endsTask: TestBroker;
  const drops: (() => Promise<void>)[] = [];
  /** Every secret handed out in this file: none may appear in a log line. */
  const secrets: string[] = [RS_SECRET, OFF_SECRET];

  const config = (url: string, revokeEndsTask: boolean) => ({
    storage: { url },
    tokens: { revokeEndsTask },
    auth: {
      auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
      admins: [{ name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' } }],
      introspectionClients: [
        { name: 'billing-rs', token: { fromEnv: 'RS_SECRET' } },
        { name: 'retired-rs', token: { fromEnv: 'OFF_SECRET' }, disabled: true },
      ],
    },
    trustProviders: [
      { name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } },
      { name: 'corp', type: 'oidc', config: { issuer: idp.issuer, audience: 'sts', human: true } },
    ],
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
        { id: 'agents', workload: { subjectPattern: 'test://.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }, { target: 'mcp', scopes: ['tools:run'], maxTtl: '2m' }] },
        { id: 'agents-for-people', workload: { subjectPattern: 'test://.+' }, human: { presence: 'required' }, grants: [{ target: 'mcp', scopes: ['tools:run'], maxTtl: '2m' }] },
      ],
    },
  });

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    idp = await startFakeOidcIssuer();
    const a = createTestSqliteUrl('agsts-revoke');
    const b = createTestSqliteUrl('agsts-revoke-ends');
    drops.push(a.drop, b.drop);
    const env = { PG_ADMIN: PG_ADMIN_URL, RS_SECRET, OFF_SECRET };
    broker = await startBroker(config(a.url, false), { env });
    endsTask = await startBroker(config(b.url, true), { env });
  });
  afterAll(async () => {
    await broker?.close();
    await endsTask?.close();
    await workloads?.close();
    await idp?.close();
    for (const d of drops) await d();
    await dropPgRolesWithPrefix(PREFIX);
  });

  const keep = (s: string) => (secrets.push(s), s);
  const agentToken = async (b: TestBroker, sub = 'assistant') => {
    const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: keep(await workloads.sign({ sub, aud: 'sts' })), subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    return keep(r.json.access_token as string);
  };
  const dbLogin = async (b: TestBroker, agent: string) => {
    const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
    expect(r.status, r.text).toBe(200);
    const c = r.json.credentials as PgLogin;
    keep(c.password);
    return c;
  };
  const mcpToken = async (b: TestBroker, agent: string) => {
    const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(r.status, r.text).toBe(200);
    return keep(r.json.access_token as string);
  };
  const form = (fields: Record<string, string | string[]>) => {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(fields)) for (const x of [v].flat()) body.append(k, x);
    return body.toString();
  };
  const post = async (b: TestBroker, path: string, body: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${b.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  const introspect = (b: TestBroker, token: string, auth = `Bearer ${RS_SECRET}`) => post(b, '/oauth2/introspect', form({ token }), { authorization: auth });
  const revoke = (b: TestBroker, token: string) => post(b, '/oauth2/revoke', form({ token }));
  const admin = async (b: TestBroker, method: string, path: string, body?: unknown, auth = `Bearer ${TEST_ADMIN_TOKEN}`) => {
    const res = await fetch(`${b.url}/v1/admin/identities${path}`, {
      method,
      headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const auditOf = async (b: TestBroker, action: string) => {
    await b.composed.audit.drain();
    const res = await fetch(`${b.url}/v1/audit?limit=500`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
    const { records } = (await res.json()) as { records: { action: string; outcome: string; reason: string | null; workloadSubject: string | null; humanSubject: string | null; credentialId: string | null; taskId: string | null; clientAddress: string | null }[] };
    return records.filter((r) => r.action === action);
  };

  it('advertises both endpoints in the RFC 8414 metadata', async () => {
    const meta = (await (await fetch(`${broker.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(meta).toMatchObject({
      revocation_endpoint: `${broker.url}/oauth2/revoke`,
      revocation_endpoint_auth_methods_supported: ['none'],
      introspection_endpoint: `${broker.url}/oauth2/introspect`,
      introspection_endpoint_auth_methods_supported: ['client_secret_basic'],
    });
  });

  it('introspection requires client authentication: 401 invalid_client with WWW-Authenticate', async () => {
    const agent = await agentToken(broker);
    const cases: [string | undefined, RegExp][] = [
      [undefined, /Basic.*Bearer/],
      ['Bearer wrong-secret', /^Bearer/],
      [`Bearer ${OFF_SECRET}`, /^Bearer/], // a disabled client
      [basic('billing-rs', 'wrong'), /^Basic/],
      [basic('someone-else', RS_SECRET), /^Basic/], // right secret, wrong client id
      [`Bearer ${TEST_ADMIN_TOKEN}`, /^Bearer/], // an admin is not an introspection client
      ['Basic !!!', /^Basic/],
    ];
    for (const [auth, challenge] of cases) {
      const r = await post(broker, '/oauth2/introspect', form({ token: agent }), auth ? { authorization: auth } : {});
      expect(r.status, auth).toBe(401);
      expect(r.json).toMatchObject({ error: 'invalid_client' });
      expect(r.headers.get('www-authenticate'), auth).toMatch(challenge);
      expect(r.headers.get('cache-control')).toBe('no-store');
      expect(r.text).not.toContain('active');
    }
  });

  it('introspection of active tokens: agent token and audience-bound access token (Bearer and HTTP Basic)', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const a = await introspect(broker, agent, basic('billing-rs', RS_SECRET));
    expect(a.status, a.text).toBe(200);
    expect(a.headers.get('cache-control')).toBe('no-store');
    const ac = decodeJwt(agent);
    expect(a.json).toEqual({ active: true, client_id: 'test://assistant', token_type: 'Bearer', exp: ac.exp, iat: ac.iat, sub: 'test://assistant', aud: broker.url, iss: broker.url, jti: ac.jti, task_id: taskId });

    // a person with the agent: sub is the person, act the agent
    const person = keep(await idp.sign({ sub: 'alice', aud: 'sts' }));
    const x = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE, actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(x.status, x.text).toBe(200);
    const access = keep(x.json.access_token as string);
    const r = await introspect(broker, access);
    expect(r.json).toMatchObject({ active: true, scope: 'tools:run', client_id: 'test://assistant', sub: 'alice', aud: 'https://mcp.test/', iss: broker.url, task_id: taskId, act: { sub: 'test://assistant' }, token_type: 'Bearer' });
    expect(r.json.jti).toBe(decodeJwt(access).jti);
    // private claims of the agent token are not exposed
    expect(a.json.wl).toBeUndefined();
  });

  it('anything not issued by agent-sts, or invalid, is {active:false} and nothing else', async () => {
    const foreign = keep(await workloads.sign({ sub: 'assistant', aud: 'sts' }));
    const agent = await agentToken(broker);
    const [h, p] = agent.split('.');
    const tampered = `${h}.${p}.${Buffer.from('not a signature').toString('base64url')}`;
    const otherBroker = await agentToken(endsTask); // signed by another broker's key and issuer
    for (const token of [foreign, tampered, 'not-a-jwt', otherBroker, 'x'.repeat(20_000)]) {
      const r = await introspect(broker, token);
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ active: false });
    }
  });

  it('bad input gets the protocol error (RFC 6749 §5.2 JSON), never a 500', async () => {
    const agent = await agentToken(broker);
    const auth = { authorization: `Bearer ${RS_SECRET}` };
    for (const path of ['/oauth2/revoke', '/oauth2/introspect']) {
      const cases = [
        await post(broker, path, '', auth),
        await post(broker, path, form({ token_type_hint: 'access_token' }), auth),
        await post(broker, path, form({ token: [agent, agent] }), auth),
        await post(broker, path, JSON.stringify({ token: agent }), { ...auth, 'content-type': 'application/json' }),
        await post(broker, `${path}?token=${agent}`, form({ token: agent }), auth),
      ];
      for (const r of cases) {
        expect(r.status, `${path} ${r.text}`).toBe(400);
        expect(r.json.error).toBe('invalid_request');
        expect(r.headers.get('content-type')).toMatch(/^application\/json/);
        expect(r.headers.get('cache-control')).toBe('no-store');
      }
    }
    const huge = await post(broker, '/oauth2/revoke', form({ token: 'x'.repeat(200_000) }));
    expect(huge.status).toBe(413);
    expect(huge.json.error).toBe('invalid_request');
  });

  it('revoking an unknown, foreign or already revoked token is a 200 (no oracle)', async () => {
    for (const token of ['nonsense', keep(await workloads.sign({ sub: 'x', aud: 'sts' }))]) {
      const r = await revoke(broker, token);
      expect(r.status).toBe(200);
      expect(r.headers.get('cache-control')).toBe('no-store');
      expect(r.text).toBe('');
    }
    // any hint is accepted: RFC 7009 §2.1 lets the server search all its token types
    const agent = await agentToken(broker);
    const r = await post(broker, '/oauth2/revoke', form({ token: agent, token_type_hint: 'refresh_token' }));
    expect(r.status).toBe(200);
    expect((await introspect(broker, agent)).json).toEqual({ active: false });
    expect((await revoke(broker, agent)).status).toBe(200);
  });

  it('revoking an audience-bound access token: introspection says inactive, the rest of the task lives on', async () => {
    const agent = await agentToken(broker);
    const access = await mcpToken(broker, agent);
    expect((await introspect(broker, access)).json.active).toBe(true);
    expect((await revoke(broker, access)).status).toBe(200);
    expect((await introspect(broker, access)).json).toEqual({ active: false });
    expect((await introspect(broker, agent)).json.active).toBe(true);
    const row = await broker.composed.db.credential.findUniqueOrThrow({ where: { id: decodeJwt(access).jti! } });
    expect(row.state).toBe('revoked');
    expect(row.revokedAt).not.toBeNull();
    const rec = (await auditOf(broker, 'credential.revoke')).find((x) => x.credentialId === row.id);
    expect(rec?.outcome).toBe('success');
    expect(rec?.reason).toMatch(/revoked by its holder \(RFC 7009\)/);
    // who revoked it: the holder's address is in the record
    expect(rec?.clientAddress).toMatch(/127\.0\.0\.1$/);
  });

  it('revoking an agent token (default): that token is dead, its task and logins are not', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const cred = await dbLogin(broker, agent);
    expect((await revoke(broker, agent)).status).toBe(200);
    expect((await introspect(broker, agent)).json).toEqual({ active: false });
    const refused = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read' });
    expect(refused.status).toBe(400);
    expect(refused.json.error).toBe('invalid_request');
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: taskId } })).state).toBe('open');
    const conn = await login(cred);
    expect((await conn.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await conn.end();
  });

  it('revoking a PostgreSQL password: that login dies at the target now, the task and its other logins live on', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const done = await dbLogin(broker, agent);
    const other = await dbLogin(broker, agent);
    const conn = await login(done);
    const closed = new Promise<void>((resolve) => conn.on('error', () => resolve()));
    const r = await revoke(broker, done.password);
    expect(r.status).toBe(200);
    expect(r.text).toBe('');
    await expectLoginDead(conn, closed, done);
    expect(await pgRoleExists(done.username)).toBe(false);
    expect(await pgRoleExists(other.username)).toBe(true);
    const otherConn = await login(other);
    expect((await otherConn.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await otherConn.end();
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: taskId } })).state).toBe('open');
    expect((await introspect(broker, agent)).json.active).toBe(true);
    const rows = await broker.composed.db.credential.findMany({ where: { taskId }, orderBy: { issuedAt: 'asc' } });
    expect(rows.map((x) => x.state)).toEqual(['active', 'revoked', 'active']); // the agent token, the revoked login, the other
    // once: a second revocation (and the task end later) records nothing more for it
    expect((await revoke(broker, done.password)).status).toBe(200);
    const recs = (await auditOf(broker, 'credential.revoke')).filter((x) => x.credentialId === rows[1]!.id);
    expect(recs).toHaveLength(1);
    expect(recs[0]!.outcome).toBe('success');
    expect(recs[0]!.taskId).toBe(taskId);
    expect(recs[0]!.reason).toMatch(/^revoked by its holder \(RFC 7009\) at \d{4}-/);
    const end = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent}` } });
    expect(end.status).toBe(200);
    const ended = (await end.json()) as { credentials: { id: string; fate: string }[] };
    expect(ended.credentials.find((c) => c.id === rows[1]!.id)?.fate).toBe('revoked');
    expect((await auditOf(broker, 'credential.revoke')).filter((x) => x.credentialId === rows[1]!.id)).toHaveLength(1);
  });

  it('a password that is not one agent-sts handed out, or a near miss of one, revokes nothing (200, no oracle)', async () => {
    const agent = await agentToken(broker);
    const cred = await dbLogin(broker, agent);
    const nearMiss = cred.password.slice(0, -1) + (cred.password.endsWith('A') ? 'B' : 'A');
    for (const token of [nearMiss, cred.username, `${cred.password} `]) {
      const r = await revoke(broker, token);
      expect(r.status).toBe(200);
      expect(r.text).toBe('');
    }
    const conn = await login(cred);
    expect((await conn.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await conn.end();
    expect((await broker.composed.db.credential.findMany({ where: { taskId: decodeJwt(agent).task_id as string } })).map((x) => x.state)).toEqual(['active', 'active']);
  });

  it('a credential whose issuer cannot revoke it: 400 unsupported_token_type, saying until when it stays valid', async () => {
    // Every built-in upstream issuer can revoke; one that cannot is stood in for by a recorded
    // issuance of an opaque secret by an issuer no longer configured, with no revocation handle.
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const secret = keep(`opaque-${randomUUID()}`);
    const id = randomUUID();
    const expiresAt = new Date(Date.now() + 60_000);
    const fingerprint = credentialFingerprint(secret);
    await broker.composed.audit.append({
      event: { requestId: 'test-opaque', action: 'token.exchange', outcome: 'allow', taskId, credentialId: id, credentialFingerprint: fingerprint, issuerName: 'retired', target: 'saas' },
      credentials: [{ id, taskId, issuerName: 'retired', issuerType: 'saas-api-key', tokenType: 'Bearer', target: 'saas', state: 'active', fingerprint, expiresAt, sealedRevocationHandle: null }],
    });
    const r = await revoke(broker, secret);
    expect(r.status).toBe(400);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json.error).toBe('unsupported_token_type');
    expect(r.json.error_description).toBe(`credentials of this issuer (saas-api-key) cannot be revoked; this one stays valid until ${expiresAt.toISOString()}`);
    expect((await broker.composed.db.credential.findUniqueOrThrow({ where: { id } })).state).toBe('active');
  });

  const operator = async (path: string, body: unknown, auth = `Bearer ${TEST_ADMIN_TOKEN}`, type = 'application/json') => {
    const res = await fetch(`${broker.url}/v1/admin${path}`, { method: 'POST', headers: { authorization: auth, 'content-type': type }, body: typeof body === 'string' ? body : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };

  it('an operator revokes one credential (admin role): the PostgreSQL login dies, its task goes on; who and why are recorded', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const cred = await dbLogin(broker, agent);
    const row = await broker.composed.db.credential.findFirstOrThrow({ where: { taskId, issuerName: 'pg' } });
    // refused without the admin role, without a reason, with another media type; unknown ids are 404
    expect((await operator(`/credentials/${row.id}/revoke`, { reason: 'x' }, `Bearer ${TEST_AUDITOR_TOKEN}`)).status).toBe(401);
    const noReason = await operator(`/credentials/${row.id}/revoke`, {});
    expect(noReason.status).toBe(400);
    expect(noReason.type).toMatch(/^application\/problem\+json/);
    expect(String(noReason.json.detail)).toMatch(/^reason: /);
    expect((await operator(`/credentials/${row.id}/revoke`, 'reason=x', undefined, 'application/x-www-form-urlencoded')).status).toBe(415);
    expect((await operator('/credentials/nope/revoke', { reason: 'x' })).status).toBe(404);
    expect((await operator(`/credentials/${'%2e%2e'}/revoke`, { reason: 'x' })).status).toBe(404);
    expect((await broker.composed.db.credential.findUniqueOrThrow({ where: { id: row.id } })).state).toBe('active');

    const conn = await login(cred);
    const closed = new Promise<void>((resolve) => conn.on('error', () => resolve()));
    const r = await operator(`/credentials/${row.id}/revoke`, { reason: 'password pasted in INC-12' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ credential_id: row.id, task_id: taskId, target: 'db', fate: 'revoked', state: 'revoked' });
    await expectLoginDead(conn, closed, cred);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: taskId } })).state).toBe('open');
    expect((await introspect(broker, agent)).json.active).toBe(true);
    const recs = (await auditOf(broker, 'credential.revoke')).filter((x) => x.credentialId === row.id);
    expect(recs).toHaveLength(1);
    expect(recs[0]!.reason).toMatch(/^revoked by bootstrap:test-admin: password pasted in INC-12 at /);
    expect((await operator(`/credentials/${row.id}/revoke`, { reason: 'again' })).json).toMatchObject({ fate: 'revoked' });
  });

  it('an operator revokes an audience-bound access token: introspection refuses it now, the answer says until when offline verifiers accept it', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const access = await mcpToken(broker, agent);
    const { jti, exp } = decodeJwt(access);
    expect((await introspect(broker, access)).json.active).toBe(true);
    const r = await operator(`/credentials/${jti}/revoke`, { reason: 'token in a public gist, INC-14' });
    expect(r.status).toBe(200);
    const expiresAt = new Date(exp! * 1000).toISOString();
    expect(r.json).toEqual({ credential_id: jti, task_id: taskId, target: 'mcp', fate: 'revoked', state: 'revoked', expires_at: expiresAt, offline_valid_until: expiresAt });
    expect((await introspect(broker, access)).json).toEqual({ active: false });
    // the agent and its task go on
    expect((await introspect(broker, agent)).json.active).toBe(true);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: taskId } })).state).toBe('open');
    const recs = (await auditOf(broker, 'credential.revoke')).filter((x) => x.credentialId === jti);
    expect(recs.map((x) => x.reason)).toEqual([expect.stringMatching(/^revoked by bootstrap:test-admin: token in a public gist, INC-14 at \d{4}-/)]);
    // the holder's revocation afterwards changes nothing and records nothing more
    expect((await revoke(broker, access)).status).toBe(200);
    expect((await auditOf(broker, 'credential.revoke')).filter((x) => x.credentialId === jti)).toHaveLength(1);
    // an agent token revoked by an operator is refused at the token endpoint (no offline verifier to warn about)
    const other = await agentToken(broker);
    const o = await operator(`/credentials/${decodeJwt(other).jti}/revoke`, { reason: 'leaked, INC-15' });
    expect(o.json).toMatchObject({ fate: 'revoked', state: 'revoked' });
    expect(o.json).not.toHaveProperty('offline_valid_until');
    const refused = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: other, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(refused.status).toBe(400);
    expect(refused.json.error).toBe('invalid_request');
  });

  it('an operator ends one task (admin role): its login dies, the answer is the signed receipt, who and why are recorded', async () => {
    const agent = await agentToken(broker);
    const taskId = decodeJwt(agent).task_id as string;
    const cred = await dbLogin(broker, agent);
    expect((await operator(`/tasks/${taskId}/end`, { reason: 'x' }, 'Bearer nope')).status).toBe(401);
    expect((await operator(`/tasks/${taskId}/end`, { reason: ' ', extra: 1 })).status).toBe(400);
    expect((await operator('/tasks/t_nope/end', { reason: 'x' })).status).toBe(404);
    const conn = await login(cred);
    const closed = new Promise<void>((resolve) => conn.on('error', () => resolve()));
    const r = await operator(`/tasks/${taskId}/end`, { reason: 'agent looping on INC-13' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ task_id: taskId, state: 'ended' });
    expect((r.json.credentials as { fate: string }[]).map((c) => c.fate)).toEqual(['revoked', 'revoked']);
    expect(decodeJwt(r.json.receipt as string)).toMatchObject({ task_id: taskId, state: 'ended' });
    await expectLoginDead(conn, closed, cred);
    expect(await broker.composed.db.task.findUniqueOrThrow({ where: { id: taskId } })).toMatchObject({ state: 'ended', endReason: 'ended by bootstrap:test-admin: agent looping on INC-13' });
    expect((await auditOf(broker, 'task.end')).filter((x) => x.taskId === taskId).map((x) => x.reason)).toEqual(['ended by bootstrap:test-admin: agent looping on INC-13']);
    expect((await introspect(broker, agent)).json).toEqual({ active: false });
  });

  it('with tokens.revokeEndsTask, revoking an agent token ends its task: the PostgreSQL login dies at the target', async () => {
    const agent = await agentToken(endsTask);
    const taskId = decodeJwt(agent).task_id as string;
    const cred = await dbLogin(endsTask, agent);
    const access = await mcpToken(endsTask, agent);
    const conn = await login(cred);
    const closed = new Promise<void>((resolve) => conn.on('error', () => resolve()));
    expect((await revoke(endsTask, agent)).status).toBe(200);
    await expectLoginDead(conn, closed, cred);
    const task = await endsTask.composed.db.task.findUniqueOrThrow({ where: { id: taskId } });
    expect(task.state).toBe('ended');
    expect(task.endReason).toMatch(/RFC 7009/);
    // the access token of the ended task is inactive too (its issuer cannot revoke it; introspection can)
    expect((await introspect(endsTask, access)).json).toEqual({ active: false });
  });

  it('the kill switch: admin only, validated, URL-encoded subjects, 404 for an unknown restore', async () => {
    const subject = encodeURIComponent('test://nobody');
    expect((await admin(broker, 'POST', `/${subject}/kill`, { reason: 'x' }, 'Bearer nope')).status).toBe(401);
    expect((await admin(broker, 'GET', '/blocked', undefined, `Bearer ${TEST_AUDITOR_TOKEN}`)).status).toBe(401);
    for (const body of [{}, { reason: '' }, { reason: 'x', kind: 'robot' }, { reason: 'x', extra: 1 }, 'not json']) {
      const r = await admin(broker, 'POST', `/${subject}/kill`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.type).toMatch(/application\/problem\+json/);
    }
    // a long subject (a GitHub Actions subject with a deep ref) fits in the path
    const long = `repo:acme/${'x'.repeat(150)}:ref:refs/heads/${'feature/'.repeat(20)}deep`;
    const killedLong = await admin(broker, 'POST', `/${encodeURIComponent(long)}/kill`, { reason: 'long subject' });
    expect(killedLong.status, JSON.stringify(killedLong.json)).toBe(200);
    expect(killedLong.json).toMatchObject({ subject: long, newly_blocked: true });
    expect((await admin(broker, 'POST', `/${encodeURIComponent(long)}/restore`)).status).toBe(200);
    const r = await admin(broker, 'POST', `/${subject}/restore`);
    expect(r.status).toBe(404);
    expect(r.type).toMatch(/application\/problem\+json/);
    expect(r.json).toMatchObject({ status: 404, title: 'not blocked' });
  });

  it('kill: every task of the subject ends (PostgreSQL login dead), new exchanges are refused until restore; others unaffected', async () => {
    const agent = await agentToken(broker, 'rogue');
    const cred = await dbLogin(broker, agent);
    const access = await mcpToken(broker, agent);
    const second = await agentToken(broker, 'rogue'); // a second open task of the same workload
    const bystander = await agentToken(broker, 'bystander');
    const conn = await login(cred);
    const closed = new Promise<void>((resolve) => conn.on('error', () => resolve()));

    const killed = await admin(broker, 'POST', `/${encodeURIComponent('test://rogue')}/kill`, { reason: 'prompt injection suspected, ticket SEC-42' });
    expect(killed.status, JSON.stringify(killed.json)).toBe(200);
    expect(killed.json).toMatchObject({ subject: 'test://rogue', kind: 'workload', blocked_by: 'bootstrap:test-admin', newly_blocked: true, tasks_ended: 2, tasks_ending: 0 });
    expect(killed.json.credentials).toEqual({ revoked: 3, revocation_pending: 0, expires_naturally: 1 });
    await expectLoginDead(conn, closed, cred);
    for (const t of [agent, second, access]) expect((await introspect(broker, t)).json).toEqual({ active: false });

    // a new start-up exchange is refused like a policy denial: nothing about the kill switch leaks
    const fresh = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: keep(await workloads.sign({ sub: 'rogue', aud: 'sts' })), subject_token_type: JWT_TYPE });
    expect(fresh.status).toBe(400);
    expect(fresh.json.error).toBe('invalid_request');
    expect(fresh.text).not.toMatch(/kill|SEC-42|block/i);
    const deny = (await auditOf(broker, 'token.exchange')).find((x) => x.outcome === 'deny' && x.workloadSubject === 'test://rogue');
    expect(deny?.reason).toMatch(/kill switch: workload test:\/\/rogue blocked by bootstrap:test-admin: prompt injection suspected, ticket SEC-42/);

    // the bystander is unaffected
    expect((await introspect(broker, bystander)).json.active).toBe(true);
    const ok = await dbLogin(broker, bystander);
    const c2 = await login(ok);
    await c2.end();

    const list = await admin(broker, 'GET', '/blocked');
    expect(list.json.blocked).toEqual([expect.objectContaining({ subject: 'test://rogue', kind: 'workload', reason: 'prompt injection suspected, ticket SEC-42', blocked_by: 'bootstrap:test-admin' })]);
    const kills = (await auditOf(broker, 'admin.identity.kill')).filter((x) => x.workloadSubject === 'test://rogue');
    expect(kills).toEqual([expect.objectContaining({ outcome: 'success', workloadSubject: 'test://rogue', reason: 'by bootstrap:test-admin: prompt injection suspected, ticket SEC-42' })]);

    // killing again is idempotent: the block stands, nothing left to end
    const again = await admin(broker, 'POST', `/${encodeURIComponent('test://rogue')}/kill`, { reason: 'again' });
    expect(again.json).toMatchObject({ newly_blocked: false, reason: 'prompt injection suspected, ticket SEC-42', tasks_ended: 0 });

    const restored = await admin(broker, 'POST', `/${encodeURIComponent('test://rogue')}/restore`);
    expect(restored.status).toBe(200);
    expect(restored.json).toEqual({ restored: 'test://rogue', kind: 'workload' });
    expect((await auditOf(broker, 'admin.identity.restore'))[0]).toMatchObject({ workloadSubject: 'test://rogue', reason: expect.stringMatching(/^by bootstrap:test-admin/) });
    const back = await agentToken(broker, 'rogue');
    expect((await introspect(broker, back)).json.active).toBe(true);
    expect((await admin(broker, 'GET', '/blocked')).json.blocked).toEqual([]);
    // ended tasks stay ended
    expect((await introspect(broker, agent)).json).toEqual({ active: false });
  });

  it('kill while a PostgreSQL login is being created for the subject: the login is dropped and never handed out', async () => {
    const agent = await agentToken(broker, 'slowpoke');
    const taskId = decodeJwt(agent).task_id as string;
    const held = holdIssuance(broker.composed.issuers.get('pg')!);
    try {
      const pending = postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
      await held.atTarget;
      const killed = await admin(broker, 'POST', `/${encodeURIComponent('test://slowpoke')}/kill`, { reason: 'slow target, SEC-43' });
      expect(killed.status, JSON.stringify(killed.json)).toBe(200);
      expect(killed.json).toMatchObject({ tasks_ended: 1 });
      held.release();
      const r = await pending;
      expect(r.status, r.text).toBe(400);
      expect(r.json.error).toBe('invalid_request');
      expect(r.text).not.toMatch(/kill|SEC-43|block|password/i);
    } finally {
      held.restore();
    }
    expect(held.handles).toHaveLength(1);
    const { role } = held.handles[0] as { role: string };
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    try {
      expect((await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount).toBe(0);
    } finally {
      await c.end();
    }
    const row = await broker.composed.db.credential.findFirstOrThrow({ where: { taskId, target: 'db' } });
    expect(row.state).toBe('revoked');
    const deny = (await auditOf(broker, 'token.exchange')).find((x) => x.outcome === 'deny' && x.taskId === taskId);
    expect(deny?.reason).toMatch(/kill switch during issuance: workload test:\/\/slowpoke blocked by bootstrap:test-admin: slow target, SEC-43; revoked at the target/);
    expect((await admin(broker, 'POST', `/${encodeURIComponent('test://slowpoke')}/restore`)).status).toBe(200);
  });

  it('kill a person (kind human): agents acting for that person are refused, the agent alone is not', async () => {
    const agent = await agentToken(broker, 'helper');
    const person = keep(await idp.sign({ sub: 'mallory', aud: 'sts' }));
    const before = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE, actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(before.status, before.text).toBe(200);
    const k = await admin(broker, 'POST', `/${encodeURIComponent('mallory')}/kill`, { reason: 'account compromised', kind: 'human' });
    expect(k.json).toMatchObject({ kind: 'human', tasks_ended: 0 });
    const after = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: keep(await idp.sign({ sub: 'mallory', aud: 'sts' })), subject_token_type: JWT_TYPE, actor_token: agent, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' });
    expect(after.status).toBe(400);
    expect(after.json.error).toBe('invalid_request');
    expect((await introspect(broker, keep(before.json.access_token as string))).json).toEqual({ active: false });
    expect((await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' })).status).toBe(200);
    expect((await admin(broker, 'POST', `/${encodeURIComponent('mallory')}/restore`)).status).toBe(200);
  });

  it('no token, password or client secret appears in any log line', async () => {
    await broker.composed.audit.drain();
    expect(secrets.length).toBeGreaterThan(10);
    for (const b of [broker, endsTask]) {
      expect(b.logs.length).toBeGreaterThan(0);
      for (const line of b.logs) for (const s of secrets) expect(line.includes(s), `log line holds a secret: ${line.slice(0, 200)}`).toBe(false);
    }
    // the inactive reason is logged at debug with the fingerprint, for operators
    expect(broker.logs.some((l) => l.includes('introspection: inactive') && /"fingerprint":"(jwt:[^"]+:)?sha256:[0-9a-f]{64}"/.test(l))).toBe(true);
  });
});
