import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { randomBytes } from 'node:crypto';
import { createTestPostgresDatabase } from '../support/databases.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { verifyAuditLog } from '../../src/audit/audit-verify.js';
import { unseal } from '../../src/lib/crypto.js';
import { holdIssuance } from '../support/issuer-deps.js';

const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';

interface AppDb {
  url: string;
  group: string;
  drop(): Promise<void>;
}

/** The target application database: a table the group role may read and one it may not. */
async function createAppDatabase(): Promise<AppDb> {
  const db = await createTestPostgresDatabase('agsts_app');
  const group = `agsts_test_reader_${randomBytes(4).toString('hex')}`;
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query('CREATE TABLE invoices (id int primary key, amount int)');
  await c.query('INSERT INTO invoices VALUES (1, 100), (2, 250)');
  await c.query('CREATE TABLE payroll (id int primary key, salary int)');
  await c.query(`CREATE ROLE ${c.escapeIdentifier(group)} NOLOGIN`);
  await c.query(`GRANT CONNECT ON DATABASE ${c.escapeIdentifier(new URL(db.url).pathname.slice(1))} TO ${c.escapeIdentifier(group)}`);
  await c.query(`GRANT USAGE ON SCHEMA public TO ${c.escapeIdentifier(group)}`);
  await c.query(`GRANT SELECT ON invoices TO ${c.escapeIdentifier(group)}`);
  await c.end();
  return {
    url: db.url,
    group,
    async drop() {
      await db.drop();
      const admin = new pg.Client({ connectionString: db.url.replace(/\/[^/]+$/, '/postgres') });
      await admin.connect();
      // Ephemeral roles left by a failed run, then the group role (roles are cluster-wide).
      const left = await admin.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'agse2e_%'");
      for (const r of left.rows as { rolname: string }[]) await admin.query(`DROP ROLE IF EXISTS ${admin.escapeIdentifier(r.rolname)}`);
      await admin.query(`DROP ROLE IF EXISTS ${admin.escapeIdentifier(group)}`);
      await admin.end();
    },
  };
}

/** The broker's configuration besides its store and the `ci` trust provider (startE2eBroker adds those). */
function brokerConfig(app: AppDb, signingThread: 'on' | 'off') {
  return {
    keys: { kek: { fromEnv: 'TEST_KEK' }, signingThread },
    credentialIssuers: [
      { name: 'tokens', type: 'agent-sts-jwt' },
      { name: 'app-pg', type: 'postgres', config: { adminUrl: { fromEnv: 'APP_DB_ADMIN_URL' }, roles: { read: app.group }, rolePrefix: 'agse2e_' } },
    ],
    targets: [
      { name: 'billing-api', resources: ['https://billing.test/'], issuer: 'tokens', scopes: ['invoices:read', 'invoices:write'] },
      { name: 'app-db', audiences: ['app-db'], issuer: 'app-pg', scopes: ['read'] },
    ],
    policy: {
      rules: [
        {
          id: 'invoice-agent',
          workload: { provider: 'ci', subject: 'test://invoice-agent', attributes: { team: 'payments' } },
          agentToken: { maxTtl: '30m' },
          grants: [
            { target: 'billing-api', scopes: ['invoices:read'], maxTtl: '5m' },
            { target: 'app-db', scopes: ['read'], maxTtl: '10m' },
          ],
        },
      ],
    },
  };
}

