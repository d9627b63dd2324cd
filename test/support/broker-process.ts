// Runs `agent-sts serve` (src/cli/main.ts through tsx) as a real child process, so a test can kill
// it with SIGKILL and start it again on the same store.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ROOT } from './cli.js';

const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const CLI_MODULE = pathToFileURL(join(ROOT, 'src', 'cli', 'main.ts')).href;
const CLI_EVAL = `import(${JSON.stringify(CLI_MODULE)}).then((m) => m.runCli([process.argv[0], 'agent-sts', ...process.argv.slice(1)]))`;

export interface BrokerProcess {
  child: ChildProcess;
  url: string;
  /** Everything the process wrote to stderr (logs and progress lines). */
  output: () => string;
  /** Resolves when the process ended, with its exit code or the signal that killed it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

/** A TCP port that was free a moment ago (the broker is restarted on the same one). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Writes a broker config as `<dir>/<name>.json` (YAML is a superset of JSON), listening on a fresh
 * loopback port; returns the file to give `startBrokerProcess`.
 */
export async function writeProcessConfig(dir: string, name: string, config: { server?: Record<string, unknown> } & Record<string, unknown>): Promise<string> {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ ...config, server: { host: '127.0.0.1', port: await freePort(), ...config.server } }, null, 2));
  return file;
}

export async function startBrokerProcess(configFile: string, env: Record<string, string>, timeoutMs = 30_000): Promise<BrokerProcess> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ['DATABASE_URL', 'AGENT_STS_KEK', 'AGENT_STS_KEK_FILE', 'AGENT_STS_CONFIG', 'HOST', 'PORT', 'AGENT_STS_ISSUER', 'AGENT_STS_LOG_LEVEL', 'AGENT_STS_CHAOS'])
    if (!(k in env)) delete childEnv[k];
  const child = spawn(process.execPath, ['--import', TSX_LOADER, '-e', CLI_EVAL, '--', 'serve', '--config', configFile], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start in ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const check = () => {
      const m = /agent-sts listening on \S+ \(issuer (\S+),/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stderr!.on('data', check);
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`broker exited (${e.code ?? e.signal}) before listening:\n${out}`));
    });
  });
  return {
    child,
    url,
    output: () => out,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
