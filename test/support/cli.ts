// Runs the real CLI (src/cli/main.ts through tsx) as a child process, with the deployment
// overrides removed from the environment unless a test sets them.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export { DEV_CONFIG } from './dev-config.js';
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const CLI_MODULE = pathToFileURL(join(ROOT, 'src', 'cli', 'main.ts')).href;
// runCli passes argv to commander's parseAsync (default `from: 'node'`: argv[0] = node, argv[1] =
// script, user arguments after). Under `node -e` process.argv has no script entry, so add one.
const CLI_EVAL = `import(${JSON.stringify(CLI_MODULE)}).then((m) => m.runCli([process.argv[0], 'agent-sts', ...process.argv.slice(1)]))`;

// Environment variables that override the config file; the parent's must not leak into the CLI.
const OVERRIDES = ['DATABASE_URL', 'AGENT_STS_KEK', 'AGENT_STS_KEK_FILE', 'AGENT_STS_CONFIG', 'HOST', 'PORT', 'AGENT_STS_ISSUER', 'AGENT_STS_LOG_LEVEL'];

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `input`: written to the command's standard input (otherwise it is empty); `nodeArgs`: before the CLI's own (e.g. another --import). */
export function runAgentSts(args: string[], opts: { cwd: string; env?: Record<string, string>; input?: string; nodeArgs?: string[] }): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  for (const k of OVERRIDES) if (!opts.env || !(k in opts.env)) delete env[k];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), '--import', TSX_LOADER, '-e', CLI_EVAL, '--', ...args], { cwd: opts.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.end(opts.input ?? '');
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Shows both streams when an exit-code assertion fails. */
export const describeRun = (r: CliResult) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

export { writeDevConfig } from './dev-config.js';

