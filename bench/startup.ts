/**
 * Start-up cost: `npm run bench:startup`.
 *
 * What a person waits for at every CLI command, and what a new replica costs before it serves
 * (autoscaling, a rolling deploy, a crash restart). From the built CLI (`node bin/agent-sts.js`,
 * as installed), each measured BENCH_STARTUP_RUNS times (default 7), median and min:
 *
 * 1. `agent-sts --help` — the module graph alone;
 * 2. `agent-sts config check` of the dev config — plus configuration loading and validation;
 * 3. `agent-sts serve` of the dev config until `/readyz` answers 200 — first start on an empty
 *    data directory (migrations, signing key created) and restart on the same one — and the
 *    server's resident memory (VmRSS) when it is ready.
 *
 * The dev config needs the local PostgreSQL (its `local-postgres` issuer), as `npm start` does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ensureBuilt } from './agent-sts-server.js';
import { freePort, installExitHandlers, startChild } from './children.js';
import { writeDevConfig } from '../test/support/dev-config.js';

const execFileP = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'agent-sts.js');
const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 7);

const log = (line: string) => process.stdout.write(`${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => `${x.toFixed(0)} ms`;

/** The environment without deployment overrides (the config file decides). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of ['DATABASE_URL', 'AGENT_STS_KEK', 'AGENT_STS_KEK_FILE', 'AGENT_STS_CONFIG', 'HOST', 'AGENT_STS_ISSUER', 'AGENT_STS_LOG_LEVEL', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_TRACES_EXPORTER', 'OTEL_METRICS_EXPORTER'])
    if (!(k in extra)) delete env[k];
  return env;
}


async function timeCommand(args: string[]): Promise<number> {
  const t = performance.now();
  await execFileP(process.execPath, [BIN, ...args], { cwd: ROOT, env: cleanEnv() });
  return performance.now() - t;
}

/** Starts `serve`, polls /readyz every 10 ms; returns time to ready and VmRSS (MiB) then. */
async function timeServe(config: string): Promise<{ ms: number; rssMiB: number }> {
  const port = await freePort();
  const t = performance.now();
  const child = startChild(process.execPath, [BIN, 'serve', '--config', config], { cwd: ROOT, env: cleanEnv({ PORT: String(port), NODE_ENV: 'production' }) });
  try {
    for (;;) {
      if (child.proc.exitCode !== null) throw new Error(`serve exited (code ${child.proc.exitCode}) before it was ready\n${child.stderr()}`);
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (performance.now() - t > 60_000) throw new Error(`serve not ready within 60 s\n${child.stderr()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const elapsed = performance.now() - t;
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return { ms: elapsed, rssMiB: rss ? Number(rss[1]) / 1024 : NaN };
  } finally {
    await child.stop();
  }
}

async function main(): Promise<void> {
  installExitHandlers();
  log(`agent-sts start-up bench: node ${process.version}, ${RUNS} runs each (median, min)`);
  await ensureBuilt(log);
  const rows: [string, number[], string?][] = [];
  const help: number[] = [];
  const check: number[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'agent-sts-startup-'));
  try {
    const config = writeDevConfig(tmp);
    for (let i = 0; i < RUNS; i++) {
      help.push(await timeCommand(['--help']));
      check.push(await timeCommand(['config', 'check', '--config', config]));
      process.stdout.write(`\r  CLI commands: ${i + 1}/${RUNS}`);
    }
    process.stdout.write('\n');
    rows.push(['agent-sts --help', help], ['agent-sts config check (dev config)', check]);
    const first: number[] = [];
    const again: number[] = [];
    const rss: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const dir = mkdtempSync(join(tmp, 'serve-'));
      const cfg = writeDevConfig(dir);
      first.push((await timeServe(cfg)).ms);
      const r = await timeServe(cfg);
      again.push(r.ms);
      rss.push(r.rssMiB);
      process.stdout.write(`\r  serve: ${i + 1}/${RUNS}`);
    }
    process.stdout.write('\n');
    rows.push(['serve → /readyz 200, first start (empty data dir)', first], ['serve → /readyz 200, restart', again, `RSS at ready ${median(rss).toFixed(0)} MiB (median)`]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  for (const [name, xs, extra] of rows) log(`${name.padEnd(52)} median ${ms(median(xs)).padStart(8)}, min ${ms(Math.min(...xs)).padStart(8)}${extra ? `; ${extra}` : ''}`);
}

main().catch((e: unknown) => {
  console.error(`bench:startup failed: ${(e as Error).message}`);
  process.exit(1);
});
