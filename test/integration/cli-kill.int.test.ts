// `agent-sts kill|restore|blocked` as a subprocess against a temp dev config and SQLite store: the
// kill switch writes the block, ends the subject's open tasks (their credentials revoked) and is
// audited with the OS user; restore lifts it; an unknown subject is an error.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

const SUBJECT = 'spiffe://cluster.local/ns/agents/sa/rogue';

describe('agent-sts kill / restore', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let database: Database;
  const run = (...args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-kill-'));
    config = writeDevConfig(dir);
    const m = await run('migrate');
    expect(m.code, describeRun(m)).toBe(0);
    database = await openDatabase(`file:${join(dir, 'data', 'agent-sts.db')}`);
    const db = database.db;
    const deadline = new Date(Date.now() + 600_000);
    // Two open tasks of the subject (an agent token each: nothing upstream to call) and one of another.
    for (const [id, subject] of [['t_kill1', SUBJECT], ['t_kill2', SUBJECT], ['t_other', 'spiffe://cluster.local/ns/agents/sa/ok']] as const) {
      await db.task.create({ data: { id, state: 'open', providerName: 'dev', workloadSubject: subject, deadline } });
      await db.credential.create({ data: { id: `c_${id}`, taskId: id, issuerName: 'agent-sts', issuerType: 'agent-token', tokenType: 'urn:ietf:params:oauth:token-type:access_token', target: 'agent-sts', state: 'active', fingerprint: `sha256:${id}`, expiresAt: deadline } });
    }
  });
  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('kill blocks the subject, ends its open tasks and says what happened', async () => {
    const r = await run('kill', SUBJECT, '--reason', 'leaked credentials, INC-7');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain(`${SUBJECT} (workload) is blocked: 2 task(s) ended; credentials: 2 revoked, 0 revocation pending, 0 expire naturally`);
    expect(r.stderr).toMatch(/task t_kill1: ended \(1 revoked\)/);
    const db = database.db;
    expect(await db.identityBlock.findUnique({ where: { subject: SUBJECT } })).toMatchObject({ kind: 'workload', reason: 'leaked credentials, INC-7', blockedBy: `cli:${userInfo().username}` });
    expect((await db.task.findMany({ where: { workloadSubject: SUBJECT } })).map((t) => t.state)).toEqual(['ended', 'ended']);
    expect((await db.task.findUniqueOrThrow({ where: { id: 't_other' } })).state).toBe('open');
    expect((await db.credential.findUniqueOrThrow({ where: { id: 'c_t_kill1' } })).state).toBe('revoked');
    const audit = await db.auditEvent.findFirst({ where: { action: 'admin.identity.kill' } });
    expect(audit).toMatchObject({ outcome: 'success', workloadSubject: SUBJECT, reason: `by cli:${userInfo().username}: leaked credentials, INC-7` });
    const list = await run('blocked', '--json');
    expect(list.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([expect.objectContaining({ subject: SUBJECT, kind: 'workload' })]);
  });

  it('restore lifts the block (audited); an unknown subject is exit 1; a missing reason is refused', async () => {
    const r = await run('restore', SUBJECT);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain(`${SUBJECT} (workload) is no longer blocked`);
    expect(await database.db.identityBlock.count()).toBe(0);
    expect(await database.db.auditEvent.count({ where: { action: 'admin.identity.restore', workloadSubject: SUBJECT } })).toBe(1);
    const again = await run('restore', SUBJECT);
    expect(again.code, describeRun(again)).toBe(1);
    expect(again.stderr).toContain('is not blocked');
    const noReason = await run('kill', SUBJECT);
    expect(noReason.code).not.toBe(0);
    expect(noReason.stderr).toMatch(/--reason/);
    const human = await run('kill', 'alice@example.com', '--reason', 'left the company', '--human');
    expect(human.code, describeRun(human)).toBe(0);
    expect(await database.db.identityBlock.findUnique({ where: { subject: 'alice@example.com' } })).toMatchObject({ kind: 'human' });
  });
});
