// Per-issuer health checks (for /readyz) and checkIssuers(): one cheap authenticated call per
// issuer against the real PostgreSQL / MariaDB and the fakes (Vault token lookup-self, GitHub's
// installation with the App JWT, AWS GetCallerIdentity with SigV4), each bounded by a short
// timeout; failures say what failed and never carry a secret (admin URL passwords, tokens, keys).
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CredentialIssuer, IssuerHealth } from '../../src/credential-issuers/credential-issuer.js';
import { checkIssuers, HEALTH_TIMEOUT_MS } from '../../src/credential-issuers/health.js';
import { postgresPlugin, PostgresIssuerConfigSchema } from '../../src/credential-issuers/postgres/postgres-issuer.js';
import { mysqlIssuerPlugin, MysqlIssuerConfigSchema } from '../../src/credential-issuers/mysql/mysql-issuer.js';
import { vaultIssuerPlugin, VaultIssuerConfigSchema } from '../../src/credential-issuers/vault/vault-issuer.js';
import { githubAppIssuerPlugin, GithubAppIssuerConfigSchema } from '../../src/credential-issuers/github-app/github-app-issuer.js';
import { awsStsIssuerPlugin, AwsStsIssuerConfigSchema } from '../../src/credential-issuers/aws-sts/aws-sts-issuer.js';
import { agentStsJwtPlugin } from '../../src/credential-issuers/agent-sts-jwt/agent-sts-jwt-issuer.js';
import { createLogger } from '../../src/log/logger.js';
import { closedPort } from '../fakes/http.js';
import { startFakeVault, type FakeVault } from '../fakes/vault.js';
import { startFakeGitHub, type FakeGitHub } from '../fakes/github-api.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { MYSQL_URL, PG_ADMIN_URL } from '../support/databases.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });

const PG_PASSWORD = 'pg-admin-password-never-in-health-Zq81';
const MY_PASSWORD = 'my-admin-password-never-in-health-Wv27';
const VAULT_TOKEN = 'hvs.health-check-own-token-never-shown';
const WRONG_VAULT_TOKEN = 'hvs.health-check-wrong-token-never-shown';
const SECRET_ID = 'approle-secret-id-never-in-health';
const AWS_KEY = { accessKeyId: 'AKIAHEALTHCHECK00001', secretAccessKey: 'health-check-own-secret/abcdefghijklmnop' };
const WRONG_AWS_SECRET = 'health-check-wrong-secret/abcdefghijklmno';
const APP_ID = 9191;
const INSTALLATION_ID = 4242;
const appKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (k: typeof appKey) => k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const env: NodeJS.ProcessEnv = {
  PG_OK: PG_ADMIN_URL,
  PG_CLOSED: '',
  PG_NO_ROLE: '',
  PG_BLACKHOLE: '',
  MY_OK: MYSQL_URL,
  MY_BAD_USER: '',
  VAULT_TOKEN,
  WRONG_VAULT_TOKEN,
  SECRET_ID,
  GH_KEY: pem(appKey),
  GH_OTHER_KEY: pem(otherKey),
  AWS_SECRET: AWS_KEY.secretAccessKey,
  AWS_WRONG_SECRET: WRONG_AWS_SECRET,
};
/** Everything a health detail or log line must never contain. */
const secrets = [PG_PASSWORD, MY_PASSWORD, VAULT_TOKEN, WRONG_VAULT_TOKEN, SECRET_ID, AWS_KEY.secretAccessKey, WRONG_AWS_SECRET, pem(appKey).split('\n')[1]!, pem(otherKey).split('\n')[1]!];
const details: string[] = [];
const built: CredentialIssuer[] = [];

function make<C>(plugin: { create(name: string, config: C, deps: ReturnType<typeof testIssuerDeps>): CredentialIssuer }, name: string, config: C): CredentialIssuer {
  const issuer = plugin.create(name, config, testIssuerDeps(logger, env, name));
  built.push(issuer);
  return issuer;
}

async function health(issuer: CredentialIssuer): Promise<IssuerHealth> {
  const h = await issuer.health!();
  if (!h.ok) details.push(h.detail);
  return h;
}

/** A TCP server that accepts connections and never answers: an upstream that hangs. */
async function startBlackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

const withPassword = (url: string, user: string, password: string) => {
  const u = new URL(url);
  u.username = user;
  u.password = password;
  return u.toString();
};

