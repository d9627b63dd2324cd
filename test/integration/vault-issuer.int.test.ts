// The `vault` credential issuer against a fake Vault speaking the real HTTP API over loopback:
// one lease per credential, expires_at = min(lease, ttl), revocation through sys/leases/revoke
// (idempotent), AppRole login with re-login, error mapping (own credentials rejected, Vault down or
// sealed), one scope per credential, safe configured paths, and no secret in logs or errors.
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson, vaultIssuerPlugin, VaultIssuerConfigSchema, type VaultHandle } from '../../src/credential-issuers/vault/vault-issuer.js';
import { completed, type CredentialIssuer, type IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { credentialIssuerCatalog } from '../../src/credential-issuers/catalog.js';
import type { BlendedIdentity, CallContext, Credential } from '../../src/core/types.js';
import { ScopeNotAllowed, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { credentialFingerprint } from '../../src/lib/crypto.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';
import { createLogger } from '../../src/log/logger.js';
import { startFakeVault, type FakeVault } from '../fakes/vault.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

const TOKEN = 'hvs.agent-sts-own-token-not-for-logs';
const SECRET_ID = 'approle-secret-id-not-for-logs';
const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });
const ctx = (): CallContext => ({ requestId: 'test', now: new Date() });
const deps = (env: NodeJS.ProcessEnv = {}): IssuerDeps => testIssuerDeps(logger, env);
const errorText = (e: unknown) => `${(e as Error).message}\n${(e as Error).stack}\n${inspect(e, { depth: 10 })}\n${JSON.stringify(e)}\n${inspect((e as Error).cause, { depth: 10 })}`;

const baseConfig = (endpoint: string, extra: Record<string, unknown> = {}) =>
  VaultIssuerConfigSchema.parse({
    endpoint,
    token: { fromEnv: 'VAULT_ISSUER_TOKEN' },
    mounts: ['database', 'aws'],
    scopes: {
      read: { path: 'database/creds/readonly' },
      long: { path: 'database/creds/long' },
      deploy: { path: 'aws/creds/deploy' },
    },
    ...extra,
  });

function issue(issuer: CredentialIssuer, scopes: string[], ttlSeconds = 300): Promise<Credential> {
  return completed(issuer.issue(
    {
      decision: { allow: true, policyVersion: 'v1', grantedScopes: scopes, ttlCapSeconds: ttlSeconds, reasons: [] },
      identity: {} as BlendedIdentity,
      taskId: 'task-1',
      credentialId: 'cred-1',
      requestedTarget: 'vault',
      ttlSeconds,
    },
    ctx(),
  ));
}

