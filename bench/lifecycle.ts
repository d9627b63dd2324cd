/**
 * Time from task end to every credential dead at its target: `npm run bench:lifecycle`.
 *
 * A real broker (in-process, SQLite store, as in the e2e tests) with a postgres and a mysql issuer
 * against the local PostgreSQL and MariaDB. For each of N tasks, sequentially: open the task,
 * obtain one PostgreSQL and one MySQL login, open a session with each; then `DELETE
 * /v1/tasks/{id}` and measure (a) until the DELETE answers and (b) until both open sessions are
 * gone and a fresh login is refused at both targets (polled every 5 ms) — "dead at the target".
 *
 * Knobs: BENCH_TASKS (default 40), BENCH_PG_URL, BENCH_MYSQL_URL.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { startBroker, postToken, JWT_TYPE, ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from '../test/support/broker.js';
import { startFakeOidcIssuer } from '../test/fakes/oidc-issuer.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomLowerId } from '../src/lib/crypto.js';

const N = Number(process.env.BENCH_TASKS ?? 40);
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const MY_URL = process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/';
const PREFIX = `agslb${randomLowerId(4)}_`;

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function pgDead(c: { host: string; port: number; database: string; username: string; password: string }, session: pg.Client): Promise<boolean> {
  try {
    await session.query('SELECT 1');
    return false;
  } catch {
    /* the session was terminated */
  }
  const fresh = new pg.Client({ host: c.host, port: c.port, database: c.database, user: c.username, password: c.password });
  try {
    await fresh.connect();
    await fresh.end();
    return false;
  } catch {
    return true;
  }
}

async function myDead(c: { host: string; port: number; username: string; password: string }, session: mysql.Connection): Promise<boolean> {
  try {
    await session.query('SELECT 1');
    return false;
  } catch {
    /* killed */
  }
  try {
    const fresh = await mysql.createConnection({ host: c.host, port: c.port, user: c.username, password: c.password });
    await fresh.end();
    return false;
  } catch {
    return true;
  }
}

async function main() {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const issuer = await startFakeOidcIssuer();
  const dir = mkdtempSync(join(tmpdir(), 'agsts-bench-lifecycle-'));
  const store = { url: `file:${join(dir, 'store.db')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  const broker = await startBroker(
    {
      storage: { url: store.url },
      trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'sts', subjectTemplate: 'bench://{sub}' } }],
      credentialIssuers: [
        { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } },
        { name: 'my', type: 'mysql', config: { adminUrl: { fromEnv: 'MY' }, userPrefix: PREFIX, grants: { read: [{ privileges: ['SELECT'], on: 'mysql_bench_none.*' }] } } },
      ],
      targets: [
        { name: 'pg', audiences: ['pg'], issuer: 'pg', scopes: ['read'] },
        { name: 'my', audiences: ['my'], issuer: 'my', scopes: ['read'] },
      ],
      policy: { rules: [{ id: 'bench', workload: { subjectPattern: 'bench://.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'pg', scopes: ['read'], maxTtl: '5m' }, { target: 'my', scopes: ['read'], maxTtl: '5m' }] }] },
    },
    { env: { PG: PG_URL, MY: MY_URL } },
  );
  const endMs: number[] = [];
  const deadMs: number[] = [];
  try {
    for (let i = 0; i < N; i++) {
      const start = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await issuer.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE });
      const agent = start.json.access_token as string;
      const taskId = start.json.task_id as string;
      const login = async (aud: string, type: string) => {
        const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: aud, scope: 'read', requested_token_type: type });
        if (r.status !== 200) throw new Error(`${aud} login: HTTP ${r.status} ${r.text}`);
        return r.json.credentials as { host: string; port: number; database: string; username: string; password: string };
      };
      const pgCred = await login('pg', 'urn:agent-sts:token-type:postgres-credentials');
      const myCred = await login('my', 'urn:agent-sts:token-type:mysql-credentials');
      const pgSession = new pg.Client({ host: pgCred.host, port: pgCred.port, database: pgCred.database, user: pgCred.username, password: pgCred.password });
      pgSession.on('error', () => {});
      await pgSession.connect();
      const mySession = await mysql.createConnection({ host: myCred.host, port: myCred.port, user: myCred.username, password: myCred.password });
      mySession.on('error', () => {});

      const t0 = performance.now();
      const res = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent}` } });
      await res.text();
      if (res.status !== 200) throw new Error(`task end: HTTP ${res.status}`);
      endMs.push(performance.now() - t0);
      for (;;) {
        if ((await pgDead(pgCred, pgSession)) && (await myDead(myCred, mySession))) break;
        if (performance.now() - t0 > 30_000) throw new Error('a credential was still alive 30 s after task end');
        await new Promise((r) => setTimeout(r, 5));
      }
      deadMs.push(performance.now() - t0);
      await pgSession.end().catch(() => {});
      mySession.destroy();
      if ((i + 1) % 10 === 0) log(`  ${i + 1}/${N} tasks`);
    }
  } finally {
    await broker.close();
    await issuer.close();
    await store.drop();
  }
  const f = (x: number) => x.toFixed(1);
  console.log(`\n| measure (n=${N}, 1 PostgreSQL + 1 MySQL login per task) | p50 ms | p99 ms | max ms |`);
  console.log('|:--|--:|--:|--:|');
  console.log(`| DELETE /v1/tasks/{id} answered (both revoked at the target) | ${f(pct(endMs, 50))} | ${f(pct(endMs, 99))} | ${f(Math.max(...endMs))} |`);
  console.log(`| task end → both sessions gone and new logins refused | ${f(pct(deadMs, 50))} | ${f(pct(deadMs, 99))} | ${f(Math.max(...deadMs))} |`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
