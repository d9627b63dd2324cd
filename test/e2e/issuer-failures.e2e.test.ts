// Upstream failures of the database and AWS issuers through the real broker: the target down (or
// answering 500) gives an RFC 6749 error without internals, one audit record with outcome
// `error`, and no credential row of that issuer left `active` or `issuing` (a planned row is
// closed as `failed`). The github-app and vault cases are in issuers.e2e.test.ts.
// Then the slow and malformed upstreams: a black hole, bytes that are not the protocol, a server
// that logs in and then never answers, a real server whose answer to the statement that creates
// the login is lost (it ran; the answer never arrives), STS answering late or 200 with a body that
// is not AssumeRole's. Each answers 503 temporarily_unavailable within the issuer's configured
// timeout (never "whenever the upstream answers"), with one audit record, no row left live, no
// host, port, password or upstream text in the answer, and nothing left upstream: no login role or
// user, no half-written deny policy, no AssumeRole retried into a second session.
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { closedPort } from '../fakes/http.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MYSQL_URL, PG_ADMIN_URL } from '../support/databases.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { mysqlPacket, PG_LOGIN_OK, pgMessage, startBlackhole, startHoldingProxy, startTcpFake, type HoldingProxy, type TcpFake } from '../fakes/blackhole.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { PostgresIssuerConfigSchema } from '../../src/credential-issuers/postgres/postgres-issuer.js';
import { MysqlIssuerConfigSchema } from '../../src/credential-issuers/mysql/mysql-issuer.js';
import { AwsStsIssuerConfigSchema, roleSessionName } from '../../src/credential-issuers/aws-sts/aws-sts-issuer.js';

const OWN = { accessKeyId: 'AKIAFAILAGENTSTS0001', secretAccessKey: 'fail-agent-sts-secret/abcdefghijklmnopqr' };
const ROLE = 'arn:aws:iam::111122223333:role/deploy';
/** `timeoutMs` of the issuers under the "slow" cases; their upstreams wait far beyond it. */
const TIMEOUT_MS = 1000;
/** Whatever the upstream does, the client has its answer within this. */
const ANSWER_WITHIN_MS = 15_000;
/** How long the fake STS holds a "slow" answer. */
const STS_SLOW_MS = 4000;
/** In the admin URLs of the fake databases: must never reach the client or the log. */
const ADMIN_PASSWORD = `adminpw-${randomBytes(8).toString('hex')}`;
/** Sent by the malformed upstreams: upstream text that must never reach the client. */
const UPSTREAM_TEXT = 'NOT-A-DATABASE-7f3a';
/** Login names of this file only, so leftovers on the shared servers are found (and cleaned up). */
const PG_PREFIX = `agf${randomBytes(3).toString('hex')}_`;
const MY_PREFIX = `agf${randomBytes(2).toString('hex')}_`;
const DB_UNAVAILABLE = 'the target database is unavailable; try again later';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 2000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}

async function pgRoles(prefix: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    const r = await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)', [prefix]);
    return r.rows.map((x) => x.rolname);
  } finally {
    await c.end();
  }
}
async function mysqlUsers(prefix: string): Promise<string[]> {
  const c = await mysql.createConnection({ uri: MYSQL_URL, connectTimeout: 5000 });
  try {
    const [rows] = await c.query<mysql.RowDataPacket[]>('SELECT User AS u FROM mysql.user WHERE LEFT(User, ?) = ?', [prefix.length, prefix]);
    return rows.map((x) => String(x.u));
  } finally {
    await c.end();
  }
}

