// Tasks and sub-agents through HTTP against a real broker (SQLite store) and the real PostgreSQL:
// an explicit task (purpose, deadline, idle timeout) is opened, read (never a secret) and kept
// alive; a sub-agent gets a child task with strictly narrower scope, targets and lifetime (every
// widening attempt is refused with the right error); ending the parent ends the children, the
// sub-agent's database login dies at the target, and the signed receipt lists every fate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { pgRoleExists } from '../support/databases.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const SUB_AGENT = 'urn:agent-sts:token-type:sub-agent-token';
const PREFIX = 'agstask_';


describe('tasks and sub-agents', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;

  beforeAll(async () => {
    e2e = await startE2eBroker({
      name: 'agsts-tasks',
      pgRolePrefix: PREFIX,
      config: {
        credentialIssuers: [
          { name: 'tokens', type: 'agent-sts-jwt' },
          { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } },
        ],
        targets: [
          { name: 'mcp', resources: ['https://mcp.test/'], issuer: 'tokens', scopes: ['tools:run', 'tools:admin'] },
          { name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] },
        ],
        policy: {
          rules: [
            {
              id: 'assistant', workload: { subject: 'test://assistant' }, agentToken: { maxTtl: '10m' },
              grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }, { target: 'mcp', scopes: ['tools:run', 'tools:admin'], maxTtl: '2m' }],
            },
            { id: 'other', workload: { subject: 'test://other' }, agentToken: { maxTtl: '10m' }, grants: [] },
          ],
        },
      },
    });
    broker = e2e.broker;
  });
  afterAll(() => e2e?.close());

  const http = async (method: string, path: string, opts: { token?: string; json?: unknown; raw?: string; type?: string } = {}) => {
    const res = await fetch(`${broker.url}${path}`, {
      method,
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.json !== undefined || opts.raw !== undefined ? { 'content-type': opts.type ?? 'application/json' } : {}),
      },
      body: opts.raw ?? (opts.json !== undefined ? JSON.stringify(opts.json) : undefined),
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const workloadToken = (sub = 'assistant') => e2e.attest(sub);
  const openTask = async (extra: Record<string, unknown> = {}, sub = 'assistant') =>
    http('POST', '/v1/tasks', { json: { subject_token: await workloadToken(sub), subject_token_type: JWT_TYPE, purpose: 'reconcile invoices', ...extra } });
  const subAgent = (parent: string, fields: Record<string, string | string[]>) => e2e.exchange(parent, { requested_token_type: SUB_AGENT, ...fields });
  const dbLogin = (agent: string, extra: Record<string, string> = {}) => e2e.pgLogin(agent, extra);

  it('opens an explicit task with purpose, deadline and idle timeout, and shows it to its agent and to auditors, never a secret', async () => {
    const r = await openTask({ ttl_seconds: 300, idle_timeout_seconds: 60 });
    expect(r.status, r.text).toBe(201);
    expect(r.json).toMatchObject({ purpose: 'reconcile invoices', token_type: 'Bearer', idle_timeout_seconds: 60 });
    expect(r.json.expires_in).toBeLessThanOrEqual(300);
    const agent = r.json.agent_token as string;
    expect(decodeJwt(agent)).toMatchObject({ task_id: r.json.task_id, idle: 60 });

    const mine = await http('GET', `/v1/tasks/${String(r.json.task_id)}`, { token: agent });
    expect(mine.status, mine.text).toBe(200);
    expect(mine.json).toMatchObject({ task_id: r.json.task_id, state: 'open', purpose: 'reconcile invoices', idle_timeout_seconds: 60, workload_subject: 'test://assistant', parent_task_id: null, root_task_id: r.json.task_id });
    expect(mine.json.credentials).toEqual([expect.objectContaining({ issuer: 'agent-sts', state: 'active' })]);
    expect(mine.text).not.toContain(agent);

    expect((await http('GET', `/v1/tasks/${String(r.json.task_id)}`, { token: TEST_AUDITOR_TOKEN })).status).toBe(200);
    expect((await http('GET', `/v1/tasks/${String(r.json.task_id)}`)).status).toBe(401);
    const other = await openTask({}, 'other');
    const foreign = await http('GET', `/v1/tasks/${String(r.json.task_id)}`, { token: other.json.agent_token as string });
    expect(foreign.status).toBe(403);
    expect((await http('GET', '/v1/tasks/t_doesnotexist', { token: other.json.agent_token as string })).status).toBe(404);
  });

  it.each([
    ['not JSON', { raw: 'purpose=x', type: 'application/x-www-form-urlencoded' }, 415, /application\/json/],
    ['no purpose', { json: { subject_token: 'x.y.z', subject_token_type: JWT_TYPE } }, 400, /purpose/],
    ['unknown field', { json: { subject_token: 'x.y.z', subject_token_type: JWT_TYPE, purpose: 'p', scope: 'all' } }, 400, /Unrecognized|scope/],
    ['idle timeout not shorter than the task', { json: { subject_token: 'x.y.z', subject_token_type: JWT_TYPE, purpose: 'p', ttl_seconds: 60, idle_timeout_seconds: 60 } }, 400, /idle_timeout_seconds/],
    ['an unknown token type', { json: { subject_token: 'x.y.z', subject_token_type: 'urn:nope', purpose: 'p' } }, 400, /unsupported subject_token_type/],
  ])('refuses %s with problem+json', async (_name, opts, status, detail) => {
    const r = await http('POST', '/v1/tasks', opts);
    expect(r.status, r.text).toBe(status);
    expect(r.type).toContain('application/problem+json');
    expect(String(r.json.detail ?? r.json.title)).toMatch(detail);
  });

  it('refuses to open a task from an agent token (that is what sub-agent tokens are for)', async () => {
    const parent = (await openTask()).json.agent_token as string;
    const r = await http('POST', '/v1/tasks', { json: { subject_token: parent, subject_token_type: ACCESS_TOKEN_TYPE, purpose: 'p' } });
    expect(r.status).toBe(400);
    expect(r.type).toContain('application/problem+json');
    expect(r.json).toMatchObject({ status: 400, title: 'invalid_request' });
    expect(String(r.json.detail)).toMatch(/sub-agent token/);
  });

  it('heartbeats keep an idle-timeout task alive and stop once it has ended', async () => {
    const t = await openTask({ idle_timeout_seconds: 60 });
    const agent = t.json.agent_token as string;
    const id = String(t.json.task_id);
    const before = (await http('GET', `/v1/tasks/${id}`, { token: agent })).json.last_activity_at as string;
    await new Promise((r) => setTimeout(r, 20));
    const hb = await http('POST', `/v1/tasks/${id}/heartbeat`, { token: agent });
    expect(hb.status, hb.text).toBe(200);
    expect(Date.parse(hb.json.ends_if_idle_at as string) - Date.now()).toBeGreaterThan(50_000);
    const after = (await http('GET', `/v1/tasks/${id}`, { token: agent })).json.last_activity_at as string;
    expect(Date.parse(after)).toBeGreaterThan(Date.parse(before));
    // An exchange is activity too.
    expect((await dbLogin(agent)).status).toBe(200);
    await broker.composed.audit.drain();
    const afterExchange = (await http('GET', `/v1/tasks/${id}`, { token: agent })).json.last_activity_at as string;
    expect(Date.parse(afterExchange)).toBeGreaterThan(Date.parse(after));

    expect((await http('DELETE', `/v1/tasks/${id}`, { token: agent })).status).toBe(200);
    const late = await http('POST', `/v1/tasks/${id}/heartbeat`, { token: agent });
    expect(late.status).toBe(401); // its token was revoked with the task
  });

  it('refuses every sub-agent widening: scope, audience, lifetime, missing scope, no parent', async () => {
    const parent = (await openTask({ ttl_seconds: 120 })).json.agent_token as string;
    const child = await subAgent(parent, { scope: 'read', audience: 'db' });
    expect(child.status, child.text).toBe(200);
    const childToken = child.json.access_token as string;

    const cases: [string, Promise<{ status: number; json: Record<string, unknown> }>, string][] = [
      ['no scope', subAgent(parent, { audience: 'db' }), 'invalid_scope'],
      ['lifetime beyond the parent', subAgent(parent, { scope: 'read', requested_lifetime: '100000' }), 'invalid_request'],
      ['grandchild widens scope', subAgent(childToken, { scope: 'read tools:run' }), 'invalid_scope'],
      ['grandchild widens audience', subAgent(childToken, { scope: 'read', resource: 'https://mcp.test/' }), 'invalid_target'],
      ['unknown audience', subAgent(parent, { scope: 'read', audience: 'nowhere' }), 'invalid_target'],
      ['child asks a scope outside its ceiling', postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: childToken, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.test/', scope: 'tools:run' }), 'invalid_target'],
      ['from a workload attestation instead of an agent token', subAgent(await workloadToken(), { scope: 'read' }).then((r) => r), 'invalid_request'],
    ];
    for (const [name, p, code] of cases) {
      const r = await p;
      expect(r.status, name).toBe(400);
      expect(r.json.error, name).toBe(code);
    }
    // Within its ceiling the child works; a grandchild may narrow the lifetime further.
    expect((await dbLogin(childToken)).status).toBe(200);
    const grandchild = await subAgent(childToken, { scope: 'read', requested_lifetime: '30' });
    expect(grandchild.status).toBe(200);
    expect(grandchild.json.expires_in).toBeLessThanOrEqual(30);
  });

  it('a sub-agent gets a child task with nested act; ending the parent ends it, kills its database login, and the receipt is signed', async () => {
    const parentTask = await openTask({ ttl_seconds: 300 });
    const parent = parentTask.json.agent_token as string;
    const parentId = String(parentTask.json.task_id);
    const child = await subAgent(parent, { scope: 'read', audience: 'db', requested_lifetime: '120' });
    expect(child.status, child.text).toBe(200);
    const childToken = child.json.access_token as string;
    const claims = decodeJwt(childToken) as Record<string, unknown>;
    expect(claims.task_id).not.toBe(parentId);
    expect(claims).toMatchObject({ sub: 'test://assistant', scope: 'read', scp: ['read'], tgt: ['db'], act: { sub: `agent-sts:task:${parentId}` } });
    expect(child.json.expires_in).toBeLessThanOrEqual(120);

    const login = await dbLogin(childToken);
    expect(login.status, login.text).toBe(200);
    const cred = login.json.credentials as { host: string; port: number; database: string; username: string; password: string };
    const conn = new pg.Client({ host: cred.host, port: cred.port, database: cred.database, user: cred.username, password: cred.password });
    await conn.connect();
    conn.on('error', () => {});
    expect((await conn.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 });

    // The parent sees its child; the child cannot read its parent.
    const view = await http('GET', `/v1/tasks/${parentId}`, { token: parent });
    expect(view.json.children).toEqual([{ task_id: claims.task_id, state: 'open' }]);
    expect((await http('GET', `/v1/tasks/${parentId}`, { token: childToken })).status).toBe(403);

    const end = await http('DELETE', `/v1/tasks/${parentId}`, { token: parent });
    expect(end.status, end.text).toBe(200);
    const children = end.json.children as { task_id: string; state: string; credentials: { fate: string; target: string }[] }[];
    expect(children).toHaveLength(1);
    expect(children[0]).toMatchObject({ task_id: claims.task_id, state: 'ended' });
    expect(children[0]!.credentials.map((c) => `${c.target}:${c.fate}`)).toEqual([`${broker.url}:revoked`, 'db:revoked']);

    // The login is dead at the target, and the child's token is refused.
    expect(await pgRoleExists(cred.username)).toBe(false);
    await expect(conn.query('SELECT 1')).rejects.toThrow();
    const again = await dbLogin(childToken);
    expect(again.status).toBe(400);

    // The receipt is a JWS by agent-sts over the same content.
    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: never[] };
    const { payload, protectedHeader } = await jwtVerify(end.json.receipt as string, createLocalJWKSet({ keys: jwks.keys }), { issuer: broker.url });
    expect(protectedHeader.typ).toBe('task-receipt+jwt');
    expect(payload).toMatchObject({ task_id: parentId, state: 'ended', credentials: end.json.credentials, children: end.json.children });
  });

  it('two concurrent ends of one task (replicas, the pod watcher) write one task.end and leave it ended', async () => {
    const t = await openTask();
    const agent = t.json.agent_token as string;
    const id = String(t.json.task_id);
    const login = await dbLogin(agent);
    expect(login.status, login.text).toBe(200);
    const role = (login.json.credentials as { username: string }).username;
    const ctx = (requestId: string) => ({ requestId, now: new Date() });
    const [a, b] = await Promise.all([broker.composed.taskService.endTask(id, 'first', ctx('end-a')), broker.composed.taskService.endTask(id, 'second', ctx('end-b'))]);
    expect([a?.state, b?.state]).toContain('ended');
    await broker.composed.audit.drain();
    expect(await broker.composed.db.auditEvent.count({ where: { taskId: id, action: 'task.end' } })).toBe(1);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id } })).state).toBe('ended');
    expect(await pgRoleExists(role)).toBe(false);
    // Once it has ended, ending it again changes nothing and records nothing.
    expect((await broker.composed.taskService.endTask(id, 'third', ctx('end-c')))?.state).toBe('ended');
    await broker.composed.audit.drain();
    expect(await broker.composed.db.auditEvent.count({ where: { taskId: id, action: 'task.end' } })).toBe(1);
  });

  it('a task past its deadline is ended by the sweep, and its database login dies at the target', async () => {
    const t = await openTask({ ttl_seconds: 2 });
    expect(t.status, t.text).toBe(201);
    const agent = t.json.agent_token as string;
    const id = String(t.json.task_id);
    const login = await dbLogin(agent);
    expect(login.status, login.text).toBe(200);
    const cred = login.json.credentials as { host: string; port: number; database: string; username: string; password: string };
    const conn = new pg.Client({ host: cred.host, port: cred.port, database: cred.database, user: cred.username, password: cred.password });
    conn.on('error', () => {});
    await conn.connect();
    const until = Date.now() + 10_000;
    while ((await broker.composed.db.task.findUniqueOrThrow({ where: { id } })).state !== 'ended' && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    const task = await broker.composed.db.task.findUniqueOrThrow({ where: { id } });
    expect(task).toMatchObject({ state: 'ended', endReason: 'deadline' });
    expect(await pgRoleExists(cred.username)).toBe(false);
    await expect(conn.query('SELECT 1')).rejects.toThrow();
  });
});
