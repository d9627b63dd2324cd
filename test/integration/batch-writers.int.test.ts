// The group-commit writers on real storage: the SQLite writer thread and the PostgreSQL (Prisma raw)
// writer. Rows they write must read back through Prisma exactly as Prisma's own writes do (dates,
// nulls, numbers); a batch that fails is rolled back whole; the SQLite thread refuses batches
// chained on a failed one.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sqlitePathForUrl } from '../../src/storage/migrate.js';
import type { Batch } from '../../src/storage/batch.js';
import { createTestPostgresDatabase, createTestSqliteUrl, useMigratedDatabase } from '../support/databases.js';

const T = new Date('2031-05-06T07:08:09.123Z');
const LATER = new Date('2031-05-06T08:08:09.456Z');

function batch(n: number, over: Partial<Batch> = {}): Batch {
  return {
    epoch: n, // as the audit log does after a failure: a new epoch per attempt here
    time: T,
    tasks: [{ id: `t${n}`, state: 'open', providerName: 'dev', workloadSubject: 'dev://a', humanSubject: null, deadline: LATER }],
    credentials: [{ id: `c${n}`, taskId: `t${n}`, issuerName: 'internal', issuerType: 'agent-sts-jwt', tokenType: 'urn:x', target: 'api', state: 'active', fingerprint: `sha256:${n}`, expiresAt: LATER }],
    credentialUpdates: [],
    taskUpdates: [],
    auditRows: [
      { id: `a${n}`, chainId: 'chain', seq: n, time: T, requestId: `r${n}`, action: 'token.exchange', outcome: 'allow', reason: null, providerName: 'dev', workloadSubject: 'dev://a', humanSubject: null, delegationChain: null, target: 'api', requestedScope: 'read', grantedScope: 'read', policyId: 'p', policyVersion: 'v', taskId: `t${n}`, credentialId: `c${n}`, credentialFingerprint: `sha256:${n}`, credentialExpiresAt: LATER, clientAddress: '127.0.0.1', prevHash: `h${n - 1}`, hash: `h${n}` },
    ],
    head: { chainId: 'chain', seq: n, hash: `h${n}` },
    ...over,
  };
}

const stores = [
  { name: 'sqlite', create: async () => createTestSqliteUrl('agsts-batch') },
  { name: 'postgresql', create: () => createTestPostgresDatabase('agsts_batch') },
];

