// Two replicas on one PostgreSQL store: a task ended, a token revoked or an identity killed through
// replica A is reported inactive by replica B's introspection, and refused by B's token endpoint,
// within 1 s (each replica polls the store every REVOCATION_POLL_MS = 500 ms).
//
// Timing, honestly: A answers only after the change is committed. B's poll runs every 500 ms and
// takes a few ms, so B learns of it at most ~500 ms + one poll query later; the test looks every
// 50 ms. The bound asserted is the promise, 1000 ms, which leaves ~450 ms for the poll query, the
// look interval and timer jitter on a loaded machine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { createTestPostgresDatabase } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, startBroker, TEST_ADMIN_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const ISSUER = 'https://agent-sts.replicas.test';
const RS_SECRET = 'replica-rs-secret-0123456789';
const BOUND_MS = 1000;

describe('revocation across replicas (PostgreSQL store)', () => {
  let workloads: FakeIssuer;
  let a: TestBroker;
  let b: TestBroker;
  let drop: () => Promise<void>;
  /** Listening address (the issuer URL is the shared public one). */
  const addr = (x: TestBroker) => {
    const s = x.composed.app.server.address();
    if (!s || typeof s !== 'object') throw new Error('not listening');
    return `http://127.0.0.1:${s.port}`;
  };

  const config = (url: string) => ({
    storage: { url },
    server: { host: '127.0.0.1', port: 0, issuer: ISSUER },
    auth: {
      admins: [{ name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' } }],
      introspectionClients: [{ name: 'rs', token: { fromEnv: 'RS_SECRET' } }],
    },
    trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [{ name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] }],
    policy: { rules: [{ id: 'agents', workload: { subjectPattern: 'test://.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '5m' }] }] },
  });

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    const s = await createTestPostgresDatabase('agsts_replicas');
    drop = s.drop;
    a = await startBroker(config(s.url), { env: { RS_SECRET } });
    // Same store, same key-encryption key: B loads A's signing key and verifies A's tokens.
    b = await startBroker(config(s.url), { env: { RS_SECRET, TEST_KEK: a.env.TEST_KEK } });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
    await workloads?.close();
    await drop?.();
  });

  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const postForm = async (base: string, path: string, fields: Record<string, string>, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: form(fields) });
    const text = await res.text();
    return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const exchange = (base: string, fields: Record<string, string>) => postForm(base, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, ...fields });
  const startup = async (sub: string) => {
    const r = await exchange(addr(a), { subject_token: await workloads.sign({ sub, aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return r.json.access_token as string;
  };
  const activeAtB = async (token: string) => {
    const r = await postForm(addr(b), '/oauth2/introspect', { token }, { authorization: `Bearer ${RS_SECRET}` });
    expect(r.status).toBe(200);
    return r.json.active as boolean;
  };
  /** Milliseconds from `since` until B reports the token inactive (looks every 50 ms, gives up at 3 s). */
  const inactiveAtBAfter = async (token: string, since: number) => {
    while (Date.now() - since < 3000) {
      if (!(await activeAtB(token))) return Date.now() - since;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('B still reports the token active after 3 s');
  };
  const useAtB = (agent: string) => exchange(addr(b), { subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://api.test/', scope: 'read' });

  it('both replicas serve the same issuer and accept each other\'s tokens', async () => {
    const agent = await startup('planner');
    expect(decodeJwt(agent).iss).toBe(ISSUER);
    expect(await activeAtB(agent)).toBe(true);
    expect((await useAtB(agent)).status).toBe(200);
  });

  it('a task ended through A (DELETE /v1/tasks/{id}) is inactive at B within 1 s, and B refuses its agent token', async () => {
    const agent = await startup('planner');
    const access = (await useAtB(agent)).json.access_token as string;
    expect(await activeAtB(agent)).toBe(true);
    const taskId = decodeJwt(agent).task_id as string;
    const end = await fetch(`${addr(a)}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent}` } });
    expect(end.status).toBe(200);
    const t0 = Date.now();
    const ms = await inactiveAtBAfter(agent, t0);
    expect(ms).toBeLessThanOrEqual(BOUND_MS);
    expect(await activeAtB(access)).toBe(false); // the access token of that task too
    const refused = await useAtB(agent);
    expect(refused.status).toBe(400);
    expect(refused.json.error).toBe('invalid_request');
  });

  it('an agent token revoked through A (/oauth2/revoke) is inactive at B within 1 s, and B refuses it', async () => {
    const agent = await startup('planner');
    expect(await activeAtB(agent)).toBe(true);
    expect((await postForm(addr(a), '/oauth2/revoke', { token: agent })).status).toBe(200);
    const ms = await inactiveAtBAfter(agent, Date.now());
    expect(ms).toBeLessThanOrEqual(BOUND_MS);
    const refused = await useAtB(agent);
    expect(refused.status).toBe(400);
    expect(refused.json.error).toBe('invalid_request');
  });

  it('an identity killed through A is refused by B within 1 s; tasks B opened meanwhile are ended too; restore works on B', async () => {
    const agent = await startup('rogue');
    const path = `/v1/admin/identities/${encodeURIComponent('test://rogue')}`;
    const startAtB = async () => exchange(addr(b), { subject_token: await workloads.sign({ sub: 'rogue', aud: 'sts' }), subject_token_type: JWT_TYPE });
    const t0 = Date.now();
    const killing = fetch(`${addr(a)}${path}/kill`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'test' }) });
    // Until B's next poll, B still starts tasks for the subject: the kill's second pass ends them.
    let refusedAfter: number | undefined;
    let startedAtB = 0;
    while (refusedAfter === undefined && Date.now() - t0 < 3000) {
      const r = await startAtB();
      if (r.status === 200) startedAtB++;
      else {
        expect(r.json.error).toBe('invalid_request');
        refusedAfter = Date.now() - t0;
      }
    }
    // + the kill's own audit record and row write before the block exists anywhere
    expect(refusedAfter).toBeLessThanOrEqual(BOUND_MS + 100);
    const kill = await killing;
    expect(kill.status).toBe(200);
    const summary = (await kill.json()) as { tasks_ended: number };
    expect(summary.tasks_ended).toBe(1 + startedAtB);
    const open = await a.composed.db.task.count({ where: { workloadSubject: 'test://rogue', state: { not: 'ended' } } });
    expect(open).toBe(0);
    expect(await activeAtB(agent)).toBe(false);

    const restore = await fetch(`${addr(a)}${path}/restore`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(restore.status).toBe(200);
    const t1 = Date.now();
    let ok = false;
    while (!ok && Date.now() - t1 < 3000) {
      ok = (await startAtB()).status === 200;
      if (!ok) await new Promise((r) => setTimeout(r, 50));
    }
    expect(ok).toBe(true);
    expect(Date.now() - t1).toBeLessThanOrEqual(BOUND_MS + 100); // + one exchange round trip per look
  });
});
