/**
 * Policy decisions per second on one core: `npm run bench:policy`.
 *
 * For N = 10, 1,000 and 10,000 generated rules (one v2 document per 100 rules, 10 rules per
 * target), one sequential loop of `engine.evaluate()` over a pre-built mix of requests:
 *   rule i % 4 == 0  agent rule, exact subject + attribute list + CEL `delegation.depth <= 2 && env.hour < 24`
 *   rule i % 4 == 1  agent rule, provider + subject pattern `dev://team-i/.+`, two scopes with parameters
 *   rule i % 4 == 2  agent rule, exact subject, `human: optional`, session-tag obligations
 *   rule i % 4 == 3  human rule, issuer + group, for the target of rule i - 1 (so those decisions intersect)
 * Requests: 70 % allowed (a quarter of them for an agent acting for a person, i.e. an
 * intersection), 30 % denied (wrong attribute, scope not granted, person not allowed).
 * Reported: decisions/s overall and for allows and denials separately, and the compile time.
 *
 * Then the exchange endpoint with 1,000 policies loaded: a real broker process (as `npm run
 * bench`: bench/agent-sts-server.ts, SQLite store, autocannon) answering the per-tool-call exchange
 * (agent token -> access token) with 1,000 generated v2 rules in its policy.dir — all granting the
 * same target, the four shapes above, one of them (exact subject, CEL condition, scope parameters)
 * deciding the measured request — against the same broker without them.
 *
 * Knobs: BENCH_POLICY_SECONDS (per measurement, default 2), BENCH_POLICY_SIZES=10,1000,10000,
 * BENCH_POLICY_EXCHANGE=0 (skip the exchange part), BENCH_POLICY_ROUNDS (default 2: the two brokers
 * alternate, so other load on a shared machine hits both alike), BENCH_DURATION / BENCH_CONNECTIONS / BENCH_WARMUP (its load).
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import type { BlendedIdentity, HumanContext } from '../src/core/types.js';
import type { LoadedDocument, PolicyDocument } from '../src/policy/policy-document.js';
import { createPolicyEngine, type PolicyRequest } from '../src/policy/policy-engine.js';
import { BENCH_SCOPE, ensureBuilt, startAgentSts } from './agent-sts-server.js';
import { installExitHandlers, killAllChildren } from './children.js';
import { DEFAULT_SETTINGS, runLoad, type LoadResult } from './load.js';

const seconds = Number(process.env.BENCH_POLICY_SECONDS ?? 2);
const rounds = Number(process.env.BENCH_POLICY_ROUNDS ?? 2);
const sizes = (process.env.BENCH_POLICY_SIZES ?? '10,1000,10000').split(',').map(Number);

type Rule = PolicyDocument['spec']['rules'][number];

function rule(i: number): Rule {
  const target = `t${Math.floor(i / 10)}`;
  switch (i % 4) {
    case 0:
      return { name: `r${i}`, workloads: [{ provider: 'dev', subject: `dev://team-${i}/agent`, attributes: { env: ['prod', 'staging'] } }], when: 'delegation.depth <= 2 && env.hour < 24', grants: [{ target, scopes: ['read', 'write'], maxTtl: '10m' }] };
    case 1:
      return { name: `r${i}`, workloads: [{ provider: `p${i % 8}`, subjectPattern: `dev://team-${i}/.+` }], grants: [{ target, scopes: [{ name: 'read', params: { db: `db${i}` } }, { name: 'write', params: { db: `db${i}` } }], maxTtl: '5m' }] };
    case 2:
      return { name: `r${i}`, workloads: [{ provider: 'dev', subject: `dev://team-${i}/agent` }], human: 'optional', grants: [{ target, scopes: ['read'], obligations: { sessionTags: { team: `team-${i}` } } }] };
    default:
      return { name: `r${i}`, humans: [{ issuer: 'https://idp.bench', groups: [`g${i}`] }], grants: [{ target: `t${Math.floor((i - 1) / 10)}`, scopes: ['read'], maxTtl: '2m' }] };
  }
}

function documents(n: number): LoadedDocument[] {
  const docs: LoadedDocument[] = [];
  for (let d = 0; d * 100 < n; d++) {
    const rules = Array.from({ length: Math.min(100, n - d * 100) }, (_, k) => rule(d * 100 + k));
    const doc: PolicyDocument = { apiVersion: 'agent-sts.dev/v2', kind: 'Policy', metadata: { name: `team-${d}`, owners: ['bench'] }, spec: { rules } };
    docs.push({ doc, where: (p) => `bench/${d}.yaml: ${p.join('.')}` });
  }
  return docs;
}

const wl = (subject: string, provider: string, attributes: Record<string, string>, human?: HumanContext): BlendedIdentity => ({
  workload: { kind: 'workload', provider, providerType: 'oidc', subject, attributes, claims: {}, expiresAt: new Date(8.64e15) },
  human,
  priorActors: [],
});
const person = (group: string): HumanContext => ({ kind: 'human', provider: 'idp', issuer: 'https://idp.bench', subject: 'p', groups: [group], roles: [], expiresAt: new Date(8.64e15) });

function requests(n: number): { id: BlendedIdentity; req: PolicyRequest; allow: boolean }[] {
  const out: { id: BlendedIdentity; req: PolicyRequest; allow: boolean }[] = [];
  let seed = 42;
  const rnd = (m: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % m);
  for (let k = 0; k < 10_000; k++) {
    const i = rnd(n);
    const kind = rnd(10);
    const target = `t${Math.floor(i / 10)}`;
    const base = i - (i % 4);
    const r = i % 4 === 3 ? base : i; // human rules: ask as the agent they intersect with (rule i - 1 -> case 2)
    if (r % 4 === 0) out.push({ id: wl(`dev://team-${r}/agent`, 'dev', { env: kind < 7 ? 'prod' : 'dev' }), req: { kind: 'credential', target, scopes: ['read'] }, allow: kind < 7 });
    else if (r % 4 === 1) out.push({ id: wl(`dev://team-${r}/x`, `p${r % 8}`, {}), req: { kind: 'credential', target, scopes: kind < 7 ? ['write'] : ['admin'] }, allow: kind < 7 });
    else {
      const human = r + 1 < n ? person(kind < 7 ? `g${r + 1}` : 'nobody') : undefined;
      out.push({ id: wl(`dev://team-${r}/agent`, 'dev', {}, human), req: { kind: 'credential', target, scopes: ['read'] }, allow: kind < 7 || !human });
    }
  }
  return out;
}

function measure(fn: (k: number) => void): number {
  for (let k = 0; k < 20_000; k++) fn(k); // warm-up (JIT)
  let n = 0;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  while (performance.now() < until) for (let k = 0; k < 1000; k++) fn(n++);
  return (n / (performance.now() - t0)) * 1000;
}

function decisionBench(): string[] {
  const rows: string[] = [];
  for (const n of sizes) {
    const t0 = performance.now();
    const engine = createPolicyEngine({ rules: [] }, { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900, documents: documents(n) });
    const compileMs = performance.now() - t0;
    const all = requests(n);
    const env = { now: new Date('2026-03-03T10:00:00Z'), clientAddress: '10.0.0.1' };
    let wrong = 0;
    for (const r of all) if (engine.evaluate(r.id, r.req, env).allow !== r.allow) wrong++;
    if (wrong) throw new Error(`${wrong} generated requests were not decided as expected (bench generator out of date)`);
    const allows = all.filter((r) => r.allow);
    const denies = all.filter((r) => !r.allow);
    const mixed = measure((k) => engine.evaluate(all[k % all.length]!.id, all[k % all.length]!.req, env));
    const allowRate = measure((k) => engine.evaluate(allows[k % allows.length]!.id, allows[k % allows.length]!.req, env));
    const denyRate = measure((k) => engine.evaluate(denies[k % denies.length]!.id, denies[k % denies.length]!.req, env));
    const f = (x: number) => Math.round(x).toLocaleString('en-US');
    rows.push(`| ${f(n).padStart(6)} | ${f(mixed).padStart(9)} | ${f(allowRate).padStart(9)} | ${f(denyRate).padStart(9)} | ${compileMs.toFixed(0).padStart(6)} |`);
    console.error(`${n} rules: ${f(mixed)} decisions/s (allow ${f(allowRate)}, deny ${f(denyRate)}), compiled in ${compileMs.toFixed(0)} ms`);
  }
  return rows;
}

/** 1,000 rules for the broker's policy.dir (10 files of 100), all for the bench target; rule 0 decides the measured agent. */
function brokerPolicyFiles(n = 1000): Record<string, string> {
  const target = 'billing-api';
  const shape = (i: number): Rule => {
    if (i === 0)
      return { name: 'bench-agent', workloads: [{ provider: 'dev', subject: 'dev://bench-agent' }], when: 'delegation.depth <= 2 && env.hour < 24', grants: [{ target, scopes: [{ name: BENCH_SCOPE, params: { ledger: 'eu' } }], maxTtl: '10m' }] };
    switch (i % 4) {
      case 0:
        return { name: `r${i}`, workloads: [{ provider: 'dev', subject: `dev://team-${i}/agent`, attributes: { env: ['prod', 'staging'] } }], when: 'delegation.depth <= 2 && env.hour < 24', grants: [{ target, scopes: [BENCH_SCOPE], maxTtl: '10m' }] };
      case 1:
        return { name: `r${i}`, workloads: [{ provider: 'dev', subjectPattern: `dev://team-${i}/.+` }], grants: [{ target, scopes: [{ name: BENCH_SCOPE, params: { ledger: `l${i}` } }], maxTtl: '5m' }] };
      case 2:
        return { name: `r${i}`, workloads: [{ provider: 'dev', subject: `dev://team-${i}/agent` }], human: 'optional', grants: [{ target, scopes: [BENCH_SCOPE], obligations: { sessionTags: { team: `team-${i}` } } }] };
      default:
        return { name: `r${i}`, humans: [{ issuer: 'https://idp.bench', groups: [`g${i}`] }], grants: [{ target, scopes: [BENCH_SCOPE], maxTtl: '2m' }] };
    }
  };
  const files: Record<string, string> = {};
  for (let d = 0; d * 100 < n; d++) {
    const doc: PolicyDocument = {
      apiVersion: 'agent-sts.dev/v2', kind: 'Policy', metadata: { name: `bench-${d}`, owners: ['bench'] },
      spec: { rules: Array.from({ length: Math.min(100, n - d * 100) }, (_, k) => shape(d * 100 + k)) },
    };
    files[`bench-${String(d).padStart(2, '0')}.yaml`] = stringify(doc);
  }
  return files;
}

