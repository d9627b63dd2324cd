// MySQL/MariaDB logins through the real broker (SQLite store): agent token -> login for a task ->
// the agent connects and reads what its scope grants (and nothing else) -> task end kills the
// open session and drops the user; an expired login is dropped by the sweep.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mysql from 'mysql2/promise';
import { createTestMysqlDatabase, MYSQL_URL, type TestMysqlDatabase } from '../support/databases.js';
import type { TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const MYSQL_CREDS = 'urn:agent-sts:token-type:mysql-credentials';

async function userExists(user: string): Promise<boolean> {
  const c = await mysql.createConnection(MYSQL_URL);
  try {
    const [rows] = await c.query('SELECT 1 FROM mysql.user WHERE User = ?', [user]);
    return (rows as unknown[]).length > 0;
  } finally {
    await c.end();
  }
}

describe('mysql logins through the token endpoint', () => {
  let e2e: E2eBroker;
  let db: TestMysqlDatabase;
  let broker: TestBroker;

  beforeAll(async () => {
    db = await createTestMysqlDatabase('agsts_e2e');
    const admin = await mysql.createConnection(db.url);
    await admin.query('CREATE TABLE invoices (id INT PRIMARY KEY, amount INT)');
    await admin.query('INSERT INTO invoices VALUES (1, 100)');
    await admin.end();
    e2e = await startE2eBroker({
      name: 'agsts-mysql-e2e',
      env: { MYSQL_ADMIN: MYSQL_URL },
      config: {
        sweep: { interval: '1s' },
        credentialIssuers: [{ name: 'my', type: 'mysql', config: { adminUrl: { fromEnv: 'MYSQL_ADMIN' }, userPrefix: 'agse2e_', grants: { read: [{ privileges: ['SELECT'], on: `${db.name}.invoices` }] } } }],
        targets: [{ name: 'billing-db', audiences: ['billing-db'], issuer: 'my', scopes: ['read'] }],
        policy: { rules: [{ id: 'r', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'billing-db', scopes: ['read'], maxTtl: '5m' }] }] },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    await e2e?.close();
    await db?.drop();
  });

  const agentToken = () => e2e.agentToken('agent');
  const login = (agent: string, extra: Record<string, string> = {}) =>
    e2e.exchange(agent, { audience: 'billing-db', scope: 'read', requested_token_type: MYSQL_CREDS, ...extra });

  it('a login that reads what its scope grants, dies with its task (session killed, user dropped)', async () => {
    const agent = await agentToken();
    const r = await login(agent.token);
    expect(r.status, r.text).toBe(200);
    expect(r.json).toMatchObject({ issued_token_type: MYSQL_CREDS, token_type: 'N_A' });
    const cred = r.json.credentials as { username: string; password: string; host: string; port: number };
    const conn = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: cred.username, password: cred.password, database: db.name });
    const [rows] = await conn.query('SELECT amount FROM invoices WHERE id = 1');
    expect(rows).toEqual([{ amount: 100 }]);
    await expect(conn.query('INSERT INTO invoices VALUES (2, 1)')).rejects.toThrow(/denied/i);

    const end = await fetch(`${broker.url}/v1/tasks/${agent.task}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent.token}` } });
    expect(end.status).toBe(200);
    await expect(conn.query('SELECT 1')).rejects.toThrow();
    conn.destroy();
    expect(await userExists(cred.username)).toBe(false);
    await expect(mysql.createConnection({ host: '127.0.0.1', port: 3306, user: cred.username, password: cred.password })).rejects.toThrow(/denied/i);
    expect(broker.logs.join('\n')).not.toContain(cred.password);
  });

  it('RFC 7009 by the holder: the password as handed out kills that login now (session killed, user dropped); the task goes on', async () => {
    const agent = await agentToken();
    const creds = [];
    for (let i = 0; i < 2; i++) {
      const r = await login(agent.token);
      expect(r.status, r.text).toBe(200);
      creds.push(r.json.credentials as { username: string; password: string });
    }
    const [done, other] = creds as [{ username: string; password: string }, { username: string; password: string }];
    const conn = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: done.username, password: done.password, database: db.name });
    const res = await fetch(`${broker.url}/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: done.password }) });
    expect(res.status).toBe(200);
    await expect(conn.query('SELECT 1')).rejects.toThrow();
    conn.destroy();
    expect(await userExists(done.username)).toBe(false);
    expect(await userExists(other.username)).toBe(true);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: agent.task } })).state).toBe('open');
    expect(broker.logs.join('\n')).not.toContain(done.password);
    await fetch(`${broker.url}/v1/tasks/${agent.task}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent.token}` } });
    expect(await userExists(other.username)).toBe(false);
  });

  it('the sweep drops a login whose lifetime is over', async () => {
    const agent = await agentToken();
    const r = await login(agent.token, { requested_lifetime: '2' });
    expect(r.status, r.text).toBe(200);
    const user = (r.json.credentials as { username: string }).username;
    expect(await userExists(user)).toBe(true);
    const deadline = Date.now() + 15_000;
    while ((await userExists(user)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 250));
    expect(await userExists(user)).toBe(false);
  });
});