let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let closed: number;
beforeAll(async () => {
  blackhole = await startBlackhole();
  closed = await closedPort();
  env.PG_CLOSED = `postgres://postgres:${PG_PASSWORD}@127.0.0.1:${closed}/postgres`;
  env.PG_NO_ROLE = withPassword(PG_ADMIN_URL, 'ags_health_no_such_role', PG_PASSWORD);
  env.PG_BLACKHOLE = `postgres://postgres:${PG_PASSWORD}@127.0.0.1:${blackhole.port}/postgres`;
  env.MY_BAD_USER = withPassword(MYSQL_URL, 'ags_health_nobody', MY_PASSWORD);
  env.MY_CLOSED = `mysql://root:${MY_PASSWORD}@127.0.0.1:${closed}/`;
});
afterAll(async () => {
  for (const i of built) await i.close?.();
  await blackhole?.close();
  // No detail and no log line written here holds a secret.
  expect(details.length).toBeGreaterThan(10);
  for (const s of secrets) {
    expect(details.find((d) => d.includes(s))).toBeUndefined();
    expect(logLines.find((l) => l.includes(s))).toBeUndefined();
  }
});

describe('postgres and mysql: SELECT 1 on the admin connection', () => {
  const pg = (name: string, ref: string) => make(postgresPlugin, name, PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: ref }, roles: { read: 'r' } }));
  const my = (name: string, ref: string) => make(mysqlIssuerPlugin, name, MysqlIssuerConfigSchema.parse({ adminUrl: { fromEnv: ref }, grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }] } }));

  it('is ok against the running servers', async () => {
    expect(await health(pg('pg-ok', 'PG_OK'))).toEqual({ ok: true });
    expect(await health(my('my-ok', 'MY_OK'))).toEqual({ ok: true });
  });

  it('says the admin connection was refused, without the password in the admin URL', async () => {
    expect(await health(pg('pg-closed', 'PG_CLOSED'))).toEqual({ ok: false, detail: 'admin connection refused' });
    expect(await health(my('my-closed', 'MY_CLOSED'))).toEqual({ ok: false, detail: 'admin connection refused' });
  });

  it('says the admin login was rejected', async () => {
    expect(await health(pg('pg-no-role', 'PG_NO_ROLE'))).toEqual({ ok: false, detail: 'admin login rejected: no such role or no pg_hba.conf entry (28000)' });
    expect(await health(my('my-bad-user', 'MY_BAD_USER'))).toEqual({ ok: false, detail: 'admin login rejected (ER_ACCESS_DENIED_ERROR)' });
  });

  it('gives up after 2 s on a server that never answers', async () => {
    const started = Date.now();
    expect(await health(pg('pg-hang', 'PG_BLACKHOLE'))).toEqual({ ok: false, detail: 'timed out after 2 s' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(HEALTH_TIMEOUT_MS - 50);
    expect(Date.now() - started).toBeLessThan(HEALTH_TIMEOUT_MS + 1000);
  });

  it('says which secret reference does not resolve, not its value', async () => {
    expect(await health(pg('pg-unset', 'PG_NOT_SET'))).toEqual({ ok: false, detail: 'the admin URL secret reference does not resolve' });
  });
});

describe('vault: token lookup-self', () => {
  let vault: FakeVault;
  beforeAll(async () => {
    vault = await startFakeVault({ tokens: [VAULT_TOKEN], mounts: ['database'], approle: { roleId: 'agent-sts', secretId: SECRET_ID, tokenTtl: 600 } });
  });
  afterAll(() => vault?.close());
  const v = (name: string, extra: Record<string, unknown>, endpoint = vault.base) =>
    make(vaultIssuerPlugin, name, VaultIssuerConfigSchema.parse({ endpoint, mounts: ['database'], scopes: { read: { path: 'database/creds/ro' } }, ...extra }));

  it('is ok with a valid token, and with an AppRole login', async () => {
    expect(await health(v('vault-ok', { token: { fromEnv: 'VAULT_TOKEN' } }))).toEqual({ ok: true });
    expect(vault.calls.at(-1)).toMatchObject({ method: 'GET', path: '/v1/auth/token/lookup-self', authenticated: true });
    vault.calls.length = 0;
    expect(await health(v('vault-approle', { auth: { approle: { roleId: 'agent-sts', secretId: { fromEnv: 'SECRET_ID' } } } }))).toEqual({ ok: true });
    expect(vault.calls.map((c) => `${c.method} ${c.path}`)).toEqual(['POST /v1/auth/approle/login', 'GET /v1/auth/token/lookup-self']);
  });

  it('says Vault refused agent-sts own token', async () => {
    expect(await health(v('vault-wrong', { token: { fromEnv: 'WRONG_VAULT_TOKEN' } }))).toEqual({
      ok: false,
      detail: "Vault answered 403 to a lookup of agent-sts's own token (token or AppRole credentials rejected)",
    });
  });

  it('says Vault is sealed, unreachable or slow', async () => {
    vault.setSealed(true);
    try {
      expect(await health(v('vault-sealed', { token: { fromEnv: 'VAULT_TOKEN' } }))).toEqual({ ok: false, detail: 'Vault answered 503 (sealed, or a standby that cannot serve)' });
    } finally {
      vault.setSealed(false);
    }
    expect(await health(v('vault-down', { token: { fromEnv: 'VAULT_TOKEN' } }, `http://127.0.0.1:${closed}`))).toEqual({ ok: false, detail: 'Vault connection refused' });
    vault.faults.delayMs = HEALTH_TIMEOUT_MS + 1500;
    try {
      expect(await health(v('vault-slow', { token: { fromEnv: 'VAULT_TOKEN' } }))).toEqual({ ok: false, detail: 'timed out after 2 s' });
    } finally {
      vault.faults.delayMs = 0;
    }
  });
});

