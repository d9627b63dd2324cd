/**
 * Verification cost per trust-provider type, warm caches: `npm run bench:providers`.
 *
 * Each provider verifies the same valid attestation over and over after a warm-up (JWKS fetched,
 * API clients built). Reported: verifications/s in one sequential loop and CPU µs per verification
 * of this process. For providers that ask a platform API per verification (kubernetes tokenreview,
 * aws-iam), the fake API runs in this process too, so its CPU is included and the number is an
 * upper bound of agent-sts's own cost; the round trip is the real price of those modes.
 *
 * Knobs: BENCH_PROVIDER_SECONDS (per provider, default 3), BENCH_ONLY_PROVIDERS=oidc,gcp,...
 */
import { performance } from 'node:perf_hooks';
import type { TrustProvider } from '../src/trust-providers/trust-provider.js';
import { JWT_TOKEN_TYPES } from '../src/lib/urns.js';
import { testProviderDeps } from '../test/support/provider-deps.js';
import { providerCases, type ProviderCase } from './provider-cases.js';

const seconds = Number(process.env.BENCH_PROVIDER_SECONDS ?? 3);
const only = process.env.BENCH_ONLY_PROVIDERS?.split(',').map((s) => s.trim());

async function measure(provider: TrustProvider, attestation: { token: string; tokenType: string }, fresh?: () => Promise<{ token: string; tokenType: string }>) {
  const ctx = () => ({ requestId: 'bench', now: new Date() });
  for (let i = 0; i < 50; i++) await provider.verify(fresh ? await fresh() : attestation, ctx()); // warm-up
  // Attestations that are single-use (aws-iam) are made before the timed loop.
  const pool = fresh ? await Promise.all(Array.from({ length: 4000 }, fresh)) : [];
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  while (performance.now() < until && (!fresh || n < pool.length)) {
    await provider.verify(fresh ? pool[n]! : attestation, ctx());
    n++;
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { perSec: (n / ms) * 1000, cpuUsPerOp: (cpu.user + cpu.system) / n, n };
}

async function main() {
  const deps = testProviderDeps();
  const rows: string[][] = [['provider (mode)', 'verifications/s', 'CPU µs/verification', 'n', 'notes']];
  for (const c of providerCases as ProviderCase[]) {
    if (only && !only.includes(c.type)) continue;
    process.stdout.write(`  ${c.label}: `);
    const setup = await c.setup(deps);
    try {
      const r = await measure(setup.provider, setup.attestation ?? { token: '', tokenType: JWT_TOKEN_TYPES[0]! }, setup.fresh);
      rows.push([c.label, r.perSec.toFixed(0), r.cpuUsPerOp.toFixed(0), String(r.n), c.notes ?? '']);
      process.stdout.write(`${r.perSec.toFixed(0)}/s, ${r.cpuUsPerOp.toFixed(0)} µs CPU\n`);
    } finally {
      await setup.close();
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((v, i) => (i === 0 || i === 4 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join(' | ')} |`;
  console.log(`\n${line(rows[0]!)}\n|${widths.map((w, i) => (i === 0 || i === 4 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|\n${rows.slice(1).map(line).join('\n')}`);
  console.log(`(node ${process.version}, one sequential loop per provider, ${seconds} s each, warm caches)`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
