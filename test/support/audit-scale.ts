// The issuance log at 100,000 records, shared by the SQLite and the PostgreSQL test files: three
// writers (three Database handles = three processes' worth of audit logs and batch writers) append
// 33,334 records each through the real write path, interleaved, with a signed checkpoint every
// 10,000 records of each chain. Then: verify, paginate, filter, export over HTTP, tamper (several
// chains at once, one verify pass), archive and prune.
import { tmpdir } from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';
import { verifyAuditLog } from '../../src/audit/audit-verify.js';
import { queryAudit, withLinks } from '../../src/audit/audit-query.js';
import { planArchive, pruneArchived, verifyArchiveFile, writeArchive } from '../../src/audit/audit-archive.js';
import type { AuditEventInput } from '../../src/audit/audit-event.js';
import type { AuditLog } from '../../src/audit/audit-log.js';
import type { KeyStore } from '../../src/keys/key-store.js';
import type { RoleAuth } from '../../src/server/role-auth.js';
import { registerAuditRoutes } from '../../src/server/audit-routes.js';
import { fillAuditLog, silentLogger, syntheticEvent, testKeyStore } from './audit-fixture.js';
import { deleteRecord, editRecord, insertRecord, swapRecords, sql, truncateTail } from './audit-tamper.js';

const WRITERS = 3;
const PER_WRITER = 33_334;
const TOTAL = WRITERS * PER_WRITER;

