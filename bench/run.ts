/**
 * The one benchmark command: `npm run bench`.
 *
 *   1. raw jose ES256 sign / verify rates (in process), and what the machine charges for a
 *      node:crypto signature and a hand-off to a helper thread (machine.ts)
 *   2. agent-sts, per-tool-call exchange (agent token → access token, durable audit write)
 *   3. peer: oidc-provider client_credentials + private_key_jwt, JWT access tokens
 *
 * One server at a time (they never share the CPU with each other; they do share it with the
 * load generator). Prints a table, the agent-sts/peer ratios and PASS/FAIL against the target.
 *
 * Knobs: BENCH_DURATION (s, default 15), BENCH_CONNECTIONS (default 50), BENCH_WARMUP (s, 3),
 * BENCH_STORE=sqlite|postgres, BENCH_ONLY=jose,agent-sts,peer, BENCH_JSON=<file> (raw results).
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { measureJose, type JoseRates } from './jose-raw.js';
import { describeMachine, measureMachine, type MachineCosts } from './machine.js';
import { DEFAULT_SETTINGS, LOADGEN, machineBusyMs, runLoad, type LoadResult } from './load.js';
import { ensureBuilt, startAgentSts } from './agent-sts-server.js';
import { startPeer } from './peer.js';
import { installExitHandlers, killAllChildren } from './children.js';

const TARGET_RATIO = 2;
const TARGET_P99_MS = 12;

const log = (line: string) => process.stdout.write(`${line}\n`);
const settings = { ...DEFAULT_SETTINGS, log };
const only = new Set((process.env.BENCH_ONLY ?? 'jose,agent-sts,peer').split(',').map((s) => s.trim()));

let stopCurrent: (() => Promise<void>) | undefined;
installExitHandlers(() => stopCurrent?.());

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => `| ${r.map((v, c) => (c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, c) => (c === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join('\n');
}

function describe(r: LoadResult): string {
  const codes = Object.entries(r.statusCodes)
    .map(([c, n]) => `${c}×${n}`)
    .join(' ');
  return (
    `  ${r.name}: ${fmt(r.reqPerSec)} req/s (${fmt(r.okPerSec)} 2xx/s), p50 ${fmt(r.p50Ms, 1)} ms, p90 ${fmt(r.p90Ms, 1)} ms, p99 ${fmt(r.p99Ms, 1)} ms, max ${fmt(r.maxMs)} ms; ` +
    `${r.total} requests [${codes}], ${r.errors} errors, ${r.timeouts} timeouts; server CPU ${fmt(r.serverCpuMsPerReq, 3)} ms/req ` +
    `(${fmt(r.serverCores, 2)} cores, event loop ${fmt(r.serverMainThreadCores, 2)})${r.aux ? ` + ${r.aux.label} ${fmt(r.aux.cpuMsPerReq, 3)} ms/req (${fmt(r.aux.cores, 2)} cores)` : ''}, load generator ${fmt(r.loadgenCores, 2)} cores, other processes ${fmt(r.otherCores, 2)} cores${r.otherCores > 0.2 ? ' (BUSY MACHINE: numbers skewed)' : ''}${r.poolExhausted ? '; BODY POOL EXHAUSTED (replayed assertions)' : ''}`
  );
}

async function main(): Promise<number> {
  log(
    `agent-sts bench: node ${process.version}, ${cpus().length} CPU(s) (${cpus()[0]?.model.trim() ?? '?'}), ` +
      `${settings.connections} connections, ${settings.durationSec} s timed + ${settings.warmupSec} s warm-up per server, store ${process.env.BENCH_STORE === 'postgres' ? 'postgres' : 'sqlite'}, load generator ${LOADGEN}`,
  );

  const load = loadavg()[0]!;
  if (load > 0.5) log(`note: 1-min load average is ${load.toFixed(2)} before the run; other work on this machine skews the numbers`);

  let jose: JoseRates | undefined;
  let machine: MachineCosts | undefined;
  let joseOtherCores = NaN;
  let sts: LoadResult | undefined;
  let peer: LoadResult | undefined;
  const problems: string[] = [];

  if (only.has('jose')) {
    log('[1/3] raw jose ES256 (in process, one thread)');
    const busy0 = machineBusyMs();
    const own0 = process.cpuUsage();
    const t0 = performance.now();
    jose = await measureJose();
    const own = process.cpuUsage(own0);
    joseOtherCores = Math.max(0, (machineBusyMs() - busy0 - (own.user + own.system) / 1e3) / (performance.now() - t0));
    log(
      `  sign ${fmt(jose.signPerSec)} ops/s, verify ${fmt(jose.verifyPerSec)} ops/s, sign+verify ${fmt(jose.signVerifyPerSec)} pairs/s; ` +
        `other processes ${fmt(joseOtherCores, 2)} cores${joseOtherCores > 0.2 ? ' (BUSY MACHINE: numbers skewed)' : ''}`,
    );
    machine = await measureMachine();
    log(`  machine: ${describeMachine(machine)}`);
  }

  if (only.has('agent-sts')) {
    log('[2/3] agent-sts per-tool-call exchange');
    try {
      await ensureBuilt(log);
      const s = await startAgentSts(log);
      stopCurrent = s.stop;
      try {
        sts = await runLoad(s.target, settings);
        log(describe(sts));
        const tail = s.stderrSinceReady().trim();
        if (tail) log(`  agent-sts logged during the run (last lines):\n${tail.split('\n').slice(-10).map((l) => `    ${l.slice(0, 400)}`).join('\n')}`);
      } finally {
        await s.stop();
        stopCurrent = undefined;
      }
    } catch (e) {
      problems.push(`agent-sts: ${(e as Error).message}`);
      log(`  agent-sts FAILED: ${(e as Error).message}`);
    }
  }

  if (only.has('peer')) {
    log('[3/3] peer: oidc-provider client_credentials (private_key_jwt, JWT access tokens)');
    try {
      const p = await startPeer(log);
      stopCurrent = p.stop;
      try {
        peer = await runLoad(p.target, settings);
        log(describe(peer));
      } finally {
        await p.stop();
        stopCurrent = undefined;
      }
    } catch (e) {
      problems.push(`peer: ${(e as Error).message}`);
      log(`  peer FAILED: ${(e as Error).message}`);
    }
  }

  log('');
  const rows: string[][] = [['name', 'req/s', 'p50 ms', 'p99 ms', 'server CPU ms/req', 'non-2xx', 'other load (cores)']];
  if (jose) {
    const bg = fmt(joseOtherCores, 2);
    rows.push(['jose ES256 sign (1 thread)', fmt(jose.signPerSec), '-', '-', fmt(1000 / jose.signPerSec, 3), '-', bg]);
    rows.push(['jose ES256 verify (1 thread)', fmt(jose.verifyPerSec), '-', '-', fmt(1000 / jose.verifyPerSec, 3), '-', bg]);
    rows.push(['jose verify+sign (1 thread)', fmt(jose.signVerifyPerSec), '-', '-', fmt(1000 / jose.signVerifyPerSec, 3), '-', bg]);
  }
  for (const r of [sts, peer])
    if (r)
      rows.push([
        r.name,
        fmt(r.reqPerSec),
        fmt(r.p50Ms, 1),
        fmt(r.p99Ms, 1),
        `${fmt(r.serverCpuMsPerReq, 3)}${r.aux ? ` (+${fmt(r.aux.cpuMsPerReq, 3)} ${r.aux.label})` : ''}`,
        `${r.non2xx + r.errors + r.timeouts}`,
        fmt(r.otherCores, 2),
      ]);
  log(table(rows));
  log('(server CPU ms/req: user+system time of the server process over the timed window ÷ requests; other load: CPU used on this machine by anything but the server and the load generator — above ~0.2 the row is skewed)');
  log('');

  let pass = true;
  if (sts && peer) {
    const tputRatio = sts.okPerSec / peer.okPerSec;
    const cpuRatio = sts.serverCpuMsPerReq / peer.serverCpuMsPerReq;
    log(`throughput agent-sts/peer (2xx/s): ${fmt(tputRatio, 2)}×   (target ≥ ${TARGET_RATIO}×)`);
    log(`server CPU per request agent-sts/peer: ${fmt(cpuRatio, 2)}×   (lower is better; peer/agent-sts = ${fmt(1 / cpuRatio, 2)}×)`);
    if (sts.aux)
      log(`server + ${sts.aux.label} CPU per request agent-sts/peer: ${fmt((sts.serverCpuMsPerReq + sts.aux.cpuMsPerReq) / peer.serverCpuMsPerReq, 2)}×`);
    if (jose) log(`agent-sts vs jose verify+sign ceiling of one core: ${fmt((sts.okPerSec / jose.signVerifyPerSec) * 100, 0)} %`);
    const checks = [
      [`throughput ≥ ${TARGET_RATIO}× peer`, tputRatio >= TARGET_RATIO, `${fmt(tputRatio, 2)}×`],
      [`p99 ≤ ${TARGET_P99_MS} ms at ${settings.connections} connections`, sts.p99Ms <= TARGET_P99_MS, `${fmt(sts.p99Ms, 1)} ms`],
      ['no non-2xx / errors in the timed run', sts.non2xx + sts.errors + sts.timeouts === 0, `${sts.non2xx} non-2xx, ${sts.errors} errors, ${sts.timeouts} timeouts`],
      ['peer answered every request 2xx (fair comparison)', peer.non2xx + peer.errors + peer.timeouts === 0 && !peer.poolExhausted, `${peer.non2xx} non-2xx, ${peer.errors} errors`],
    ] as const;
    for (const [what, ok, value] of checks) {
      log(`${ok ? 'PASS' : 'FAIL'}  ${what}: ${value}`);
      pass &&= ok;
    }
    log(pass ? 'RESULT: PASS' : 'RESULT: FAIL');
    log(cpuBudget(sts));
  } else {
    pass = false;
    log('RESULT: incomplete (agent-sts and the peer are both needed for the ratios)');
  }
  for (const p of problems) log(`problem: ${p.split('\n')[0]}`);
  log(`(1-min load average at the end: ${loadavg()[0]!.toFixed(2)}; the load generator runs in this process on the same cores)`);

  if (process.env.BENCH_JSON)
    writeFileSync(process.env.BENCH_JSON, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, settings: { ...settings, log: undefined }, jose, machine, agentSts: sts, peer, pass }, null, 2)}\n`);
  return pass ? 0 : 1;
}

/**
 * What the machine allows at all: the server and the load generator share its cores, so their
 * CPU per request caps the rate, and in a closed loop the mean latency is connections ÷ rate
 * (Little's law). A p99 target below that mean cannot be met by any tuning short of less CPU.
 */
function cpuBudget(r: LoadResult): string {
  const loadgenMs = (r.loadgenCores * 1000) / r.reqPerSec;
  const perReq = r.serverCpuMsPerReq + (r.aux?.cpuMsPerReq ?? 0) + loadgenMs;
  const maxRate = (cpus().length * 1000) / perReq;
  const meanMs = (settings.connections * 1000) / maxRate;
  return (
    `CPU budget: ${fmt(r.serverCpuMsPerReq, 3)} ms server${r.aux ? ` + ${fmt(r.aux.cpuMsPerReq, 3)} ms ${r.aux.label}` : ''} + ${fmt(loadgenMs, 3)} ms load generator per request, ` +
    `so ${cpus().length} fully busy cores answer at most ~${fmt(maxRate)} req/s, where ${settings.connections} connections wait ${fmt(meanMs, 1)} ms on average (Little's law; p99 is 1.5-2.5× the mean in these runs)`
  );
}

main()
  .then((code) => {
    killAllChildren();
    process.exit(code);
  })
  .catch((e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    killAllChildren();
    process.exit(2);
  });