describe.each(stores)('batch writer on $name', ({ create }) => {
  const db = useMigratedDatabase(create);

  it('writes tasks, credentials, audit rows and the chain head in one transaction, readable through Prisma', async () => {
    const database = db();
    await database.batch.commit(batch(1));
    const task = await database.db.task.findUniqueOrThrow({ where: { id: 't1' } });
    expect(task).toMatchObject({ state: 'open', humanSubject: null, createdAt: T, deadline: LATER, endedAt: null });
    const cred = await database.db.credential.findUniqueOrThrow({ where: { id: 'c1' } });
    expect(cred).toMatchObject({ issuedAt: T, expiresAt: LATER, revokeAttempts: 0, sealedRevocationHandle: null, state: 'active' });
    const row = await database.db.auditEvent.findUniqueOrThrow({ where: { id: 'a1' } });
    expect(row).toMatchObject({ seq: 1, time: T, credentialExpiresAt: LATER, reason: null, hash: 'h1' });
    // Prisma's own date filters see the rows (same stored format).
    expect(await database.db.credential.count({ where: { expiresAt: { gt: T, lte: LATER } } })).toBe(1);
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 1, hash: 'h1', updatedAt: T });
  });

  it('upserts the chain head and applies updates after the inserts of the same batch', async () => {
    const database = db();
    await database.batch.commit(
      batch(2, { credentialUpdates: [{ id: 'c2', data: { state: 'revoked', revokedAt: LATER } }], taskUpdates: [{ id: 't1', data: { state: 'ended', endedAt: LATER, endReason: 'done' } }] }),
    );
    expect(await database.db.credential.findUniqueOrThrow({ where: { id: 'c2' } })).toMatchObject({ state: 'revoked', revokedAt: LATER });
    expect(await database.db.task.findUniqueOrThrow({ where: { id: 't1' } })).toMatchObject({ state: 'ended', endedAt: LATER, endReason: 'done' });
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 2, hash: 'h2' });
  });

  it('rolls back the whole batch when an update finds no row', async () => {
    const database = db();
    await expect(database.batch.commit(batch(3, { credentialUpdates: [{ id: 'nope', data: { state: 'active' } }] }))).rejects.toThrow(/Credential nope does not exist/);
    expect(await database.db.task.findUnique({ where: { id: 't3' } })).toBeNull();
    expect(await database.db.auditEvent.findUnique({ where: { id: 'a3' } })).toBeNull();
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 2 });
  });

  it('refuses a column that is not updatable by a batch', async () => {
    const database = db();
    await expect(database.batch.commit(batch(4, { taskUpdates: [{ id: 't1', data: { workloadSubject: 'x' } as never }] }))).rejects.toThrow(/cannot be updated/);
    expect(await database.db.task.findUnique({ where: { id: 't4' } })).toBeNull();
  });

  it('rolls back a batch that violates a constraint (duplicate audit seq)', async () => {
    const database = db();
    const dup = batch(5);
    dup.auditRows[0]!.seq = 1;
    await expect(database.batch.commit(dup)).rejects.toThrow();
    expect(await database.db.task.findUnique({ where: { id: 't5' } })).toBeNull();
  });

  it('compare-and-set updates: a row no longer in the expected state rolls the whole batch back; in that state, it applies', async () => {
    const database = db();
    // t1 is ended and c2 revoked by the tests above; seq 3 is still free (its batches failed).
    // A new epoch per attempt, as the audit log does after a failure.
    const stale = batch(3, {
      epoch: 103,
      credentialUpdates: [{ id: 'c2', from: 'issuing', data: { state: 'active' } }],
      taskUpdates: [],
    });
    await expect(database.batch.commit(stale)).rejects.toThrow(/Credential c2 does not exist or is no longer issuing/);
    const closedTask = batch(3, { epoch: 203, taskUpdates: [{ id: 't1', from: 'open', data: { state: 'open' } }] });
    await expect(database.batch.commit(closedTask)).rejects.toThrow(/Task t1 does not exist or is no longer open/);
    expect(await database.db.task.findUnique({ where: { id: 't3' } })).toBeNull();
    expect(await database.db.credential.findUniqueOrThrow({ where: { id: 'c2' } })).toMatchObject({ state: 'revoked' });
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 2 });
    // The new task of the same batch is open: its guard holds (inserts come before updates).
    await database.batch.commit(batch(3, { epoch: 303, credentialUpdates: [{ id: 'c2', from: 'revoked', data: { lastError: 'checked' } }], taskUpdates: [{ id: 't3', from: 'open', data: { state: 'open' } }] }));
    expect(await database.db.credential.findUniqueOrThrow({ where: { id: 'c2' } })).toMatchObject({ state: 'revoked', lastError: 'checked' });
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 3 });
  });
});

