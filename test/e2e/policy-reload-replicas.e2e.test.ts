// Policy hot reload across replicas: two real broker processes (`agent-sts serve`) on one
// PostgreSQL store. A policy uploaded through A's admin API is in force on both within seconds; an
// invalid one is refused (400, with line and reason) and both still decide with the old set; once
// it is deleted both refuse again.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, type TestPostgresDatabase } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { runAgentSts, ROOT } from '../support/cli.js';
import { startBrokerProcess, writeProcessConfig, type BrokerProcess } from '../support/broker-process.js';
import { JWT_TYPE, postToken, TOKEN_EXCHANGE } from '../support/broker.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';
import { sha256Hex } from '../../src/lib/crypto.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ADMIN = `admin-${randomBytes(12).toString('hex')}`;

const REPORTS = [
  'apiVersion: agent-sts.dev/v2',
  'kind: Policy',
  'metadata: { name: reports, owners: [data@example.com] }',
  'spec:',
  '  rules:',
  '    - name: agent',
  "      workloads: [{ provider: ci, subject: 'test://agent' }]",
  '      grants: [{ target: reports, scopes: [read] }]',
  '',
].join('\n');

describe('policy hot reload on two broker processes sharing PostgreSQL', { timeout: 90_000 }, () => {
  let workloads: FakeIssuer;
  let store: TestPostgresDatabase;
  let dir: string;
  let db: Database;
  const brokers: Record<'a' | 'b', BrokerProcess | undefined> = { a: undefined, b: undefined };
  const env = { RP_KEK: randomBytes(32).toString('base64'), RP_ADMIN: ADMIN };

  const configFor = (name: string) =>
    writeProcessConfig(dir, name, {
      server: { issuer: 'https://agent-sts.policy-replicas.test', providerReloadInterval: '1s' },
      storage: { url: store.url },
      keys: { kek: { fromEnv: 'RP_KEK' } },
      logging: { level: 'info' },
      auth: { admins: [{ name: 'ops', token: { fromEnv: 'RP_ADMIN' } }] },
      trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}' } }],
      credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
      targets: [
        { name: 'api', audiences: ['api'], issuer: 'tokens', scopes: ['read'] },
        { name: 'reports', audiences: ['reports'], issuer: 'tokens', scopes: ['read'] },
      ],
      policy: { rules: [{ id: 'agent', workload: { subject: 'test://agent' }, grants: [{ target: 'api', scopes: ['read'] }] }] },
    });

  beforeAll(async () => {
    workloads = await startFakeOidcIssuer();
    store = await createTestPostgresDatabase('agsts_policy_replicas');
    dir = mkdtempSync(join(tmpdir(), 'agsts-policy-replicas-'));
    // One after the other: the first applies the migrations.
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
    rmSync(dir, { recursive: true, force: true });
  });

  const addr = (n: 'a' | 'b') => /agent-sts listening on (\S+) /.exec(brokers[n]!.output())![1]!;
  const exchange = async (n: 'a' | 'b', audience: string) =>
    (await postToken(addr(n), { grant_type: TOKEN_EXCHANGE, subject_token: await workloads.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE, audience, scope: 'read' })).status;
  const admin = (n: 'a' | 'b', method: string, path: string, body?: string) =>
    fetch(`${addr(n)}/v1/admin/policies${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { 'content-type': 'application/yaml' } : {}) }, body });
  const versionAt = async (n: 'a' | 'b') => ((await (await admin(n, 'GET', '')).json()) as { version: string }).version;
  /** Waits until both processes answer `status` for `audience`; returns how long that took. */
  const bothAnswer = async (audience: string, status: number) => {
    const start = Date.now();
    while (Date.now() - start < 10_000) {
      if ((await exchange('a', audience)) === status && (await exchange('b', audience)) === status) return Date.now() - start;
      await sleep(100);
    }
    throw new Error(`both processes did not answer ${status} for ${audience} within 10 s`);
  };

  it('a policy uploaded through A is in force on A at once and on B within seconds', async () => {
    expect(await exchange('a', 'reports')).toBe(400);
    expect(await exchange('b', 'reports')).toBe(400);
    const put = await admin('a', 'PUT', '/reports', REPORTS);
    expect(put.status, await put.clone().text()).toBe(200);
    const { version } = (await put.json()) as { version: string };
    expect(await exchange('a', 'reports')).toBe(200);
    expect(await bothAnswer('reports', 200)).toBeLessThan(5000);
    expect(await versionAt('b')).toBe(version);
    const status = (await (await admin('b', 'GET', '')).json()) as { documents: { name: string; source: string; updated_by?: string }[] };
    expect(status.documents).toContainEqual(expect.objectContaining({ name: 'reports', source: 'api', updated_by: 'bootstrap:ops' }));
    // Audited with who and the content's hash, never the content.
    const audit = await db.db.auditEvent.findMany({ where: { action: 'admin.policy.put' } });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ outcome: 'allow', policyId: 'reports', reason: `by bootstrap:ops; sha256 ${sha256Hex(REPORTS)}` });
    expect(JSON.stringify(audit)).not.toContain('test://agent');
  });

  it('an invalid policy is refused with line and reason, and both still decide with the old set', async () => {
    const before = await versionAt('a');
    // Drops the grant and adds a condition that does not parse: were it applied, reports would be refused.
    const bad = REPORTS.replace("      grants: [{ target: reports, scopes: [read] }]", "      when: 'request.lifetime >'\n      grants: []");
    const put = await admin('b', 'PUT', '/reports', bad);
    expect(put.status).toBe(400);
    expect(put.headers.get('content-type')).toContain('application/problem+json');
    expect(((await put.json()) as { detail: string }).detail).toContain('api:reports:8: spec.rules[0].when: condition does not parse');
    const ceiling = await admin('a', 'PUT', '/reports', 'apiVersion: agent-sts.dev/v2\nkind: PolicyCeiling\nmetadata: { name: reports, owners: [x] }\nspec: { limits: [] }\n');
    expect(ceiling.status).toBe(400);
    await sleep(1500); // a poll on each
    expect(await exchange('a', 'reports')).toBe(200);
    expect(await exchange('b', 'reports')).toBe(200);
    expect(await versionAt('a')).toBe(before);
    expect(await versionAt('b')).toBe(before);
  });

  it('once deleted, both refuse again', async () => {
    const del = await admin('a', 'DELETE', '/reports');
    expect(del.status, await del.clone().text()).toBe(200);
    expect(await bothAnswer('reports', 400)).toBeLessThan(5000);
    expect(await exchange('b', 'api')).toBe(200);
    expect((await admin('b', 'DELETE', '/reports')).status).toBe(404);
  });

  it('the CLI puts, lists and removes a policy beside the running processes (principal cli:<user>)', async () => {
    const file = join(dir, 'reports.yaml');
    writeFileSync(file, REPORTS);
    const cfg = join(dir, 'a.json');
    const put = await runAgentSts(['policy', 'put', file, '--config', cfg], { cwd: ROOT, env });
    expect(put.code, put.stderr).toBe(0);
    expect(await bothAnswer('reports', 200)).toBeLessThan(5000);
    const status = await runAgentSts(['policy', 'status', '--config', cfg], { cwd: ROOT, env });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^reports\s+Policy\s+api\s+[0-9a-f]{16} by cli:/m);
    const rm = await runAgentSts(['policy', 'rm', 'reports', '--config', cfg], { cwd: ROOT, env });
    expect(rm.code, rm.stderr).toBe(0);
    expect(await bothAnswer('reports', 400)).toBeLessThan(5000);
  });
});
