// Tamper evidence of the issuance log, one kind of tampering at a time, on SQLite and PostgreSQL:
// three writers (three chains, interleaved) through the real write path with signed checkpoints
// every 100 records; then plain SQL on the tables — edit, delete, swap two records, insert a
// forged record, delete the tail and move the head back, rewrite the chain with recomputed
// hashes, forge a checkpoint — and `verifyAuditLog` must name the chain, the record and what
// happened, and be OK again once the change is undone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, SignJWT } from 'jose';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';
import { verifyAuditLog, type VerifyResult } from '../../src/audit/audit-verify.js';
import { genesisHash, hashAuditRow, type AuditRow } from '../../src/audit/audit-event.js';
import { CHECKPOINT_TYP, writeCheckpoint } from '../../src/audit/audit-checkpoint.js';
import type { AuditLog } from '../../src/audit/audit-log.js';
import type { KeyStore } from '../../src/keys/key-store.js';
import { createTestPostgresDatabase, createTestSqliteUrl } from '../support/databases.js';
import { fillAuditLog, testKeyStore } from '../support/audit-fixture.js';
import { deleteRecord, editRecord, insertRecord, rowAt, sql, swapRecords, truncateTail } from '../support/audit-tamper.js';

const PER_WRITER = 300;

describe.each([
  ['sqlite', async () => createTestSqliteUrl('agsts-audit-tamper')],
  ['postgresql', () => createTestPostgresDatabase('agsts_audit_tamper')],
])('audit tamper evidence (%s)', (_store, create) => {
  let store: { url: string; drop(): Promise<void> };
  let dbs: Database[] = [];
  let d: Database;
  let keys: KeyStore;
  let logs: AuditLog[];
  let chain: string;

  const problemsOf = (r: VerifyResult) => r.problems.map((p) => ({ chainId: p.chainId, seq: p.seq, id: p.id, what: p.what }));
  const expectOk = async () => {
    const r = await verifyAuditLog(d.db);
    expect(r.problems).toEqual([]);
    expect(r).toMatchObject({ ok: true, chains: 3, records: 3 * PER_WRITER });
    return r;
  };

  beforeAll(async () => {
    store = await create();
    await applyMigrations(store.url);
    dbs = [await openDatabase(store.url), await openDatabase(store.url), await openDatabase(store.url)];
    d = dbs[0]!;
    keys = await testKeyStore(d);
    logs = await fillAuditLog(dbs, { perWriter: PER_WRITER, concurrency: 16, keys, checkpointEveryRecords: 100 });
    chain = logs[1]!.chainId;
  });
  afterAll(async () => {
    for (const x of dbs) await x.close();
    await store?.drop();
  });

  it('an untouched log verifies, with a signed checkpoint every 100 records of each chain and one at close', async () => {
    const r = await expectOk();
    const cps = await d.db.auditCheckpoint.findMany({ where: { chainId: chain }, orderBy: { seq: 'asc' } });
    // After 100, 200 and 300 records (a checkpoint covers the durable tip, so it may be a little past the threshold).
    expect(cps.length).toBeGreaterThanOrEqual(3);
    expect(cps.at(-1)).toMatchObject({ seq: PER_WRITER, kind: 'periodic', hash: (await rowAt(d, chain, PER_WRITER)).hash });
    expect(r.checkpoints).toBe(await d.db.auditCheckpoint.count());
    // Records of the three writers interleave in time.
    const first = await d.db.auditEvent.findMany({ orderBy: [{ time: 'asc' }, { id: 'asc' }], take: 200, select: { chainId: true } });
    expect(new Set(first.map((x) => x.chainId)).size).toBeGreaterThan(1);
  });

  it('an edited record: chain, record, id and "edited"', async () => {
    const t = await editRecord(d, chain, 137);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: 137, id: t.row.id, what: 'edited' }]);
    expect(r.problems[0]!.problem).toBe('record content does not match its hash: edited');
    await t.undo();
    await expectOk();
  });

  it('a deleted record: located by the gap', async () => {
    const t = await deleteRecord(d, chain, 42);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: 42, id: (await rowAt(d, chain, 43)).id, what: 'deleted' }]);
    expect(r.problems[0]!.problem).toBe('record 42 is missing (next present is 43): deleted');
    await t.undo();
    await expectOk();
  });

  it('a deleted record with the later ones renumbered to close the gap', async () => {
    const saved = await rowAt(d, chain, 60);
    await sql(d, 'DELETE FROM "AuditEvent" WHERE "id" = ?', saved.id);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = -("seq" - 1) WHERE "chainId" = ? AND "seq" > ?', chain, 60);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = -"seq" WHERE "chainId" = ? AND "seq" < 0', chain);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: 60, id: expect.any(String), what: 'deleted' }]);
    expect(r.problems[0]!.problem).toMatch(/record\(s\) 60\.\.60 were deleted and later records renumbered/);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = -("seq" + 1) WHERE "chainId" = ? AND "seq" >= ?', chain, 60);
    await sql(d, 'UPDATE "AuditEvent" SET "seq" = -"seq" WHERE "chainId" = ? AND "seq" < 0', chain);
    await d.db.auditEvent.create({ data: saved });
    await expectOk();
  });

  it.each([
    ['adjacent', 200, 201],
    ['far apart', 50, 250],
  ])('two records swapped (%s): "reordered", located at the first of them', async (_n, a, b) => {
    const t = await swapRecords(d, chain, a, b);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: a, id: t.rows[1].id, what: 'reordered' }]);
    expect(r.problems[0]!.problem).toBe(`records ${a} and ${b} were swapped: reordered`);
    await t.undo();
    await expectOk();
  });

  it('a forged record inserted in the middle (hashed and linked, later records renumbered, head moved)', async () => {
    const t = await insertRecord(d, chain, 150);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: 150, id: t.id, what: 'inserted' }]);
    await t.undo();
    await expectOk();
  });

  it('the tail deleted and the head moved back to match: only the signed checkpoint tells', async () => {
    const t = await truncateTail(d, chain, 5);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: PER_WRITER, id: undefined, what: 'tail truncated' }]);
    expect(r.problems[0]!.problem).toBe(`chain ends at record ${PER_WRITER - 5} but a signed checkpoint covers record ${PER_WRITER}: records were deleted from the end`);
    await t.undo();
    await expectOk();
  });

  it('the tail deleted without touching the head: the head tells', async () => {
    const last = await rowAt(d, chain, PER_WRITER);
    await sql(d, 'DELETE FROM "AuditEvent" WHERE "id" = ?', last.id);
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: PER_WRITER, id: undefined, what: 'tail truncated' }]);
    await d.db.auditEvent.create({ data: last });
    await expectOk();
  });

  it('a record edited and every later hash recomputed: the next signed checkpoint tells', async () => {
    const rows = (await d.db.auditEvent.findMany({ where: { chainId: chain, seq: { gte: 120 } }, orderBy: { seq: 'asc' } })) as AuditRow[];
    const head = await d.db.auditChainHead.findUniqueOrThrow({ where: { chainId: chain } });
    let prev = (await rowAt(d, chain, 119)).hash;
    for (const row of rows) {
      const changed: Omit<AuditRow, 'hash'> = { ...row, prevHash: prev, ...(row.seq === 120 ? { outcome: 'deny' } : {}) };
      const hash = hashAuditRow(changed);
      await sql(d, 'UPDATE "AuditEvent" SET "outcome" = ?, "prevHash" = ?, "hash" = ? WHERE "id" = ?', changed.outcome, prev, hash, row.id);
      prev = hash;
    }
    await sql(d, 'UPDATE "AuditChainHead" SET "hash" = ? WHERE "chainId" = ?', prev, chain);
    const cpSeq = (await d.db.auditCheckpoint.findFirstOrThrow({ where: { chainId: chain, seq: { gte: 120 } }, orderBy: { seq: 'asc' } })).seq;
    const r = await verifyAuditLog(d.db);
    expect(problemsOf(r)).toEqual([{ chainId: chain, seq: cpSeq, id: expect.any(String), what: 'edited' }]);
    expect(r.problems[0]!.problem).toMatch(new RegExp(`up to ${cpSeq} were rewritten with recomputed hashes`));
    for (const row of rows) await sql(d, 'UPDATE "AuditEvent" SET "outcome" = ?, "prevHash" = ?, "hash" = ? WHERE "id" = ?', row.outcome, row.prevHash, row.hash, row.id);
    await sql(d, 'UPDATE "AuditChainHead" SET "hash" = ? WHERE "chainId" = ?', head.hash, chain);
    await expectOk();
  });

  it('checkpoint forgery: a changed column, a foreign key, a token signed as something else', async () => {
    const cp = await d.db.auditCheckpoint.findFirstOrThrow({ where: { chainId: chain }, orderBy: { seq: 'asc' } });
    // 1. The row's hash changed (to cover a rewritten chain): no longer what was signed.
    await sql(d, 'UPDATE "AuditCheckpoint" SET "hash" = ? WHERE "id" = ?', genesisHash('x'), cp.id);
    // 2. A checkpoint signed by a key agent-sts never had (its kid copied from a real one).
    const foreign = await generateKeyPair('ES256');
    const kid = JSON.parse((await d.db.signingKey.findFirstOrThrow()).publicJwk).kid as string;
    const claims = { chainId: logs[0]!.chainId, seq: 10, hash: (await rowAt(d, logs[0]!.chainId, 10)).hash, time: new Date().toISOString(), kind: 'periodic' };
    const jws = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid, typ: CHECKPOINT_TYP }).sign(foreign.privateKey);
    await d.db.auditCheckpoint.create({ data: { id: 'forged-foreign-key', ...claims, time: new Date(claims.time), jws } });
    // 3. A real agent-sts signature over the right claims but another typ (e.g. lifted from a token).
    const other = await keys.signer.sign({ ...claims, seq: 11, hash: (await rowAt(d, logs[0]!.chainId, 11)).hash }, 'at+jwt');
    await d.db.auditCheckpoint.create({ data: { id: 'forged-typ', ...claims, seq: 11, hash: (await rowAt(d, logs[0]!.chainId, 11)).hash, time: new Date(claims.time), jws: other } });

    const r = await verifyAuditLog(d.db);
    expect(r.ok).toBe(false);
    expect(problemsOf(r).sort((x, y) => (x.id! < y.id! ? -1 : 1))).toEqual(
      [
        { chainId: chain, seq: cp.seq, id: cp.id, what: 'checkpoint forged' },
        { chainId: logs[0]!.chainId, seq: 10, id: 'forged-foreign-key', what: 'checkpoint forged' },
        { chainId: logs[0]!.chainId, seq: 11, id: 'forged-typ', what: 'checkpoint forged' },
      ].sort((x, y) => (x.id < y.id ? -1 : 1)),
    );
    expect(r.problems.find((p) => p.id === cp.id)!.problem).toMatch(/differ from what was signed/);
    expect(r.problems.find((p) => p.id === 'forged-foreign-key')!.problem).toMatch(/signature does not verify/);
    expect(r.problems.find((p) => p.id === 'forged-typ')!.problem).toMatch(/not an audit-checkpoint\+jwt/);

    await sql(d, 'UPDATE "AuditCheckpoint" SET "hash" = ? WHERE "id" = ?', cp.hash, cp.id);
    await sql(d, 'DELETE FROM "AuditCheckpoint" WHERE "id" IN (?, ?)', 'forged-foreign-key', 'forged-typ');
    await expectOk();
  });

  it('checkpoints signed by a key that has since been rotated out still verify', async () => {
    const extra = await writeCheckpoint(d.db, keys.signer, { chainId: chain, seq: 251, hash: (await rowAt(d, chain, 251)).hash, time: new Date(), kind: 'periodic' });
    // Retire the key: it no longer signs and is no longer published, but it stays in the table.
    await d.db.signingKey.updateMany({ data: { retiredAt: new Date(Date.now() - 1000), publishUntil: new Date(Date.now() - 500) } });
    await expectOk();
    await d.db.auditCheckpoint.deleteMany({ where: { id: extra.id } });
  });
});