describe('vault credential issuer (fake Vault over HTTP)', () => {
  let vault: FakeVault;
  let issuer: CredentialIssuer;
  const secrets: string[] = [TOKEN, SECRET_ID];

  beforeAll(async () => {
    vault = await startFakeVault({
      tokens: [TOKEN],
      namespace: 'team-a',
      mounts: ['database', 'aws'],
      roles: {
        'database/creds/readonly': { leaseDuration: 120 },
        'database/creds/long': { leaseDuration: 86_400 },
        'aws/creds/deploy': { leaseDuration: 900, data: () => ({ access_key: 'AKIAFAKE0000000000', secret_key: `sk-${Math.random().toString(36).slice(2)}`, security_token: null }) },
      },
      approle: { roleId: 'role-agent-sts', secretId: SECRET_ID, tokenTtl: 3600 },
    });
    issuer = vaultIssuerPlugin.create('vault', baseConfig(vault.base, { namespace: 'team-a' }), deps({ VAULT_ISSUER_TOKEN: TOKEN }));
  });
  afterAll(async () => {
    await issuer?.close?.();
    await vault?.close();
  });

  const remember = (cred: Credential) => {
    for (const [k, v] of Object.entries(cred.structured!.reveal())) if (typeof v === 'string' && k !== 'expires_at' && k !== 'username' && k !== 'access_key') secrets.push(v);
    secrets.push(cred.accessToken.reveal());
    return cred;
  };

  it('is registered in the catalog with its token type and active revocation', () => {
    expect(credentialIssuerCatalog.get('vault')).toBe(vaultIssuerPlugin);
    expect(TOKEN_TYPE.vaultSecret).toBe('urn:agent-sts:token-type:vault-secret');
    expect(issuer).toMatchObject({ type: 'vault', name: 'vault', issuedTokenTypes: [TOKEN_TYPE.vaultSecret], needsActiveRevocation: true });
    expect(issuer.planHandle).toBeUndefined();
  });

  it('issues database credentials: data returned, lease alive, expires_at = lease when shorter than ttl', async () => {
    const before = Date.now();
    const cred = remember(await issue(issuer, ['read'], 300));
    const s = cred.structured!.reveal() as { username: string; password: string; expires_at: string };
    const handle = cred.revocationHandle as VaultHandle;
    const lease = vault.leases.get(handle.leaseId)!;
    expect(lease).toBeDefined();
    expect(handle).toEqual({ leaseId: lease.id });
    expect(handle.leaseId).toMatch(/^database\/creds\/readonly\/[A-Za-z0-9]+$/);
    expect(s).toMatchObject({ username: lease.data.username, password: lease.data.password, expires_at: cred.expiresAt.toISOString() });
    expect(cred).toMatchObject({ id: 'cred-1', issuedTokenType: TOKEN_TYPE.vaultSecret, tokenType: 'N_A' });
    expect(cred.accessToken.reveal()).toBe(canonicalJson(lease.data));
    expect(cred.fingerprint).toBe(credentialFingerprint(canonicalJson(lease.data)));
    expect(cred.expiresAt.getTime() - before).toBeGreaterThanOrEqual(119_000);
    expect(cred.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(120_000);
    expect(vault.isAlive(handle.leaseId)).toBe(true);
    const read = vault.calls.filter((c) => c.path === '/v1/database/creds/readonly').at(-1)!;
    expect(read).toMatchObject({ method: 'GET', namespace: 'team-a', authenticated: true });
  });

  it('caps a long lease to a short ttl (expires_in is the truth) and the sweep revokes it then', async () => {
    const cred = remember(await issue(issuer, ['long'], 60));
    const lease = vault.leases.get((cred.revocationHandle as VaultHandle).leaseId)!;
    expect(lease.expireTime.getTime() - Date.now()).toBeGreaterThan(86_000_000); // Vault's lease is a day
    const expiresIn = (cred.expiresAt.getTime() - Date.now()) / 1000;
    expect(expiresIn).toBeGreaterThan(58);
    expect(expiresIn).toBeLessThanOrEqual(60);
    await issuer.revoke(cred.revocationHandle!, ctx());
    expect(vault.isAlive(lease.id)).toBe(false);
  });

  it('returns other engines’ data as is (aws/creds)', async () => {
    const cred = remember(await issue(issuer, ['deploy'], 3600));
    expect(cred.structured!.reveal()).toMatchObject({ access_key: 'AKIAFAKE0000000000', secret_key: expect.stringMatching(/^sk-/), security_token: null });
    expect((cred.expiresAt.getTime() - Date.now()) / 1000).toBeLessThanOrEqual(900);
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it('revokes through sys/leases/revoke, checked with sys/leases/lookup; revoking twice is fine', async () => {
    const cred = remember(await issue(issuer, ['read']));
    const { leaseId } = cred.revocationHandle as VaultHandle;
    const lookup = () =>
      fetch(`${vault.base}/v1/sys/leases/lookup`, { method: 'PUT', headers: { 'X-Vault-Token': TOKEN, 'X-Vault-Namespace': 'team-a' }, body: JSON.stringify({ lease_id: leaseId }) });
    const alive = await lookup();
    expect(alive.status).toBe(200);
    expect(((await alive.json()) as { data: { id: string; ttl: number } }).data).toMatchObject({ id: leaseId, ttl: expect.any(Number) });

    await issuer.revoke(cred.revocationHandle!, ctx());
    const dead = await lookup();
    expect(dead.status).toBe(400);
    expect(await dead.json()).toEqual({ errors: ['invalid lease'] });
    expect(vault.calls.filter((c) => c.path === '/v1/sys/leases/revoke').at(-1)).toMatchObject({ method: 'PUT', namespace: 'team-a', body: { lease_id: leaseId } });

    await expect(issuer.revoke(cred.revocationHandle!, ctx())).resolves.toBeUndefined();
    await expect(issuer.revoke({ leaseId: 'database/creds/readonly/neverexisted' }, ctx())).resolves.toBeUndefined();
  });

  it('refuses to revoke leases outside its scope paths or malformed handles', async () => {
    const n = vault.calls.length;
    for (const leaseId of ['auth/token/create/abc', 'database/creds/other/abc', 'database/creds/readonly/../../sys/x', '/database/creds/readonly/x', 42, undefined])
      await expect(issuer.revoke({ leaseId }, ctx()), String(leaseId)).rejects.toThrow(/lease/);
    expect(vault.calls.length).toBe(n);
  });

  it('refuses anything but exactly one configured scope, before calling Vault', async () => {
    const n = vault.calls.length;
    await expect(issue(issuer, ['read', 'deploy'])).rejects.toBeInstanceOf(ScopeNotAllowed);
    await expect(issue(issuer, [])).rejects.toBeInstanceOf(ScopeNotAllowed);
    await expect(issue(issuer, ['nope'])).rejects.toBeInstanceOf(ScopeNotAllowed);
    await expect(issue(issuer, ['constructor'])).rejects.toBeInstanceOf(ScopeNotAllowed);
    expect(vault.calls.length).toBe(n);
  });

  it('a wrong token is UpstreamUnavailable with cause own-credentials-rejected, and leaks nothing', async () => {
    const wrong = vaultIssuerPlugin.create('wrong', baseConfig(vault.base, { namespace: 'team-a' }), deps({ VAULT_ISSUER_TOKEN: 'hvs.wrong-token-not-for-logs' }));
    secrets.push('hvs.wrong-token-not-for-logs');
    const err = (await issue(wrong, ['read']).catch((e: unknown) => e)) as UpstreamUnavailable;
    expect(err).toBeInstanceOf(UpstreamUnavailable);
    expect(err).toMatchObject({ status: 503, oauthCode: 'temporarily_unavailable', detail: { issuer: 'wrong', status: 403, cause: 'own-credentials-rejected' } });
    expect(vault.calls.at(-1)).toMatchObject({ path: '/v1/database/creds/readonly', authenticated: true });
    for (const s of secrets) expect(errorText(err)).not.toContain(s);
    // Missing namespace: the token does not exist in the root namespace either.
    const noNs = vaultIssuerPlugin.create('nons', baseConfig(vault.base), deps({ VAULT_ISSUER_TOKEN: TOKEN }));
    await expect(issue(noNs, ['read'])).rejects.toMatchObject({ detail: { cause: 'own-credentials-rejected' } });
    await expect(wrong.revoke({ leaseId: 'database/creds/readonly/x' }, ctx())).rejects.toBeInstanceOf(UpstreamUnavailable);
  });

  it('Vault down or sealed is UpstreamUnavailable; an unknown role is a plain (server) error', async () => {
    const down = vaultIssuerPlugin.create('down', baseConfig('http://127.0.0.1:1'), deps({ VAULT_ISSUER_TOKEN: TOKEN }));
    const err = (await issue(down, ['read']).catch((e: unknown) => e)) as UpstreamUnavailable;
    expect(err).toBeInstanceOf(UpstreamUnavailable);
    expect(err.detail).toMatchObject({ issuer: 'down', code: 'ECONNREFUSED' });
    for (const s of secrets) expect(errorText(err)).not.toContain(s);
    await expect(down.revoke({ leaseId: 'database/creds/readonly/x' }, ctx())).rejects.toBeInstanceOf(UpstreamUnavailable);

    vault.setSealed(true);
    try {
      const sealed = (await issue(issuer, ['read']).catch((e: unknown) => e)) as UpstreamUnavailable;
      expect(sealed).toBeInstanceOf(UpstreamUnavailable);
      expect(sealed.detail).toMatchObject({ status: 503 });
    } finally {
      vault.setSealed(false);
    }

    const other = vaultIssuerPlugin.create('other', baseConfig(vault.base, { namespace: 'team-a', scopes: { x: { path: 'database/creds/missing' } } }), deps({ VAULT_ISSUER_TOKEN: TOKEN }));
    const unknown = (await issue(other, ['x']).catch((e: unknown) => e)) as Error;
    expect(unknown).not.toBeInstanceOf(UpstreamUnavailable);
    expect(unknown.message).toMatch(/HTTP 400.*unknown role/);
  });

  it('logs in with AppRole, reuses the token, logs in again when Vault rejects it', async () => {
    const approle = vaultIssuerPlugin.create(
      'approle',
      VaultIssuerConfigSchema.parse({
        endpoint: vault.base,
        namespace: 'team-a',
        auth: { approle: { roleId: 'role-agent-sts', secretId: { fromEnv: 'SID' } } },
        mounts: ['database'],
        scopes: { read: { path: 'database/creds/readonly' } },
      }),
      deps({ SID: SECRET_ID }),
    );
    const logins = () => vault.calls.filter((c) => c.path === '/v1/auth/approle/login').length;
    const n = logins();
    const a = remember(await issue(approle, ['read']));
    await issue(approle, ['read']).then(remember);
    expect(logins()).toBe(n + 1);
    secrets.push(...vault.issuedTokens);
    vault.revokeToken(vault.issuedTokens.at(-1)!);
    await issuer.revoke(a.revocationHandle!, ctx());
    await approle.revoke(a.revocationHandle!, ctx()); // 403 -> fresh login -> retry
    expect(logins()).toBe(n + 2);
    secrets.push(...vault.issuedTokens);

    const bad = vaultIssuerPlugin.create(
      'badrole',
      VaultIssuerConfigSchema.parse({ endpoint: vault.base, namespace: 'team-a', auth: { approle: { roleId: 'role-agent-sts', secretId: { insecureValue: 'wrong-secret-id-xyz' } } }, mounts: ['database'], scopes: { read: { path: 'database/creds/readonly' } } }),
      deps(),
    );
    const err = (await issue(bad, ['read']).catch((e: unknown) => e)) as UpstreamUnavailable;
    expect(err).toBeInstanceOf(UpstreamUnavailable);
    expect(err.detail).toMatchObject({ status: 400, cause: 'own-credentials-rejected' });
    expect(errorText(err)).not.toContain('wrong-secret-id-xyz');
  });

  it('refuses unsafe or inconsistent configurations', () => {
    const parse = (over: Record<string, unknown>) =>
      VaultIssuerConfigSchema.safeParse({ endpoint: 'https://vault.example.internal:8200', token: { fromEnv: 'T' }, mounts: ['database'], scopes: { s: { path: 'database/creds/ro' } }, ...over });
    expect(parse({}).success).toBe(true);
    for (const path of ['../sys/leases/revoke-prefix/x', 'database/../sys/raw', 'database/creds/..', '/database/creds/ro', 'database//creds', 'database/creds/ro?list=1', 'database/creds/ro#x', 'database/creds/%2e%2e', 'database/creds/ro ', 'sys/leases/lookup', 'secret/data/x', 'database/./creds/ro', ''])
      expect(parse({ scopes: { s: { path } } }).success, path).toBe(false);
    for (const mounts of [['sys'], ['auth'], ['../x'], ['/database'], [], ['identity/x']]) expect(parse({ mounts, scopes: { s: { path: `${String(mounts[0])}/creds/x` } } }).success, String(mounts)).toBe(false);
    expect(parse({ token: 'hvs.inline' }).success).toBe(false);
    expect(parse({ token: undefined }).success).toBe(false); // no credentials at all
    expect(parse({ auth: { approle: { roleId: 'r', secretId: { fromEnv: 'S' } } } }).success).toBe(false); // both
    expect(parse({ endpoint: 'ftp://vault' }).success).toBe(false);
    expect(parse({ endpoint: 'https://u:p@vault' }).success).toBe(false);
    expect(parse({ namespace: 'team a' }).success).toBe(false);
    expect(parse({ scopes: {} }).success).toBe(false);
    expect(parse({ scopes: { s: { path: 'database/creds/ro', extra: 1 } } }).success).toBe(false);
    expect(parse({ unknown: 1 }).success).toBe(false);
  });

  it('never writes secret data, tokens or lease ids to the logs', () => {
    expect(logLines.length).toBeGreaterThan(3);
    const all = logLines.join('');
    expect(all).toContain('leaseFp');
    for (const s of secrets) expect(all).not.toContain(s);
    for (const lease of vault.leases.values()) {
      expect(all).not.toContain(lease.id);
      for (const v of Object.values(lease.data)) if (typeof v === 'string' && v.length > 12) expect(all).not.toContain(v);
    }
  });
});