// Both writers pipeline batches (maxInFlight > 1): the SQLite thread applies them in order, the
// PostgreSQL writer orders them by the chain head (a batch moves the head only from where its first
// record chains on, after the batch before it has settled).
const pipelined = [
  { name: 'sqlite', create: async () => createTestSqliteUrl('agsts-batch-epoch') },
  { name: 'postgresql', create: () => createTestPostgresDatabase('agsts_batch_epoch') },
];
describe.each(pipelined)('pipelined batches on $name', ({ name, create }) => {
  const db = useMigratedDatabase(create);

  it('refuses later batches of a failed epoch and accepts the next epoch', async () => {
    const database = db();
    expect(database.batch.maxInFlight).toBeGreaterThan(1);
    await database.batch.commit(batch(1));
    const bad = batch(2, { epoch: 7 });
    bad.auditRows[0]!.seq = 1; // duplicate of the first record: fails
    const chained = batch(3, { epoch: 7 }); // chains on the bad one
    const [a, b] = await Promise.allSettled([database.batch.commit(bad), database.batch.commit(chained)]);
    expect(a.status).toBe('rejected');
    expect(b.status).toBe('rejected');
    expect(String((b as PromiseRejectedResult).reason)).toMatch(/earlier batch of this audit chain failed/);
    expect(await database.db.task.findUnique({ where: { id: 't3' } })).toBeNull();
    // the audit log resends both in a new epoch
    await Promise.all([database.batch.commit(batch(2, { epoch: 8 })), database.batch.commit(batch(3, { epoch: 8 }))]);
    expect(await database.db.task.findUnique({ where: { id: 't3' } })).not.toBeNull();
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 3, hash: 'h3' });
  });

  it('many batches in flight commit in chain order; a batch chained on a rolled-back one is never written', async () => {
    const database = db();
    // the test above left the chain at record 3
    const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => database.batch.commit(batch(4 + i, { epoch: 20 }))));
    expect(results.map((r) => r.status)).toEqual(Array(12).fill('fulfilled'));
    expect(await database.db.auditChainHead.findUniqueOrThrow({ where: { chainId: 'chain' } })).toMatchObject({ seq: 15, hash: 'h15' });
    expect(await database.db.auditEvent.count()).toBe(15);
    if (name === 'sqlite') return; // the SQLite thread is the chain's only writer and applies batches in order
    // PostgreSQL: a batch whose first record does not chain on the head (a lost or rolled-back batch before it) is refused whole
    const stale = batch(30, { epoch: 21 });
    await expect(database.batch.commit(stale)).rejects.toThrow();
    expect(await database.db.task.findUnique({ where: { id: 't30' } })).toBeNull();
    expect(await database.db.auditEvent.findUnique({ where: { id: 'a30' } })).toBeNull();
  });
});

// The SQLite writer thread takes every batch that queued while it committed off its port at once
// and commits them in one transaction; a checkpoint thread copies the WAL back into the file.
describe('SQLite writer thread', () => {
  let url = '';
  const db = useMigratedDatabase(async () => {
    const store = await createTestSqliteUrl('agsts-batch-joint');
    url = store.url;
    return store;
  });

  it('batches sent together commit together; when that fails each is retried alone, and only the one at fault and those chained on it fail', async () => {
    const database = db();
    const bad = batch(41);
    bad.auditRows[0]!.id = 'a40'; // duplicate primary key of the batch before it: fails
    const chainedOnBad = batch(43, { epoch: 41 });
    // Sent in one tick: the thread finds them queued together.
    const results = await Promise.allSettled([batch(40), bad, chainedOnBad, batch(42)].map((b) => database.batch.commit(b)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect(String((results[2] as PromiseRejectedResult).reason)).toMatch(/earlier batch of this audit chain failed/);
    const tasks = await database.db.task.findMany({ select: { id: true }, orderBy: { id: 'asc' } });
    expect(tasks.map((t) => t.id)).toEqual(['t40', 't42']);
    expect(await database.db.auditEvent.count()).toBe(2);
  });

  it('checkpoints the WAL into the database file on its own thread', async () => {
    const database = db();
    const file = sqlitePathForUrl(url);
    const before = statSync(file).size;
    // ~1,000 pages of WAL: below the writer's own checkpoint threshold (10,000 pages).
    await Promise.all(Array.from({ length: 400 }, (_, i) => database.batch.commit(batch(100 + i))));
    const deadline = Date.now() + 5_000;
    while (statSync(file).size === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(statSync(file).size).toBeGreaterThan(before);
    expect(await database.db.auditEvent.count()).toBe(402);
  });

  // Operators tell the broker's threads apart in `top -H` / `ps -L` (Linux names, at most 15 bytes).
  it.runIf(process.platform === 'linux')('names its threads for the operating system', () => {
    db();
    const names = readdirSync('/proc/self/task').map((tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
    expect(names).toEqual(expect.arrayContaining(['ags-writer', 'ags-checkpoint']));
  });
});
