// Crash safety: the broker runs as a real process on a PostgreSQL store and issues PostgreSQL and
// MariaDB logins; it is killed with SIGKILL at injected points (AGENT_STS_CHAOS, a test hook),
// restarted, and afterwards `agent-sts doctor` finds no orphans or ghosts and every credential is
// either active in an open task (its login works) or ended with its account gone at the target.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestMysqlDatabase, createTestPostgresDatabase, MYSQL_URL, PG_ADMIN_URL, type TestMysqlDatabase, type TestPostgresDatabase } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE } from '../support/broker.js';
import { freePort, startBrokerProcess, type BrokerProcess } from '../support/broker-process.js';
import { describeRun, runAgentSts } from '../support/cli.js';
import { unseal } from '../../src/lib/crypto.js';
import { handleAad } from '../../src/tasks/task-service.js';

const RUN = randomBytes(3).toString('hex');
const PG_PREFIX = `chp${RUN}_`;
const MY_PREFIX = `chm${RUN.slice(0, 4)}_`;
const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const MYSQL_CREDS = 'urn:agent-sts:token-type:mysql-credentials';

interface Issued {
  username: string;
  password: string;
  kind: 'pg' | 'my';
}

async function pgAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
async function myAdmin<T>(fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  const c = await mysql.createConnection({ uri: MYSQL_URL });
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
const pgRoles = () => pgAdmin(async (c) => (await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1', [PG_PREFIX])).rows.map((r) => r.rolname));
const myUsers = () => myAdmin(async (c) => ((await c.query<mysql.RowDataPacket[]>('SELECT User AS u FROM mysql.user WHERE LEFT(User, CHAR_LENGTH(?)) = ?', [MY_PREFIX, MY_PREFIX]))[0]).map((r) => String(r.u)));

async function canLogin(i: Issued): Promise<boolean> {
  try {
    if (i.kind === 'pg') {
      const u = new URL(PG_ADMIN_URL);
      const c = new pg.Client({ host: u.hostname, port: Number(u.port || 5432), user: i.username, password: i.password, database: 'postgres', connectionTimeoutMillis: 3000 });
      await c.connect();
      await c.end();
    } else {
      const u = new URL(MYSQL_URL);
      const c = await mysql.createConnection({ host: u.hostname, port: Number(u.port || 3306), user: i.username, password: i.password, connectTimeout: 3000 });
      await c.end();
    }
    return true;
  } catch {
    return false;
  }
}

describe('chaos: SIGKILL at injected points, restart, doctor', () => {
  let workloads: FakeIssuer;
  let store: TestPostgresDatabase;
  let myDb: TestMysqlDatabase;
  let dir: string;
  let configFile: string;
  let broker: BrokerProcess | undefined;
  const env: Record<string, string> = { CHAOS_KEK: randomBytes(32).toString('base64'), CHAOS_PG_ADMIN: PG_ADMIN_URL, CHAOS_MY_ADMIN: MYSQL_URL };
  const issued: Issued[] = [];

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    store = await createTestPostgresDatabase('agsts_chaos');
    myDb = await createTestMysqlDatabase('agsts_chaos');
    dir = mkdtempSync(join(tmpdir(), 'agsts-chaos-'));
    configFile = join(dir, 'agent-sts.yaml');
    const config = {
      server: { host: '127.0.0.1', port: await freePort() },
      storage: { url: store.url },
      keys: { kek: { fromEnv: 'CHAOS_KEK' } },
      logging: { level: 'info' },
      sweep: { interval: '1s' },
      trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
      credentialIssuers: [
        { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'CHAOS_PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PG_PREFIX } },
        { name: 'my', type: 'mysql', config: { adminUrl: { fromEnv: 'CHAOS_MY_ADMIN' }, grants: { read: [{ privileges: ['SELECT'], on: `${myDb.name}.*` }] }, userPrefix: MY_PREFIX } },
      ],
      targets: [
        { name: 'pgdb', audiences: ['pgdb'], issuer: 'pg', scopes: ['read'] },
        { name: 'mydb', audiences: ['mydb'], issuer: 'my', scopes: ['read'] },
      ],
      policy: { rules: [{ id: 'agent', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'pgdb', scopes: ['read'], maxTtl: '5m' }, { target: 'mydb', scopes: ['read'], maxTtl: '5m' }] }] },
    };
    writeFileSync(configFile, JSON.stringify(config, null, 2));
  });

  afterAll(async () => {
    await broker?.stop();
    await workloads?.close();
    await store?.drop();
    await myDb?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await pgAdmin(async (c) => {
      for (const r of (await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1', [PG_PREFIX])).rows) {
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [r.rolname]);
        await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(r.rolname)}`);
      }
    });
    await myAdmin(async (c) => {
      for (const u of await myUsers()) await c.query('DROP USER IF EXISTS ?@?', [u, '%']);
    });
  });

  const storeQuery = <R extends pg.QueryResultRow>(sql: string) =>
    (async () => {
      const c = new pg.Client({ connectionString: store.url });
      await c.connect();
      try {
        return (await c.query<R>(sql)).rows;
      } finally {
        await c.end();
      }
    })();

  const workloadToken = () => workloads.sign({ sub: 'agent', aud: 'sts' });
  const agentToken = async (url: string) => {
    const r = await postToken(url, { grant_type: TOKEN_EXCHANGE, subject_token: await workloadToken(), subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    return r.json.access_token as string;
  };

  /** Fires `n` exchanges at once, alternating PostgreSQL and MariaDB; collects the logins that came back. */
  async function burst(url: string, n: number, agents: string[]) {
    const results = await Promise.allSettled(
      Array.from({ length: n }, async (_, i) => {
        const kind = i % 2 ? 'my' : 'pg';
        const subject = i % 3 === 0 && agents.length ? { subject_token: agents[i % agents.length]!, subject_token_type: ACCESS_TOKEN_TYPE } : { subject_token: await workloadToken(), subject_token_type: JWT_TYPE };
        const r = await postToken(url, { grant_type: TOKEN_EXCHANGE, ...subject, audience: kind === 'pg' ? 'pgdb' : 'mydb', scope: 'read', requested_token_type: kind === 'pg' ? PG_CREDS : MYSQL_CREDS });
        if (r.status === 200) {
          const c = r.json.credentials as { username: string; password: string };
          issued.push({ username: c.username, password: c.password, kind });
        }
        return r.status;
      }),
    );
    return results;
  }

  async function crashAt(point: string, fire: (url: string) => Promise<unknown>) {
    broker = await startBrokerProcess(configFile, { ...env, AGENT_STS_CHAOS: point });
    const b = broker;
    await fire(b.url).catch(() => {});
    const ended = await Promise.race([b.exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 20_000))]);
    expect(ended, `the broker should have killed itself at ${point}:\n${b.output().slice(-3000)}`).toEqual({ code: null, signal: 'SIGKILL' });
    return b;
  }

  it('recovers from SIGKILL before the upstream call, after it (before commit) and during revocation', async () => {
    const agents: string[] = [];
    // 1. Killed before the upstream call: rows `issuing`, nothing (or a few completed ones) at the targets.
    await crashAt('before-upstream:8', async (url) => {
      agents.push(await agentToken(url), await agentToken(url));
      await burst(url, 16, agents);
    });
    // 2. Killed after the upstream call, before the commit: logins exist that no answer ever carried.
    await crashAt('after-upstream:6', (url) => burst(url, 16, agents));
    const abandoned = await storeQuery<{ n: string }>(`SELECT count(*) AS n FROM "Credential" WHERE state = 'issuing'`);
    expect(Number(abandoned[0]!.n)).toBeGreaterThanOrEqual(2);
    expect((await pgRoles()).length + (await myUsers()).length).toBeGreaterThan(0);
    // 3. Killed during revocation: the new leader's recovery (or a task end) revokes, and dies mid-way.
    await crashAt('during-revocation:2', async (url) => {
      for (const a of agents) await fetch(`${url}/v1/tasks/${JSON.parse(Buffer.from(a.split('.')[1]!, 'base64url').toString()).task_id}`, { method: 'DELETE', headers: { authorization: `Bearer ${a}` } });
    });

    // 4. Restart without the hook: the leader (after the dead one's lease expired) finishes the work.
    broker = await startBrokerProcess(configFile, env);
    await burst(broker.url, 4, []);
    const deadline = Date.now() + 25_000;
    let open: { state: string; n: string }[] = [];
    do {
      await new Promise((r) => setTimeout(r, 500));
      open = await storeQuery<{ state: string; n: string }>(`SELECT state, count(*) AS n FROM "Credential" WHERE state IN ('issuing', 'revoking') GROUP BY state`);
    } while (open.length && Date.now() < deadline);
    expect(open, broker.output().slice(-3000)).toEqual([]);
    expect(broker.output()).toMatch(/start-up recovery pass done/);

    // doctor: nothing at the targets that agent-sts does not know, nothing it believes in that is gone
    const doctor = await runAgentSts(['doctor', '--config', configFile], { cwd: dir, env });
    expect(doctor.code, describeRun(doctor)).toBe(0);
    expect(doctor.stdout).toMatch(/pg \(postgres\): \d+ account\(s\).*0 orphan\(s\), 0 ghost\(s\)/);
    expect(doctor.stdout).toMatch(/my \(mysql\): \d+ account\(s\).*0 orphan\(s\), 0 ghost\(s\)/);

    // every credential: active in an open task with its account present, or ended with its account gone
    const rows = await storeQuery<{ id: string; state: string; issuerName: string; sealedRevocationHandle: string; taskState: string }>(
      `SELECT c.id, c.state, c."issuerName", c."sealedRevocationHandle", t.state AS "taskState" FROM "Credential" c JOIN "Task" t ON t.id = c."taskId" WHERE c."issuerName" IN ('pg', 'my')`,
    );
    expect(rows.length).toBeGreaterThan(10);
    const roles = new Set(await pgRoles());
    const users = new Set(await myUsers());
    const kek = Buffer.from(env.CHAOS_KEK!, 'base64');
    const states = new Set<string>();
    for (const r of rows) {
      const h = JSON.parse(unseal(kek, r.sealedRevocationHandle, handleAad(r.id))) as { role?: string; user?: string };
      const present = r.issuerName === 'pg' ? roles.has(h.role!) : users.has(h.user!);
      states.add(r.state);
      if (r.state === 'active') {
        expect(r.taskState, `credential ${r.id}`).toBe('open');
        expect(present, `active credential ${r.id} has its account`).toBe(true);
      } else {
        expect(['revoked', 'failed', 'expired'], `credential ${r.id}`).toContain(r.state);
        expect(present, `${r.state} credential ${r.id} has no account left`).toBe(false);
      }
    }
    expect(states.has('failed')).toBe(true); // crashed issuances were recovered as failed
    expect(states.has('active')).toBe(true);
    // Logins handed out and still active work; those of ended tasks do not.
    const activeNames = new Set([...roles, ...users]);
    const live = issued.filter((i) => activeNames.has(i.username));
    expect(live.length).toBeGreaterThan(0);
    for (const i of live) expect(await canLogin(i), `${i.kind} login ${i.username}`).toBe(true);
    for (const i of issued.filter((x) => !activeNames.has(x.username)).slice(0, 4)) expect(await canLogin(i)).toBe(false);

    // doctor finds a planted orphan on each target, --fix removes it (audited), and no password is printed
    await pgAdmin((c) => c.query(`CREATE ROLE ${c.escapeIdentifier(`${PG_PREFIX}stray`)} LOGIN`));
    await myAdmin((c) => c.query('CREATE USER ?@? IDENTIFIED BY ?', [`${MY_PREFIX}stray`, '%', randomBytes(8).toString('hex')]));
    const found = await runAgentSts(['doctor', '--config', configFile], { cwd: dir, env });
    expect(found.code, describeRun(found)).toBe(1);
    expect(found.stdout).toContain(`orphan ${PG_PREFIX}stray`);
    expect(found.stdout).toContain(`orphan ${MY_PREFIX}stray`);
    const fixed = await runAgentSts(['doctor', '--fix', '--config', configFile], { cwd: dir, env });
    expect(fixed.code, describeRun(fixed)).toBe(0);
    expect(fixed.stdout).toMatch(/removed/);
    expect(await pgRoles()).not.toContain(`${PG_PREFIX}stray`);
    expect(await myUsers()).not.toContain(`${MY_PREFIX}stray`);
    const audited = await storeQuery<{ n: string }>(`SELECT count(*) AS n FROM "AuditEvent" WHERE action = 'doctor.orphan.remove' AND outcome = 'success'`);
    expect(Number(audited[0]!.n)).toBe(2);
    for (const out of [doctor, found, fixed].map((r) => r.stdout + r.stderr)) for (const i of issued) expect(out).not.toContain(i.password);
    for (const i of issued) expect(broker.output()).not.toContain(i.password);
  }, 90_000);
});
