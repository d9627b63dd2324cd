// The sweep leader lease, the durable revocation queue (backoff, never given up, audit policy),
// recovery of abandoned issuances and the idle timeout, against both stores with a fake clock.
import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, createTestSqliteUrl, useMigratedDatabase } from '../support/databases.js';
import { createLogger } from '../../src/log/logger.js';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { Secret } from '../../src/core/secret.js';
import { createLeadership, holderStartedAt, newHolderId, SWEEP_LEASE } from '../../src/tasks/lease.js';
import { AUDIT_EVERY_NTH_FAILURE, createTaskService, REVOKE_CLAIM_MS, revokeBackoffMs, sealHandle } from '../../src/tasks/task-service.js';
import type { CredentialIssuer } from '../../src/credential-issuers/credential-issuer.js';
import type { RevocationHandle } from '../../src/core/types.js';
import { chaosHookFrom } from '../../src/lib/chaos-hook.js';

const T0 = Date.UTC(2031, 2, 4, 12, 0, 0);
const logger = createLogger({ level: 'silent' });
const id = () => randomBytes(6).toString('hex');

function fakeClock(start: number) {
  let t = start;
  return { clock: { now: () => new Date(t) }, advance: (ms: number) => (t += ms), set: (ms: number) => (t = ms), get: () => t };
}

/**
 * A database issuer whose revoke() fails while `failing` is set; records every handle it revoked,
 * and in `calls` the role of every attempt as it starts. `hold(role, calls)`: that attempt hangs
 * until `release()`.
 */
function fakeIssuer(hold: (role: string, calls: string[]) => boolean = () => false) {
  const revoked: RevocationHandle[] = [];
  const calls: string[] = [];
  const state = { failing: false };
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const issuer = {
    type: 'postgres', name: 'pg', issuedTokenTypes: ['x'], needsActiveRevocation: true,
    capabilities: { revocable: true, minTtlSeconds: 1, maxTtlSeconds: 3600 },
    issue: () => Promise.reject(new Error('not used')),
    revoke: async (h: RevocationHandle) => {
      calls.push(String(h.role));
      if (hold(String(h.role), calls)) await held;
      if (state.failing) throw Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), { code: 'ECONNREFUSED' });
      revoked.push(h);
    },
  } as unknown as CredentialIssuer;
  return { issuer, revoked, state, calls, release };
}