describe('issuer upstream failures through the token endpoint', () => {
  let e2e: E2eBroker;
  let sts: FakeSts;
  let broker: TestBroker;
  const fakes: { pgHole?: TcpFake; pgGarbage?: TcpFake; pgUnknownMessage?: TcpFake; pgSilent?: TcpFake; myHole?: TcpFake; myBanner?: TcpFake; myGarbage?: TcpFake } = {};
  const proxies: { pgCommit?: HoldingProxy; myCreate?: HoldingProxy } = {};

  beforeAll(async () => {
    sts = await startFakeSts({ region: 'eu-west-1', keys: [{ ...OWN, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAFAIL' } }], roles: [{ arn: ROLE, roleId: 'AROAFAILDEPLOY000001' }] });
    const down = await closedPort();
    fakes.pgHole = await startBlackhole();
    // Something else on the port: an HTTP server's answer; its first bytes read as a message of ~1.4 GB, so the client waits for the rest.
    fakes.pgGarbage = await startTcpFake({ replies: [Buffer.from(`HTTP/1.1 400 Bad Request\r\nServer: ${UPSTREAM_TEXT}\r\nContent-Length: 0\r\n\r\n`)] });
    // Framed like PostgreSQL, but a message type the protocol does not have.
    fakes.pgUnknownMessage = await startTcpFake({ replies: [pgMessage('X', UPSTREAM_TEXT)] });
    // Accepts the login, then never answers a query.
    fakes.pgSilent = await startTcpFake({ replies: [PG_LOGIN_OK] });
    fakes.myHole = await startBlackhole();
    // MySQL's server speaks first: an SSH banner instead of the greeting, then a framed packet that is no greeting.
    fakes.myBanner = await startTcpFake({ onConnect: Buffer.from(`SSH-2.0-${UPSTREAM_TEXT}\r\n`) });
    fakes.myGarbage = await startTcpFake({ onConnect: mysqlPacket(0, `\x42${UPSTREAM_TEXT}`) });
    const pgUrl = new URL(PG_ADMIN_URL);
    proxies.pgCommit = await startHoldingProxy({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) }, /COMMIT/);
    const myUrl = new URL(MYSQL_URL);
    proxies.myCreate = await startHoldingProxy({ host: myUrl.hostname, port: Number(myUrl.port || 3306) }, /CREATE USER/);

    const pgAt = (port: number) => ({ insecureValue: `postgres://postgres:${ADMIN_PASSWORD}@127.0.0.1:${port}/postgres` });
    const myAt = (port: number, password = ADMIN_PASSWORD) => ({ insecureValue: `mysql://root${password ? `:${password}` : ''}@127.0.0.1:${port}/` });
    const pgIssuer = (name: string, port: number) => ({ name, type: 'postgres', config: { adminUrl: pgAt(port), roles: { read: 'pg_read_all_data' }, rolePrefix: PG_PREFIX, timeoutMs: TIMEOUT_MS } });
    const myIssuer = (name: string, port: number, password?: string) => ({
      name, type: 'mysql', config: { adminUrl: myAt(port, password), grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] }, userPrefix: MY_PREFIX, timeoutMs: TIMEOUT_MS },
    });
    const awsConfig = { region: 'eu-west-1', endpoint: sts.url, credentials: { accessKeyId: OWN.accessKeyId, secretAccessKey: { fromEnv: 'OWN_SECRET' } }, roles: { deploy: { roleArn: ROLE } } };
    const credentialIssuers = [
      { name: 'pg-down', type: 'postgres', config: { adminUrl: { insecureValue: `postgres://postgres@127.0.0.1:${down}/postgres` }, roles: { read: 'pg_read_all_data' } } },
      { name: 'my-down', type: 'mysql', config: { adminUrl: { insecureValue: `mysql://root@127.0.0.1:${down}/` }, grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] } } },
      { name: 'aws-down', type: 'aws-sts', config: { ...awsConfig, endpoint: `http://127.0.0.1:${down}` } },
      { name: 'aws', type: 'aws-sts', config: awsConfig }, // default timeouts
      { name: 'aws-timed', type: 'aws-sts', config: { ...awsConfig, timeoutMs: TIMEOUT_MS } },
      pgIssuer('pg-hole', fakes.pgHole.port),
      pgIssuer('pg-garbage', fakes.pgGarbage.port),
      pgIssuer('pg-unknown', fakes.pgUnknownMessage.port),
      pgIssuer('pg-silent', fakes.pgSilent.port),
      pgIssuer('pg-commit-lost', proxies.pgCommit.port),
      myIssuer('my-hole', fakes.myHole.port),
      myIssuer('my-banner', fakes.myBanner.port),
      myIssuer('my-garbage', fakes.myGarbage.port),
      myIssuer('my-create-lost', proxies.myCreate.port, ''), // the real server: root has no password
    ];
    const scopeOf = (type: string) => (type === 'aws-sts' ? 'deploy' : 'read');
    // Each issuer is its own target, named like it, except the first two (targets `pg` and `my`).
    const targetOf = (issuerName: string) => ({ 'pg-down': 'pg', 'my-down': 'my' })[issuerName] ?? issuerName;
    e2e = await startE2eBroker({
      name: 'agsts-issuer-failures',
      env: { OWN_SECRET: OWN.secretAccessKey },
      config: {
        credentialIssuers,
        targets: credentialIssuers.map((i) => ({ name: targetOf(i.name), audiences: [targetOf(i.name)], issuer: i.name, scopes: [scopeOf(i.type)] })),
        policy: {
          rules: [
            {
              id: 'r', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '1h' },
              grants: credentialIssuers.map((i) => ({ target: targetOf(i.name), scopes: [scopeOf(i.type)], maxTtl: '30m' })),
            },
          ],
        },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    // First (a hung broker must not keep it from running): a failing run must not litter the shared servers.
    for (const role of await pgRoles(PG_PREFIX).catch(() => [])) {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(role)}`).finally(() => c.end());
    }
    for (const user of await mysqlUsers(MY_PREFIX).catch(() => [])) {
      const c = await mysql.createConnection(MYSQL_URL);
      await c.query('DROP USER IF EXISTS ?@?', [user, '%']).finally(() => c.end());
    }
    sts?.failWith(null);
    for (const f of [...Object.values(fakes), ...Object.values(proxies)]) await f?.close();
    await e2e?.close();
    await sts?.close();
  });

  const agentToken = () => e2e.agentToken('agent');

  it('/readyz stays 200 but says "degraded", naming each issuer whose upstream is down and why, without its secrets', async () => {
    const res = await fetch(`${broker.url}/readyz`);
    const text = await res.text();
    expect(res.status).toBe(200);
    const body = JSON.parse(text) as { status: string; checks: Record<string, string>; issuers: Record<string, string> };
    expect(body.status).toBe('degraded');
    expect(body.checks).toEqual({ database: 'ok', signingKeys: 'ok' });
    expect(body.issuers.aws).toBe('ok');
    for (const down of ['pg-down', 'my-down', 'aws-down']) expect(body.issuers[down], down).toMatch(/refused|unreachable|timed out|failed/);
    expect(text).not.toContain(OWN.secretAccessKey);
    expect(text).not.toContain(ADMIN_PASSWORD);
    expect(text).not.toMatch(/postgres:\/\/|mysql:\/\//);
  });

  it.each([
    ['postgres admin connection refused', 'pg', 'read', 'pg-down', () => {}],
    ['mysql admin connection refused', 'my', 'read', 'my-down', () => {}],
    ['STS unreachable', 'aws-down', 'deploy', 'aws-down', () => {}],
    ['STS answers 500', 'aws', 'deploy', 'aws', () => sts.failWith(500)],
  ])('%s -> 503 temporarily_unavailable, audited as error, no row left active', async (_name, audience, scope, issuerName, fault) => {
    const start = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await e2e.attest('agent'), subject_token_type: JWT_TYPE });
    expect(start.status, start.text).toBe(200);
    fault();
    try {
      const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: String(start.json.access_token), subject_token_type: ACCESS_TOKEN_TYPE, audience, scope, requested_lifetime: '900' });
      expect(r.status, r.text).toBe(503);
      expect(r.json.error).toBe('temporarily_unavailable');
      expect(r.text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|node_modules|\.[cm]?[jt]s:\d+|secret/i);
      const events = await broker.composed.db.auditEvent.findMany({ where: { requestId: r.headers.get('x-request-id')! } });
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ outcome: 'error', taskId: String(start.json.task_id) });
      expect(await broker.composed.db.credential.count({ where: { issuerName, state: { in: ['active', 'issuing'] } } })).toBe(0);
    } finally {
      sts.failWith(null);
    }
    expect(broker.logs.join('\n')).not.toContain(OWN.secretAccessKey);
  });

  it('every database and AWS issuer has a bounded upstream timeout of a few seconds by default', () => {
    const pgDefault = PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'X' }, roles: { read: 'r' } });
    const myDefault = MysqlIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'X' }, grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] } });
    const awsDefault = AwsStsIssuerConfigSchema.parse({ region: 'eu-west-1', roles: { deploy: { roleArn: ROLE } } });
    for (const [name, ms] of [['postgres', pgDefault.timeoutMs], ['mysql', myDefault.timeoutMs], ['aws-sts', awsDefault.timeoutMs]] as const) {
      expect(ms, name).toBeGreaterThanOrEqual(1000);
      expect(ms, name).toBeLessThanOrEqual(10_000);
    }
  });

  type Case = {
    name: string;
    /** Issuer, target and audience (all named alike). */
    issuer: string;
    scope: string;
    set?: () => void;
    reset?: () => void;
    /** The upstream never answers in time: the answer comes at the issuer's timeout, not before. */
    waitsForTimeout: boolean;
    description: string;
    /** Nothing is left upstream (checked after the answer). */
    nothingLeft: (ctx: { task: string; responseText: string }) => Promise<void>;
  };
  const received = (f: TcpFake | undefined) => f!.connections.map((c) => c.received.toString('latin1')).join('\n');
  /** Every connection the issuer opened to the fake, it closed again (a real server would roll back and free it). */
  const allClosed = (f: TcpFake | undefined, what: string) => eventually(() => f!.connections.length > 0 && f!.connections.every((c) => c.closedByClient), `${what}: every connection closed by the broker`);
  const noSqlReached = (f: () => TcpFake | undefined, statement: RegExp, what: string) => async () => {
    await allClosed(f(), what);
    expect(received(f())).not.toMatch(statement);
  };
  const awsNothingLeft = async () => {
    expect(sts.rolePolicies(ROLE)).toEqual({}); // no deny policy written (half or whole)
    expect(sts.iamCalls.filter((c) => c.action === 'PutRolePolicy')).toEqual([]);
  };
  const assumeRolesOf = (task: string) => sts.assumeRoleCalls.filter((c) => c.RoleSessionName === roleSessionName(task));

  const cases: Case[] = [
    {
      name: 'postgres: the admin port accepts and never answers',
      issuer: 'pg-hole', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.pgHole, /CREATE ROLE|BEGIN/, 'pg-hole'),
    },
    {
      name: 'postgres: the startup packet is answered with bytes that are not PostgreSQL (connection kept open)',
      issuer: 'pg-garbage', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.pgGarbage, /CREATE ROLE|BEGIN/, 'pg-garbage'),
    },
    {
      name: 'postgres: the startup packet is answered with a message type PostgreSQL does not have',
      issuer: 'pg-unknown', scope: 'read', waitsForTimeout: false, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.pgUnknownMessage, /CREATE ROLE|BEGIN/, 'pg-unknown'),
    },
    {
      name: 'postgres: the login succeeds, then no query is ever answered',
      issuer: 'pg-silent', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      // It got as far as the transaction, never to COMMIT, and hung up: a real server rolls back.
      nothingLeft: async () => {
        await allClosed(fakes.pgSilent, 'pg-silent');
        expect(received(fakes.pgSilent)).toMatch(/BEGIN/);
        expect(received(fakes.pgSilent)).not.toMatch(/COMMIT/);
      },
    },
    {
      name: 'postgres: the role is committed on the real server, but the answer to COMMIT never arrives',
      issuer: 'pg-commit-lost', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: async () => {
        expect(proxies.pgCommit!.held).toBeGreaterThanOrEqual(1); // the COMMIT did reach the server
        await eventually(() => proxies.pgCommit!.heldThenClosedByClient >= 1, 'the broker hung up on the silent connection');
        expect(await pgRoles(PG_PREFIX)).toEqual([]); // the committed role was dropped again
      },
    },
    {
      name: 'mysql: the admin port accepts and never sends its greeting',
      issuer: 'my-hole', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.myHole, /CREATE USER/, 'my-hole'),
    },
    {
      name: 'mysql: the server greets with an SSH banner (not MySQL)',
      issuer: 'my-banner', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.myBanner, /CREATE USER/, 'my-banner'),
    },
    {
      name: 'mysql: the greeting is a framed packet with garbage inside',
      issuer: 'my-garbage', scope: 'read', waitsForTimeout: false, description: DB_UNAVAILABLE,
      nothingLeft: noSqlReached(() => fakes.myGarbage, /CREATE USER/, 'my-garbage'),
    },
    {
      name: 'mysql: CREATE USER runs on the real server, but its answer never arrives',
      issuer: 'my-create-lost', scope: 'read', waitsForTimeout: true, description: DB_UNAVAILABLE,
      nothingLeft: async () => {
        expect(proxies.myCreate!.held).toBeGreaterThanOrEqual(1); // CREATE USER did reach the server
        await eventually(() => proxies.myCreate!.heldThenClosedByClient >= 1, 'the broker hung up on the silent connection');
        expect(await mysqlUsers(MY_PREFIX)).toEqual([]); // the user it created was dropped again
      },
    },
    {
      name: 'aws-sts: STS answers later than the timeout',
      issuer: 'aws-timed', scope: 'deploy', waitsForTimeout: true, description: 'AWS STS is unavailable; try again later',
      set: () => sts.delayAnswers(STS_SLOW_MS), reset: () => sts.delayAnswers(0),
      nothingLeft: async ({ task, responseText }) => {
        // AssumeRole mints a session each time: exactly one was asked for, never retried into a second.
        const calls = assumeRolesOf(task);
        expect(calls).toHaveLength(1);
        expect(calls[0]).toMatchObject({ status: 200 });
        expect(responseText).not.toContain(calls[0]!.issuedAccessKeyId!); // the late session never reached anyone
        await awsNothingLeft();
      },
    },
    {
      name: 'aws-sts: STS answers 200 with an HTML page',
      issuer: 'aws', scope: 'deploy', waitsForTimeout: false, description: 'AWS STS answered unusably; try again later',
      set: () => sts.answerMalformed('html'), reset: () => sts.answerMalformed(null),
      nothingLeft: async ({ task }) => {
        expect(assumeRolesOf(task)).toEqual([]); // nothing minted
        expect(sts.calls.filter((c) => c.code === 'malformed-html')).toHaveLength(1); // and not asked twice
        await awsNothingLeft();
      },
    },
    {
      name: 'aws-sts: STS answers 200 with AssumeRole XML that holds no credentials',
      issuer: 'aws', scope: 'deploy', waitsForTimeout: false, description: 'AWS STS answered unusably; try again later',
      set: () => sts.answerMalformed('empty-result'), reset: () => sts.answerMalformed(null),
      nothingLeft: async ({ task }) => {
        expect(assumeRolesOf(task)).toEqual([]);
        expect(sts.calls.filter((c) => c.code === 'malformed-empty-result')).toHaveLength(1);
        await awsNothingLeft();
      },
    },
  ];

  describe('slow and malformed upstreams', () => {
    for (const c of cases) {
      it(`${c.name} -> 503 temporarily_unavailable${c.waitsForTimeout ? ` at the ${TIMEOUT_MS} ms timeout` : ''}, audited, no row live, nothing left upstream`, async () => {
        const agent = await agentToken();
        const startedAt = new Date(Date.now() - 1000);
        let r: Awaited<ReturnType<typeof postToken>>;
        let elapsed: number;
        c.set?.();
        try {
          const t0 = Date.now();
          r = await Promise.race([
            postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent.token, subject_token_type: ACCESS_TOKEN_TYPE, audience: c.issuer, scope: c.scope, requested_lifetime: '900' }),
            sleep(ANSWER_WITHIN_MS).then(() => {
              throw new Error(`no answer within ${ANSWER_WITHIN_MS} ms`);
            }),
          ]);
          elapsed = Date.now() - t0;
        } finally {
          c.reset?.();
        }

        // RFC 6749 §5.2: the issuer's own words only — no host, port, password, URL or upstream text.
        expect(r.status, r.text).toBe(503);
        expect(r.json).toEqual({ error: 'temporarily_unavailable', error_description: c.description });
        expect(r.text).not.toMatch(/127\.0\.0\.1|localhost|:\d{4,5}\b|postgres:\/\/|mysql:\/\/|ECONN|ETIMEDOUT|timeout expired|node_modules|\.[cm]?[jt]s:\d+/i);
        for (const secret of [ADMIN_PASSWORD, UPSTREAM_TEXT, OWN.secretAccessKey, 'STS-FAKE-MALFORMED', 'Bad Gateway', 'received invalid response']) expect(r.text).not.toContain(secret);

        // Bounded by the issuer's configured timeout: given up on at it, not waited out (nor retried).
        expect(elapsed, `answered after ${elapsed} ms`).toBeLessThan(ANSWER_WITHIN_MS);
        if (c.waitsForTimeout) {
          expect(elapsed, `answered after ${elapsed} ms`).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
          expect(elapsed, `answered after ${elapsed} ms`).toBeLessThan(TIMEOUT_MS + 1500);
        } else {
          expect(elapsed, `answered after ${elapsed} ms`).toBeLessThan(TIMEOUT_MS);
        }

        // One audit record, outcome error, for this request and task.
        const events = await broker.composed.db.auditEvent.findMany({ where: { requestId: r.headers.get('x-request-id')! } });
        expect(events).toHaveLength(1);
        expect(events[0]).toMatchObject({ action: 'token.exchange', outcome: 'error', target: c.issuer, taskId: agent.task, requestedScope: c.scope });
        expect(events[0]!.reason ?? '').not.toContain(ADMIN_PASSWORD);

        // The credential row: the database issuers plan one before the call and close it as failed; AWS writes none.
        const row = await broker.composed.db.credential.findUnique({ where: { id: events[0]!.credentialId! } });
        if (c.issuer.startsWith('aws')) expect(row).toBeNull();
        else expect(row).toMatchObject({ state: 'failed', taskId: agent.task, issuerName: c.issuer });
        expect(await broker.composed.db.credential.count({ where: { issuerName: c.issuer, state: { in: ['active', 'issuing', 'revoking'] }, issuedAt: { gte: startedAt } } })).toBe(0);

        await c.nothingLeft({ task: agent.task, responseText: r.text });
      });
    }

    it('no admin password, AWS secret or upstream text in the broker logs', () => {
      const logs = broker.logs.join('\n');
      for (const secret of [ADMIN_PASSWORD, OWN.secretAccessKey, UPSTREAM_TEXT, 'STS-FAKE-MALFORMED']) expect(logs).not.toContain(secret);
    });
  });
});
