// targets[].maxLivePerTask through HTTP against a real broker (SQLite store) and the real
// PostgreSQL: a task holds at most that many live logins of a target; the next request is refused
// as a policy denial, audited, and creates nothing at the database; requests racing for the last
// places never exceed the limit; an expired login frees its place; another task counts on its own;
// maxLivePerTree counts a task and its sub-agents' tasks together.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { dropPgRolesWithPrefix, PG_ADMIN_URL } from '../support/databases.js';
import type { TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const PREFIX = 'agslive_';
// The 2 s logins come from an issuer of their own: the sweep drops them when they expire, which must
// not change the count of PREFIX roles another test is comparing meanwhile.
const SHORT_PREFIX = 'agslivs_';

describe('live credentials per task and per delegation tree (targets[].maxLivePerTask, maxLivePerTree)', () => {
  let e2e: E2eBroker;
  let broker: TestBroker;

  beforeAll(async () => {
    e2e = await startE2eBroker({
      name: 'agsts-live-limit',
      pgRolePrefix: PREFIX,
      config: {
        credentialIssuers: [
          { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } },
          { name: 'pg-short', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: SHORT_PREFIX } },
        ],
        targets: [
          { name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'], maxLivePerTask: 2 },
          { name: 'short-db', audiences: ['short-db'], issuer: 'pg-short', scopes: ['read'], maxLivePerTask: 1 },
          { name: 'tree-db', audiences: ['tree-db'], issuer: 'pg', scopes: ['read'], maxLivePerTask: 2, maxLivePerTree: 3 },
        ],
        policy: {
          rules: [
            {
              id: 'assistant', workload: { subject: 'test://assistant' }, agentToken: { maxTtl: '10m' },
              grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }, { target: 'short-db', scopes: ['read'], maxTtl: '2s' }, { target: 'tree-db', scopes: ['read'], maxTtl: '5m' }],
            },
          ],
        },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    await e2e?.close();
    await dropPgRolesWithPrefix(SHORT_PREFIX);
  });

  const agentToken = async () => {
    const { token, task } = await e2e.agentToken('assistant');
    return { token, taskId: task };
  };
  const login = (agent: string, audience = 'db') => e2e.pgLogin(agent, { audience });
  /** Logins of this test's prefix at the database. */
  const rolesAtDatabase = async () => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    try {
      return (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1', [`${PREFIX}%`])).rows[0]!.n;
    } finally {
      await c.end();
    }
  };
  const liveRows = (taskId: string, target = 'db') =>
    broker.composed.db.credential.count({ where: { taskId, target, state: { in: ['issuing', 'active', 'revoking'] } } });

  it('refuses the login past the limit as a policy denial: audited, and nothing is created at the database', async () => {
    const { token, taskId } = await agentToken();
    const first = await login(token);
    const second = await login(token);
    expect([first.status, second.status], first.text + second.text).toEqual([200, 200]);
    const before = await rolesAtDatabase();

    const third = await login(token);
    expect(third.status, third.text).toBe(400);
    expect(third.json.error).toBe('invalid_request');
    expect(third.json.error_description).toMatch(/^this task already holds 2 live credentials for this target, its limit; revoke one \(POST \/oauth2\/revoke\)/);
    expect(third.headers.get('cache-control')).toBe('no-store');
    expect(await rolesAtDatabase()).toBe(before);
    expect(await liveRows(taskId)).toBe(2);

    await broker.composed.audit.drain();
    const denied = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { taskId, action: 'token.exchange', outcome: 'deny' } });
    expect(denied.reason).toMatch(new RegExp(`task ${taskId} holds 2 live credential\\(s\\) for target db; maxLivePerTask is 2`));
    const failed = await broker.composed.db.credential.findFirstOrThrow({ where: { taskId, state: 'failed' } });
    expect(failed.lastError).toMatch(/over maxLivePerTask \(2\) for target db; nothing was issued/);
  });

  it('never exceeds the limit when requests race for the last places; another task counts on its own', async () => {
    const { token, taskId } = await agentToken();
    const answers = await Promise.all(Array.from({ length: 6 }, () => login(token)));
    const ok = answers.filter((r) => r.status === 200);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    expect(ok.length).toBeLessThanOrEqual(2);
    for (const r of answers.filter((x) => x.status !== 200)) expect(r.json.error, r.text).toBe('invalid_request');
    expect(await liveRows(taskId)).toBe(ok.length);

    const other = await agentToken();
    expect((await login(other.token)).status).toBe(200);
  });

  it('frees the place of a login that has expired, before the sweep closes its row', async () => {
    const { token } = await agentToken();
    const first = await login(token, 'short-db');
    expect(first.status, first.text).toBe(200);
    expect((await login(token, 'short-db')).status).toBe(400);
    await new Promise((r) => setTimeout(r, 2100));
    const again = await login(token, 'short-db');
    expect(again.status, again.text).toBe(200);
  });

  it('frees the place of a login its agent revoked (RFC 7009), at once', async () => {
    const { token, taskId } = await agentToken();
    const logins = [await login(token), await login(token)];
    expect(logins.map((r) => r.status)).toEqual([200, 200]);
    expect((await login(token)).status).toBe(400);
    const password = (logins[0]!.json.credentials as { password: string }).password;
    const revoked = await fetch(`${broker.url}/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: password }) });
    expect(revoked.status).toBe(200);
    expect(await liveRows(taskId)).toBe(1);
    const again = await login(token);
    expect(again.status, again.text).toBe(200);
  });

  it('maxLivePerTree: the agent and its sub-agents share the places (spawning sub-agents does not multiply them); another tree has its own', async () => {
    const root = await agentToken();
    const subAgent = async (parent: string) => {
      const r = await e2e.exchange(parent, { requested_token_type: 'urn:agent-sts:token-type:sub-agent-token', scope: 'read', audience: 'tree-db' });
      expect(r.status, r.text).toBe(200);
      return { token: r.json.access_token as string, taskId: r.json.task_id as string };
    };
    const child = await subAgent(root.token);
    const grandchild = await subAgent(child.token);
    const rows = await broker.composed.db.task.findMany({ where: { id: { in: [root.taskId, child.taskId, grandchild.taskId] } }, select: { id: true, rootTaskId: true } });
    expect(rows.map((r) => r.rootTaskId)).toEqual([root.taskId, root.taskId, root.taskId]);
    const shown = await fetch(`${broker.url}/v1/tasks/${grandchild.taskId}`, { headers: { authorization: `Bearer ${grandchild.token}` } });
    expect(await shown.json()).toMatchObject({ task_id: grandchild.taskId, parent_task_id: child.taskId, root_task_id: root.taskId });

    expect((await login(root.token, 'tree-db')).status).toBe(200);
    expect((await login(child.token, 'tree-db')).status).toBe(200);
    const before = await rolesAtDatabase();
    // the grandchild holds nothing itself (its per-task cap of 2 is not reached), but the tree holds 2 of 3
    expect((await login(grandchild.token, 'tree-db')).status).toBe(200);
    const refused = await login(child.token, 'tree-db');
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.error).toBe('invalid_request');
    expect(refused.json.error_description).toMatch(/^this task's delegation tree \(the agent that started it and its sub-agents\) already holds 3 live credentials for this target, its limit; revoke one/);
    expect(await rolesAtDatabase()).toBe(before + 1);
    // a new sub-agent gets no place of its own either
    const another = await subAgent(root.token);
    expect((await login(another.token, 'tree-db')).status).toBe(400);
    await broker.composed.audit.drain();
    const denied = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { taskId: another.taskId, action: 'token.exchange', outcome: 'deny' } });
    expect(denied.reason).toMatch(new RegExp(`the delegation tree of task ${root.taskId} holds 3 live credential\\(s\\) for target tree-db; maxLivePerTree is 3`));

    // another tree counts on its own
    const other = await agentToken();
    expect((await login(other.token, 'tree-db')).status).toBe(200);
    // ending a sub-agent's task frees its places for the rest of the tree
    const end = await fetch(`${broker.url}/v1/tasks/${grandchild.taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${grandchild.token}` } });
    expect(end.status).toBe(200);
    expect((await login(another.token, 'tree-db')).status).toBe(200);
  });
});
