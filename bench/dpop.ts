/**
 * What DPoP (RFC 9449) costs a per-tool-call exchange: `npm run bench:dpop`.
 *
 * A real broker (in-process, SQLite store, as in the e2e tests) with an agent-sts-jwt target. One
 * client, sequential calls, alternating blocks of 100: the per-tool-call exchange with an unbound
 * agent token, and with a DPoP-bound one plus a fresh proof (signed before the timer starts, so
 * only the broker's side is timed: proof verification, the single-use `jti` insert, the binding
 * checks). Also the client's own cost of signing one proof (jose, ES256).
 *
 * Then the same two modes under load: BENCH_CLIENTS clients at once (default 20), BENCH_LOAD_CALLS
 * calls per mode and round (default 4000), three rounds alternating; calls/s and latency.
 *
 * Knobs: BENCH_CALLS (per mode, default 2000), BENCH_CLIENTS, BENCH_LOAD_CALLS.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE } from '../test/support/broker.js';
import { startFakeOidcIssuer } from '../test/fakes/oidc-issuer.js';

const N = Number(process.env.BENCH_CALLS ?? 2000);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 20);
const LOAD_CALLS = Number(process.env.BENCH_LOAD_CALLS ?? 4000);
const ROUNDS = 3;
const BLOCK = 100;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main() {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const issuer = await startFakeOidcIssuer();
  const dir = mkdtempSync(join(tmpdir(), 'agsts-bench-dpop-'));
  const broker = await startBroker({
    storage: { url: `file:${join(dir, 'store.db')}` },
    logging: { level: 'warn' },
    trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'sts', subjectTemplate: 'bench://{sub}' } }],
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [{ name: 'mcp', resources: ['https://mcp.bench/'], issuer: 'tokens', scopes: ['tools:run'] }],
    policy: { rules: [{ id: 'bench', workload: { subjectPattern: 'bench://.+' }, agentToken: { maxTtl: '1h' }, grants: [{ target: 'mcp', scopes: ['tools:run'], maxTtl: '5m' }] }] },
  });
  try {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const tokenUrl = `${broker.url}/oauth2/token`;
    const proof = (token?: string) =>
      new SignJWT({ jti: randomUUID(), htm: 'POST', htu: tokenUrl, iat: Math.floor(Date.now() / 1000), ...(token ? { ath: createHash('sha256').update(token).digest('base64url') } : {}) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey);
    const startup = async (dpop?: string) => {
      const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await issuer.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE }, { headers: dpop ? { dpop } : {} });
      if (r.status !== 200) throw new Error(`start-up: HTTP ${r.status} ${r.text}`);
      return r.json.access_token as string;
    };
    const plain = await startup();
    const bound = await startup(await proof());
    const call = async (agent: string, dpop?: string) => {
      const t0 = performance.now();
      const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp.bench/', scope: 'tools:run' }, { headers: dpop ? { dpop } : {} });
      const ms = performance.now() - t0;
      if (r.status !== 200) throw new Error(`tool call: HTTP ${r.status} ${r.text}`);
      return ms;
    };
    // warm-up
    for (let i = 0; i < 50; i++) {
      await call(plain);
      await call(bound, await proof(bound));
    }
    const plainMs: number[] = [];
    const boundMs: number[] = [];
    const signMs: number[] = [];
    for (let done = 0; done < N; done += BLOCK) {
      for (let i = 0; i < BLOCK; i++) plainMs.push(await call(plain));
      for (let i = 0; i < BLOCK; i++) {
        const t0 = performance.now();
        const p = await proof(bound);
        signMs.push(performance.now() - t0);
        boundMs.push(await call(bound, p));
      }
      log(`  ${done + BLOCK}/${N} calls of each`);
    }
    const line = (name: string, xs: number[]) => `${name.padEnd(44)} p50 ${pct(xs, 50).toFixed(2)} ms, p90 ${pct(xs, 90).toFixed(2)} ms, p99 ${pct(xs, 99).toFixed(2)} ms`;
    console.log(`DPoP cost per tool call (one client, sequential, ${N} calls each, SQLite store)`);
    console.log(line('per-tool-call exchange, unbound agent token', plainMs));
    console.log(line('per-tool-call exchange, DPoP-bound + proof', boundMs));
    console.log(line('client: signing one proof (jose ES256)', signMs));
    console.log(`added by DPoP at the broker: p50 +${(pct(boundMs, 50) - pct(plainMs, 50)).toFixed(2)} ms`);

    // Under load: C clients at once, each with its own next call ready; the proofs are signed
    // beforehand (in blocks, so none is older than the 60 s a proof lives).
    const load = async (agent: string, dpop: boolean) => {
      const proofs = dpop ? await Promise.all(Array.from({ length: LOAD_CALLS }, () => proof(agent))) : [];
      const ms: number[] = [];
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          for (let i; (i = next++) < LOAD_CALLS; ) ms.push(await call(agent, dpop ? proofs[i] : undefined));
        }),
      );
      const rate = LOAD_CALLS / ((performance.now() - t0) / 1000);
      return { ms, rate };
    };
    console.log(`under load (${CLIENTS} clients at once, ${LOAD_CALLS} calls per mode and round, ${ROUNDS} rounds alternating; client and broker share the cores)`);
    const results = { unbound: [] as { ms: number[]; rate: number }[], bound: [] as { ms: number[]; rate: number }[] };
    for (let r = 0; r < ROUNDS; r++) {
      results.unbound.push(await load(plain, false));
      results.bound.push(await load(bound, true));
      log(`  round ${r + 1}/${ROUNDS}`);
    }
    for (const [name, rs] of Object.entries(results)) {
      const all = rs.flatMap((x) => x.ms);
      console.log(`${`${name} agent token`.padEnd(44)} ${rs.map((x) => Math.round(x.rate)).join(', ')} calls/s; p50 ${pct(all, 50).toFixed(2)} ms, p99 ${pct(all, 99).toFixed(2)} ms`);
    }
  } finally {
    await broker.close();
    await issuer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`bench:dpop failed: ${(e as Error).message}`);
  process.exit(1);
});
