// `agent-sts approvals list|approve|deny` as a subprocess against a temp dev config and SQLite
// store: the decider is cli:<OS user>, who must be a named approver; decisions are audited.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

describe('agent-sts approvals', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let database: Database;
  const me = `cli:${userInfo().username}`;
  const run = (...args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-approvals-'));
    config = writeDevConfig(dir);
    const m = await run('migrate');
    expect(m.code, describeRun(m)).toBe(0);
    database = await openDatabase(`file:${join(dir, 'data', 'agent-sts.db')}`);
    const expiresAt = new Date(Date.now() + 600_000);
    const base = { state: 'pending', workloadSubject: 'dev://bot', target: 'payouts', scopes: 'pay', policyId: 'p/agents', expiresAt };
    await database.db.policyApproval.create({ data: { ...base, id: 'apr_mine', requestKey: 'k1', approvers: JSON.stringify([me]) } });
    await database.db.policyApproval.create({ data: { ...base, id: 'apr_other', requestKey: 'k2', approvers: JSON.stringify(['bootstrap:ops']) } });
  });
  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists pending requests as JSON lines', async () => {
    const r = await run('approvals', 'list', '--json');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(['apr_mine', 'apr_other']);
  });

  it('approves as a named approver (audited), refuses where it is not one, and a decided request is exit 3', async () => {
    const ok = await run('approvals', 'approve', 'apr_mine', '--reason', 'payout run');
    expect(ok.code, describeRun(ok)).toBe(0);
    expect(ok.stdout).toContain(`apr_mine is approved (by ${me})`);
    expect(await database.db.auditEvent.findFirst({ where: { action: 'approval.approve', outcome: 'success' } })).toMatchObject({ reason: `approved by ${me}: payout run` });
    const again = await run('approvals', 'deny', 'apr_mine', '--reason', 'no');
    expect(again.code, describeRun(again)).toBe(3);
    const notMine = await run('approvals', 'deny', 'apr_other', '--reason', 'no');
    expect(notMine.code, describeRun(notMine)).toBe(3);
    expect(notMine.stderr).toContain('not an approver');
    const unknown = await run('approvals', 'approve', 'apr_nope', '--reason', 'x');
    expect(unknown.code, describeRun(unknown)).toBe(1);
  });
});