async function exchangeBench(log: (line: string) => void): Promise<{ label: string; r: LoadResult }[]> {
  const settings = { ...DEFAULT_SETTINGS, log };
  await ensureBuilt(log);
  const out: { label: string; r: LoadResult }[] = [];
  // Alternated, so that other load on a shared machine hits both alike.
  const sets = [['1 v1 rule', undefined], ['1,000 v2 policies', brokerPolicyFiles(1000)]] as const;
  for (let round = 1; round <= rounds; round++) {
    for (const [name, policyFiles] of sets) {
      const label = `${name} (round ${round})`;
      log(`exchange: ${label}`);
      const s = await startAgentSts(log, { policyFiles });
      stopCurrent = s.stop;
      try {
        // With the policies, the v2 rule (10m, scope parameters) decides; without them the v1 rule (5m).
        if (policyFiles && (s.sample.scope_params === undefined || Number(s.sample.exp) - Number(s.sample.iat) !== 600))
          throw new Error(`the measured request was not decided by the generated v2 rule: ${JSON.stringify(s.sample)}`);
        const r = await runLoad(s.target, settings);
        log(`  ${fmt(r.okPerSec)} 2xx/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, server ${r.serverCpuMsPerReq.toFixed(3)} ms/req, non-2xx ${r.non2xx + r.errors + r.timeouts}, other load ${r.otherCores.toFixed(2)} cores`);
        out.push({ label, r });
      } finally {
        await s.stop();
        stopCurrent = undefined;
      }
    }
  }
  return out;
}