describe.each([
  ['sqlite', () => createTestSqliteUrl('agsts-sweepq')],
  ['postgresql', () => createTestPostgresDatabase('agsts_sweepq')],
])('sweep leader and revocation queue on %s', (_store, create) => {
  const database = useMigratedDatabase(create);
  let time: ReturnType<typeof fakeClock>;
  const kek = new Secret(randomBytes(32));
  beforeEach(async () => {
    const db = database().db;
    await db.lease.deleteMany();
    time = fakeClock(T0);
  });

  /** The task service with `issuer` as instance `pg`, writing its audit records to this store. */
  const serviceFor = (issuer: CredentialIssuer) => {
    const audit = createAuditLog({ batch: database().batch, clock: time.clock, logger });
    return { audit, tasks: createTaskService({ db: database().db, clock: time.clock, logger, kek, audit, issuers: { get: (n) => (n === 'pg' ? issuer : undefined) }, revocations: { revokeTask: () => {}, revokeToken: () => {} } }) };
  };

  const leader = (ttlMs = 3000) => createLeadership({ db: database().db, clock: time.clock, logger, holder: newHolderId(time.clock), ttlMs });

  it('one holder at a time: renewal keeps it, expiry hands it over, the old holder knows it lost it', async () => {
    const a = leader();
    const b = leader();
    expect(holderStartedAt(a.holder)?.getTime()).toBe(T0);
    expect(await a.heartbeat()).toBe(true);
    expect(await b.heartbeat()).toBe(false);
    time.advance(2000);
    expect(await a.heartbeat()).toBe(true); // renewed until T0 + 5 s
    time.advance(2500);
    expect(await b.heartbeat()).toBe(false);
    expect(a.isLeader()).toBe(true);
    time.advance(600); // A missed its renewals (crashed): its lease lapsed
    expect(a.isLeader()).toBe(false);
    expect(await b.heartbeat()).toBe(true);
    expect(await a.heartbeat()).toBe(false);
    expect((await database().db.lease.findUniqueOrThrow({ where: { name: SWEEP_LEASE } })).holder).toBe(b.holder);
    await b.release();
    expect(await a.heartbeat()).toBe(true); // released: no need to wait for expiry
  });

  it('changes of leadership are reported once each, by what the store says: a late heartbeat that still renews is no change', async () => {
    const changes: string[] = [];
    const watched = (name: string) =>
      createLeadership({
        db: database().db, clock: time.clock, logger, holder: newHolderId(time.clock), ttlMs: 3000,
        onLeadershipChange: async (c) => void changes.push(`${name} ${c.leader ? 'start' : 'stop'}: ${c.why}`),
      });
    const a = watched('a');
    const b = watched('b');
    expect(await a.heartbeat()).toBe(true);
    expect(await b.heartbeat()).toBe(false);
    time.advance(4000); // a's heartbeat comes late: its lease lapsed by its clock, but nobody took it
    expect(a.isLeader()).toBe(false);
    expect(await a.heartbeat()).toBe(true);
    time.advance(3100); // a stops renewing; b takes over; a finds out
    expect(await b.heartbeat()).toBe(true);
    expect(await a.heartbeat()).toBe(false);
    await b.release();
    await a.release(); // not leader: nothing to report
    expect(changes).toEqual([
      `a start: until ${new Date(T0 + 3000).toISOString()} unless renewed`,
      `b start: until ${new Date(T0 + 7100 + 3000).toISOString()} unless renewed`,
      'a stop: its lease could not be renewed (another replica holds it, or the store did not answer)',
      'b stop: released at shutdown',
    ]);
  });

  it('many contenders for a free or expired lease: exactly one wins', async () => {
    const contenders = Array.from({ length: 12 }, () => leader());
    expect((await Promise.all(contenders.map((c) => c.acquire(SWEEP_LEASE)))).filter(Boolean)).toHaveLength(1);
    time.advance(10_000);
    expect((await Promise.all(contenders.map((c) => c.acquire(SWEEP_LEASE)))).filter(Boolean)).toHaveLength(1);
  });

  it('oldestLiveStart: the start of the oldest process whose liveness lease has not expired', async () => {
    const old = leader();
    await old.heartbeat();
    time.advance(60_000);
    const fresh = leader();
    await fresh.heartbeat();
    // The old process stopped renewing 57 s ago: it is dead, only the fresh one counts.
    expect((await fresh.oldestLiveStart()).getTime()).toBe(T0 + 60_000);
    await old.heartbeat(); // alive after all (a long pause): issuances from after T0 may be its own
    expect((await fresh.oldestLiveStart()).getTime()).toBe(T0);
  });

  it('revocation queue: retried with exponential backoff capped at 5 minutes, never given up, audited on attempts 1, 10, 20, ...', async () => {
    const db = database().db;
    const { issuer, revoked, state } = fakeIssuer();
    const { audit, tasks } = serviceFor(issuer);
    const taskId = `t_${randomBytes(6).toString('hex')}`;
    const credId = `c_${randomBytes(6).toString('hex')}`;
    // Deadline far away: ending the task would retry at once (once), outside the queue's schedule.
    await db.task.create({ data: { id: taskId, state: 'open', providerName: 'ci', workloadSubject: 'w', deadline: new Date(T0 + 30 * 86_400_000) } });
    await db.credential.create({
      data: { id: credId, taskId, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'active', fingerprint: 'sha256:x', expiresAt: new Date(T0 - 1000), sealedRevocationHandle: sealHandle(kek, credId, { role: 'ags_x' }) },
    });
    state.failing = true;
    const ctx = () => ({ requestId: 'sweep', now: time.clock.now() });
    const firstFailure = time.get();
    await tasks.sweep(ctx());
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 31; attempt++) {
      const row = await db.credential.findUniqueOrThrow({ where: { id: credId } });
      expect(row.state).toBe('revoking');
      expect(row.revokeAttempts).toBe(attempt);
      expect(row.lastError).toMatch(/ECONNREFUSED/);
      delays.push(row.nextRevokeAt!.getTime() - time.get());
      // Not before it is due.
      time.advance(delays.at(-1)! - 1);
      await tasks.sweep(ctx());
      expect((await db.credential.findUniqueOrThrow({ where: { id: credId } })).revokeAttempts).toBe(attempt);
      time.advance(1);
      if (attempt < 31) await tasks.sweep(ctx());
    }
    expect(delays.slice(0, 8)).toEqual([5, 10, 20, 40, 80, 160, 300, 300].map((s) => s * 1000));
    expect(Math.max(...delays)).toBe(300_000);
    expect(delays.map((_, i) => revokeBackoffMs(i + 1))).toEqual(delays);
    const summary = await tasks.revocationSummary();
    expect(summary.pending).toBe(1);
    // Estimated from the schedule: exact here because every attempt ran when due.
    expect(summary.oldestPendingSince?.getTime()).toBe(firstFailure);
    const listed = await tasks.pendingRevocations();
    expect(listed).toEqual([expect.objectContaining({ credentialId: credId, target: 'db', issuerName: 'pg', attempts: 31 })]);
    expect(JSON.stringify(listed)).not.toMatch(/ags_x|sealed/);
    await audit.drain();
    const failures = await db.auditEvent.findMany({ where: { credentialId: credId, outcome: 'failure' }, orderBy: { time: 'asc' } });
    expect(failures.map((f) => /attempt (\d+)/.exec(f.reason ?? '')?.[1])).toEqual(['1', '10', '20', '30']);
    expect(AUDIT_EVERY_NTH_FAILURE).toBe(10);

    state.failing = false;
    await tasks.sweep(ctx());
    expect(revoked).toEqual([{ role: 'ags_x' }]);
    const done = await db.credential.findUniqueOrThrow({ where: { id: credId } });
    expect(done.state).toBe('expired');
    expect((await tasks.revocationSummary()).pending).toBe(0);
    await audit.drain();
    expect(await db.auditEvent.count({ where: { credentialId: credId, outcome: 'success', action: 'credential.expire' } })).toBe(1);
  });

  it('recovers issuances abandoned by a dead process through their planned handle (failed), leaves in-flight ones, and ends idle tasks', async () => {
    const db = database().db;
    const { issuer, revoked } = fakeIssuer();
    const { audit, tasks } = serviceFor(issuer);
    const taskId = `t_${id()}`;
    await db.task.create({ data: { id: taskId, state: 'open', providerName: 'ci', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000) } });
    const mk = async (issuedAt: number, role: string) => {
      const cid = `c_${id()}`;
      await db.credential.create({
        data: { id: cid, taskId, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'issuing', fingerprint: 'pending', issuedAt: new Date(issuedAt), expiresAt: new Date(T0 + 600_000), sealedRevocationHandle: sealHandle(kek, cid, { role }) },
      });
      return cid;
    };
    const dead = await mk(T0 - 10_000, 'ags_dead');
    const inFlight = await mk(T0 - 1000, 'ags_live');
    await tasks.sweep({ requestId: 'recovery', now: time.clock.now() }, { issuingBefore: new Date(T0 - 5000) });
    expect(revoked).toEqual([{ role: 'ags_dead' }]);
    expect((await db.credential.findUniqueOrThrow({ where: { id: dead } })).state).toBe('failed');
    expect((await db.credential.findUniqueOrThrow({ where: { id: inFlight } })).state).toBe('issuing');
    await audit.drain();
    expect(await db.auditEvent.count({ where: { credentialId: dead, action: 'credential.recover', outcome: 'success' } })).toBe(1);

    // Idle timeout: lastActivityAt + idleTimeoutSeconds in the past ends the task; within it, it stays open.
    const idle = `t_${id()}`;
    const busy = `t_${id()}`;
    const base = { state: 'open', providerName: 'ci', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000), idleTimeoutSeconds: 60 };
    await db.task.create({ data: { id: idle, ...base, lastActivityAt: new Date(T0 - 61_000) } });
    await db.task.create({ data: { id: busy, ...base, lastActivityAt: new Date(T0 - 30_000) } });
    await tasks.sweep({ requestId: 'idle', now: time.clock.now() }, { issuingBefore: new Date(T0 - 5000) });
    expect(await db.task.findUniqueOrThrow({ where: { id: idle } })).toMatchObject({ state: 'ended', endReason: 'idle timeout' });
    expect((await db.task.findUniqueOrThrow({ where: { id: busy } })).state).toBe('open');
  });

  it('one call ends a task at a time: the sweep and a second caller leave an ending under way alone, and the task keeps its reason', async () => {
    const db = database().db;
    // The child's login is slow to revoke: the parent's ending is under way for as long as it blocks.
    const { issuer, calls, release } = fakeIssuer((role) => role === 'ags_child');
    const { audit, tasks } = serviceFor(issuer);
    const parent = `t_${id()}`;
    const child = `t_${id()}`;
    const base = { state: 'open', providerName: 'k8s', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000) };
    await db.task.create({ data: { id: parent, ...base } });
    await db.task.create({ data: { id: child, ...base, parentTaskId: parent } });
    for (const [taskId, role] of [[parent, 'ags_parent'], [child, 'ags_child']] as const) {
      const cid = `c_${id()}`;
      await db.credential.create({
        data: { id: cid, taskId, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'active', fingerprint: `sha256:${role}`, expiresAt: new Date(T0 + 600_000), sealedRevocationHandle: sealHandle(kek, cid, { role }) },
      });
    }
    const ctx = (requestId: string) => ({ requestId, now: time.clock.now() });
    const ending = tasks.endTask(parent, 'pod p1 deleted', ctx('reaper'));
    for (let i = 0; i < 200 && !calls.includes('ags_child'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual(['ags_parent', 'ags_child']);
    // The parent is `ending` with no revocation of its own queued: before the claim, the sweep took it for a stalled end.
    const timeout = (what: string) => new Promise<never>((_, reject) => setTimeout(() => reject(new Error(what)), 3000).unref());
    const swept = await Promise.race([tasks.sweep(ctx('sweep')), timeout('the sweep waited on a revocation the ending task holds')]);
    expect(swept.tasksEnded).toBe(0);
    const second = await tasks.endTask(parent, 'ended by agent', ctx('agent'));
    expect(second).toMatchObject({ taskId: parent, state: 'ending', children: [] });
    expect(calls).toEqual(['ags_parent', 'ags_child']);

    release();
    const first = await ending;
    expect(first).toMatchObject({ state: 'ended', children: [expect.objectContaining({ taskId: child, state: 'ended' })] });
    expect(calls).toEqual(['ags_parent', 'ags_child']); // each login revoked once
    expect(await db.task.findUniqueOrThrow({ where: { id: parent } })).toMatchObject({ state: 'ended', endReason: 'pod p1 deleted', endClaimedUntil: null });
    expect(await db.task.findUniqueOrThrow({ where: { id: child } })).toMatchObject({ state: 'ended', endReason: `parent task ${parent} ended` });
    await audit.drain();
    const ends = await db.auditEvent.findMany({ where: { action: 'task.end', taskId: { in: [parent, child] } } });
    expect(ends.map((e) => [e.taskId, e.outcome, e.reason]).sort()).toEqual([[parent, 'success', 'pod p1 deleted'], [child, 'success', `parent task ${parent} ended`]].sort());
  });

  it('an ending whose caller died is taken over once its claim lapses; a failed revocation lets go of the claim at once; the first reason stays', async () => {
    const db = database().db;
    const { issuer, revoked, state } = fakeIssuer();
    const { audit, tasks } = serviceFor(issuer);
    const mk = async (task: Record<string, unknown>, role: string) => {
      const taskId = `t_${id()}`;
      const cid = `c_${id()}`;
      await db.task.create({ data: { id: taskId, state: 'open', providerName: 'k8s', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000), ...task } });
      await db.credential.create({
        data: { id: cid, taskId, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'active', fingerprint: `sha256:${role}`, expiresAt: new Date(T0 + 600_000), sealedRevocationHandle: sealHandle(kek, cid, { role }) },
      });
      return taskId;
    };
    const ctx = () => ({ requestId: 'sweep', now: time.clock.now() });
    // A replica moved this task to `ending` and died before it revoked anything.
    const orphan = await mk({ state: 'ending', endReason: 'pod p2 deleted', endClaimedUntil: new Date(T0 + REVOKE_CLAIM_MS) }, 'ags_orphan');
    await tasks.sweep(ctx());
    expect(revoked).toEqual([]);
    expect((await tasks.endTask(orphan, 'ended by agent', ctx()))?.state).toBe('ending');
    time.advance(REVOKE_CLAIM_MS);
    expect((await tasks.sweep(ctx())).tasksEnded).toBe(1);
    expect(revoked).toEqual([{ role: 'ags_orphan' }]);
    expect(await db.task.findUniqueOrThrow({ where: { id: orphan } })).toMatchObject({ state: 'ended', endReason: 'pod p2 deleted', endClaimedUntil: null });

    // The upstream is down: the end is recorded as failed and the claim let go, so the agent's own retry runs at once.
    const flaky = await mk({}, 'ags_flaky');
    state.failing = true;
    expect((await tasks.endTask(flaky, 'ended by agent', ctx()))?.state).toBe('ending');
    expect((await db.task.findUniqueOrThrow({ where: { id: flaky } })).endClaimedUntil).toBeNull();
    state.failing = false;
    expect((await tasks.endTask(flaky, 'ended by agent', ctx()))?.state).toBe('ended');
    await audit.drain();
    const ends = await db.auditEvent.findMany({ where: { action: 'task.end', taskId: { in: [orphan, flaky] } }, orderBy: [{ chainId: 'asc' }, { seq: 'asc' }] });
    expect(ends.map((e) => [e.taskId, e.outcome, e.reason])).toEqual([
      [orphan, 'success', 'pod p2 deleted (completed: retry)'],
      [flaky, 'failure', 'ended by agent'],
      [flaky, 'success', 'ended by agent'],
    ]);
  });

  it('a call that stalls past its claim (a hung revocation) is taken over; it then stops, reports what it sees, and records no second end', async () => {
    const db = database().db;
    // The first revocation of the first login hangs far beyond the claim; every other one is quick.
    const { issuer, calls, release } = fakeIssuer((role, seen) => role === 'ags_slow' && seen.filter((c) => c === 'ags_slow').length === 1);
    const { audit, tasks } = serviceFor(issuer);
    const taskId = `t_${id()}`;
    await db.task.create({ data: { id: taskId, state: 'open', providerName: 'k8s', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000) } });
    for (const [n, role] of [[0, 'ags_slow'], [1, 'ags_quick']] as const) {
      const cid = `c_${id()}`;
      await db.credential.create({
        data: { id: cid, taskId, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'active', fingerprint: `sha256:${role}`, issuedAt: new Date(T0 + n), expiresAt: new Date(T0 + 600_000), sealedRevocationHandle: sealHandle(kek, cid, { role }) },
      });
    }
    const ctx = (requestId: string) => ({ requestId, now: time.clock.now() });
    const stalled = tasks.endTask(taskId, 'pod p3 deleted', ctx('reaper'));
    for (let i = 0; i < 200 && !calls.length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual(['ags_slow']);

    // Its claim lapses; the sweep (a replica's leader) takes the ending over and completes it.
    time.advance(REVOKE_CLAIM_MS + 1);
    expect((await tasks.sweep(ctx('sweep'))).tasksEnded).toBe(1);
    expect(calls.sort()).toEqual(['ags_quick', 'ags_slow', 'ags_slow']);
    expect(await db.task.findUniqueOrThrow({ where: { id: taskId } })).toMatchObject({ state: 'ended', endReason: 'pod p3 deleted', endClaimedUntil: null });

    // The stalled call wakes up: it neither revokes again nor records a second (failed) end.
    release();
    const report = await stalled;
    expect(report).toMatchObject({ taskId, state: 'ended' });
    expect(report!.credentials.map((c) => c.fate)).toEqual(['revoked', 'revoked']);
    expect(calls).toHaveLength(3);
    const row = await db.task.findUniqueOrThrow({ where: { id: taskId } });
    expect(row).toMatchObject({ state: 'ended', endClaimedUntil: null });
    await audit.drain();
    const ends = await db.auditEvent.findMany({ where: { action: 'task.end', taskId } });
    expect(ends.map((e) => [e.outcome, e.reason])).toEqual([['success', 'pod p3 deleted (completed: retry)']]);
  });

  it("the sweep retries a parent's ending only once its sub-agent's task has ended: no failed end recorded on every pass meanwhile", async () => {
    const db = database().db;
    const { issuer, revoked } = fakeIssuer();
    const { audit, tasks } = serviceFor(issuer);
    const parent = `t_${id()}`;
    const child = `t_${id()}`;
    const base = { providerName: 'k8s', workloadSubject: 'w', deadline: new Date(T0 + 3_600_000) };
    // The parent's ending was let go (its child was busy); the child's is held by a live call.
    await db.task.create({ data: { id: parent, ...base, state: 'ending', endReason: 'pod p4 deleted', endClaimedUntil: null } });
    await db.task.create({ data: { id: child, ...base, parentTaskId: parent, state: 'ending', endReason: `parent task ${parent} ended`, endClaimedUntil: new Date(T0 + REVOKE_CLAIM_MS) } });
    const cid = `c_${id()}`;
    await db.credential.create({
      data: { id: cid, taskId: child, issuerName: 'pg', issuerType: 'postgres', tokenType: 'x', target: 'db', state: 'active', fingerprint: 'sha256:ags_child4', expiresAt: new Date(T0 + 600_000), sealedRevocationHandle: sealHandle(kek, cid, { role: 'ags_child4' }) },
    });
    const ctx = () => ({ requestId: 'sweep', now: time.clock.now() });
    for (let i = 0; i < 3; i++) {
      expect((await tasks.sweep(ctx())).tasksEnded).toBe(0);
      time.advance(1000);
    }
    await audit.drain();
    expect(await db.auditEvent.count({ where: { action: 'task.end', taskId: { in: [parent, child] } } })).toBe(0);
    expect(revoked).toEqual([]);

    // The child's holder died: its claim lapses, the sweep completes the child, then the parent.
    time.advance(REVOKE_CLAIM_MS);
    expect((await tasks.sweep(ctx())).tasksEnded).toBe(1);
    expect(revoked).toEqual([{ role: 'ags_child4' }]);
    expect((await tasks.sweep(ctx())).tasksEnded).toBe(1);
    expect(await db.task.findUniqueOrThrow({ where: { id: parent } })).toMatchObject({ state: 'ended', endReason: 'pod p4 deleted' });
    await audit.drain();
    const ends = await db.auditEvent.findMany({ where: { action: 'task.end', taskId: { in: [parent, child] } }, orderBy: [{ chainId: 'asc' }, { seq: 'asc' }] });
    expect(ends.map((e) => [e.taskId, e.outcome])).toEqual([[child, 'success'], [parent, 'success']]);
  });

  it('the chaos hook fires only at its point, only the n-th time, and refuses bad values', () => {
    let kills = 0;
    const hook = chaosHookFrom('after-upstream:3', () => kills++)!;
    hook('before-upstream');
    hook('after-upstream');
    hook('after-upstream');
    expect(kills).toBe(0);
    hook('after-upstream');
    hook('after-upstream');
    expect(kills).toBe(1);
    expect(chaosHookFrom(undefined)).toBeUndefined();
    expect(() => chaosHookFrom('everywhere')).toThrow(/AGENT_STS_CHAOS/);
  });
});
