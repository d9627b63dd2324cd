/**
 * Load helper: runs autocannon in this process against one URL, with a warm-up that is not
 * counted, and measures the server process's CPU time over the timed window (/proc/<pid>/stat).
 *
 * Bodies come from a pool that is filled BEFORE each phase, so no signing happens on the load
 * generator while it measures. A target that rejects replays (the peer's client assertion jti)
 * needs one body per request: the pool for the timed phase is sized from the warm-up's rate
 * (×3, plus a margin, capped at duration × maxRatePerSec). If a pool still runs dry it wraps
 * around and the result says so (`poolExhausted`); the replays then show up as non-2xx.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import autocannon, { type Result } from 'autocannon';
import { runClosedLoop, type AnswerCounts } from './closed-loop.js';

export interface LoadTarget {
  name: string;
  /** Full URL of the endpoint (http://host:port/path). */
  url: string;
  /** PID of the server process whose CPU time is measured. */
  serverPid: number;
  /** Other processes doing work for the server (e.g. the PostgreSQL backends), measured separately. */
  auxCpu?: { label: string; pids: () => number[] };
  method?: string;
  headers?: Record<string, string>;
  /**
   * Request bodies. `fixed` = the same body every time; `unique` = `make(n)` returns n bodies
   * that are each used once (round-robin over the pool).
   */
  bodies: { fixed: string } | { unique: (count: number) => Promise<string[]>; maxRatePerSec?: number };
}

export interface LoadSettings {
  connections: number;
  durationSec: number;
  warmupSec: number;
  log?: (line: string) => void;
}

export interface LoadResult extends AnswerCounts {
  name: string;
  /** Which load generator measured it (BENCH_LOADGEN). */
  loadgen: 'closed-loop' | 'autocannon';
  /** All answered requests per second (autocannon: the mean of its per-second counts). */
  reqPerSec: number;
  /** 2xx answers per second over the timed window. */
  okPerSec: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Server process CPU time (user + system) during the timed window. */
  serverCpuMs: number;
  serverCpuMsPerReq: number;
  /** Server CPU utilisation during the window, in cores (1.0 = one core fully busy). */
  serverCores: number;
  /**
   * Of that, the server's first thread (in Node, the event loop; other threads are helpers:
   * signing, SQLite writer, GC). Below ~0.9 the event loop is not what limits throughput.
   */
  serverMainThreadCores: number;
  /** CPU of the auxiliary processes (target.auxCpu) during the window. */
  aux?: { label: string; cpuMs: number; cpuMsPerReq: number; cores: number };
  /** CPU of this process (the load generator) during the window, in cores. */
  loadgenCores: number;
  /**
   * Everything else that was busy on the machine during the window, in cores (total busy time
   * from /proc/stat minus server, auxiliary processes and load generator). Other people's tests
   * or builds show up here; above ~0.2 the numbers are skewed.
   */
  otherCores: number;
  poolExhausted: boolean;
  poolSize?: number;
}

export const DEFAULT_SETTINGS: LoadSettings = {
  connections: Number(process.env.BENCH_CONNECTIONS ?? 50),
  durationSec: Number(process.env.BENCH_DURATION ?? 15),
  warmupSec: Number(process.env.BENCH_WARMUP ?? 3),
};

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * utime + stime of a process (all its threads), in milliseconds; with `thread`, of that one thread
 * (a process's first thread, its event loop in Node, has the process's id).
 */
export function processCpuMs(pid: number, thread?: number): number {
  const stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime = field 14, stime = field 15.
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  return ((utime + stime) * 1000) / ticksPerSecond();
}

/** Busy CPU time of the whole machine (all cores, everything but idle and iowait), in ms. */
export function machineBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!; // "cpu  user nice system idle iowait irq softirq steal ..."
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + v[7]!;
  return (busy * 1000) / ticksPerSecond();
}

/** CPU ms of each process that still exists (processes that vanish are skipped). */
function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, processCpuMs(pid));
    } catch {
      /* exited */
    }
  }
  return out;
}

