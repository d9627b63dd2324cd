/**
 * Child processes of the bench: spawned with their PID known (no shell in between, so the PID is
 * the server's own and /proc/<pid>/stat measures the server), tracked, and killed when the bench
 * exits — normally, on an error, or on SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer } from 'node:net';

const live = new Set<ChildProcess>();

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Everything the child wrote to stderr (last 64 KiB). */
  stderr: () => string;
  /** Total characters written to stderr so far (a mark for stderrSince). */
  stderrMark: () => number;
  /** stderr written after `mark` (at most the last 64 KiB). */
  stderrSince: (mark: number) => string;
  /** Resolves with the first stdout line that parses as JSON. */
  firstJsonLine: <T>(timeoutMs?: number) => Promise<T>;
  stop: () => Promise<void>;
}

export function startChild(cmd: string, args: string[], opts: SpawnOptions = {}): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  if (proc.pid === undefined) throw new Error(`could not start ${cmd} ${args.join(' ')}`);
  live.add(proc);
  let err = '';
  let errTotal = 0;
  let out = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    errTotal += d.length;
    err = (err + d).slice(-65_536);
  });
  const lineWaiters: ((line: string) => void)[] = [];
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      for (const w of lineWaiters) w(line);
    }
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.once('exit', () => live.delete(proc));

  return {
    proc,
    pid: proc.pid,
    stderr: () => err,
    stderrMark: () => errTotal,
    stderrSince: (mark: number) => err.slice(Math.max(0, err.length - (errTotal - mark))),
    firstJsonLine: <T>(timeoutMs = 30_000) =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${cmd} ${args.join(' ')}: no ready line within ${timeoutMs} ms\n${err}`)), timeoutMs);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`${cmd} ${args.join(' ')} exited (code ${code}) before it was ready\n${err}`));
        });
        lineWaiters.push((line) => {
          try {
            const v = JSON.parse(line) as T;
            clearTimeout(timer);
            resolve(v);
          } catch {
            /* not the ready line */
          }
        });
      }),
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export function killAllChildren(): void {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  live.clear();
}

let installed = false;
/** Kill children on exit, on uncaught errors, and on SIGINT/SIGTERM (then exit 130/143). */
export function installExitHandlers(onSignal?: () => Promise<void> | void): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAllChildren);
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping child processes\n`);
      killAllChildren();
      void Promise.resolve(onSignal?.()).finally(() => process.exit(code));
    });
}

/** A port that was free a moment ago (listen on 0, close, reuse). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, child?: Child): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (child && (child.proc.exitCode !== null || child.proc.signalCode !== null))
      throw new Error(`${what}: the process exited (code ${child.proc.exitCode ?? child.proc.signalCode})\n${child.stderr()}`);
    try {
      if (await check()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`${what}: not ready within ${timeoutMs} ms${child ? `\n${child.stderr()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
