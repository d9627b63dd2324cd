// Start-up loads only what the configuration uses: the SDKs of trust providers, issuers and
// telemetry exporters the dev config does not name (the Kubernetes client alone is ~0.5 s) are
// loaded at first use (src/lib/lazy-module.ts), so every CLI command and replica starts faster.
// A static import of one of them anywhere in the start-up graph fails this test.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEV_CONFIG, ROOT, describeRun, runAgentSts } from '../support/cli.js';

const LAZY = ['@kubernetes/client-node', '@aws-sdk/client-sts', '@aws-sdk/client-iam', 'node-vault', 'mysql2', '@octokit/auth-app', '@octokit/request', 'pkijs', '@opentelemetry/sdk-trace-base', '@opentelemetry/sdk-metrics', '@opentelemetry/exporter-trace-otlp-http', '@opentelemetry/exporter-metrics-otlp-http'];

describe('start-up loads only what the configuration uses', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'agsts-startup-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** The node_modules packages a `config check` of the dev config loads (with `env` on top). */
  async function packagesLoaded(env: Record<string, string> = {}): Promise<Set<string>> {
    const out = join(dir, `modules-${Math.random().toString(36).slice(2)}.txt`);
    const r = await runAgentSts(['config', 'check', '--config', DEV_CONFIG], {
      cwd: ROOT,
      env: { LOADED_MODULES_OUT: out, ...env },
      nodeArgs: ['--import', join(ROOT, 'test', 'support', 'loaded-modules.mjs')],
    });
    expect(r.code, describeRun(r)).toBe(0);
    const packages = readFileSync(out, 'utf8')
      .split('\n')
      .map((m) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(m)?.[1])
      .filter((p): p is string => p !== undefined);
    return new Set(packages);
  }

  it('a config check of the dev config loads none of the SDKs it does not use', async () => {
    const loaded = await packagesLoaded();
    // what it does use is seen (so the list is real)
    expect(loaded).toContain('zod');
    expect(loaded).toContain('pg');
    expect(LAZY.filter((p) => loaded.has(p))).toEqual([]);
  });

  it('telemetry configured: its SDK loads (what is lazy still loads when needed)', async () => {
    const loaded = await packagesLoaded({ OTEL_TRACES_EXPORTER: 'console' });
    expect(loaded).toContain('@opentelemetry/sdk-trace-base');
    expect(loaded.has('@kubernetes/client-node')).toBe(false);
  });
});
