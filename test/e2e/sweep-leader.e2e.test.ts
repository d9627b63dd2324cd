// Two brokers on one PostgreSQL store: the sweep runs on exactly one of them at a time, the other
// takes over once the holder's lease expires; the idle timeout against a real PostgreSQL target;
// a stuck revocation visible in /readyz and `agent-sts revocations list`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, PG_ADMIN_URL, type TestPostgresDatabase, pgRoleExists } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { JWT_TYPE, ACCESS_TOKEN_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { describeRun, runAgentSts } from '../support/cli.js';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase } from '../../src/storage/prisma-client.js';
import { Secret } from '../../src/core/secret.js';
import { sealHandle } from '../../src/tasks/task-service.js';

const PREFIX = `agsl${randomBytes(2).toString('hex')}_`;
const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Run { broker: string; start: number; end: number }

describe('sweep leader across two brokers on one PostgreSQL store', () => {
  let workloads: FakeIssuer;
  let store: TestPostgresDatabase;
  const brokers: Record<string, TestBroker> = {};
  const runs: Run[] = [];
  const kekB64 = randomBytes(32).toString('base64');

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    store = await createTestPostgresDatabase('agsts_leader');
    await applyMigrations(store.url);
    for (const name of ['a', 'b']) {
      const b = await startBroker({
        storage: { url: store.url },
        trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
        credentialIssuers: [{ name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } }],
        targets: [{ name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] }],
        policy: { rules: [{ id: 'agent', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }] }] },
      }, { env: { PG_ADMIN: PG_ADMIN_URL, TEST_KEK: kekB64 } });
      // Test hook: the sweep job calls taskService.sweep, only on the lease holder; record each run.
      const ts = b.composed.taskService;
      const sweep = ts.sweep.bind(ts);
      ts.sweep = async (...args) => {
        const run: Run = { broker: name, start: Date.now(), end: Infinity };
        runs.push(run);
        try {
          return await sweep(...args);
        } finally {
          run.end = Date.now();
        }
      };
      brokers[name] = b;
    }
  });

  afterAll(async () => {
    for (const b of Object.values(brokers)) await b.close().catch(() => {});
    await workloads?.close();
    await store?.drop();
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    for (const r of (await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1', [PREFIX])).rows)
      await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(r.rolname)}`);
    await c.end();
  });

  const overlaps = () => runs.filter((x) => runs.some((y) => y.broker !== x.broker && x.start < y.end && y.start < x.end));

  it('the sweep runs on exactly one broker; when it dies without releasing, the other takes over after the lease expires', async () => {
    await sleep(4000);
    const leaders = new Set(runs.map((r) => r.broker));
    expect(leaders.size, JSON.stringify(runs)).toBe(1);
    expect(runs.length).toBeGreaterThanOrEqual(2);
    const holder = [...leaders][0]!;
    const other = holder === 'a' ? 'b' : 'a';
    const lease = await brokers[holder]!.composed.db.lease.findUniqueOrThrow({ where: { name: 'sweep' } });
    expect(lease.holder).toBe(brokers[holder]!.composed.leadership.holder);

    const holderIds = { [holder]: brokers[holder]!.composed.leadership.holder, [other]: brokers[other]!.composed.leadership.holder };
    // Simulate a crash: stop the holder without handing the lease over.
    brokers[holder]!.composed.leadership.release = async () => {};
    await brokers[holder]!.close();
    const stoppedAt = Date.now();
    const leaseEnd = (await brokers[other]!.composed.db.lease.findUniqueOrThrow({ where: { name: 'sweep' } })).expiresAt.getTime();
    const deadline = Date.now() + 8000;
    while (!runs.some((r) => r.broker === other) && Date.now() < deadline) await sleep(100);
    const first = runs.find((r) => r.broker === other);
    expect(first, 'the other broker took over').toBeDefined();
    expect(first!.start).toBeGreaterThanOrEqual(leaseEnd - 50); // not before the lease expired
    expect(first!.start - stoppedAt).toBeLessThan(6000); // ttl 3 s + one heartbeat
    expect(overlaps()).toEqual([]);
    // Each start of leadership is in the audit log, naming the replica (the crashed one never stepped down).
    await brokers[other]!.composed.audit.drain();
    const recs = await brokers[other]!.composed.db.auditEvent.findMany({ where: { action: { startsWith: 'sweep.leader.' } }, orderBy: { time: 'asc' } });
    expect(recs.map((r) => [r.action, r.outcome, r.reason?.split(' ')[1]])).toEqual([
      ['sweep.leader.start', 'success', holderIds[holder]],
      ['sweep.leader.start', 'success', holderIds[other]],
    ]);
    expect(recs[1]!.reason).toMatch(/ runs the sweep and start-up recovery: until \d{4}-.* unless renewed$/);
    delete brokers[holder];
  });

  it('ends an idle task (lastActivityAt + idleTimeoutSeconds past) and drops its PostgreSQL login', async () => {
    const b = Object.values(brokers)[0]!;
    const agent = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: await workloads.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(agent.status, agent.text).toBe(200);
    const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent.json.access_token as string, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
    expect(r.status, r.text).toBe(200);
    const role = (r.json.credentials as { username: string }).username;
    const taskId = r.json.task_id as string;
    expect(await pgRoleExists(role)).toBe(true);
    const db = b.composed.db;
    // Within the timeout: stays open.
    await db.task.update({ where: { id: taskId }, data: { idleTimeoutSeconds: 60, lastActivityAt: new Date() } });
    await sleep(1500);
    expect((await db.task.findUniqueOrThrow({ where: { id: taskId } })).state).toBe('open');
    // Idle for longer than its timeout: the sweep ends it.
    await db.task.update({ where: { id: taskId }, data: { idleTimeoutSeconds: 1, lastActivityAt: new Date(Date.now() - 5000) } });
    const deadline = Date.now() + 6000;
    while ((await db.task.findUniqueOrThrow({ where: { id: taskId } })).state !== 'ended' && Date.now() < deadline) await sleep(200);
    expect(await db.task.findUniqueOrThrow({ where: { id: taskId } })).toMatchObject({ state: 'ended', endReason: 'idle timeout' });
    expect(await pgRoleExists(role)).toBe(false);
  });

  it('a revocation that keeps failing stays queued and shows in /readyz (still ready) and `agent-sts revocations list`', async () => {
    const b = Object.values(brokers)[0]!;
    const db = b.composed.db;
    const taskId = `t_${randomBytes(8).toString('hex')}`;
    const credId = `c_${randomBytes(8).toString('hex')}`;
    await db.task.create({ data: { id: taskId, state: 'ending', providerName: 'ci', workloadSubject: 'test://agent', deadline: new Date(Date.now() + 600_000) } });
    // Its issuer instance is gone: revoke() cannot succeed, so the credential waits in the queue.
    await db.credential.create({
      data: { id: credId, taskId, issuerName: 'retired-pg', issuerType: 'postgres', tokenType: PG_CREDS, target: 'db', state: 'revoking', fingerprint: 'sha256:x', expiresAt: new Date(Date.now() + 600_000), sealedRevocationHandle: sealHandle(new Secret(Buffer.from(kekB64, 'base64')), credId, { role: `${PREFIX}secretname` }) },
    });
    const deadline = Date.now() + 6000;
    while ((await db.credential.findUniqueOrThrow({ where: { id: credId } })).revokeAttempts < 1 && Date.now() < deadline) await sleep(200);
    const row = await db.credential.findUniqueOrThrow({ where: { id: credId } });
    expect(row).toMatchObject({ state: 'revoking', revokeAttempts: 1 });
    expect(row.nextRevokeAt!.getTime()).toBeGreaterThan(Date.now());
    const ready = await fetch(`${b.url}/readyz`);
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as { revocations: { pending: number; oldestPendingSince: string | null } };
    expect(body.revocations.pending).toBe(1);
    expect(Date.parse(body.revocations.oldestPendingSince!)).toBeLessThanOrEqual(Date.now());
    await b.composed.audit.drain();
    expect(await db.auditEvent.count({ where: { credentialId: credId, outcome: 'failure' } })).toBe(1);

    const dir = mkdtempSync(join(tmpdir(), 'agsts-leader-cli-'));
    try {
      const file = join(dir, 'agent-sts.yaml');
      writeFileSync(file, JSON.stringify({ storage: { url: store.url }, keys: { kek: { fromEnv: 'TEST_KEK' } } }));
      const list = await runAgentSts(['revocations', 'list', '--config', file], { cwd: dir, env: { TEST_KEK: kekB64 } });
      expect(list.code, describeRun(list)).toBe(0);
      expect(list.stdout).toContain(credId);
      // At least the attempt seen above: on a slow machine the CLI can start after the next retry (~5 s later).
      expect(list.stdout).toMatch(/issuer retired-pg\s+attempts [1-9]\d* .*last error: issuer instance retired-pg is no longer configured/);
      expect(list.stdout).not.toContain('secretname'); // the handle is never shown
      expect(list.stderr).toMatch(/1 pending revocation/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await db.credential.update({ where: { id: credId }, data: { state: 'failed' } });
  });

  it('an orderly shutdown hands the sweep over at once and says so in the audit log', async () => {
    const [name, b] = Object.entries(brokers)[0]!;
    const holder = b.composed.leadership.holder;
    const db = await openDatabase(store.url);
    try {
      await b.close();
      delete brokers[name];
      const last = await db.db.auditEvent.findFirstOrThrow({ where: { action: { startsWith: 'sweep.leader.' } }, orderBy: { time: 'desc' } });
      expect(last).toMatchObject({ action: 'sweep.leader.stop', outcome: 'success', reason: `replica ${holder} no longer runs the sweep and start-up recovery: released at shutdown` });
      expect((await db.db.lease.findUniqueOrThrow({ where: { name: 'sweep' } })).expiresAt.getTime()).toBeLessThanOrEqual(Date.now());
    } finally {
      await db.close();
    }
  });
});
