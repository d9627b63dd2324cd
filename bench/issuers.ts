/**
 * Issuance latency per credential issuer against its local target or fake: `npm run bench:issuers`.
 *
 * For each issuer: N sequential issue() calls (each followed by revoke(), not timed, so targets do
 * not fill up), reporting p50/p99/mean issue latency and p50 revoke latency. postgres and mysql
 * run against the real local servers (PostgreSQL 15, MariaDB); github-app, vault and aws-sts
 * against the in-process fakes of test/fakes (which verify signatures/tokens like the real
 * services: their CPU is in the numbers, the network round trip of the real services is not).
 *
 * Knobs: BENCH_ISSUES (per issuer, default 200), BENCH_ONLY_ISSUERS=postgres,mysql,...
 */
import { generateKeyPairSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { completed, type CredentialIssuer, type IssuerDeps } from '../src/credential-issuers/credential-issuer.js';
import { credentialIssuerCatalog } from '../src/credential-issuers/catalog.js';
import type { BlendedIdentity, CallContext } from '../src/core/types.js';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/log/logger.js';
import { randomLowerId, uuidv7 } from '../src/lib/crypto.js';
import { startFakeGitHub } from '../test/fakes/github-api.js';
import { startFakeVault } from '../test/fakes/vault.js';
import { startFakeSts } from '../test/fakes/aws-sts.js';
import { secretResolverFor } from '../src/config/secret-ref.js';

const N = Number(process.env.BENCH_ISSUES ?? 200);
const only = process.env.BENCH_ONLY_ISSUERS?.split(',').map((s) => s.trim());
const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const MY = process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/';

const identity: BlendedIdentity = {
  workload: { kind: 'workload', provider: 'bench', providerType: 'oidc', subject: 'bench://agent', attributes: {}, claims: {}, expiresAt: new Date(Date.now() + 3600_000) },
  priorActors: [],
};

interface Case {
  type: string;
  scopes: string[];
  requestedTarget?: string;
  setup(): Promise<{ config: unknown; env?: NodeJS.ProcessEnv; close(): Promise<void> }>;
}

const cases: Case[] = [
  { type: 'agent-sts-jwt', scopes: ['read'], requestedTarget: 'https://api.bench/', setup: async () => ({ config: {}, close: async () => {} }) },
  {
    type: 'postgres',
    scopes: ['read'],
    setup: async () => ({ config: { adminUrl: { fromEnv: 'PG' }, roles: { read: 'pg_read_all_data' }, rolePrefix: 'agsb_' }, env: { PG }, close: async () => {} }),
  },
  {
    type: 'mysql',
    scopes: ['read'],
    setup: async () => ({ config: { adminUrl: { fromEnv: 'MY' }, userPrefix: 'agsb_', grants: { read: [{ privileges: ['SELECT'], on: 'mysql_bench_none.*' }] } }, env: { MY }, close: async () => {} }),
  },
  {
    type: 'github-app',
    scopes: ['read'],
    async setup() {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const gh = await startFakeGitHub({ appId: 4242, publicKey, installationId: 77, repositories: [{ id: 1, name: 'app' }], permissions: { contents: 'read', metadata: 'read' } });
      return {
        config: { appId: 4242, privateKey: { fromEnv: 'GH' }, installationId: 77, baseUrl: gh.baseUrl, repositories: [{ id: 1 }], scopes: { read: { permissions: { contents: 'read' }, repositories: [1] } } },
        env: { GH: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
        close: () => gh.close(),
      };
    },
  },
  {
    type: 'vault',
    scopes: ['read'],
    async setup() {
      const vault = await startFakeVault({ tokens: ['bench-token'], mounts: ['database'], roles: { 'database/creds/readonly': { leaseDuration: 3600 } } });
      return { config: { endpoint: vault.base, token: { fromEnv: 'VT' }, mounts: ['database'], scopes: { read: { path: 'database/creds/readonly' } } }, env: { VT: 'bench-token' }, close: () => vault.close() };
    },
  },
  {
    type: 'aws-sts',
    scopes: ['deploy'],
    async setup() {
      const key = { accessKeyId: 'AKIABENCHISSUER00001', secretAccessKey: 'bench-issuer-secret/abcdefghijklmnopqrstu' };
      const arn = 'arn:aws:iam::111122223333:role/bench';
      const sts = await startFakeSts({ region: 'eu-west-1', keys: [{ ...key, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDABENCH' } }], roles: [{ arn, roleId: 'AROABENCHROLE0000001' }] });
      return {
        config: { region: 'eu-west-1', endpoint: sts.url, iamEndpoint: sts.iamUrl, credentials: { accessKeyId: key.accessKeyId, secretAccessKey: { fromEnv: 'AK' } }, roles: { deploy: { roleArn: arn } } },
        env: { AK: key.secretAccessKey },
        close: () => sts.close(),
      };
    },
  },
];

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main() {
  const logger = createLogger({ level: 'silent' });
  const rows = [['issuer', 'issue p50 ms', 'issue p99 ms', 'issue mean ms', 'revoke p50 ms', 'n', 'target']];
  for (const c of cases) {
    if (only && !only.includes(c.type)) continue;
    const s = await c.setup();
    const env = s.env ?? {};
    const deps: IssuerDeps = { logger, clock: systemClock, signer: await benchSigner(), issuerUrl: 'https://sts.bench', env, secret: secretResolverFor(`bench-${c.type}`, env, () => Buffer.alloc(32)) };
    const issuer: CredentialIssuer = credentialIssuerCatalog.get(c.type).create(`bench-${c.type}`, credentialIssuerCatalog.get(c.type).configSchema.parse(s.config), deps);
    const issueMs: number[] = [];
    const revokeMs: number[] = [];
    try {
      for (let i = 0; i < N + 5; i++) {
        const ctx: CallContext = { requestId: `bench-${i}`, now: new Date() };
        const taskId = `t_${randomLowerId(20)}`;
        const credentialId = uuidv7();
        const plannedHandle = issuer.planHandle?.({ taskId, credentialId });
        const t0 = performance.now();
        const cred = await completed(issuer.issue(
          {
            decision: { allow: true, policyVersion: 'bench', grantedScopes: c.scopes, ttlCapSeconds: 900, reasons: [] },
            identity: { ...identity, taskId }, taskId, credentialId, requestedTarget: c.requestedTarget ?? c.type, ttlSeconds: 900, plannedHandle,
          },
          ctx,
        )); // agent-sts-jwt: with its signature
        const t1 = performance.now();
        const handle = cred.revocationHandle ?? plannedHandle;
        // aws-sts: each live revoked session is a statement in the role's inline policy (10,240
        // characters, ~35 sessions): revoke only the first ones, the rest lapse at their expiry.
        const revoke = handle && issuer.needsActiveRevocation && (c.type !== 'aws-sts' || i < 25);
        if (revoke) await issuer.revoke(handle, ctx);
        const t2 = performance.now();
        if (i >= 5) {
          issueMs.push(t1 - t0);
          if (revoke) revokeMs.push(t2 - t1);
        }
      }
    } finally {
      await issuer.close?.();
      await s.close();
    }
    issueMs.sort((a, b) => a - b);
    revokeMs.sort((a, b) => a - b);
    const mean = issueMs.reduce((a, b) => a + b, 0) / issueMs.length;
    const target = c.type === 'postgres' ? 'PostgreSQL 15 (local)' : c.type === 'mysql' ? 'MariaDB (local)' : c.type === 'agent-sts-jwt' ? 'none (ES256 signature)' : 'fake (in-process)';
    rows.push([c.type, pct(issueMs, 50).toFixed(2), pct(issueMs, 99).toFixed(2), mean.toFixed(2), revokeMs.length ? pct(revokeMs, 50).toFixed(2) : '-', String(issueMs.length), target]);
    console.log(`  ${c.type}: issue p50 ${pct(issueMs, 50).toFixed(2)} ms, p99 ${pct(issueMs, 99).toFixed(2)} ms`);
  }
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((v, i) => (i === 0 || i === 6 ? v.padEnd(w[i]!) : v.padStart(w[i]!))).join(' | ')} |`;
  console.log(`\n${line(rows[0]!)}\n|${w.map((x, i) => (i === 0 || i === 6 ? `:${'-'.repeat(x + 1)}` : `${'-'.repeat(x + 1)}:`)).join('|')}|\n${rows.slice(1).map(line).join('\n')}`);
}

/** An ES256 signer for the agent-sts-jwt case (the key store's contract, without a database). */
async function benchSigner(): Promise<IssuerDeps['signer']> {
  const { generateKeyPair, SignJWT } = await import('jose');
  const { privateKey } = await generateKeyPair('ES256');
  return { sign: (payload, typ) => new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'bench', typ }).sign(privateKey) } as IssuerDeps['signer'];
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