describe('github-app: the installation, with the App JWT', () => {
  let gh: FakeGitHub;
  beforeAll(async () => {
    gh = await startFakeGitHub({ appId: APP_ID, publicKey: appKey.publicKey, installationId: INSTALLATION_ID, repositories: [{ id: 1, name: 'app' }], permissions: { contents: 'read', metadata: 'read' } });
  });
  afterAll(() => gh?.close());
  const g = (name: string, over: Record<string, unknown> = {}) =>
    make(
      githubAppIssuerPlugin,
      name,
      GithubAppIssuerConfigSchema.parse({ appId: APP_ID, privateKey: { fromEnv: 'GH_KEY' }, installationId: INSTALLATION_ID, baseUrl: gh.baseUrl, repositories: [{ id: 1 }], scopes: { read: { permissions: { contents: 'read' } } }, ...over }),
    );

  it('is ok when GitHub accepts the App JWT and the installation is active; no token is minted', async () => {
    expect(await health(g('gh-ok'))).toEqual({ ok: true });
    expect(gh.calls.at(-1)).toMatchObject({ method: 'GET', path: `/app/installations/${INSTALLATION_ID}`, authScheme: 'bearer', status: 200 });
    expect(gh.tokens).toEqual([]);
  });

  it('says GitHub answered 401 for the App JWT signed with the wrong key', async () => {
    expect(await health(g('gh-wrong-key', { privateKey: { fromEnv: 'GH_OTHER_KEY' } }))).toEqual({ ok: false, detail: 'GitHub API answered 401 for the App JWT (wrong App ID or private key)' });
  });

  it('says the installation is gone or suspended', async () => {
    expect(await health(g('gh-other-installation', { installationId: INSTALLATION_ID + 1 }))).toEqual({
      ok: false,
      detail: `GitHub API answered 404 for installation ${INSTALLATION_ID + 1} (not installed, or installed for another App)`,
    });
    gh.setSuspended(true);
    try {
      expect(await health(g('gh-suspended'))).toEqual({ ok: false, detail: `GitHub App installation ${INSTALLATION_ID} is suspended` });
    } finally {
      gh.setSuspended(false);
    }
  });

  it('says GitHub is unreachable or slow, and that an unusable key cannot sign', async () => {
    expect(await health(g('gh-down', { baseUrl: `http://127.0.0.1:${closed}` }))).toEqual({ ok: false, detail: 'GitHub API connection refused' });
    gh.faults.delayMs = HEALTH_TIMEOUT_MS + 1000;
    try {
      expect(await health(g('gh-slow'))).toEqual({ ok: false, detail: 'timed out after 2 s' });
    } finally {
      gh.faults.delayMs = 0;
    }
    expect(await health(g('gh-no-key', { privateKey: { insecureValue: 'not a key' } }))).toEqual({
      ok: false,
      detail: 'the App private key could not sign a JWT (unresolvable reference or not a usable RSA key)',
    });
  });
});

