// `agent-sts policy evaluate|test|diff` through the real CLI (offline: no database is opened).
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEV_CONFIG, ROOT, describeRun, runAgentSts } from '../support/cli.js';

const EXAMPLES = join(ROOT, 'examples', 'policies');
const alice = JSON.stringify({ workload: { provider: 'dev', subject: 'dev://billing/x' }, human: { issuer: 'https://idp.example.com', subject: 'alice', groups: ['finance'] } });

describe('agent-sts policy', () => {
  it('evaluate explains an allow: both deciding rules, intersection, every rule considered', async () => {
    const r = await runAgentSts(
      ['policy', 'evaluate', '--config', DEV_CONFIG, '--policies', EXAMPLES, '--identity', alice, '--request', '{"target":"billing-api","scopes":["invoices:write"]}', '--env', '{"now":"2026-03-03T10:00:00Z"}'],
      { cwd: ROOT },
    );
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain('decision: ALLOW');
    expect(r.stdout).toContain('deciding rules: agent billing/agents, human billing/finance-staff');
    expect(r.stdout).toContain('scopes: invoices:write; lifetime cap: 300s');
    expect(r.stdout).toMatch(/✗ payments-ci \(agent, policy\.rules\[1\] \(payments-ci\)\): \[identity\] trust provider differs/);
    expect(r.stdout).toMatch(/✓ billing\/finance-staff \(human, .*billing\.yaml:\d+: spec\.rules\[1\]\)/);
  });

  it('evaluate --json explains a denial and exits 1', async () => {
    const id = JSON.stringify({ workload: { provider: 'dev', subject: 'dev://billing/x' } });
    const r = await runAgentSts(['policy', 'evaluate', '--config', EXAMPLES, '--identity', id, '--request', '{"target":"billing-api","scopes":["invoices:write"]}', '--env', '{"now":"2026-03-03T23:00:00Z"}', '--json'], { cwd: ROOT });
    expect(r.code, describeRun(r)).toBe(1);
    const e = JSON.parse(r.stdout) as { decision: { allow: boolean; reasons: string[] }; rules: { rule: string; matched: boolean; stage?: string; reason: string }[] };
    expect(e.decision.allow).toBe(false);
    expect(e.rules.find((x) => x.rule === 'billing/agents')).toMatchObject({ matched: false, stage: 'condition' });
    expect(e.decision.reasons[0]).toContain('condition is false');
  });

  it('evaluate refuses an identity that does not parse', async () => {
    const r = await runAgentSts(['policy', 'evaluate', '--config', EXAMPLES, '--identity', '{"workload":{}}', '--request', '{"agentToken":true}'], { cwd: ROOT });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--identity: workload.provider');
  });

  it('test runs the cases next to the policies and passes', async () => {
    const r = await runAgentSts(['policy', 'test', EXAMPLES], { cwd: ROOT });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toMatch(/^5 passed, 0 failed \(policy version sha256:[0-9a-f]{16}\)$/m);
  });

  it('test prints the failing case with its explanation and exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-test-'));
    cpSync(EXAMPLES, dir, { recursive: true });
    const cases = readFileSync(join(dir, 'billing.test.yaml'), 'utf8').replace("expect: { allow: true, scopes: ['invoices:read'], ttl: 10m", "expect: { allow: true, scopes: ['invoices:read'], ttl: 20m");
    writeFileSync(join(dir, 'billing.test.yaml'), cases);
    const r = await runAgentSts(['policy', 'test', dir], { cwd: ROOT });
    expect(r.code, describeRun(r)).toBe(1);
    expect(r.stdout).toContain('FAIL a billing agent reads invoices');
    expect(r.stdout).toContain('expected lifetime cap 1200s, got 600s');
    expect(r.stdout).toContain('rules considered:');
    expect(r.stdout).toContain('4 passed, 1 failed');
  });

  it('test refuses a policy directory that does not load, with file and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-test-'));
    cpSync(EXAMPLES, dir, { recursive: true });
    writeFileSync(join(dir, 'billing.yaml'), readFileSync(join(dir, 'billing.yaml'), 'utf8').replace('maxTtl: 5m, human: forbidden', 'maxTtl: 12m, human: forbidden'));
    const r = await runAgentSts(['policy', 'test', dir], { cwd: ROOT });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/billing\.yaml:\d+: spec\.rules\[0\]\.grants\[1\]: rule billing\/agents exceeds ceiling org-ceiling: lifetime 12m at demo-db is above 10m/);
  });

  it('diff lists gained, lost and changed grants', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-diff-'));
    cpSync(EXAMPLES, join(dir, 'old'), { recursive: true });
    cpSync(EXAMPLES, join(dir, 'new'), { recursive: true });
    const billing = join(dir, 'new', 'billing.yaml');
    writeFileSync(billing, readFileSync(billing, 'utf8').replace('maxTtl: 10m', 'maxTtl: 15m').replace("{ target: demo-db, scopes: [read], maxTtl: 5m, human: forbidden }", "{ target: demo-db, scopes: [read], maxTtl: 5m, human: optional }").replace("groups: [finance]", "groups: [finance, audit]"));
    const r = await runAgentSts(['policy', 'diff', join(dir, 'old'), join(dir, 'new')], { cwd: ROOT });
    expect(r.code, describeRun(r)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContain('~ workload provider=dev subject~dev://billing/.+ if (delegation.depth <= 2) -> demo-db: human forbidden -> human optional');
    expect(lines.some((l) => l.startsWith('~ workload provider=dev subject~dev://billing/.+ if (delegation.depth <= 2) && (request.scopes') && l.endsWith('-> billing-api: lifetime 10m -> 15m'))).toBe(true);
    expect(lines).toContain('- human issuer=https://idp.example.com groups∈{finance} -> billing-api: invoices:read invoices:write; 5m');
    expect(lines).toContain('+ human issuer=https://idp.example.com groups∈{audit,finance} -> billing-api: invoices:read invoices:write; 5m');
    expect(lines.at(-1)).toBe('6 change(s)');
  });

  it('diff from v1 rules in a config file to nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-diff-'));
    writeFileSync(join(dir, 'empty.yaml'), 'apiVersion: agent-sts.dev/v2\nkind: Policy\nmetadata: { name: empty, owners: [me] }\nspec: { rules: [] }\n');
    const r = await runAgentSts(['policy', 'diff', DEV_CONFIG, join(dir, 'empty.yaml')], { cwd: ROOT });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain('- workload provider=github ref∈{refs/heads/main} repository_id∈{123456789} -> billing-api: invoices:read invoices:write; 10m; human optional');
  });
});
