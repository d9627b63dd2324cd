// Issue 6: a kubernetes trust provider configured to watch pods ends the tasks of a pod when the
// pod is deleted. Real broker (SQLite store), the fake Kubernetes API watched through the real
// @kubernetes/client-node, and PostgreSQL logins at the real server as the credentials.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { decodeJwt } from 'jose';
import { createTestSqliteUrl, PG_ADMIN_URL } from '../support/databases.js';
import { startFakeKubernetesApi, type FakeKubernetesApi } from '../fakes/kubernetes-api.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const SUB_AGENT = 'urn:agent-sts:token-type:sub-agent-token';
const PREFIX = 'agspw_';
const AUD = 'sts-prod';

interface PgCred { host: string; port: number; database: string; username: string; password: string }

async function roleExists(role: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return ((await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount ?? 0) > 0;
  } finally {
    await c.end();
  }
}

async function until(what: string, cond: () => Promise<boolean> | boolean, ms = 5_000): Promise<number> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

describe('kubernetes watchPods: a deleted pod ends its tasks', () => {
  let k8s: FakeKubernetesApi;
  let broker: TestBroker;
  let drop: () => Promise<void>;
  let storeUrl = '';
  const secrets: string[] = [];

  const start = (env: NodeJS.ProcessEnv = {}) =>
    startBroker(
      {
        storage: { url: storeUrl },
        trustProviders: [
          {
            name: 'prod',
            type: 'kubernetes',
            config: { clusterName: 'prod', issuer: k8s.issuer, audience: AUD, mode: 'jwks', jwksUri: k8s.publicJwksUri, kubeconfig: k8s.kubeconfigPath, watchPods: { enabled: true } },
          },
        ],
        credentialIssuers: [{ name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } }],
        targets: [{ name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] }],
        policy: {
          rules: [{ id: 'planner', workload: { subject: 'k8s://prod/ns/agents/sa/planner' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }] }],
        },
      },
      { env: { PG_ADMIN: PG_ADMIN_URL, ...env } },
    );

  beforeAll(async () => {
    k8s = await startFakeKubernetesApi();
    const s = await createTestSqliteUrl('agsts-podwatch');
    drop = s.drop;
    storeUrl = s.url;
    broker = await start();
    secrets.push(k8s.reviewerToken);
  });
  afterAll(async () => {
    await broker?.close();
    await k8s?.close();
    await drop?.();
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    for (const r of (await c.query(`SELECT rolname FROM pg_roles WHERE rolname LIKE '${PREFIX}%'`)).rows as { rolname: string }[])
      await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(r.rolname)}`);
    await c.end();
  });

  /** A pod's service-account token (a fresh pod), and the pod's uid. */
  const podToken = async () => {
    const token = await k8s.mint({ audiences: [AUD] });
    secrets.push(token);
    return { token, uid: k8s.last.pod!.uid };
  };
  const exchange = async (fields: Record<string, string>) => {
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, ...fields });
    for (const v of [r.json.access_token, (r.json.credentials as PgCred | undefined)?.password]) if (typeof v === 'string') secrets.push(v);
    return r;
  };
  const agentToken = async (podJwt: string) => {
    const r = await exchange({ subject_token: podJwt, subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    return { token: r.json.access_token as string, taskId: String(decodeJwt(r.json.access_token as string).task_id) };
  };
  const dbLogin = async (token: string, type = ACCESS_TOKEN_TYPE) => {
    const r = await exchange({ subject_token: token, subject_token_type: type, audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
    return r;
  };
  const connect = async (cred: PgCred) => {
    const conn = new pg.Client({ host: cred.host, port: cred.port, database: cred.database, user: cred.username, password: cred.password });
    await conn.connect();
    conn.on('error', () => {});
    return conn;
  };
  const taskOf = (id: string) => broker.composed.db.task.findUniqueOrThrow({ where: { id } });

  it('deleting the pod ends its tasks within seconds: logins revoked at PostgreSQL, audited with the reason; another pod\'s task stays', async () => {
    const a = await podToken();
    const b = await podToken();
    // Pod a: a task with an agent token, a sub-agent's child task, and a task opened by a direct exchange.
    const agent = await agentToken(a.token);
    const loginA = await dbLogin(agent.token);
    expect(loginA.status, loginA.text).toBe(200);
    const credA = loginA.json.credentials as PgCred;
    const session = await connect(credA);
    expect((await session.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 });
    const sub = await exchange({ subject_token: agent.token, subject_token_type: ACCESS_TOKEN_TYPE, requested_token_type: SUB_AGENT, scope: 'read', audience: 'db' });
    expect(sub.status, sub.text).toBe(200);
    const childTaskId = String(decodeJwt(sub.json.access_token as string).task_id);
    const direct = await dbLogin(a.token, JWT_TYPE);
    expect(direct.status, direct.text).toBe(200);
    const directTaskId = String(direct.json.task_id);
    const directCred = direct.json.credentials as PgCred;
    // Pod b: its own task and login.
    const agentB = await agentToken(b.token);
    const loginB = await dbLogin(agentB.token);
    expect(loginB.status, loginB.text).toBe(200);
    const credB = loginB.json.credentials as PgCred;

    const instanceA = `k8s-pod:prod:${a.uid}`;
    expect((await taskOf(agent.taskId)).instance).toBe(instanceA);
    expect((await taskOf(childTaskId)).instance).toBe(instanceA); // inherited from the parent task
    expect((await taskOf(directTaskId)).instance).toBe(instanceA);
    expect((await taskOf(agentB.taskId)).instance).toBe(`k8s-pod:prod:${b.uid}`);

    await until('the broker watches pods', () => k8s.openWatches() === 1);
    k8s.deletePod(a.uid);
    const took = await until('pod a\'s tasks ended', async () => {
      const rows = await broker.composed.db.task.findMany({ where: { id: { in: [agent.taskId, childTaskId, directTaskId] } } });
      return rows.every((t) => t.state === 'ended');
    });
    expect(took).toBeLessThan(5_000);

    // The logins are dead at the target: the open session is terminated and a new login refused.
    await expect(session.query('SELECT 1')).rejects.toThrow();
    await expect(connect(credA)).rejects.toThrow();
    await expect(connect(directCred)).rejects.toThrow();
    expect(await roleExists(credA.username)).toBe(false);
    // The agent token of the deleted pod obtains nothing more.
    expect((await dbLogin(agent.token)).status).toBe(400);

    // Audited: task.end with the reason, and each credential's revocation.
    await broker.composed.audit.drain();
    const ends = await broker.composed.db.auditEvent.findMany({ where: { action: 'task.end', taskId: { in: [agent.taskId, directTaskId] } } });
    expect(ends.map((e) => [e.taskId, e.outcome, e.reason]).sort()).toEqual(
      [[agent.taskId, 'success', `pod ${a.uid} deleted`], [directTaskId, 'success', `pod ${a.uid} deleted`]].sort(),
    );
    expect((await taskOf(agent.taskId)).endReason).toBe(`pod ${a.uid} deleted`);
    const revoked = await broker.composed.db.auditEvent.findMany({ where: { action: 'credential.revoke', taskId: agent.taskId, outcome: 'success' } });
    expect(revoked.map((e) => e.target).sort()).toEqual([broker.url, 'db'].sort());

    // Pod b is untouched: its task is open and its login works.
    expect((await taskOf(agentB.taskId)).state).toBe('open');
    const sessionB = await connect(credB);
    expect((await sessionB.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 });
    await sessionB.end();
    expect((await dbLogin(agentB.token)).status).toBe(200);
  });

  it('a watch stream that breaks is re-established, and a later deletion still ends its task', async () => {
    const c = await podToken();
    const agent = await agentToken(c.token);
    const login = await dbLogin(agent.token);
    expect(login.status, login.text).toBe(200);
    const cred = login.json.credentials as PgCred;

    await until('the broker watches pods', () => k8s.openWatches() === 1);
    const watchesBefore = k8s.podRequests.filter((r) => r.watch).length;
    k8s.dropWatches();
    await until('the watch is re-established', () => k8s.podRequests.filter((r) => r.watch).length > watchesBefore && k8s.openWatches() === 1);
    expect(broker.logs.some((l) => l.includes('"provider":"prod"') && l.includes('pod watch failed; retrying'))).toBe(true);
    expect((await taskOf(agent.taskId)).state).toBe('open');

    k8s.deletePod(c.uid);
    await until('pod c\'s task ended', async () => (await taskOf(agent.taskId)).state === 'ended');
    expect((await taskOf(agent.taskId)).endReason).toBe(`pod ${c.uid} deleted`);
    expect(await roleExists(cred.username)).toBe(false);
  });

  it('no token or password in the broker\'s logs', () => {
    const all = broker.logs.join('\n');
    expect(secrets.length).toBeGreaterThan(5);
    for (const s of secrets) expect(all).not.toContain(s);
  });

  it('a pod deleted while no broker ran: the first pod list after start ends its tasks; a running pod\'s task stays', async () => {
    const gone = await podToken();
    const stays = await podToken();
    const agentGone = await agentToken(gone.token);
    const login = await dbLogin(agentGone.token);
    expect(login.status, login.text).toBe(200);
    const cred = login.json.credentials as PgCred;
    const agentStays = await agentToken(stays.token);

    // The broker stops (an upgrade, say); meanwhile one pod is deleted and a new one starts.
    const env = { TEST_KEK: broker.env.TEST_KEK };
    await broker.close();
    k8s.deletePod(gone.uid);
    await podToken();
    broker = await start(env);

    await until('the deleted pod\'s task ended', async () => (await taskOf(agentGone.taskId)).state === 'ended', 10_000);
    expect((await taskOf(agentGone.taskId)).endReason).toBe(`pod ${gone.uid} gone before the watch started (not in the pod list)`);
    expect(await roleExists(cred.username)).toBe(false);
    await broker.composed.audit.drain();
    const end = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { action: 'task.end', taskId: agentGone.taskId } });
    expect(end).toMatchObject({ outcome: 'success', reason: `pod ${gone.uid} gone before the watch started (not in the pod list)` });
    // The running pod keeps its task (its agent token names the old listen address as issuer, so
    // only the row is checked here).
    expect((await taskOf(agentStays.taskId)).state).toBe('open');
    const all = broker.logs.join('\n');
    for (const s of secrets) expect(all).not.toContain(s);
  });
});