describe('aws-sts: GetCallerIdentity with agent-sts own credentials', () => {
  let sts: FakeSts;
  beforeAll(async () => {
    sts = await startFakeSts({ region: 'eu-west-1', keys: [{ ...AWS_KEY, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAHEALTH' } }] });
  });
  afterAll(() => sts?.close());
  const a = (name: string, secretRef: string, endpoint = sts.url, accessKeyId = AWS_KEY.accessKeyId) =>
    make(awsStsIssuerPlugin, name, AwsStsIssuerConfigSchema.parse({ region: 'eu-west-1', endpoint, credentials: { accessKeyId, secretAccessKey: { fromEnv: secretRef } }, roles: { deploy: { roleArn: 'arn:aws:iam::111122223333:role/deploy' } } }));

  it('is ok when STS verifies the signature', async () => {
    expect(await health(a('aws-ok', 'AWS_SECRET'))).toEqual({ ok: true });
    expect(sts.calls.at(-1)).toMatchObject({ accessKeyId: AWS_KEY.accessKeyId, status: 200 });
  });

  it('says STS refused agent-sts own credentials', async () => {
    expect(await health(a('aws-wrong-secret', 'AWS_WRONG_SECRET'))).toEqual({ ok: false, detail: "AWS STS refused agent-sts's own credentials (SignatureDoesNotMatch)" });
    expect(await health(a('aws-unknown-key', 'AWS_SECRET', sts.url, 'AKIAUNKNOWNKEY000001'))).toEqual({ ok: false, detail: "AWS STS refused agent-sts's own credentials (InvalidClientTokenId)" });
  });

  it('says STS is unreachable', async () => {
    expect(await health(a('aws-down', 'AWS_SECRET', `http://127.0.0.1:${closed}`))).toEqual({ ok: false, detail: 'AWS STS connection refused' });
  });
});

describe('checkIssuers', () => {
  const counting = (name: string, answer: () => Promise<IssuerHealth>) => {
    const calls = { n: 0 };
    const issuer = { name, type: 'fake', health: async () => (calls.n++, answer()) } as unknown as CredentialIssuer;
    return { issuer, calls };
  };

  it('checks every issuer in parallel: a passing and a failing postgres, and an issuer with nothing upstream', async () => {
    const pgOk = make(postgresPlugin, 'db-ok', PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'PG_OK' }, roles: { read: 'r' } }));
    const pgDown = make(postgresPlugin, 'db-down', PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'PG_CLOSED' }, roles: { read: 'r' } }));
    const pgHang = make(postgresPlugin, 'db-hang', PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'PG_BLACKHOLE' }, roles: { read: 'r' } }));
    const jwt = make(agentStsJwtPlugin, 'tokens', {});
    const check = checkIssuers([pgOk, pgDown, pgHang, jwt], { timeoutMs: 500 });
    const started = Date.now();
    const result = await check();
    expect(Date.now() - started).toBeLessThan(1500); // in parallel, the hanging one cut at 500 ms
    expect(result).toEqual({ 'db-ok': 'ok', 'db-down': 'admin connection refused', 'db-hang': 'timed out after 500 ms', tokens: 'ok' });
    details.push(...Object.values(result));
  });

  it('reuses an answer for cacheMs and shares a round in progress', async () => {
    const { issuer, calls } = counting('slowish', () => new Promise((r) => setTimeout(() => r({ ok: true }), 50)));
    const check = checkIssuers([issuer], { cacheMs: 300 });
    const [a, b] = await Promise.all([check(), check()]);
    expect(a).toEqual({ slowish: 'ok' });
    expect(b).toEqual({ slowish: 'ok' });
    expect(calls.n).toBe(1);
    await check();
    expect(calls.n).toBe(1);
    await new Promise((r) => setTimeout(r, 350));
    await check();
    expect(calls.n).toBe(2);
  });

  it('reports a health() that rejects by its error class only, never its message', async () => {
    const { issuer } = counting('broken', () => Promise.reject(new TypeError(`boom ${PG_PASSWORD}`)));
    const result = await checkIssuers([issuer], { cacheMs: 0 })();
    expect(result).toEqual({ broken: 'health check failed (TypeError)' });
    details.push(result.broken!);
  });

  it('reads a Map of issuers anew each round, and a one-shot iterator once', async () => {
    const a = counting('a', async () => ({ ok: true }));
    const b = counting('b', async () => ({ ok: false, detail: 'b is down' }));
    const live = new Map([['a', a.issuer]]);
    const check = checkIssuers({ [Symbol.iterator]: () => live.values() }, { cacheMs: 0 });
    expect(await check()).toEqual({ a: 'ok' });
    live.set('b', b.issuer);
    expect(await check()).toEqual({ a: 'ok', b: 'b is down' });
    const once = checkIssuers(live.values(), { cacheMs: 0 });
    expect(await once()).toEqual({ a: 'ok', b: 'b is down' });
    expect(await once()).toEqual({ a: 'ok', b: 'b is down' });
  });
});