let stopCurrent: (() => Promise<void>) | undefined;
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function main(): Promise<void> {
  installExitHandlers(() => stopCurrent?.());
  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(`bench:policy: node ${process.version}, ${cpus().length} CPU(s), 1-min load ${loadavg()[0]!.toFixed(2)}`);
  const rows = decisionBench();
  console.log('| rules  | mixed /s  | allow /s  | deny /s   | compile ms |');
  console.log('|-------:|----------:|----------:|----------:|-----------:|');
  for (const r of rows) console.log(r);
  if (process.env.BENCH_POLICY_EXCHANGE === '0') return;
  const ex = await exchangeBench(log);
  console.log('');
  console.log(`per-tool-call exchange, ${DEFAULT_SETTINGS.connections} connections, ${DEFAULT_SETTINGS.durationSec} s (SQLite store):`);
  console.log('| policy set | 2xx/s | p50 ms | p99 ms | server CPU ms/req | non-2xx | other load (cores) |');
  console.log('|:--|--:|--:|--:|--:|--:|--:|');
  for (const { label, r } of ex)
    console.log(`| ${label} | ${fmt(r.okPerSec)} | ${r.p50Ms} | ${r.p99Ms} | ${r.serverCpuMsPerReq.toFixed(3)} | ${r.non2xx + r.errors + r.timeouts} | ${r.otherCores.toFixed(2)} |`);
  const sum = (k: number) => ex.filter((_, i) => i % 2 === k).reduce((a, x) => a + x.r.okPerSec, 0);
  console.log(`1,000 policies / 1 rule, all rounds: ${((sum(1) / sum(0)) * 100).toFixed(0)} % of the throughput`);
}

main()
  .then(() => {
    killAllChildren();
    process.exit(0);
  })
  .catch((e: unknown) => {
    process.stderr.write(`bench:policy: ${(e as Error).stack ?? String(e)}\n`);
    killAllChildren();
    process.exit(2);
  });
