// The `github-app` credential issuer through the real @octokit/auth-app against a fake GitHub that
// verifies the App JWT and enforces installation limits like GitHub: tokens narrowed by repository
// id and permission to the granted scopes (union for several), allow-list refusals, revocation that
// kills the token (idempotent), no cached token after revocation, distinct tokens for concurrent
// identical grants, error mapping (bad key, GitHub down, 422), GHES /api/v3 prefix, expiry =
// min(GitHub's, ttl), and no token or private key in logs or errors.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  githubAppIssuerPlugin,
  GithubAppIssuerConfigSchema,
  type GithubAppHandle,
  type GithubAppIssuerConfig,
} from '../../src/credential-issuers/github-app/github-app-issuer.js';
import { completed, type CredentialIssuer, type IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { credentialIssuerCatalog } from '../../src/credential-issuers/catalog.js';
import type { BlendedIdentity, CallContext, Credential } from '../../src/core/types.js';
import { ScopeNotAllowed, TargetNotAllowed, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { credentialFingerprint } from '../../src/lib/crypto.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';
import { createLogger } from '../../src/log/logger.js';
import { startFakeGitHub, type FakeGitHub, type FakeGitHubOptions } from '../fakes/github-api.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

const APP_ID = 31337;
const INSTALLATION_ID = 4242;
const REPOS = { payments: 101, web: 102, docs: 103, outside: 999, notInstalled: 555 };

function rsaKeyPair(): { privatePem: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  // PKCS#1, as GitHub hands out App keys.
  return { privatePem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), publicKey };
}
const app = rsaKeyPair();
const otherKey = rsaKeyPair();
const keyDir = mkdtempSync(join(tmpdir(), 'agsts-gh-'));
const keyFile = join(keyDir, 'app.pem');
writeFileSync(keyFile, app.privatePem, { mode: 0o600 });
const pemBody = (pem: string) => pem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');

const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });
const ctx = (): CallContext => ({ requestId: 'test', now: new Date() });
const deps = (env: NodeJS.ProcessEnv = {}): IssuerDeps => testIssuerDeps(logger, env);

const fakeOptions = (over: Partial<FakeGitHubOptions> = {}): FakeGitHubOptions => ({
  appId: APP_ID,
  publicKey: app.publicKey,
  installationId: INSTALLATION_ID,
  repositories: [
    { id: REPOS.payments, name: 'payments' },
    { id: REPOS.web, name: 'web' },
    { id: REPOS.docs, name: 'docs' },
    { id: REPOS.outside, name: 'outside' },
  ],
  permissions: { contents: 'write', issues: 'write', pull_requests: 'read', metadata: 'read' },
  ...over,
});

function configFor(baseUrl: string, over: Record<string, unknown> = {}): GithubAppIssuerConfig {
  return GithubAppIssuerConfigSchema.parse({
    appId: APP_ID,
    privateKey: { fromFile: keyFile },
    installationId: INSTALLATION_ID,
    baseUrl,
    repositories: [{ id: REPOS.payments, name: 'payments' }, { id: REPOS.web, name: 'web' }, { id: REPOS.docs }, { id: REPOS.notInstalled, name: 'ghost' }],
    scopes: {
      'payments:read': { permissions: { contents: 'read' }, repositories: [REPOS.payments] },
      'web:issues': { permissions: { issues: 'write' }, repositories: [REPOS.web] },
      'payments:write': { permissions: { contents: 'write' }, repositories: [REPOS.payments] },
      'everything:read': { permissions: { contents: 'read', pull_requests: 'read' }, repositories: [REPOS.payments, REPOS.web, REPOS.docs] },
      'ghost:read': { permissions: { contents: 'read' }, repositories: [REPOS.notInstalled] },
      'payments:admin': { permissions: { contents: 'admin' }, repositories: [REPOS.payments] },
    },
    ...over,
  });
}

async function issue(issuer: CredentialIssuer, scopes: string[], ttlSeconds = 900): Promise<Credential> {
  return completed(issuer.issue(
    {
      decision: { allow: true, policyVersion: 'v1', grantedScopes: scopes, ttlCapSeconds: ttlSeconds, reasons: [] },
      identity: {} as BlendedIdentity,
      taskId: 'tsk_github',
      credentialId: `cred-${Math.random().toString(36).slice(2)}`,
      requestedTarget: 'https://github.com/acme',
      ttlSeconds,
    },
    ctx(),
  ));
}