for (const store of ['sqlite', 'postgresql'] as const) {
  describe(`end-to-end exchange with the broker on ${store}`, () => {
    let e2e: E2eBroker;
    let app: AppDb;
    let broker: TestBroker;

    beforeAll(async () => {
      app = await createAppDatabase();
      e2e = await startE2eBroker({
        name: store === 'sqlite' ? 'agsts-e2e' : 'agsts_store',
        storage: store,
        ci: { audience: 'agent-sts-test', algorithms: ['RS256'], attributes: { team: 'team' } },
        env: { APP_DB_ADMIN_URL: app.url },
        // Both ways of signing go through the whole flow: on the event loop, and on the signing thread.
        config: brokerConfig(app, store === 'sqlite' ? 'on' : 'off'),
      });
      broker = e2e.broker;
    });
    afterAll(async () => {
      await e2e?.close();
      await app?.drop();
    });

    /** A start-up exchange: the agent token and its task. */
    const openTask = async () => {
      const attestation = await e2e.attest('invoice-agent', { team: 'payments' });
      const startup = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: attestation, subject_token_type: JWT_TYPE });
      expect(startup.status, startup.text).toBe(200);
      const agentToken = startup.json.access_token as string;
      return { agentToken, taskId: decodeJwt(agentToken).task_id as string };
    };

    it('attestation -> agent token -> PostgreSQL login -> task end -> login dead, all audited', async () => {
      // 1. startup exchange: workload attestation for an agent token
      const attestation = await e2e.attest('invoice-agent', { team: 'payments' });
      const startup = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: attestation, subject_token_type: JWT_TYPE });
      expect(startup.status, startup.text).toBe(200);
      expect(startup.headers.get('cache-control')).toBe('no-store');
      expect(startup.json).toMatchObject({ issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer' });
      const agentToken = startup.json.access_token as string;
      expect(decodeProtectedHeader(agentToken)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
      const claims = decodeJwt(agentToken);
      expect(claims).toMatchObject({ iss: broker.url, aud: broker.url, sub: 'test://invoice-agent' });
      expect(claims.exp! - claims.iat!).toBe(1800);
      expect(startup.json.expires_in).toBeGreaterThan(1790);
      const taskId = claims.task_id as string;
      expect(taskId).toMatch(/^t_/);
      expect(broker.composed.signingThread.active()).toBe(store === 'sqlite');

      // 2. per-tool-call: agent token for a PostgreSQL login
      const dbx = await postToken(broker.url, {
        grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE,
        audience: 'app-db', scope: 'read', requested_token_type: PG_CREDS,
      });
      expect(dbx.status, dbx.text).toBe(200);
      expect(dbx.json).toMatchObject({ issued_token_type: PG_CREDS, token_type: 'N_A', scope: 'read' });
      expect(dbx.json.expires_in).toBeGreaterThan(590);
      expect(dbx.json.expires_in).toBeLessThanOrEqual(600);
      const cred = dbx.json.credentials as { username: string; password: string; host: string; port: number; database: string };
      expect(cred.password).toBe(dbx.json.access_token);
      expect(cred.username).toMatch(/^agse2e_/);

      // 3. the login works for what the group role allows, and only that
      const conn = new pg.Client({ host: cred.host, port: cred.port, database: cred.database, user: cred.username, password: cred.password });
      await conn.connect();
      const rows = await conn.query('SELECT sum(amount)::int AS total FROM invoices');
      expect(rows.rows[0].total).toBe(350);
      await expect(conn.query('SELECT * FROM payroll')).rejects.toMatchObject({ code: '42501' });
      const connClosed = new Promise<void>((resolve) => conn.on('error', () => resolve()));

      // 4. an audience-bound access token for an internal API in the same task
      const api = await postToken(broker.url, {
        grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE,
        resource: 'https://billing.test/', scope: 'invoices:read',
      });
      expect(api.status, api.text).toBe(200);
      expect(decodeJwt(api.json.access_token as string)).toMatchObject({ aud: 'https://billing.test/', scope: 'invoices:read', task_id: taskId, sub: 'test://invoice-agent' });
      expect(api.json.expires_in).toBeLessThanOrEqual(300);

      // 5. end the task with its agent token
      const end = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agentToken}` } });
      expect(end.status).toBe(200);
      const receipt = (await end.json()) as { state: string; credentials: { id: string; target: string; fate: string; expires_at: string; revoked_at: string | null }[] };
      expect(receipt.state).toBe('ended');
      // The agent token and the login are revoked; the internal-API JWT is verified offline by the API,
      // so nothing can revoke it (agent-sts-jwt declares revocable: false): it expires naturally.
      expect(receipt.credentials.map((c) => c.fate)).toEqual(['revoked', 'revoked', 'expires_naturally']);
      // The answer says when each was revoked; the one that lapses on its own has no revocation time.
      expect(receipt.credentials.map((c) => c.revoked_at === null)).toEqual([false, false, true]);
      for (const c of receipt.credentials.slice(0, 2)) expect(Date.now() - Date.parse(c.revoked_at!)).toBeLessThan(60_000);
      const apiCred = receipt.credentials[2]!;
      expect(apiCred.target).toBe('billing-api');
      expect(Date.parse(apiCred.expires_at)).toBe(decodeJwt(api.json.access_token as string).exp! * 1000);
      // Ending it again changes nothing and writes no second record.
      const endAgain = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agentToken}` } });
      expect(endAgain.status).toBe(200);
      expect(((await endAgain.json()) as { credentials: { fate: string }[] }).credentials.map((c) => c.fate)).toEqual(['revoked', 'revoked', 'expires_naturally']);

      // 6. the open session was terminated and a new login fails
      await connClosed;
      await expect(conn.query('SELECT 1')).rejects.toThrow();
      const again = new pg.Client({ host: cred.host, port: cred.port, database: cred.database, user: cred.username, password: cred.password });
      await expect(again.connect()).rejects.toMatchObject({ code: expect.stringMatching(/^28/) });
      await again.end().catch(() => {});

      // 7. the ended task's agent token is refused
      const after = await postToken(broker.url, {
        grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'app-db', scope: 'read',
      });
      expect(after.status).toBe(400);
      expect(after.json.error).toBe('invalid_request');

      // 8. the audit log holds every step, via the auditor API
      const res = await fetch(`${broker.url}/v1/audit?limit=50`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
      expect(res.status).toBe(200);
      const { records } = (await res.json()) as { records: { action: string; outcome: string; reason: string | null; taskId: string; credentialId: string | null; credentialFingerprint: string | null }[] };
      const mine = records.filter((r) => r.taskId === taskId).map((r) => `${r.action}:${r.outcome}`).sort();
      expect(mine).toEqual([
        'credential.lapse:success', 'credential.revoke:success', 'credential.revoke:success',
        'task.end:success',
        'token.exchange:allow', 'token.exchange:allow', 'token.exchange:allow',
      ]);
      // Per credential, the record says which: "revoked at <time>" or "expires naturally at <its expiry>".
      const reasonOf = (id: string) => records.find((r) => r.credentialId === id && r.action.startsWith('credential.'))?.reason;
      // The task service reports the same revocation time (the DELETE answer carries fate and expires_at).
      const ended = await broker.composed.taskService.endTask(taskId, 'test', { requestId: 'test', now: new Date() });
      expect(ended?.credentials.map((c) => c.revokedAt === null)).toEqual([false, false, true]);
      for (const c of ended!.credentials.slice(0, 2)) {
        const reason = reasonOf(c.id);
        expect(reason).toBe(`revoked at ${c.revokedAt}`);
        expect(Date.now() - Date.parse(c.revokedAt!)).toBeLessThan(60_000);
      }
      expect(reasonOf(apiCred.id)).toBe(`expires naturally at ${new Date(apiCred.expires_at).toISOString()} (issuer tokens cannot revoke it)`);
      expect(records.some((r) => r.action === 'token.exchange' && r.outcome === 'deny')).toBe(true);
      const unauth = await fetch(`${broker.url}/v1/audit`, { headers: { authorization: 'Bearer wrong' } });
      expect(unauth.status).toBe(401);

      // 9. the chain verifies; editing one row breaks it
      const db = broker.composed.db;
      await broker.composed.audit.drain();
      const ok = await verifyAuditLog(db);
      expect(ok.problems).toEqual([]);
      expect(ok.records).toBeGreaterThanOrEqual(8);
      const victim = await db.auditEvent.findFirstOrThrow({ where: { action: 'token.exchange', outcome: 'allow' }, orderBy: { seq: 'asc' } });
      await db.auditEvent.update({ where: { id: victim.id }, data: { workloadSubject: 'test://someone-else' } });
      const bad = await verifyAuditLog(db);
      expect(bad.ok).toBe(false);
      expect(bad.problems[0]).toMatchObject({ seq: victim.seq, id: victim.id });
      expect(bad.problems[0]!.problem).toMatch(/edited/);
      await db.auditEvent.update({ where: { id: victim.id }, data: { workloadSubject: victim.workloadSubject } });
      expect((await verifyAuditLog(db)).ok).toBe(true);

      // 10. no token, password or key material produced here reached a log line or an audit record
      const kek = Buffer.from(broker.env.TEST_KEK!, 'base64');
      const keyRows = await db.signingKey.findMany();
      const privateDs = keyRows.map((k) => (JSON.parse(unseal(kek, k.sealedPrivateKey, `signing-key:${k.kid}`)) as { d: string }).d);
      const secrets = [attestation, agentToken, cred.password, api.json.access_token as string, broker.env.TEST_KEK!, broker.env.TEST_AUDITOR_TOKEN!, ...privateDs, ...keyRows.map((k) => k.sealedPrivateKey)];
      const auditText = JSON.stringify(await db.auditEvent.findMany());
      expect(broker.logs.length).toBeGreaterThan(5);
      for (const secret of secrets) {
        expect(secret.length).toBeGreaterThan(20);
        // Also the JWT signature part alone, which is what a partial leak would show.
        const probes = secret.split('.').length === 3 ? [secret, secret.split('.')[2]!] : [secret];
        for (const p of probes) {
          expect(broker.logs.find((l) => l.includes(p))).toBeUndefined();
          expect(auditText.includes(p)).toBe(false);
        }
      }
    });

    it('a signature that fails after the record is written: server_error, the allow record followed by credential.fail, the row failed, the chain intact', async () => {
      const { agentToken, taskId } = await openTask();

      // The signer fails (a key the platform can no longer use, say) after the exchange was decided
      // and its record sent: the stand-in thread refuses every signature.
      const failure = `signing key unusable ${randomBytes(4).toString('hex')}`;
      broker.composed.keyStore.useSigningThread({ offer: () => Promise.reject(new Error(failure)), active: () => true, sample: () => {}, close: async () => {} });
      let res: Awaited<ReturnType<typeof postToken>>;
      try {
        res = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://billing.test/', scope: 'invoices:read' });
      } finally {
        broker.composed.keyStore.useSigningThread(broker.composed.signingThread);
      }
      expect(res.status).toBe(500);
      expect(res.json).toEqual({ error: 'server_error', error_description: 'internal error; see the server log' });
      expect(res.text).not.toContain(failure);
      expect(res.headers.get('cache-control')).toBe('no-store');

      await broker.composed.audit.drain();
      const db = broker.composed.db;
      const records = await db.auditEvent.findMany({ where: { taskId, action: { not: 'token.exchange' }, NOT: { credentialId: null } }, orderBy: { seq: 'asc' } });
      const allow = await db.auditEvent.findFirstOrThrow({ where: { taskId, action: 'token.exchange', target: 'billing-api' } });
      expect(allow.outcome).toBe('allow');
      expect(records.map((r) => `${r.action}:${r.outcome}`)).toEqual(['credential.fail:failure']);
      const fail = records[0]!;
      expect(fail).toMatchObject({ requestId: allow.requestId, credentialId: allow.credentialId, credentialFingerprint: allow.credentialFingerprint, target: 'billing-api', workloadSubject: 'test://invoice-agent', issuerName: 'tokens' });
      expect(fail.seq).toBeGreaterThan(allow.seq);
      expect(fail.reason).toBe(`not signed: ${failure}; nothing was handed out`);
      const row = await db.credential.findUniqueOrThrow({ where: { id: allow.credentialId! } });
      expect(row).toMatchObject({ state: 'failed', lastError: `not signed: ${failure}` });
      expect((await verifyAuditLog(db)).problems).toEqual([]);

      // The broker signs again once the signer is back.
      const again = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://billing.test/', scope: 'invoices:read' });
      expect(again.status, again.text).toBe(200);
    });

    it('a task ended while its PostgreSQL login is being created: the login is dropped, never handed out, and the refusal audited', async () => {
      const { agentToken, taskId } = await openTask();

      // The target is slow: the login is created only after the task has ended (its row is
      // `issuing` meanwhile, and the task's end revokes what it finds: no role yet).
      const held = holdIssuance(broker.composed.issuers.get('app-pg')!);
      try {
        const pending = postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'app-db', scope: 'read', requested_token_type: PG_CREDS });
        await held.atTarget;
        const end = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agentToken}` } });
        expect(end.status).toBe(200);
        expect(((await end.json()) as { state: string }).state).toBe('ended');
        held.release();
        const res = await pending;
        expect(res.status, res.text).toBe(400);
        expect(res.json).toEqual({ error: 'invalid_request', error_description: 'the task ended while this credential was being issued; it was not handed out' });
        expect(res.headers.get('cache-control')).toBe('no-store');
      } finally {
        held.restore();
      }
      // The login existed at the target for a moment; now it is gone.
      expect(held.handles).toHaveLength(1);
      const { role } = held.handles[0] as { role: string };
      const admin = new pg.Client({ connectionString: app.url });
      await admin.connect();
      try {
        expect((await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount).toBe(0);
      } finally {
        await admin.end();
      }
      await broker.composed.audit.drain();
      const db = broker.composed.db;
      const row = await db.credential.findFirstOrThrow({ where: { taskId, target: 'app-db' } });
      expect(row.state).toBe('revoked');
      const refused = await db.auditEvent.findFirstOrThrow({ where: { taskId, action: 'token.exchange', target: 'app-db' } });
      expect(refused).toMatchObject({ outcome: 'deny', credentialId: row.id });
      expect(refused.reason).toMatch(new RegExp(`task ${taskId} was ended when the credential was to be recorded; revoked at the target`));
      expect(await db.task.findUniqueOrThrow({ where: { id: taskId } })).toMatchObject({ state: 'ended' });
      expect((await verifyAuditLog(db)).problems).toEqual([]);
    });
  });
}
