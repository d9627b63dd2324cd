// `agent-sts tasks end` and `agent-sts credentials revoke` as a subprocess against a temp dev
// config and SQLite store: an operator ends one task (its credentials revoked, who and why in the
// record) or revokes one credential (its task goes on); unknown ids are exit 1, a bad reason exit 2.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

describe('agent-sts tasks end / credentials revoke', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let database: Database;
  const who = `cli:${userInfo().username}`;
  const run = (...args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-tasks-'));
    config = writeDevConfig(dir);
    const m = await run('migrate');
    expect(m.code, describeRun(m)).toBe(0);
    database = await openDatabase(`file:${join(dir, 'data', 'agent-sts.db')}`);
    const deadline = new Date(Date.now() + 600_000);
    // Open tasks with agent tokens (revocable, nothing upstream to call); t_child is t_end's sub-agent.
    for (const [id, parent] of [['t_end', null], ['t_child', 't_end'], ['t_keep', null]] as const) {
      await database.db.task.create({ data: { id, state: 'open', providerName: 'dev', workloadSubject: 'dev://agent', parentTaskId: parent, rootTaskId: parent ?? id, deadline } });
      for (const n of [1, 2])
        await database.db.credential.create({ data: { id: `c_${id}_${n}`, taskId: id, issuerName: 'agent-sts', issuerType: 'agent-token', tokenType: 'urn:ietf:params:oauth:token-type:access_token', target: 'agent-sts', state: 'active', fingerprint: `sha256:${id}${n}`, expiresAt: deadline } });
    }
    // An access token of the dev config's agent-sts-jwt issuer (verified offline by resource servers).
    await database.db.credential.create({ data: { id: 'c_t_keep_jwt', taskId: 't_keep', issuerName: 'internal-tokens', issuerType: 'agent-sts-jwt', tokenType: 'urn:ietf:params:oauth:token-type:access_token', target: 'billing-api', state: 'active', fingerprint: 'sha256:jwt', expiresAt: deadline } });
  });
  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('tasks show: the task, its credentials (fingerprints, no secrets) and its sub-agent\'s task; --json is the GET /v1/tasks/{id} shape; an unknown id is exit 1', async () => {
    const r = await run('tasks', 'show', 't_end');
    expect(r.code, describeRun(r)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('task t_end  open');
    expect(lines[1]).toBe('  workload dev://agent');
    expect(lines).toContain('  credentials: 2');
    expect(lines.filter((l) => /^ {4}c_t_end_[12] {2}agent-sts {2}agent-sts {2}active {2}expires \d{4}-/.test(l))).toHaveLength(2);
    expect(lines.at(-1)).toBe("  sub-agents' tasks: t_child (open)");
    const child = await run('tasks', 'show', 't_child', '--json');
    expect(child.code, describeRun(child)).toBe(0);
    const view = JSON.parse(child.stdout) as Record<string, unknown>;
    expect(view).toMatchObject({ task_id: 't_child', state: 'open', parent_task_id: 't_end', root_task_id: 't_end', children: [], end_reason: null });
    expect((view.credentials as { id: string; fingerprint: string }[]).map((c) => [c.id, c.fingerprint])).toEqual([['c_t_child_1', 'sha256:t_child1'], ['c_t_child_2', 'sha256:t_child2']]);
    const unknown = await run('tasks', 'show', 't_nope');
    expect(unknown.code, describeRun(unknown)).toBe(1);
    expect(unknown.stderr).toContain('no task t_nope');
    // reading changes nothing and records nothing
    expect(await database.db.auditEvent.count()).toBe(0);
  });

  it('tasks end: the task and its sub-agent\'s task end, every credential revoked, who and why recorded', async () => {
    const r = await run('tasks', 'end', 't_end', '--reason', 'runaway loop, INC-9');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => l.replace(/ at \d{4}-\S+$/, '').split('  ').join(' '))).toEqual([
      'c_t_end_1 agent-sts revoked', 'c_t_end_2 agent-sts revoked', 'c_t_child_1 agent-sts revoked', 'c_t_child_2 agent-sts revoked',
    ]);
    expect(r.stderr).toContain('task t_end is ended: 4 credential(s)');
    const db = database.db;
    expect(await db.task.findUniqueOrThrow({ where: { id: 't_end' } })).toMatchObject({ state: 'ended', endReason: `ended by ${who}: runaway loop, INC-9` });
    expect((await db.task.findUniqueOrThrow({ where: { id: 't_child' } })).state).toBe('ended');
    expect((await db.task.findUniqueOrThrow({ where: { id: 't_keep' } })).state).toBe('open');
    expect(await db.auditEvent.findFirst({ where: { action: 'task.end', taskId: 't_end' } })).toMatchObject({ outcome: 'success', reason: `ended by ${who}: runaway loop, INC-9` });
    // again: nothing more happens, the fates are reported as they are
    const again = await run('tasks', 'end', 't_end', '--reason', 'again', '--json');
    expect(again.code, describeRun(again)).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ taskId: 't_end', state: 'ended' });
    expect(await db.auditEvent.count({ where: { action: 'task.end', taskId: 't_end' } })).toBe(1);
  });

  it('credentials revoke: that credential only, its task goes on; again reports it as it is', async () => {
    const r = await run('credentials', 'revoke', 'c_t_keep_1', '--reason', 'token pasted in a ticket');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toMatch(/^c_t_keep_1 {2}task t_keep {2}agent-sts {2}revoked \(now revoked; expires /);
    const db = database.db;
    expect((await db.credential.findUniqueOrThrow({ where: { id: 'c_t_keep_1' } })).state).toBe('revoked');
    expect((await db.credential.findUniqueOrThrow({ where: { id: 'c_t_keep_2' } })).state).toBe('active');
    expect((await db.task.findUniqueOrThrow({ where: { id: 't_keep' } })).state).toBe('open');
    const rec = await db.auditEvent.findFirstOrThrow({ where: { action: 'credential.revoke', credentialId: 'c_t_keep_1' } });
    expect(rec.reason).toMatch(new RegExp(`^revoked by ${who}: token pasted in a ticket at \\d{4}-`));
    const again = await run('credentials', 'revoke', 'c_t_keep_1', '--reason', 'again', '--json');
    expect(again.code, describeRun(again)).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ credential_id: 'c_t_keep_1', task_id: 't_keep', fate: 'revoked', state: 'revoked' });
    expect(await db.auditEvent.count({ where: { action: 'credential.revoke', credentialId: 'c_t_keep_1' } })).toBe(1);
  });

  it('credentials revoke of an agent-sts-jwt access token: marked revoked, and says until when offline verifiers accept it', async () => {
    const r = await run('credentials', 'revoke', 'c_t_keep_jwt', '--reason', 'token in a gist');
    expect(r.code, describeRun(r)).toBe(0);
    const row = await database.db.credential.findUniqueOrThrow({ where: { id: 'c_t_keep_jwt' } });
    expect(row.state).toBe('revoked');
    expect(r.stdout).toMatch(/^c_t_keep_jwt {2}task t_keep {2}billing-api {2}revoked \(now revoked; expires /);
    expect(r.stderr).toContain(`introspection and agent-sts refuse it now; resource servers that verify it offline accept it until ${row.expiresAt.toISOString()}`);
  });

  it('unknown ids are exit 1 with where to look; a missing or blank reason is refused', async () => {
    const t = await run('tasks', 'end', 't_nope', '--reason', 'x');
    expect(t.code, describeRun(t)).toBe(1);
    expect(t.stderr).toContain('no task t_nope');
    const c = await run('credentials', 'revoke', 'c_nope', '--reason', 'x');
    expect(c.code, describeRun(c)).toBe(1);
    expect(c.stderr).toContain('no credential c_nope');
    const missing = await run('credentials', 'revoke', 'c_t_keep_2');
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--reason/);
    const blank = await run('tasks', 'end', 't_keep', '--reason', '   ');
    expect(blank.code, describeRun(blank)).toBe(2);
    expect(blank.stderr).toContain('--reason: 1 to 1000 characters');
    expect((await database.db.task.findUniqueOrThrow({ where: { id: 't_keep' } })).state).toBe('open');
  });
});