/** Uses the token as an agent would: lists the repositories it can see. */
async function listRepos(gh: FakeGitHub, token: string): Promise<{ status: number; ids: number[] }> {
  const res = await fetch(`${gh.baseUrl}/installation/repositories`, { headers: { authorization: `Bearer ${token}`, 'user-agent': 'test' } });
  if (res.status !== 200) return { status: res.status, ids: [] };
  const body = (await res.json()) as { repositories: { id: number }[] };
  return { status: 200, ids: body.repositories.map((r) => r.id).sort((a, b) => a - b) };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

const tokenRequests = (gh: FakeGitHub) => gh.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/access_tokens'));

describe('github-app credential issuer (fake GitHub, real @octokit/auth-app)', () => {
  let gh: FakeGitHub;
  let issuer: CredentialIssuer;
  const errors: Error[] = [];

  beforeAll(async () => {
    gh = await startFakeGitHub(fakeOptions());
    issuer = githubAppIssuerPlugin.create('gh', configFor(gh.baseUrl), deps());
  });
  afterEach(() => {
    gh.faults.failWith = null;
  });
  afterAll(async () => {
    await gh?.close();
    rmSync(keyDir, { recursive: true, force: true });
  });

  it('is registered in the catalog with its token types and active revocation', () => {
    expect(credentialIssuerCatalog.get('github-app')).toBe(githubAppIssuerPlugin);
    expect(TOKEN_TYPE.githubInstallationToken).toBe('urn:agent-sts:token-type:github-installation');
    expect(issuer).toMatchObject({ type: 'github-app', name: 'gh', needsActiveRevocation: true });
    expect(issuer.issuedTokenTypes).toEqual([TOKEN_TYPE.githubInstallationToken, TOKEN_TYPE.accessToken]);
    expect(issuer.planHandle).toBeUndefined();
  });

  it('issues a token narrowed to the scope: one repository, one permission, verified App JWT', async () => {
    const before = tokenRequests(gh).length;
    const cred = await issue(issuer, ['payments:read']);
    const token = cred.accessToken.reveal();
    expect(token).toMatch(/^ghs_/);
    expect(cred).toMatchObject({ issuedTokenType: TOKEN_TYPE.githubInstallationToken, tokenType: 'Bearer', fingerprint: credentialFingerprint(token) });
    const calls = tokenRequests(gh).slice(before);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ path: `/app/installations/${INSTALLATION_ID}/access_tokens`, authScheme: 'bearer', status: 201 });
    expect(calls[0]!.body).toEqual({ repository_ids: [REPOS.payments], permissions: { contents: 'read' } });
    expect(await listRepos(gh, token)).toEqual({ status: 200, ids: [REPOS.payments] });
    expect(cred.structured!.reveal()).toMatchObject({
      token,
      installation_id: INSTALLATION_ID,
      repositories: [{ id: REPOS.payments, name: 'payments' }],
      permissions: { contents: 'read', metadata: 'read' },
      expires_at: cred.expiresAt.toISOString(),
    });
    expect(cred.revocationHandle).toMatchObject({ token, installationId: INSTALLATION_ID });
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it('merges scopes on the same repositories into one token (strongest level per permission); refuses scopes on different repositories', async () => {
    const before = tokenRequests(gh).length;
    const cred = await issue(issuer, ['payments:read', 'payments:write']);
    expect(tokenRequests(gh).slice(before)[0]!.body).toEqual({ repository_ids: [REPOS.payments], permissions: { contents: 'write' } });
    expect(await listRepos(gh, cred.accessToken.reveal())).toEqual({ status: 200, ids: [REPOS.payments] });
    await issuer.revoke(cred.revocationHandle!, ctx());
    // One token has one permission set for all its repositories: contents:write on payments plus
    // issues:write on web would give web contents:write too. Refused before calling GitHub.
    const calls = gh.calls.length;
    const e = await rejection(issue(issuer, ['payments:read', 'web:issues', 'payments:write']));
    expect(e).toBeInstanceOf(ScopeNotAllowed);
    expect((e as Error).message).toMatch(/different repositories/);
    expect(gh.calls.length).toBe(calls);
  });

  it('refuses scopes outside the configuration before calling GitHub', async () => {
    const before = gh.calls.length;
    // A scope naming a repository outside the allow-list: refused by the schema at load ...
    expect(() => configFor(gh.baseUrl, { scopes: { bad: { permissions: { contents: 'read' }, repositories: [REPOS.outside] } } })).toThrow(/not in the issuer's repositories allow-list/);
    // ... and at issue time if a configuration bypassed the schema.
    const raw = { ...configFor(gh.baseUrl), scopes: { bad: { permissions: { contents: 'read' as const }, repositories: [REPOS.outside] } } };
    const unchecked = githubAppIssuerPlugin.create('gh-unchecked', raw, deps());
    const e1 = await rejection(issue(unchecked, ['bad']));
    expect(e1).toBeInstanceOf(TargetNotAllowed);
    expect((e1 as TargetNotAllowed).detail).toMatchObject({ repositoryId: REPOS.outside });
    // A scope the issuer does not know, and no scope at all.
    expect(await rejection(issue(issuer, ['payments:read', 'nope']))).toBeInstanceOf(ScopeNotAllowed);
    expect(await rejection(issue(issuer, []))).toBeInstanceOf(ScopeNotAllowed);
    expect(await rejection(issue(issuer, ['__proto__']))).toBeInstanceOf(ScopeNotAllowed);
    expect(gh.calls.length).toBe(before);
  });

  it('maps GitHub 422 (repository not in the installation, permission beyond the App) to TargetNotAllowed', async () => {
    const e1 = await rejection(issue(issuer, ['ghost:read']));
    expect(e1).toBeInstanceOf(TargetNotAllowed);
    expect(tokenRequests(gh).at(-1)).toMatchObject({ status: 422, body: { repository_ids: [REPOS.notInstalled] } });
    const e2 = await rejection(issue(issuer, ['payments:admin']));
    expect(e2).toBeInstanceOf(TargetNotAllowed);
    expect(tokenRequests(gh).at(-1)).toMatchObject({ status: 422 });
    errors.push(e1, e2);
  });

  it('revokes: the token is dead afterwards, revoking twice is fine, an expired handle needs no call', async () => {
    const cred = await issue(issuer, ['payments:read']);
    const token = cred.accessToken.reveal();
    expect(gh.isLive(token)).toBe(true);
    await issuer.revoke(cred.revocationHandle!, ctx());
    expect(gh.isLive(token)).toBe(false);
    expect(await listRepos(gh, token)).toEqual({ status: 401, ids: [] });
    await issuer.revoke(cred.revocationHandle!, ctx()); // 401 from GitHub = already revoked
    const deletes = gh.calls.filter((c) => c.method === 'DELETE' && c.path === '/installation/token');
    expect(deletes.slice(-2).map((c) => [c.authScheme, c.status])).toEqual([
      ['bearer', 204],
      ['bearer', 401],
    ]);
    const before = gh.calls.length;
    const lapsed: GithubAppHandle = { ...(cred.revocationHandle as GithubAppHandle), githubExpiresAt: new Date(Date.now() - 1000).toISOString() };
    await issuer.revoke(lapsed, ctx());
    expect(gh.calls.length).toBe(before);
    await expect(issuer.revoke({ token: 'x' }, ctx())).rejects.toThrow(/holds no token/);
  });

  it('never hands out a revoked token again: an identical grant after revocation gets a new, live token', async () => {
    const first = await issue(issuer, ['everything:read']);
    await issuer.revoke(first.revocationHandle!, ctx());
    const second = await issue(issuer, ['everything:read']);
    expect(second.accessToken.reveal()).not.toBe(first.accessToken.reveal());
    expect(await listRepos(gh, second.accessToken.reveal())).toEqual({ status: 200, ids: [REPOS.payments, REPOS.web, REPOS.docs] });
    // The same through a second issuer instance (the library's state is per module, not per instance).
    const again = await issue(githubAppIssuerPlugin.create('gh2', configFor(gh.baseUrl), deps()), ['everything:read']);
    expect(again.accessToken.reveal()).not.toBe(second.accessToken.reveal());
    await issuer.revoke(second.revocationHandle!, ctx());
    await issuer.revoke(again.revocationHandle!, ctx());
  });

  it('gives concurrent identical grants distinct tokens: revoking one leaves the other working', async () => {
    const [a, b, c] = await Promise.all([issue(issuer, ['web:issues']), issue(issuer, ['web:issues']), issue(issuer, ['web:issues'])]);
    const tokens = new Set([a, b, c].map((x) => x!.accessToken.reveal()));
    expect(tokens.size).toBe(3);
    await issuer.revoke(a!.revocationHandle!, ctx());
    expect(gh.isLive(a!.accessToken.reveal())).toBe(false);
    expect(gh.isLive(b!.accessToken.reveal())).toBe(true);
    await issuer.revoke(b!.revocationHandle!, ctx());
    await issuer.revoke(c!.revocationHandle!, ctx());
  });

  it('reports expiry as min(GitHub expires_at, now + ttl)', async () => {
    const short = await issue(issuer, ['payments:read'], 300);
    expect(Math.abs(short.expiresAt.getTime() - (Date.now() + 300_000))).toBeLessThan(5000);
    expect(Date.parse((short.structured!.reveal() as { github_expires_at: string }).github_expires_at) - Date.now()).toBeGreaterThan(3500_000);
    await issuer.revoke(short.revocationHandle!, ctx());

    const brief = await startFakeGitHub(fakeOptions({ tokenTtlSeconds: 120 }));
    try {
      const cred = await issue(githubAppIssuerPlugin.create('gh-brief', configFor(brief.baseUrl), deps()), ['payments:read'], 900);
      const githubExpiry = Date.parse((cred.structured!.reveal() as { github_expires_at: string }).github_expires_at);
      expect(cred.expiresAt.getTime()).toBe(githubExpiry);
      expect(githubExpiry - Date.now()).toBeLessThanOrEqual(120_000);
      expect(githubExpiry - Date.now()).toBeGreaterThan(100_000);
    } finally {
      await brief.close();
    }
  });

  it('works against GitHub Enterprise Server (/api/v3 prefix), key from the environment', async () => {
    const ghes = await startFakeGitHub(fakeOptions({ pathPrefix: '/api/v3' }));
    try {
      expect(ghes.baseUrl).toMatch(/\/api\/v3$/);
      const ghesIssuer = githubAppIssuerPlugin.create('ghes', configFor(`${ghes.baseUrl}/`, { privateKey: { fromEnv: 'GH_APP_KEY' } }), deps({ GH_APP_KEY: app.privatePem }));
      const cred = await issue(ghesIssuer, ['web:issues']);
      expect(await listRepos(ghes, cred.accessToken.reveal())).toEqual({ status: 200, ids: [REPOS.web] });
      await ghesIssuer.revoke(cred.revocationHandle!, ctx());
      expect(ghes.isLive(cred.accessToken.reveal())).toBe(false);
      expect(ghes.calls.map((c) => `${c.method} ${c.path} ${c.status}`)).toEqual([
        `POST /api/v3/app/installations/${INSTALLATION_ID}/access_tokens 201`,
        'GET /api/v3/installation/repositories 200',
        'DELETE /api/v3/installation/token 204',
      ]);
    } finally {
      await ghes.close();
    }
  });

  it('a wrong private key or App ID is UpstreamUnavailable own-credentials-rejected (GitHub 401 on the App JWT)', async () => {
    const wrongKey = githubAppIssuerPlugin.create('gh-wrongkey', configFor(gh.baseUrl, { privateKey: { insecureValue: otherKey.privatePem } }), deps());
    const e1 = await rejection(issue(wrongKey, ['payments:read']));
    expect(e1).toBeInstanceOf(UpstreamUnavailable);
    expect((e1 as UpstreamUnavailable).detail).toMatchObject({ cause: 'own-credentials-rejected', status: 401 });
    expect(tokenRequests(gh).at(-1)).toMatchObject({ status: 401 });

    const wrongApp = githubAppIssuerPlugin.create('gh-wrongapp', configFor(gh.baseUrl, { appId: 1 }), deps());
    const e2 = await rejection(issue(wrongApp, ['payments:read']));
    expect((e2 as UpstreamUnavailable).detail).toMatchObject({ cause: 'own-credentials-rejected' });

    const garbage = githubAppIssuerPlugin.create('gh-garbage', configFor(gh.baseUrl, { privateKey: { insecureValue: 'not a key' } }), deps());
    const e3 = await rejection(issue(garbage, ['payments:read']));
    expect(e3).toBeInstanceOf(UpstreamUnavailable);
    expect((e3 as UpstreamUnavailable).detail).toMatchObject({ cause: 'own-credentials-invalid' });

    const wrongInstallation = githubAppIssuerPlugin.create('gh-noinst', configFor(gh.baseUrl, { installationId: 7 }), deps());
    const e4 = await rejection(issue(wrongInstallation, ['payments:read']));
    expect((e4 as UpstreamUnavailable).detail).toMatchObject({ cause: 'installation-not-found', status: 404 });
    errors.push(e1, e2, e3, e4);
  });

  it('GitHub down (5xx or unreachable) is UpstreamUnavailable, for issue and revoke', async () => {
    const live = await issue(issuer, ['payments:read']);
    gh.faults.failWith = 503;
    const e1 = await rejection(issue(issuer, ['payments:read']));
    expect(e1).toBeInstanceOf(UpstreamUnavailable);
    expect((e1 as UpstreamUnavailable).detail).toMatchObject({ cause: 'upstream-error', status: 503 });
    const e2 = await rejection(issuer.revoke(live.revocationHandle!, ctx()));
    expect(e2).toBeInstanceOf(UpstreamUnavailable);
    gh.faults.failWith = null;
    await issuer.revoke(live.revocationHandle!, ctx()); // the sweep's retry succeeds
    expect(gh.isLive(live.accessToken.reveal())).toBe(false);

    const gone = await startFakeGitHub(fakeOptions());
    const goneUrl = gone.baseUrl;
    await gone.close();
    const unreachable = githubAppIssuerPlugin.create('gh-gone', configFor(goneUrl, { timeoutMs: 2000 }), deps());
    const e3 = await rejection(issue(unreachable, ['payments:read']));
    expect(e3).toBeInstanceOf(UpstreamUnavailable);
    const e4 = await rejection(unreachable.revoke(live.revocationHandle!, ctx()));
    expect(e4).toBeInstanceOf(UpstreamUnavailable);
    errors.push(e1, e2, e3, e4);
  });

  it('validates its configuration strictly', () => {
    const base = { appId: APP_ID, privateKey: { fromFile: keyFile }, installationId: 1, repositories: [{ id: 1 }], scopes: { s: { permissions: { contents: 'read' } } } };
    expect(GithubAppIssuerConfigSchema.parse(base).baseUrl).toBe('https://api.github.com');
    expect(() => GithubAppIssuerConfigSchema.parse({ ...base, extra: 1 })).toThrow();
    expect(() => GithubAppIssuerConfigSchema.parse({ ...base, privateKey: '-----BEGIN RSA PRIVATE KEY-----' })).toThrow();
    expect(() => GithubAppIssuerConfigSchema.parse({ ...base, baseUrl: 'http://github.example.com/api/v3' })).toThrow();
    expect(() => GithubAppIssuerConfigSchema.parse({ ...base, scopes: { s: { permissions: { contents: 'owner' } } } })).toThrow();
    expect(() => GithubAppIssuerConfigSchema.parse({ ...base, repositories: [{ id: 1 }, { id: 1 }] })).toThrow();
    expect(GithubAppIssuerConfigSchema.parse({ ...base, baseUrl: 'https://ghe.example.com/api/v3' }).baseUrl).toBe('https://ghe.example.com/api/v3');
  });

  it('never puts a token or the private key into logs or error messages', () => {
    const everyToken = gh.tokens;
    expect(everyToken.length).toBeGreaterThan(5);
    const logs = logLines.join('\n');
    expect(logs).toContain('GitHub installation token issued'); // logging happened at all
    const errorText = errors.map((e) => `${e.message}\n${inspect(e, { depth: 10 })}\n${JSON.stringify(e)}`).join('\n');
    for (const text of [logs, errorText]) {
      for (const t of everyToken) expect(text).not.toContain(t);
      expect(text).not.toContain(pemBody(app.privatePem).slice(0, 64));
      expect(text).not.toContain(pemBody(otherKey.privatePem).slice(0, 64));
      expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/); // no App JWT either
    }
  });
});