/** PIDs of running processes whose command name is `comm` (e.g. "postgres"). */
export function pidsByName(comm: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/comm`, 'utf8').trim() === comm) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** What one phase of load gave, whichever load generator ran it. */
interface Phase extends AnswerCounts {
  reqPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
}

/** `BENCH_LOADGEN`: `closed-loop` (bench/closed-loop.ts, the default) or `autocannon`. */
export const LOADGEN = (process.env.BENCH_LOADGEN ?? 'closed-loop') as 'closed-loop' | 'autocannon';
if (LOADGEN !== 'closed-loop' && LOADGEN !== 'autocannon') {
  throw new Error(`BENCH_LOADGEN must be closed-loop or autocannon, not ${JSON.stringify(LOADGEN)}`);
}

async function runPhase(target: LoadTarget, settings: LoadSettings, durationSec: number, nextBody: () => string, traceFile?: string): Promise<Phase> {
  const headers = { 'content-type': 'application/x-www-form-urlencoded', ...target.headers };
  if (LOADGEN === 'closed-loop') {
    const r = await runClosedLoop({
      url: target.url,
      method: target.method ?? 'POST',
      headers,
      connections: settings.connections,
      durationSec,
      timeoutSec: 10,
      nextBody,
      traceFile,
    });
    return { ...r, reqPerSec: r.total / r.durationSec };
  }
  const r = await runCannon(target, settings, durationSec, nextBody, headers);
  const statusCodes: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = s.count;
  return {
    total: r.requests.total,
    ok2xx: r['2xx'],
    non2xx: r.non2xx,
    statusCodes,
    errors: r.errors,
    timeouts: r.timeouts,
    durationSec: r.duration,
    reqPerSec: r.requests.average,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
  };
}

function runCannon(
  target: LoadTarget,
  settings: LoadSettings,
  durationSec: number,
  nextBody: () => string,
  headers: Record<string, string>,
): Promise<Result> {
  const u = new URL(target.url);
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: u.origin,
        connections: settings.connections,
        duration: durationSec,
        timeout: 10,
        requests: [
          {
            method: target.method ?? 'POST',
            path: u.pathname + u.search,
            headers,
            setupRequest: (req) => ({ ...req, body: nextBody() }),
          },
        ],
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
  });
}

function pool(bodies: string[]): { next: () => string; used: () => number } {
  let i = 0;
  return { next: () => bodies[i++ % bodies.length]!, used: () => i };
}

export async function runLoad(target: LoadTarget, settings: LoadSettings = DEFAULT_SETTINGS): Promise<LoadResult> {
  const log = settings.log ?? (() => {});
  const src = target.bodies;
  const unique = 'unique' in src;
  const maxRate = unique ? (src.maxRatePerSec ?? 10_000) : 0;

  // Warm-up (not counted).
  let warm: { next: () => string; used: () => number };
  if (unique) {
    const n = Math.ceil(settings.warmupSec * maxRate);
    const t0 = performance.now();
    warm = pool(await src.unique(n));
    log(`  ${target.name}: precomputed ${n} unique bodies for the warm-up in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } else warm = pool([src.fixed]);
  log(`  ${target.name}: warm-up ${settings.warmupSec} s at ${settings.connections} connections`);
  const w = await runPhase(target, settings, settings.warmupSec, warm.next);
  const warmRate = w.total / Math.max(1, settings.warmupSec);
  log(`  ${target.name}: warm-up done, ~${Math.round(warmRate)} req/s (${w.non2xx} non-2xx)`);

  // Let the server finish the warm-up's in-flight requests (their connections were just closed)
  // so the timed run does not start with a reconnect storm against a still-busy server.
  await new Promise((r) => setTimeout(r, Number(process.env.BENCH_SETTLE_MS ?? 1000)));

  // Timed run.
  let timed: { next: () => string; used: () => number };
  let poolSize: number | undefined;
  if (unique) {
    // ×3: a JIT-heavy server runs its warm-up at a third of its later rate (oidc-provider: 1,147
    // then 2,975 req/s, seen), and a pool that runs dry makes the run unfair.
    poolSize = Math.min(Math.ceil(settings.durationSec * maxRate), Math.ceil(settings.durationSec * warmRate * 3) + 10_000);
    const t0 = performance.now();
    timed = pool(await src.unique(poolSize));
    log(`  ${target.name}: precomputed ${poolSize} unique bodies for the timed run in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } else timed = pool([src.fixed]);
  log(`  ${target.name}: timed run ${settings.durationSec} s`);
  const trace = process.env.BENCH_TRACE && LOADGEN === 'closed-loop' ? join(process.env.BENCH_TRACE, `${target.name.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '')}.tsv`) : undefined;
  if (trace) mkdirSync(process.env.BENCH_TRACE!, { recursive: true });
  const aux0 = target.auxCpu ? cpuOf(target.auxCpu.pids()) : undefined;
  const busy0 = machineBusyMs();
  const cpu0 = processCpuMs(target.serverPid);
  const main0 = processCpuMs(target.serverPid, target.serverPid);
  const own0 = process.cpuUsage();
  const r = await runPhase(target, settings, settings.durationSec, timed.next, trace);
  if (trace) log(`  ${target.name}: every answer of the timed run in ${trace}`);
  const own = process.cpuUsage(own0);
  const cpu1 = processCpuMs(target.serverPid);
  const main1 = processCpuMs(target.serverPid, target.serverPid);
  const busyMs = machineBusyMs() - busy0;
  let aux: LoadResult['aux'];
  if (target.auxCpu && aux0) {
    // Processes that started during the window count from zero; those that ended are lost.
    let ms = 0;
    for (const [pid, t1] of cpuOf(target.auxCpu.pids())) ms += t1 - (aux0.get(pid) ?? 0);
    aux = { label: target.auxCpu.label, cpuMs: ms, cpuMsPerReq: r.total ? ms / r.total : NaN, cores: ms / 1000 / r.durationSec };
  }

  const { total, ok2xx, statusCodes } = r;
  const serverCpuMs = cpu1 - cpu0;
  return {
    name: target.name,
    loadgen: LOADGEN,
    reqPerSec: r.reqPerSec,
    okPerSec: ok2xx / r.durationSec,
    p50Ms: r.latencyMs.p50,
    p90Ms: r.latencyMs.p90,
    p99Ms: r.latencyMs.p99,
    maxMs: r.latencyMs.max,
    total,
    ok2xx,
    non2xx: r.non2xx,
    statusCodes,
    errors: r.errors,
    timeouts: r.timeouts,
    durationSec: r.durationSec,
    serverCpuMs,
    serverCpuMsPerReq: total ? serverCpuMs / total : NaN,
    serverCores: serverCpuMs / 1000 / r.durationSec,
    serverMainThreadCores: (main1 - main0) / 1000 / r.durationSec,
    loadgenCores: (own.user + own.system) / 1e6 / r.durationSec,
    otherCores: Math.max(0, (busyMs - serverCpuMs - (aux?.cpuMs ?? 0) - (own.user + own.system) / 1e3) / 1000 / r.durationSec),
    ...(aux ? { aux } : {}),
    poolExhausted: poolSize !== undefined && timed.used() > poolSize,
    ...(poolSize !== undefined ? { poolSize } : {}),
  };
}
