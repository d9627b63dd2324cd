// GitHub App installation tokens and Vault dynamic secrets through the real broker (SQLite store):
// agent token -> per-call exchange for the target -> the credential works at the (fake) upstream
// within its scope and nothing beyond -> task end kills it upstream. Then every way the upstream can
// fail (down, slow, 5xx, malformed 200) for both issuers: an RFC 6749 error (never 200, never a
// stack trace), an audit record with outcome `error`, no credential row left active/issuing, and
// nothing live left at the fake. Finally: no token, lease, secret data or App key in the logs.
import { generateKeyPairSync } from 'node:crypto';
import { closedPort } from '../fakes/http.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeGitHub, type FakeGitHub } from '../fakes/github-api.js';
import { startFakeVault, type FakeVault } from '../fakes/vault.js';
import { TEST_AUDITOR_TOKEN, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';
import { holdIssuance } from '../support/issuer-deps.js';

const GITHUB_TOKEN_TYPE = TOKEN_TYPE.githubInstallationToken;
const VAULT_TOKEN_TYPE = TOKEN_TYPE.vaultSecret;
const APP_ID = 424242;
const INSTALLATION_ID = 777;
const REPOS = { payments: 101, web: 102 };
const VAULT_ROOT_TOKEN = 'hvs.e2e-broker-own-vault-token-never-logged';
/** Per-call timeout configured for both issuers; the "slow" fakes wait well beyond it. */
const UPSTREAM_TIMEOUT_MS = 1000;
const SLOW_MS = 2500;
const GITHUB_MAX_TTL = 300; // policy maxTtl 5m
const VAULT_LEASE = 120;

const app = (() => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), publicKey };
})();


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('github-app and vault credentials through the token endpoint', () => {
  let e2e: E2eBroker;
  let gh: FakeGitHub;
  let vault: FakeVault;
  let broker: TestBroker;
  /** Every secret the broker handled, checked against its logs at the end. */
  const secrets = new Set<string>();

  beforeAll(async () => {
    gh = await startFakeGitHub({
      appId: APP_ID,
      publicKey: app.publicKey,
      installationId: INSTALLATION_ID,
      repositories: [
        { id: REPOS.payments, name: 'payments' },
        { id: REPOS.web, name: 'web' },
      ],
      permissions: { contents: 'write', issues: 'write', metadata: 'read' },
    });
    vault = await startFakeVault({ tokens: [VAULT_ROOT_TOKEN], mounts: ['database'], roles: { 'database/creds/readonly': { leaseDuration: VAULT_LEASE } } });
    const down = `http://127.0.0.1:${await closedPort()}`;
    const ghConfig = (baseUrl: string) => ({
      appId: APP_ID,
      privateKey: { fromEnv: 'GH_APP_KEY' },
      installationId: INSTALLATION_ID,
      baseUrl,
      repositories: [
        { id: REPOS.payments, name: 'payments' },
        { id: REPOS.web, name: 'web' },
      ],
      scopes: { 'payments:read': { permissions: { contents: 'read' }, repositories: [REPOS.payments] } },
      timeoutMs: UPSTREAM_TIMEOUT_MS,
    });
    const vaultConfig = (endpoint: string) => ({
      endpoint,
      token: { fromEnv: 'VAULT_TOKEN' },
      mounts: ['database'],
      scopes: { read: { path: 'database/creds/readonly' } },
      timeoutMs: UPSTREAM_TIMEOUT_MS,
    });
    e2e = await startE2eBroker({
      name: 'agsts-issuers-e2e',
      env: { GH_APP_KEY: app.privatePem, VAULT_TOKEN: VAULT_ROOT_TOKEN },
      config: {
        credentialIssuers: [
          { name: 'gh', type: 'github-app', config: ghConfig(gh.baseUrl) },
          { name: 'gh-down', type: 'github-app', config: ghConfig(down) },
          { name: 'vault', type: 'vault', config: vaultConfig(vault.base) },
          { name: 'vault-down', type: 'vault', config: vaultConfig(down) },
        ],
        targets: [
          { name: 'github', audiences: ['github'], issuer: 'gh', scopes: ['payments:read'] },
          { name: 'github-down', audiences: ['github-down'], issuer: 'gh-down', scopes: ['payments:read'] },
          { name: 'vault', audiences: ['vault'], issuer: 'vault', scopes: ['read'] },
          { name: 'vault-down', audiences: ['vault-down'], issuer: 'vault-down', scopes: ['read'] },
        ],
        policy: {
          rules: [
            {
              id: 'r',
              workload: { subject: 'test://agent' },
              agentToken: { maxTtl: '10m' },
              grants: [
                { target: 'github', scopes: ['payments:read'], maxTtl: '5m' },
                { target: 'github-down', scopes: ['payments:read'], maxTtl: '5m' },
                { target: 'vault', scopes: ['read'], maxTtl: '5m' },
                { target: 'vault-down', scopes: ['read'], maxTtl: '5m' },
              ],
            },
          ],
        },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    await e2e?.close();
    await gh?.close();
    await vault?.close();
  });

  const agentToken = async () => {
    const agent = await e2e.agentToken('agent');
    secrets.add(agent.token);
    return agent;
  };
  const exchange = (agent: string, audience: string, scope: string, requestedTokenType: string) =>
    e2e.exchange(agent, { audience, scope, requested_token_type: requestedTokenType });
  const endTask = async (agent: { token: string; task: string }) => {
    const res = await fetch(`${broker.url}/v1/tasks/${agent.task}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent.token}` } });
    return { status: res.status, body: (await res.json()) as { state: string; credentials: { id: string; fate: string }[] } };
  };
  const github = (token: string, method: string, path: string, body?: unknown) =>
    fetch(`${gh.baseUrl}${path}`, {
      method,
      headers: { authorization: `token ${token}`, 'user-agent': 'issuers-e2e', accept: 'application/vnd.github+json', ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  it('github-app: a token for the granted repository only, truthful expires_in, dead at GitHub once the task ends', async () => {
    const agent = await agentToken();
    const before = Date.now();
    const r = await exchange(agent.token, 'github', 'payments:read', GITHUB_TOKEN_TYPE);
    expect(r.status, r.text).toBe(200);
    expect(r.json).toMatchObject({ issued_token_type: GITHUB_TOKEN_TYPE, token_type: 'Bearer', scope: 'payments:read', task_id: agent.task });
    const token = String(r.json.access_token);
    secrets.add(token);
    expect(gh.tokens).toContain(token);
    const cred = r.json.credentials as { token: string; repositories: { id: number; name?: string }[]; permissions: Record<string, string>; expires_at: string; github_expires_at: string };
    expect(cred.token).toBe(token);
    expect(cred.repositories).toEqual([{ id: REPOS.payments, name: 'payments' }]);
    expect(cred.permissions).toEqual({ contents: 'read', metadata: 'read' });

    // expires_in: within the policy's maxTtl, before GitHub's own expiry, and what the broker will enforce.
    const expiresIn = Number(r.json.expires_in);
    expect(Number.isInteger(expiresIn)).toBe(true);
    expect(expiresIn).toBeGreaterThan(GITHUB_MAX_TTL - 10);
    expect(expiresIn).toBeLessThanOrEqual(GITHUB_MAX_TTL);
    expect(Date.parse(cred.github_expires_at)).toBeGreaterThanOrEqual(Date.parse(cred.expires_at));
    expect(Math.abs(Date.parse(cred.expires_at) - (before + expiresIn * 1000))).toBeLessThan(5000);
    const row = await broker.composed.db.credential.findFirst({ where: { taskId: agent.task, issuerName: 'gh' } });
    expect(row?.state).toBe('active');
    expect(row!.expiresAt.toISOString()).toBe(cred.expires_at);

    // Works at GitHub, within the grant only.
    const list = await github(token, 'GET', '/installation/repositories');
    expect(list.status).toBe(200);
    const listed = (await list.json()) as { total_count: number; repositories: { name: string }[] };
    expect(listed.repositories.map((x) => x.name)).toEqual(['payments']);
    expect((await github(token, 'GET', '/repos/acme/payments')).status).toBe(200);
    expect((await github(token, 'GET', '/repos/acme/web')).status).toBe(404); // not granted: invisible
    expect((await github(token, 'PUT', '/repos/acme/payments/contents/README.md', { message: 'x', content: 'eA==' })).status).toBe(403); // read only

    const end = await endTask(agent);
    expect(end.status).toBe(200);
    expect(end.body.state).toBe('ended');
    expect(end.body.credentials.find((c) => c.id === row!.id)?.fate).toBe('revoked');
    expect(gh.isLive(token)).toBe(false);
    expect((await github(token, 'GET', '/installation/repositories')).status).toBe(401);
    expect((await github(token, 'GET', '/repos/acme/payments')).status).toBe(401);
    expect((await broker.composed.db.credential.findUnique({ where: { id: row!.id } }))?.state).toBe('revoked');
    // The agent token is dead too: no new credentials for an ended task.
    expect((await exchange(agent.token, 'github', 'payments:read', GITHUB_TOKEN_TYPE)).status).not.toBe(200);
  });

  it('github-app: a task ended while GitHub was minting the token: the token is deleted at GitHub, never handed out', async () => {
    const agent = await agentToken();
    const held = holdIssuance(broker.composed.issuers.get('gh')!);
    const minted = gh.tokens.length;
    try {
      const pending = exchange(agent.token, 'github', 'payments:read', GITHUB_TOKEN_TYPE);
      await held.atTarget;
      // Nothing of this credential is recorded yet (GitHub tokens have no planned handle): the task ends without it.
      const end = await endTask(agent);
      expect(end.status).toBe(200);
      expect(end.body.state).toBe('ended');
      expect(end.body.credentials.map((c) => c.fate)).toEqual(['revoked']); // the agent token only
      held.release();
      const r = await pending;
      expect(r.status, r.text).toBe(400);
      expect(r.json).toEqual({ error: 'invalid_request', error_description: 'the task ended while this credential was being issued; it was not handed out' });
    } finally {
      held.restore();
    }
    // GitHub did mint one; it is dead, and no row holds it.
    expect(gh.tokens.length).toBe(minted + 1);
    const token = gh.tokens.at(-1)!;
    secrets.add(token);
    expect(gh.isLive(token)).toBe(false);
    expect((await github(token, 'GET', '/installation/repositories')).status).toBe(401);
    expect(await broker.composed.db.credential.count({ where: { taskId: agent.task, issuerName: 'gh' } })).toBe(0);
    await broker.composed.audit.drain();
    const refused = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { taskId: agent.task, action: 'token.exchange', target: 'github' } });
    expect(refused.outcome).toBe('deny');
    expect(refused.reason).toContain(`task ${agent.task} was ended when the credential was to be recorded; revoked at the target`);
  });

  it('vault: a dynamic secret with a live lease, revoked in Vault when the task ends', async () => {
    const agent = await agentToken();
    const r = await exchange(agent.token, 'vault', 'read', VAULT_TOKEN_TYPE);
    expect(r.status, r.text).toBe(200);
    expect(r.json).toMatchObject({ issued_token_type: VAULT_TOKEN_TYPE, token_type: 'N_A', scope: 'read', task_id: agent.task });
    const cred = r.json.credentials as { username: string; password: string; expires_at: string };
    expect(cred.username).toMatch(/^v-token-/);
    expect(cred.password).toMatch(/^A1a-/);
    expect(JSON.parse(String(r.json.access_token))).toEqual({ username: cred.username, password: cred.password });
    const expiresIn = Number(r.json.expires_in);
    expect(expiresIn).toBeGreaterThan(VAULT_LEASE - 10);
    expect(expiresIn).toBeLessThanOrEqual(VAULT_LEASE); // min(lease, policy 5m)

    const leases = [...vault.leases.values()].filter((l) => l.data.password === cred.password);
    expect(leases).toHaveLength(1);
    const lease = leases[0]!;
    secrets.add(cred.password).add(cred.username).add(lease.id).add(String(r.json.access_token));
    expect(lease.path).toBe('database/creds/readonly');
    expect(vault.isAlive(lease.id)).toBe(true);
    const row = await broker.composed.db.credential.findFirst({ where: { taskId: agent.task, issuerName: 'vault' } });
    expect(row?.state).toBe('active');

    const end = await endTask(agent);
    expect(end.status).toBe(200);
    expect(end.body.state).toBe('ended');
    expect(end.body.credentials.find((c) => c.id === row!.id)?.fate).toBe('revoked');
    expect(vault.isAlive(lease.id)).toBe(false);
    expect(lease.revoked).toBe(true);
    expect((await broker.composed.db.credential.findUnique({ where: { id: row!.id } }))?.state).toBe('revoked');
  });

  it('RFC 7009 by the holder: a GitHub token and a Vault secret, as handed out, die upstream now; the task lives on', async () => {
    const agent = await agentToken();
    const g = await exchange(agent.token, 'github', 'payments:read', GITHUB_TOKEN_TYPE);
    const v = await exchange(agent.token, 'vault', 'read', VAULT_TOKEN_TYPE);
    expect([g.status, v.status]).toEqual([200, 200]);
    const token = String(g.json.access_token);
    const secretJson = String(v.json.access_token);
    secrets.add(token).add(secretJson);
    const lease = [...vault.leases.values()].find((l) => l.data.password === (JSON.parse(secretJson) as { password: string }).password)!;
    secrets.add(lease.id).add(String(lease.data.password)).add(String(lease.data.username));
    expect([gh.isLive(token), vault.isAlive(lease.id)]).toEqual([true, true]);
    const revoke = (t: string) => fetch(`${broker.url}/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: t }) });
    expect((await revoke(token)).status).toBe(200);
    expect(gh.isLive(token)).toBe(false);
    expect((await github(token, 'GET', '/repos/acme/payments')).status).toBe(401);
    expect(vault.isAlive(lease.id)).toBe(true); // only what was presented
    expect((await revoke(secretJson)).status).toBe(200);
    expect(vault.isAlive(lease.id)).toBe(false);
    const rows = await broker.composed.db.credential.findMany({ where: { taskId: agent.task, issuerName: { in: ['gh', 'vault'] } }, orderBy: { issuedAt: 'asc' } });
    expect(rows.map((x) => [x.issuerName, x.state])).toEqual([['gh', 'revoked'], ['vault', 'revoked']]);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: agent.task } })).state).toBe('open');
    // the task goes on: a new GitHub token for the same grant
    const again = await exchange(agent.token, 'github', 'payments:read', GITHUB_TOKEN_TYPE);
    expect(again.status).toBe(200);
    secrets.add(String(again.json.access_token));
    expect(gh.isLive(String(again.json.access_token))).toBe(true);
    expect((await endTask(agent)).body.state).toBe('ended');
  });

  type Fake = { live(): string[]; set(): void; reset(): void; settleMs?: number };
  const githubLive = () => gh.tokens.filter((t) => gh.isLive(t));
  const vaultLive = () => [...vault.leases.values()].filter((l) => vault.isAlive(l.id)).map((l) => l.id);
  const noop = () => {};
  const cases: { name: string; audience: string; scope: string; type: string; issuer: string; fake: Fake; status: number; error: string }[] = [
    { name: 'github-app: GitHub down (closed port)', audience: 'github-down', scope: 'payments:read', type: GITHUB_TOKEN_TYPE, issuer: 'gh-down', fake: { live: githubLive, set: noop, reset: noop }, status: 503, error: 'temporarily_unavailable' },
    {
      name: 'github-app: GitHub slower than the timeout',
      audience: 'github', scope: 'payments:read', type: GITHUB_TOKEN_TYPE, issuer: 'gh',
      fake: { live: githubLive, set: () => (gh.faults.delayMs = SLOW_MS), reset: () => (gh.faults.delayMs = 0), settleMs: SLOW_MS + 500 },
      status: 503, error: 'temporarily_unavailable',
    },
    { name: 'github-app: GitHub answers 502', audience: 'github', scope: 'payments:read', type: GITHUB_TOKEN_TYPE, issuer: 'gh', fake: { live: githubLive, set: () => (gh.faults.failWith = 502), reset: () => (gh.faults.failWith = null) }, status: 503, error: 'temporarily_unavailable' },
    { name: 'github-app: GitHub answers 500', audience: 'github', scope: 'payments:read', type: GITHUB_TOKEN_TYPE, issuer: 'gh', fake: { live: githubLive, set: () => (gh.faults.failWith = 500), reset: () => (gh.faults.failWith = null) }, status: 503, error: 'temporarily_unavailable' },
    // Expected 503 like every other unusable GitHub answer; see the report: today a TypeError (500).
    { name: 'github-app: GitHub answers 200 with a body that is not JSON', audience: 'github', scope: 'payments:read', type: GITHUB_TOKEN_TYPE, issuer: 'gh', fake: { live: githubLive, set: () => (gh.faults.malformed = true), reset: () => (gh.faults.malformed = false) }, status: 503, error: 'temporarily_unavailable' },
    { name: 'vault: Vault down (closed port)', audience: 'vault-down', scope: 'read', type: VAULT_TOKEN_TYPE, issuer: 'vault-down', fake: { live: vaultLive, set: noop, reset: noop }, status: 503, error: 'temporarily_unavailable' },
    {
      name: 'vault: Vault slower than the timeout',
      audience: 'vault', scope: 'read', type: VAULT_TOKEN_TYPE, issuer: 'vault',
      fake: { live: vaultLive, set: () => (vault.faults.delayMs = SLOW_MS), reset: () => (vault.faults.delayMs = 0), settleMs: SLOW_MS + 500 },
      status: 503, error: 'temporarily_unavailable',
    },
    { name: 'vault: Vault answers 500', audience: 'vault', scope: 'read', type: VAULT_TOKEN_TYPE, issuer: 'vault', fake: { live: vaultLive, set: () => (vault.faults.failWith = 500), reset: () => (vault.faults.failWith = null) }, status: 503, error: 'temporarily_unavailable' },
    { name: 'vault: Vault sealed (503)', audience: 'vault', scope: 'read', type: VAULT_TOKEN_TYPE, issuer: 'vault', fake: { live: vaultLive, set: () => vault.setSealed(true), reset: () => vault.setSealed(false) }, status: 503, error: 'temporarily_unavailable' },
    // Not an UpstreamUnavailable in the issuer (a plain Error: "did not return a dynamic secret"), so 500.
    { name: 'vault: Vault answers 200 with a body that is not JSON', audience: 'vault', scope: 'read', type: VAULT_TOKEN_TYPE, issuer: 'vault', fake: { live: vaultLive, set: () => (vault.faults.malformed = true), reset: () => (vault.faults.malformed = false) }, status: 503, error: 'temporarily_unavailable' },
  ];

  describe('upstream failures', () => {
    for (const c of cases) {
      it(`${c.name} -> ${c.status} ${c.error}, audited as error, nothing left active or live`, async () => {
        const agent = await agentToken();
        const startedAt = new Date(Date.now() - 1000);
        const liveBefore = new Set(c.fake.live());
        try {
          c.fake.set();
          let r: Awaited<ReturnType<typeof exchange>>;
          let elapsed: number;
          try {
            const t0 = Date.now();
            r = await exchange(agent.token, c.audience, c.scope, c.type);
            elapsed = Date.now() - t0;
            if (c.fake.settleMs) await sleep(Math.max(0, c.fake.settleMs - elapsed)); // let the held upstream request run out
          } finally {
            c.fake.reset();
          }
          if (r.status === 200) for (const v of [r.json.access_token, JSON.stringify(r.json.credentials)]) secrets.add(String(v));

          // RFC 6749 §5.2 error: never a credential, never internals.
          expect(r.status, r.status === 200 ? 'a credential was issued' : r.text).not.toBe(200);
          expect(r.status, r.text).toBe(c.status);
          expect(r.headers.get('content-type')).toMatch(/^application\/json/);
          expect(r.headers.get('cache-control')).toBe('no-store');
          expect(r.json.error).toBe(c.error);
          expect(Object.keys(r.json).every((k) => k === 'error' || k === 'error_description')).toBe(true);
          expect(r.text).not.toMatch(/\bat [\w.<>]+ \(|\.[cm]?[jt]s:\d+|node_modules|stack|ECONNREFUSED|127\.0\.0\.1|ghs_|hvs\.|BEGIN/);
          // A slow upstream is given up on at the configured timeout, not waited for.
          if (c.fake.settleMs) expect(elapsed, `answered after ${elapsed} ms`).toBeLessThan(UPSTREAM_TIMEOUT_MS + 1000);

          // One audit record for this request, outcome error, naming the target and task.
          const requestId = r.headers.get('x-request-id');
          expect(requestId).toBeTruthy();
          const events = await broker.composed.db.auditEvent.findMany({ where: { requestId: requestId! } });
          expect(events).toHaveLength(1);
          expect(events[0]).toMatchObject({ action: 'token.exchange', outcome: 'error', target: c.audience, taskId: agent.task, requestedScope: c.scope });
          const viaApi = await fetch(`${broker.url}/v1/audit?outcome=error&task=${agent.task}`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
          expect(viaApi.status).toBe(200);
          const page = (await viaApi.json()) as { records: { requestId: string; outcome: string }[] };
          expect(page.records.filter((x) => x.requestId === requestId)).toHaveLength(1);

          // No credential row of this issuer left active or issuing (this task, or any issued meanwhile).
          expect(await broker.composed.db.credential.count({ where: { taskId: agent.task, issuerName: c.issuer } })).toBe(0);
          expect(await broker.composed.db.credential.count({ where: { issuerName: c.issuer, state: { in: ['active', 'issuing'] }, issuedAt: { gte: startedAt } } })).toBe(0);

          // Nothing minted upstream is left alive.
          expect(c.fake.live().filter((x) => !liveBefore.has(x))).toEqual([]);

          // The issuer works again once the upstream recovers (no stuck state), except the one that stays down.
          if (!c.audience.endsWith('-down')) {
            const ok = await exchange(agent.token, c.audience, c.scope, c.type);
            expect(ok.status, ok.text).toBe(200);
            for (const v of [ok.json.access_token, JSON.stringify(ok.json.credentials)]) secrets.add(String(v));
          }
        } finally {
          const end = await endTask(agent);
          expect(end.status).toBe(200);
          expect(end.body.state).toBe('ended');
        }
        expect(c.fake.live().filter((x) => !liveBefore.has(x))).toEqual([]);
      });
    }
  });

  it('no token, lease, secret data, own Vault token or App key in the broker logs', () => {
    for (const t of gh.tokens) secrets.add(t);
    for (const l of vault.leases.values()) {
      secrets.add(l.id);
      for (const v of Object.values(l.data)) if (typeof v === 'string') secrets.add(v);
    }
    secrets.add(VAULT_ROOT_TOKEN);
    const pemLines = app.privatePem.split('\n').filter((l) => l && !l.startsWith('-----'));
    expect(secrets.size).toBeGreaterThan(10);
    const logs = broker.logs.join('\n');
    expect(broker.logs.length).toBeGreaterThan(0);
    for (const s of secrets) expect(logs.includes(s), `a secret (${s.slice(0, 6)}...) is in the logs`).toBe(false);
    for (const l of pemLines) expect(logs.includes(l)).toBe(false);
    expect(logs).not.toMatch(/BEGIN (RSA )?PRIVATE KEY|ghs_[A-Za-z0-9]{10}|hvs\.[A-Za-z0-9]/);
  });
});
