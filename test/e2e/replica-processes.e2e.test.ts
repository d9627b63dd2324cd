// Two real broker processes (`agent-sts serve`) on one PostgreSQL store: exactly one of them runs
// the sweep, a task ended through one is refused by the other within 1 s, and when the sweep
// leader is killed with SIGKILL the other takes the sweep over once the lease has expired.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, dropPgRolesWithPrefix, PG_ADMIN_URL, pgRoleExists, type TestPostgresDatabase } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { startBrokerProcess, writeProcessConfig, type BrokerProcess } from '../support/broker-process.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE } from '../support/broker.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

const PREFIX = `agsrp${randomBytes(2).toString('hex')}_`;
const LEADS = 'this replica now runs the sweep';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('two broker processes on one PostgreSQL store', { timeout: 120_000 }, () => {
  let workloads: FakeIssuer;
  let store: TestPostgresDatabase;
  let db: Database;
  let dir: string;
  const brokers: Record<'a' | 'b', BrokerProcess | undefined> = { a: undefined, b: undefined };
  const env = { RP_KEK: randomBytes(32).toString('base64'), RP_PG_ADMIN: PG_ADMIN_URL };

  const configFor = (name: string) =>
    writeProcessConfig(dir, name, {
      // One public issuer for both, as behind a load balancer: a token minted by one is valid at the other.
      server: { issuer: 'https://agent-sts.replicas.test' },
      storage: { url: store.url },
      keys: { kek: { fromEnv: 'RP_KEK' } },
      logging: { level: 'info' },
      sweep: { interval: '1s' },
      trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
      credentialIssuers: [{ name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'RP_PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } }],
      targets: [{ name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] }],
      policy: { rules: [{ id: 'agent', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '5m' }] }] },
    });

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    store = await createTestPostgresDatabase('agsts_replicas');
    dir = mkdtempSync(join(tmpdir(), 'agsts-replicas-'));
    brokers.a = await startBrokerProcess(await configFor('a'), env);
    brokers.b = await startBrokerProcess(await configFor('b'), env);
    db = await openDatabase(store.url);
  });
  afterAll(async () => {
    await brokers.a?.stop();
    await brokers.b?.stop();
    await db?.close();
    await workloads?.close();
    await store?.drop();
    await dropPgRolesWithPrefix(PREFIX);
    rmSync(dir, { recursive: true, force: true });
  });

  const leaders = () => (['a', 'b'] as const).filter((n) => brokers[n]!.output().includes(LEADS));

  it('exactly one process runs the sweep', async () => {
    await sleep(3000);
    expect(leaders()).toHaveLength(1);
    const lease = await db.db.lease.findUniqueOrThrow({ where: { name: 'sweep' } });
    expect(lease.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('a task ended through one process is refused by the other within 1 s, and its login is dropped', async () => {
    const addr = (p: BrokerProcess) => /agent-sts listening on (\S+) /.exec(p.output())![1]!;
    const [a, b] = [addr(brokers.a!), addr(brokers.b!)];
    const start = await postToken(a, { grant_type: TOKEN_EXCHANGE, subject_token: await workloads.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE });
    expect(start.status, start.text).toBe(200);
    const agent = start.json.access_token as string;
    const loginAt = (url: string) =>
      postToken(url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'db', scope: 'read', requested_token_type: 'urn:agent-sts:token-type:postgres-credentials' });
    // The other process accepts the token (same issuer, same keys in the shared store).
    const login = await loginAt(b);
    expect(login.status, login.text).toBe(200);
    const role = (login.json.credentials as { username: string }).username;

    const end = await fetch(`${a}/v1/tasks/${String(start.json.task_id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent}` } });
    // 200: every credential revoked at once; 202: a revocation is queued (a loaded machine can push
    // the DROP ROLE past its statement timeout) and the sweep leader retries it.
    expect([200, 202]).toContain(end.status);
    const ended = Date.now();
    // B refuses the agent token within 1 s (its revocation poll runs twice a second)...
    let refusedAfter = -1;
    while (Date.now() - ended < 3000) {
      if ((await loginAt(b)).status === 400) {
        refusedAfter = Date.now() - ended;
        break;
      }
      await sleep(50);
    }
    expect(refusedAfter).toBeGreaterThanOrEqual(0);
    expect(refusedAfter).toBeLessThanOrEqual(1000);
    // ...and the login B issued is gone at the target (at once, or after the queued retry).
    while ((await pgRoleExists(role)) && Date.now() - ended < 20_000) await sleep(200);
    expect(await pgRoleExists(role)).toBe(false);
  });

  it('when the sweep leader is killed, the other process takes the sweep over after the lease expires', async () => {
    const [leader] = leaders();
    const other = leader === 'a' ? 'b' : 'a';
    const before = brokers[other]!.output().split(LEADS).length - 1;
    const killedAt = Date.now();
    brokers[leader!]!.child.kill('SIGKILL');
    await brokers[leader!]!.exited;
    let tookOver = 0;
    while (Date.now() - killedAt < 15_000) {
      if (brokers[other]!.output().split(LEADS).length - 1 > before) {
        tookOver = Date.now() - killedAt;
        break;
      }
      await sleep(100);
    }
    expect(tookOver, 'the other process never took the sweep over').toBeGreaterThan(0);
    // Not before the dead leader's lease (3 x sweep.interval = 3 s) could have run out.
    expect(tookOver).toBeGreaterThan(1000);
    const lease = await db.db.lease.findUniqueOrThrow({ where: { name: 'sweep' } });
    expect(lease.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });
});
