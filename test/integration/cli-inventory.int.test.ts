// `agent-sts inventory list|show` and `agent-sts review` as a subprocess against a temp dev config and
// SQLite store holding a stale identity and an over-granted one: tables, JSON, CSV to a file, and
// clear refusals for bad input and unknown identities.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

const DAY = 86_400_000;

describe('agent-sts inventory / review', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let database: Database;
  const run = (...args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-inventory-'));
    config = writeDevConfig(dir);
    const m = await run('migrate');
    expect(m.code, describeRun(m)).toBe(0);
    database = await openDatabase(`file:${join(dir, 'data', 'agent-sts.db')}`);
    const db = database.db;
    const now = Date.now();
    const details = JSON.stringify({ providerType: 'oidc', attributes: { team: 'payments' } });
    await db.identity.create({ data: { kind: 'workload', subject: 'dev://old-bot', providerName: 'dev', attributes: details, firstSeenAt: new Date(now - 100 * DAY), lastSeenAt: new Date(now - 50 * DAY) } });
    await db.identity.create({ data: { kind: 'workload', subject: 'dev://fresh-bot', providerName: 'dev', owner: 'payments', attributes: details, firstSeenAt: new Date(now - 60 * DAY), lastSeenAt: new Date(now - 3600_000) } });
    await db.identityTargetUse.create({
      data: { subject: 'dev://fresh-bot', target: 'billing-api', firstUsedAt: new Date(now - 60 * DAY), lastUsedAt: new Date(now - DAY), uses: 9, scopes: JSON.stringify([{ scope: 'invoices:read', lastUsedAt: new Date(now - DAY).toISOString() }]) },
    });
  });
  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists identities as a table, and as JSON lines with filters', async () => {
    const r = await run('inventory', 'list');
    expect(r.code, describeRun(r)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^KIND\s+SUBJECT\s+PROVIDER\s+LAST SEEN\s+OWNER\s+FLAGS$/);
    // Only v1 rules (no owners) grant it: unowned too.
    expect(lines.find((l) => l.includes('dev://old-bot'))).toMatch(/stale,unowned,over_granted$/);
    expect(lines.find((l) => l.includes('dev://fresh-bot'))).toMatch(/payments\s+over_granted$/);
    expect(r.stderr).toContain('2 identities');
    const stale = await run('inventory', 'list', '--stale', '--json');
    expect(stale.code, describeRun(stale)).toBe(0);
    expect(stale.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { subject: string }).subject)).toEqual(['dev://old-bot']);
    const bad = await run('inventory', 'list', '--kind', 'robot');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--kind');
  });

  it('shows one identity with its blast radius and what to remove; an unknown one says what to do', async () => {
    const r = await run('inventory', 'show', 'dev://fresh-bot');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain('workload dev://fresh-bot');
    expect(r.stdout).toMatch(/billing-api invoices:read\s+by dev-agents/);
    expect(r.stdout).toMatch(/demo-db read\s+by dev-agents/);
    expect(r.stdout).toContain('remove target demo-db scope read from rule dev-agents (last used never)');
    const missing = await run('inventory', 'show', 'dev://nobody');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('the inventory has no workload dev://nobody');
  });

  it('writes an access review as CSV to a file and as JSON to stdout, with a summary on stderr', async () => {
    const out = join(dir, 'review.csv');
    const r = await run('review', '--identity', 'dev://fresh-bot', '--window', '30d', '--format', 'csv', '--out', out);
    expect(r.code, describeRun(r)).toBe(0);
    const csv = readFileSync(out, 'utf8').trim().split('\r\n');
    expect(csv[0]).toBe('kind,subject,owner,target,scope,allowed_by,requires,last_used_at,uses_in_window,decision,note');
    expect(csv.find((l) => l.includes(',billing-api,invoices:read,'))).toContain(',keep,');
    expect(csv.find((l) => l.includes(',demo-db,read,'))).toContain(',remove,remove target demo-db scope read from rule dev-agents');
    expect(r.stderr).toMatch(/access review of workload dev:\/\/fresh-bot .*: 2 row\(s\): 1 keep, 1 remove.*written to/);
    const t = await run('review', '--target', 'billing-api', '--format', 'json');
    expect(t.code, describeRun(t)).toBe(0);
    const review = JSON.parse(t.stdout) as { target: string; rows: { subject: string; decision: string }[] };
    expect(review.target).toBe('billing-api');
    expect(review.rows.map((x) => `${x.subject} ${x.decision}`).sort()).toEqual(['dev://fresh-bot keep', 'dev://old-bot remove']);
  });

  it('refuses a review without exactly one of --identity and --target, or with an unknown format; prints a table by default', async () => {
    const none = await run('review');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('give exactly one of identity or target');
    const badFormat = await run('review', '--identity', 'dev://fresh-bot', '--format', 'xml');
    expect(badFormat.code).toBe(2);
    expect(badFormat.stderr).toContain('--format must be table, json or csv');
    const unknown = await run('review', '--identity', 'dev://nobody');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('an identity appears after its first exchange');
    const table = await run('review', '--identity', 'dev://old-bot');
    expect(table.code, describeRun(table)).toBe(0);
    expect(table.stdout).toMatch(/^TARGET\s+SCOPE\s+DECISION\s+USES\s+LAST USED\s+ALLOWED BY\s+NOTE\n/);
    expect(table.stdout).toMatch(/demo-db\s+read\s+remove\s+0\s+-\s+dev-agents\s+remove target demo-db scope read from rule dev-agents/);
  });
});