export function describeAuditAtScale(name: string, create: () => Promise<{ url: string; drop(): Promise<void> }>) {
  describe(`the issuance log at ${TOTAL.toLocaleString('en')} records (${name})`, { timeout: 60_000 }, () => {
    let store: { url: string; drop(): Promise<void> };
    const dbs: Database[] = [];
    let d: Database;
    let keys: KeyStore;
    let logs: AuditLog[];
    const all: { w: number; i: number; e: AuditEventInput }[] = [];
    for (let w = 0; w < WRITERS; w++) for (let i = 0; i < PER_WRITER; i++) all.push({ w, i, e: syntheticEvent(w, i) });

    beforeAll(async () => {
      store = await create();
      await applyMigrations(store.url);
      for (let w = 0; w < WRITERS; w++) dbs.push(await openDatabase(store.url));
      d = dbs[0]!;
      keys = await testKeyStore(d);
      const started = Date.now();
      logs = await fillAuditLog(dbs, { perWriter: PER_WRITER, keys, checkpointEveryRecords: 10_000 });
      console.log(`${name}: ${TOTAL} records through the write path by ${WRITERS} writers in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }, 120_000);
    afterAll(async () => {
      for (const x of dbs) await x.close();
      await store?.drop();
    });

    it('verifies: three chains, every link, the signed checkpoints', async () => {
      const r = await verifyAuditLog(d.db);
      expect(r.problems).toEqual([]);
      expect(r).toMatchObject({ ok: true, chains: WRITERS, records: TOTAL });
      // 10k, 20k, 30k and the one at close, per chain (a checkpoint covers the durable tip, so a threshold may be passed by one batch).
      expect(r.checkpoints).toBeGreaterThanOrEqual(WRITERS * 4);
      expect(r.chainSummaries.map((c) => c.through)).toEqual([PER_WRITER, PER_WRITER, PER_WRITER]);
      expect(new Set(r.chainSummaries.map((c) => c.chainId))).toEqual(new Set(logs.map((l) => l.chainId)));
    });

    it('pagination over every record returns each exactly once, newest first', async () => {
      const seen = new Set<string>();
      let cursor: string | undefined;
      let prev: { t: number; id: string } | undefined;
      let pages = 0;
      do {
        const page = await queryAudit(d.db, { limit: 1000, cursor });
        for (const r of page.records) {
          expect(seen.has(r.id)).toBe(false);
          seen.add(r.id);
          const t = r.time.getTime();
          if (prev) expect(t < prev.t || (t === prev.t && r.id < prev.id)).toBe(true);
          prev = { t, id: r.id };
        }
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(seen.size).toBe(TOTAL);
      expect(pages).toBe(Math.ceil(TOTAL / 1000));
    });

    it('filters: fingerprint, task, workload + time range, issuer, policy version, outcome, human', async () => {
      const pick = all[54_321]!;
      const fp = pick.e.credentialFingerprint ?? all[54_322]!.e.credentialFingerprint!;
      const byFp = await queryAudit(d.db, { limit: 10, fingerprint: fp });
      expect(byFp.records).toHaveLength(1);
      expect(byFp.records[0]!.credentialFingerprint).toBe(fp);

      const task = await queryAudit(d.db, { limit: 100, task: pick.e.taskId });
      expect(task.records.map((r) => r.requestId).sort()).toEqual(all.filter((x) => x.e.taskId === pick.e.taskId).map((x) => x.e.requestId).sort());

      const count = async (q: Record<string, unknown>) => {
        let n = 0;
        let cursor: string | undefined;
        do {
          const p = await queryAudit(d.db, { limit: 1000, ...q, cursor });
          n += p.records.length;
          cursor = p.nextCursor;
        } while (cursor);
        return n;
      };
      expect(await count({ issuer: 'vault' })).toBe(all.filter((x) => x.e.issuerName === 'vault').length);
      expect(await count({ policyVersion: 'v-bbbb', outcome: 'deny' })).toBe(all.filter((x) => x.e.policyVersion === 'v-bbbb' && x.e.outcome === 'deny').length);
      expect(await count({ human: 'user-3@example.com', target: 'github' })).toBe(all.filter((x) => x.e.humanSubject === 'user-3@example.com' && x.e.target === 'github').length);

      // A workload's records in a time window: the window of the middle third of the log.
      const times = (await d.db.auditEvent.findMany({ select: { time: true }, orderBy: { time: 'asc' }, skip: Math.floor(TOTAL / 3), take: 1 }))[0]!.time;
      const later = (await d.db.auditEvent.findMany({ select: { time: true }, orderBy: { time: 'asc' }, skip: Math.floor((2 * TOTAL) / 3), take: 1 }))[0]!.time;
      const expected = await d.db.auditEvent.count({ where: { workloadSubject: 'test://agent-7', time: { gte: times, lt: later } } });
      expect(expected).toBeGreaterThan(100);
      const page = await queryAudit(d.db, { limit: 100, workload: 'test://agent-7', since: times, until: later });
      expect(page.records).toHaveLength(100);
      for (const r of page.records) {
        expect(r.workloadSubject).toBe('test://agent-7');
        expect(r.time.getTime()).toBeGreaterThanOrEqual(times.getTime());
        expect(r.time.getTime()).toBeLessThan(later.getTime());
      }
      expect(await count({ workload: 'test://agent-7', since: times, until: later })).toBe(expected);
      // Links for a page: tasks and credentials that are not in the store are "unknown", in one query.
      const linked = await withLinks(d.db, byFp.records, new Date());
      expect(linked[0]).toMatchObject({ task: { id: byFp.records[0]!.taskId, state: 'unknown' }, credential: { id: byFp.records[0]!.credentialId, state: 'unknown' } });
    });

    it('exports every record over HTTP as JSON lines, streamed (GET /v1/audit/export)', async () => {
      const reads: AuditEventInput[] = [];
      const app = Fastify({ loggerInstance: silentLogger });
      const roles = { check: async () => ({ ok: true as const, principal: 'test:auditor', via: 'bootstrap' as const }) } as unknown as RoleAuth;
      registerAuditRoutes(app, {
        db: d.db, roles, clock: { now: () => new Date() }, logger: silentLogger,
        audit: { append: async (w) => (reads.push(w.event), undefined as never) },
        ctxOf: (req) => ({ requestId: req.id, clientAddress: req.ip, now: new Date() }),
      });
      const url = await app.listen({ host: '127.0.0.1', port: 0 });
      try {
        const started = Date.now();
        const res = await fetch(`${url}/v1/audit/export`, { headers: { authorization: 'Bearer x' } });
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/x-ndjson');
        const ids = new Set<string>();
        let lines = 0;
        let rest = '';
        let prevTime = '';
        const decoder = new TextDecoder();
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          const text = rest + decoder.decode(chunk, { stream: true });
          const parts = text.split('\n');
          rest = parts.pop()!;
          for (const line of parts) {
            const r = JSON.parse(line) as { id: string; time: string; task: unknown; credential: unknown };
            ids.add(r.id);
            expect(r.time >= prevTime).toBe(true); // oldest first
            prevTime = r.time;
            if (lines++ % 5000 === 0) expect(r).toHaveProperty('task');
          }
        }
        expect(rest).toBe('');
        expect(lines).toBe(TOTAL);
        expect(ids.size).toBe(TOTAL);
        console.log(`${name}: exported ${TOTAL} records over HTTP in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        expect(reads).toEqual([expect.objectContaining({ action: 'audit.read', outcome: 'success', reason: 'by test:auditor: export no filter, oldest first' })]);
      } finally {
        await app.close();
      }
    });

    it('tampering in several chains at once: each chain reports its own first broken link', async () => {
      const [a, b, c] = logs.map((l) => l.chainId) as [string, string, string];
      const edit = await editRecord(d, a, 12_345);
      const del = await deleteRecord(d, b, 23_456);
      const swap = await swapRecords(d, c, 30_000, 30_010);
      const r1 = await verifyAuditLog(d.db);
      expect(r1.problems.map((p) => [p.chainId, p.seq, p.what]).sort()).toEqual([[a, 12_345, 'edited'], [b, 23_456, 'deleted'], [c, 30_000, 'reordered']].sort());
      expect(r1.problems.find((p) => p.chainId === a)!.id).toBe(edit.row.id);
      await edit.undo();
      await del.undo();
      await swap.undo();

      const ins = await insertRecord(d, a, 5_000);
      const cp = await d.db.auditCheckpoint.findFirstOrThrow({ where: { chainId: b }, orderBy: { seq: 'asc' } });
      await sql(d, 'UPDATE "AuditCheckpoint" SET "seq" = ? WHERE "id" = ?', cp.seq + 1, cp.id);
      const cut = await truncateTail(d, c, 100);
      const r2 = await verifyAuditLog(d.db);
      expect(r2.problems.map((p) => [p.chainId, p.seq, p.what]).sort()).toEqual([[a, 5_000, 'inserted'], [b, cp.seq + 1, 'checkpoint forged'], [c, PER_WRITER, 'tail truncated']].sort());
      expect(r2.problems.find((p) => p.chainId === a)!.id).toBe(ins.id);
      await ins.undo();
      await sql(d, 'UPDATE "AuditCheckpoint" SET "seq" = ? WHERE "id" = ?', cp.seq, cp.id);
      await cut.undo();
    });

    it('archive + prune: the file verifies against its archive checkpoints and the store still verifies', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'agsts-archive-'));
      try {
        // Cut in the middle of the log (in time): every chain loses its records before the cutoff.
        const cutoff = (await d.db.auditEvent.findMany({ select: { time: true }, orderBy: { time: 'asc' }, skip: Math.floor(TOTAL / 2), take: 1 }))[0]!.time;
        const plan = await planArchive(d.db, cutoff);
        expect(plan.chains).toHaveLength(WRITERS);
        expect(plan.records).toBe(await d.db.auditEvent.count({ where: { time: { lt: cutoff } } }));
        const file = join(dir, 'archive.jsonl');
        const written = await writeArchive(d.db, plan, file);
        expect(written.records).toBe(plan.records);
        expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(plan.records);
        const pruned = await pruneArchived(d.db, written, { signer: keys.signer, clock: { now: () => new Date() } });
        expect(pruned.deleted).toBe(plan.records);
        expect(await d.db.auditEvent.count()).toBe(TOTAL - plan.records);
        expect(await d.db.auditEvent.count({ where: { time: { lt: cutoff } } })).toBe(0);

        const r = await verifyAuditLog(d.db);
        expect(r.problems).toEqual([]);
        expect(r.records).toBe(TOTAL - plan.records);
        for (const c of plan.chains) expect(r.chainSummaries.find((s) => s.chainId === c.chainId)).toMatchObject({ from: c.through + 1, prunedThrough: c.through, through: PER_WRITER });

        const fileCheck = await verifyArchiveFile(d.db, file);
        expect(fileCheck.problems).toEqual([]);
        expect(fileCheck.ok).toBe(true);
        expect(fileCheck.chains.every((c) => c.startAnchored && c.sealed)).toBe(true);
        expect(fileCheck.chains.reduce((n, c) => n + c.checkpointsMatched, 0)).toBeGreaterThan(0);

        // An archive checkpoint that is forged is not a starting point: the pruned records count as deleted.
        // (On a chain that keeps records after the cutoff: the writers do not progress evenly, and a
        // chain written entirely before the cutoff has nothing left, so there it reads as a truncated tail.)
        const kept = plan.chains.find((c) => c.through < PER_WRITER)!;
        const anchor = pruned.checkpoints.filter((c) => c.chainId === kept.chainId).at(-1)!;
        await sql(d, 'UPDATE "AuditCheckpoint" SET "prunedThrough" = ? WHERE "id" = ?', anchor.prunedThrough! + 1, anchor.id);
        const bad = await verifyAuditLog(d.db, { chainId: anchor.chainId });
        expect(bad.problems.map((p) => p.what).sort()).toEqual(['checkpoint forged', 'deleted']);
        await sql(d, 'UPDATE "AuditCheckpoint" SET "prunedThrough" = ? WHERE "id" = ?', anchor.prunedThrough!, anchor.id);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
