// The auditor's side of a real broker (SQLite store) over HTTP: who may read the issuance log and
// who may not, what a record links to (its task and credential as they are now), the leaked-token
// lookup by fingerprint, the streamed export, audit records of admin actions carrying the admin's
// principal, and every read recorded as `audit.read` with the reader and the filters.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, postToken, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { decodeJwt } from 'jose';
import { credentialFingerprint, presentedTokenFingerprint } from '../../src/lib/crypto.js';
import { verifyAuditLog } from '../../src/audit/audit-verify.js';

interface Rec {
  id: string;
  action: string;
  outcome: string;
  reason: string | null;
  taskId: string | null;
  credentialId: string | null;
  credentialFingerprint: string | null;
  workloadSubject: string | null;
  task: { id: string; state: string } | null;
  credential: { id: string; state: string; expiresAt: string | null; revokedAt: string | null } | null;
}

describe('the auditor role and the issuance log over HTTP', { timeout: 60_000 }, () => {
  let e2e: E2eBroker;
  let workloads: FakeIssuer; // the workloads' CI
  let people: FakeIssuer; // the company IdP: auditors and admins are people in groups
  let broker: TestBroker;

  beforeAll(async () => {
    people = await startFakeOidcIssuer();
    e2e = await startE2eBroker({
      name: 'agsts-audit-roles',
      moreTrustProviders: [{ name: 'corp', type: 'oidc', config: { issuer: people.issuer, audience: 'sts-admin', human: true } }],
      config: {
        auth: {
          auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
          admins: [{ name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' } }],
          roles: [
            { role: 'auditor', provider: 'corp', groups: ['audit'] },
            { role: 'admin', provider: 'corp', groups: ['platform'] },
          ],
        },
        credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
        targets: [{ name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] }],
        policy: { rules: [{ id: 'agents', workload: { subjectPattern: 'test://agent-.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '5m' }] }] },
      },
    });
    ({ broker, workloads } = e2e);
  });
  afterAll(async () => {
    await e2e?.close();
    await people?.close();
  });

  const auditorJwt = () => people.sign({ sub: 'carol', aud: 'sts-admin', groups: ['audit'] });
  const adminJwt = () => people.sign({ sub: 'dave', aud: 'sts-admin', groups: ['platform'] });
  const get = async (path: string, auth: string) => {
    const res = await fetch(`${broker.url}${path}`, { headers: { authorization: auth } });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', text, json: (res.headers.get('content-type') ?? '').includes('json') && text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const records = async (query: string, auth = `Bearer ${TEST_AUDITOR_TOKEN}`) => {
    const r = await get(`/v1/audit?${query}`, auth);
    expect(r.status, r.text).toBe(200);
    return r.json.records as Rec[];
  };
  const send = (method: string, path: string, auth: string, body?: string, type = 'application/json') =>
    fetch(`${broker.url}${path}`, { method, headers: { authorization: auth, ...(body !== undefined ? { 'content-type': type } : {}) }, body });
  const agentToken = (sub: string) => e2e.agentToken(sub);

  it('an auditor (bootstrap token or a person in the audit group) reads /v1/audit', async () => {
    await agentToken('agent-1');
    expect((await records('limit=5')).length).toBeGreaterThan(0);
    expect((await records('limit=5', `Bearer ${await auditorJwt()}`)).length).toBeGreaterThan(0);
  });

  it('an auditor cannot call admin write endpoints', async () => {
    const policy = 'apiVersion: agent-sts.dev/v2\nkind: Policy\nmetadata: { name: x }\nspec: { rules: [] }\n';
    const calls: [string, string, string?, string?][] = [
      ['PUT', '/v1/admin/policies/x', policy, 'application/yaml'],
      ['POST', '/v1/admin/trust-providers', JSON.stringify({ name: 'evil', type: 'oidc', config: { issuer: 'https://evil.test', audience: 'sts' } })],
      ['POST', `/v1/admin/identities/${encodeURIComponent('test://agent-1')}/kill`, JSON.stringify({ reason: 'auditors may not' })],
      ['POST', '/v1/admin/credential-issuers', JSON.stringify({ name: 'evil', type: 'agent-sts-jwt', config: {} })],
    ];
    const person = await auditorJwt();
    for (const [method, path, body, type] of calls) {
      // A person holding the auditor role: verified, but not an admin.
      const asPerson = await send(method, path, `Bearer ${person}`, body, type);
      expect(asPerson.status, `${method} ${path}`).toBe(403);
      expect(asPerson.headers.get('content-type')).toContain('application/problem+json');
      // The bootstrap auditor token is no admin credential at all.
      expect((await send(method, path, `Bearer ${TEST_AUDITOR_TOKEN}`, body, type)).status, `${method} ${path}`).toBe(401);
    }
    expect((await get('/v1/admin/trust-providers', `Bearer ${person}`)).status).toBe(403);
    // Nothing changed, and nothing was blocked.
    expect((await records('action=admin.trust-provider.create')).length).toBe(0);
    expect((await records('action=admin.identity.kill')).length).toBe(0);
  });

  it('an agent token, a workload attestation or an admin cannot read the log', async () => {
    const { token } = await agentToken('agent-2');
    for (const path of ['/v1/audit', '/v1/audit/export']) {
      const asAgent = await get(path, `Bearer ${token}`);
      expect(asAgent.status, path).toBe(401);
      expect(asAgent.type).toContain('application/problem+json');
      expect(asAgent.text).not.toContain(token.split('.')[2]!);
      const asWorkload = await get(path, `Bearer ${await workloads.sign({ sub: 'agent-2', aud: 'sts' })}`);
      expect(asWorkload.status, path).toBe(403); // verified by the ci provider, but it holds no role
      expect((await get(path, `Bearer ${await adminJwt()}`)).status, path).toBe(403);
      expect((await get(path, `Bearer ${TEST_ADMIN_TOKEN}`)).status, path).toBe(401);
      const none = await get(path, '');
      expect(none.status).toBe(401);
    }
  });

  it('admin actions are in the log with the admin\'s principal', async () => {
    const created = await send('POST', '/v1/admin/trust-providers', `Bearer ${TEST_ADMIN_TOKEN}`, JSON.stringify({ name: 'runtime-ci', type: 'oidc', config: { issuer: 'https://runtime.test', audience: 'sts' } }));
    expect(created.status).toBe(201);
    const policy = [
      'apiVersion: agent-sts.dev/v2', 'kind: Policy', 'metadata: { name: extra, owners: [platform@example.com] }', 'spec:', '  rules:', '    - name: more',
      "      workloads: [{ provider: ci, subject: 'test://agent-9' }]", '      grants:', '        - { target: api, scopes: [read] }', '',
    ].join('\n');
    const put = await send('PUT', '/v1/admin/policies/extra', `Bearer ${await adminJwt()}`, policy, 'application/yaml');
    expect(put.status, await put.clone().text()).toBe(200);
    const kill = await send('POST', `/v1/admin/identities/${encodeURIComponent('test://agent-66')}/kill`, `Bearer ${TEST_ADMIN_TOKEN}`, JSON.stringify({ reason: 'compromised runner' }));
    expect(kill.status).toBe(200);

    expect(await records('action=admin.trust-provider.create')).toEqual([expect.objectContaining({ outcome: 'allow', reason: expect.stringMatching(/^by bootstrap:test-admin/) })]);
    expect(await records('action=admin.policy.put')).toEqual([expect.objectContaining({ outcome: 'allow', reason: expect.stringMatching(/^by corp:dave/) })]);
    expect(await records('action=admin.identity.kill')).toEqual([expect.objectContaining({ outcome: 'success', reason: 'by bootstrap:test-admin: compromised runner', workloadSubject: 'test://agent-66' })]);
  });

  it('every record links to its task and its credential as they are now; a leaked token is found by its fingerprint', async () => {
    const agent = await agentToken('agent-3');
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent.token, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://api.test/', scope: 'read' });
    expect(r.status, r.text).toBe(200);
    const leaked = r.json.access_token as string;
    const fp = presentedTokenFingerprint(leaked);
    // agent-sts's own JWT: the jti (credential id, time-ordered) leads, then the SHA-256 of its signed part.
    expect(fp).toBe(`jwt:${decodeJwt(leaked).jti}:${credentialFingerprint(leaked.slice(0, leaked.lastIndexOf('.')))}`);

    const found = await records(`fingerprint=${fp}`);
    expect(found).toHaveLength(1);
    const issuance = found[0]!;
    expect(issuance).toMatchObject({ action: 'token.exchange', outcome: 'allow', workloadSubject: 'test://agent-3', credentialFingerprint: fp, taskId: agent.task });
    expect(issuance.task).toEqual({ id: agent.task, state: 'open', deadline: expect.any(String), endedAt: null });
    expect(issuance.credential).toMatchObject({ id: issuance.credentialId, state: 'active', revokedAt: null });

    // The task ends: the same record now shows the task ended and the credential's fate.
    const end = await send('DELETE', `/v1/tasks/${agent.task}`, `Bearer ${agent.token}`);
    expect(end.status).toBe(200);
    // The issuance and, now, the credential's end (it cannot be revoked: it lapses) carry the fingerprint.
    const byFp = await records(`fingerprint=${fp}`);
    expect(byFp.map((x) => x.action).sort()).toEqual(['credential.lapse', 'token.exchange']);
    const after = byFp.find((x) => x.action === 'token.exchange')!;
    const row = await broker.composed.db.credential.findUniqueOrThrow({ where: { id: issuance.credentialId! } });
    expect(after.task).toMatchObject({ id: agent.task, state: 'ended', endedAt: expect.any(String) });
    expect(after.credential).toEqual({ id: row.id, state: row.state, expiresAt: row.expiresAt.toISOString(), revokedAt: row.revokedAt?.toISOString() ?? null });
    // Records of the task show the same links (fetched once per page).
    for (const x of await records(`task=${agent.task}`)) expect(x.task).toMatchObject({ id: agent.task, state: 'ended' });

    // A raw token where a fingerprint belongs is refused, and never echoed.
    const raw = await get(`/v1/audit?fingerprint=${encodeURIComponent(leaked)}`, `Bearer ${TEST_AUDITOR_TOKEN}`);
    expect(raw.status).toBe(400);
    expect(raw.type).toContain('application/problem+json');
    expect(raw.text).toContain('agent-sts audit fingerprint');
    expect(raw.text).not.toContain(leaked.split('.')[2]!);
    // Upper-case hex and a missing `sha256:` are accepted too.
    const at = fp.lastIndexOf(':sha256:');
    expect(await records(`fingerprint=${encodeURIComponent(`${fp.slice(0, at + 1)}${fp.slice(at + ':sha256:'.length).toUpperCase()}`)}`)).toHaveLength(2);
  });

  it('exports matching records as JSON lines, oldest first, with links', async () => {
    const res = await fetch(`${broker.url}/v1/audit/export?action=token.exchange&outcome=allow`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const lines = (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Rec & { time: string });
    const expected = await broker.composed.db.auditEvent.findMany({ where: { action: 'token.exchange', outcome: 'allow' }, orderBy: [{ time: 'asc' }, { id: 'asc' }] });
    expect(lines.map((l) => l.id)).toEqual(expected.map((e) => e.id));
    for (const l of lines) expect(l.task?.id).toBe(l.taskId);
    const bad = await get('/v1/audit/export?outcome=maybe', `Bearer ${TEST_AUDITOR_TOKEN}`);
    expect(bad.status).toBe(400);
    expect(bad.type).toContain('application/problem+json');
    expect((await get('/v1/audit/export?order=sideways', `Bearer ${TEST_AUDITOR_TOKEN}`)).status).toBe(400);
  });

  it('every read is itself in the log: audit.read, who, which filters', async () => {
    await records('workload=test://agent-3&limit=7', `Bearer ${await auditorJwt()}`);
    const reads = await records('action=audit.read&limit=1000');
    expect(reads.some((x) => /^by corp:carol: query workload=test:\/\/agent-3; [1-7] record\(s\)$/.test(x.reason ?? ''))).toBe(true);
    expect(reads.some((x) => x.reason === 'by bootstrap:test-auditor: export outcome=allow, action=token.exchange, oldest first')).toBe(true);
    expect(reads.some((x) => x.reason?.startsWith('by bootstrap:test-auditor: query fingerprint=jwt:'))).toBe(true);
    for (const x of reads) expect(x).toMatchObject({ outcome: 'success', action: 'audit.read' });
    // Refused reads are not reads.
    expect(reads.some((x) => x.reason?.includes('outcome=maybe'))).toBe(false);

    await broker.composed.audit.drain();
    const v = await verifyAuditLog(broker.composed.db);
    expect(v.problems).toEqual([]);
    expect(v.checkpoints).toBeGreaterThan(0); // drain() checkpoints the chain
  });
});
