/**
 * The issuance log at scale: `npm run bench:audit` (BENCH_STORE=sqlite|postgres|both, default both).
 *
 * Per store, in a scratch store (a temp SQLite file / a PostgreSQL database created and dropped):
 *
 * 1. Write throughput through the real write path — createAuditLog (hash chain, group commit) on
 *    the store's own batch writer (the SQLite writer thread, or the PostgreSQL Prisma writer) —
 *    with BENCH_WRITERS writers (one Database handle and audit log each, as separate broker
 *    processes would have), each keeping BENCH_CONCURRENCY appends in flight. Measured on fresh
 *    stores with signed checkpoints every 10,000 records and without, alternating for
 *    BENCH_WRITE_ROUNDS rounds (best of each), to show what checkpoints cost.
 * 2. BENCH_RECORDS records (default 1,000,000) written the same way (with checkpoints) — the
 *    write rate as the table grows is reported too — then the latency (p50/p99 over BENCH_QUERIES
 *    queries each) of typical auditor queries, each as GET /v1/audit runs it (queryAudit + the one
 *    extra query per page for task/credential links): by fingerprint, by task, by workload + time
 *    window (first page of 100), the newest 100, a page deep in a cursor walk, by policy version +
 *    time window; the export rate (records/s of auditPages + links + JSON, what GET
 *    /v1/audit/export streams); and the verify rate (records/s of verifyAuditLog).
 *
 * Knobs: BENCH_STORE, BENCH_RECORDS, BENCH_WRITERS (3), BENCH_CONCURRENCY (256), BENCH_QUERIES
 * (200), BENCH_WRITE_RECORDS (records per write-throughput run, 100,000), BENCH_WRITE_ROUNDS (2), BENCH_PG_URL,
 * BENCH_KEEP_TMP=1, BENCH_JSON=<file>.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { applyMigrations } from '../src/storage/migrate.js';
import { openDatabase, type Database } from '../src/storage/prisma-client.js';
import { auditPages, queryAudit, withLinks, type AuditQuery } from '../src/audit/audit-query.js';
import { verifyAuditLog } from '../src/audit/audit-verify.js';
import { fillAuditLog, syntheticEvent, testKeyStore, WORKLOADS, POLICY_VERSIONS } from '../test/support/audit-fixture.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const WRITERS = Number(process.env.BENCH_WRITERS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 256);
const QUERIES = Number(process.env.BENCH_QUERIES ?? 200);
const WRITE_RECORDS = Number(process.env.BENCH_WRITE_RECORDS ?? 100_000);
const WRITE_ROUNDS = Number(process.env.BENCH_WRITE_ROUNDS ?? 2);
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const stores = (process.env.BENCH_STORE ?? 'both') === 'both' ? ['sqlite', 'postgres'] : [process.env.BENCH_STORE!];

const log = (line: string) => process.stderr.write(`${line}\n`);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en');

interface Store {
  url: string;
  drop(): Promise<void>;
}

async function scratch(kind: string): Promise<Store> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'agsts-bench-audit-'));
    return {
      url: `file:${join(dir, 'audit.db')}`,
      drop: async () => {
        if (process.env.BENCH_KEEP_TMP) log(`  kept ${dir}`);
        else rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `agsts_bench_audit_${randomBytes(4).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      if (process.env.BENCH_KEEP_TMP) log(`  kept database ${name}`);
      else await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

async function openWriters(url: string): Promise<Database[]> {
  await applyMigrations(url);
  const dbs: Database[] = [];
  for (let i = 0; i < WRITERS; i++) dbs.push(await openDatabase(url));
  return dbs;
}

/** Records/s of one write run on a fresh store. */
async function writeRun(kind: string, records: number, checkpoints: boolean): Promise<number> {
  const s = await scratch(kind);
  const dbs = await openWriters(s.url);
  try {
    const keys = checkpoints ? await testKeyStore(dbs[0]!) : undefined;
    const t0 = performance.now();
    await fillAuditLog(dbs, { perWriter: Math.ceil(records / WRITERS), concurrency: CONCURRENCY, keys, checkpointEveryRecords: 10_000 });
    return (Math.ceil(records / WRITERS) * WRITERS) / ((performance.now() - t0) / 1000);
  } finally {
    for (const d of dbs) await d.close();
    await s.drop();
  }
}

async function latency(name: string, n: number, fn: (i: number) => Promise<number>): Promise<{ name: string; p50: number; p99: number; rows: number }> {
  await fn(-1); // warm-up
  const ms: number[] = [];
  let rows = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    rows += await fn(i);
    ms.push(performance.now() - t0);
  }
  const r = { name, p50: pct(ms, 50), p99: pct(ms, 99), rows: rows / n };
  log(`  ${name.padEnd(46)} p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  (${r.rows.toFixed(1)} rows)`);
  return r;
}

async function benchStore(kind: string) {
  log(`\n== ${kind}: ${WRITERS} writers x ${CONCURRENCY} appends in flight ==`);
  // Alternating runs, best of each: other load on a shared machine hits both alike.
  let withCp = 0;
  let withoutCp = 0;
  for (let round = 0; round < WRITE_ROUNDS; round++) {
    const a = await writeRun(kind, WRITE_RECORDS, true);
    const b = await writeRun(kind, WRITE_RECORDS, false);
    log(`  write round ${round + 1}, ${fmt(WRITE_RECORDS)} records: ${fmt(a)} records/s with checkpoints every 10,000, ${fmt(b)} without`);
    withCp = Math.max(withCp, a);
    withoutCp = Math.max(withoutCp, b);
  }

  const s = await scratch(kind);
  const dbs = await openWriters(s.url);
  try {
    const keys = await testKeyStore(dbs[0]!);
    const perWriter = Math.ceil(RECORDS / WRITERS);
    const t0 = performance.now();
    let lastAt = t0;
    let lastDone = 0;
    const rates: number[] = [];
    await fillAuditLog(dbs, {
      perWriter,
      concurrency: CONCURRENCY,
      keys,
      checkpointEveryRecords: 10_000,
      onProgress: (done) => {
        if (done % 100_000 !== 0) return;
        const now = performance.now();
        rates.push(((done - lastDone) / (now - lastAt)) * 1000);
        process.stderr.write(`\r  generating: ${fmt(done)}/${fmt(perWriter * WRITERS)} (${fmt(rates.at(-1)!)} records/s)   `);
        lastAt = now;
        lastDone = done;
      },
    });
    const total = perWriter * WRITERS;
    const fillRate = total / ((performance.now() - t0) / 1000);
    log(`\n  generated ${fmt(total)} records through the write path: ${fmt(fillRate)} records/s overall; last 100k at ${fmt(rates.at(-1) ?? fillRate)} records/s`);

    const db = dbs[0]!.db;
    if (kind === 'postgres') {
      // What autovacuum's autoanalyze does on a normal server (this machine's test PostgreSQL runs
      // with autovacuum off): without statistics the planner guesses that 0.5 % of the rows match a
      // fingerprint and walks the time index backwards through the whole table (~0.5 s at 1M).
      const t = performance.now();
      await db.$executeRawUnsafe('ANALYZE "AuditEvent"');
      log(`  ANALYZE "AuditEvent": ${(performance.now() - t).toFixed(0)} ms`);
    }
    const now = new Date();
    const rnd = (i: number) => (i < 0 ? 12_345 : (i * 7919 + 104_729) % perWriter);
    const api = async (q: Partial<AuditQuery>) => {
      const page = await queryAudit(db, { limit: 100, ...q } as AuditQuery);
      await withLinks(db, page.records, now);
      return page.records.length;
    };
    const times = await db.auditEvent.findMany({ select: { time: true }, orderBy: { time: 'asc' }, skip: Math.floor(total / 2), take: 1 });
    const mid = times[0]!.time.getTime();
    const window = (i: number) => ({ since: new Date(mid - 60_000 - (rnd(i) % 30) * 1000), until: new Date(mid + 60_000) });

    // A cursor 200 pages deep (20,000 records from the newest).
    let deep: string | undefined;
    for (let p = 0; p < 200; p++) deep = (await queryAudit(db, { limit: 100, cursor: deep } as AuditQuery)).nextCursor;

    const queries = [
      await latency('by fingerprint (leaked token)', QUERIES, async (i) => {
        let e = syntheticEvent(Math.abs(i) % WRITERS, rnd(i));
        for (let k = 1; !e.credentialFingerprint; k++) e = syntheticEvent(Math.abs(i) % WRITERS, rnd(i) + k);
        return api({ fingerprint: e.credentialFingerprint });
      }),
      await latency('by task', QUERIES, (i) => api({ task: syntheticEvent(Math.abs(i) % WRITERS, rnd(i)).taskId })),
      await latency('by workload + 2 min window, page of 100', QUERIES, (i) => api({ workload: `test://agent-${Math.abs(i) % WORKLOADS}`, ...window(i) })),
      await latency('newest 100, no filter', QUERIES, () => api({})),
      await latency('page 201 of a cursor walk (no filter)', QUERIES, () => api({ cursor: deep })),
      await latency('by policy version + 2 min window (no index)', Math.min(QUERIES, 50), (i) => api({ policyVersion: POLICY_VERSIONS[Math.abs(i) % POLICY_VERSIONS.length], ...window(i) })),
    ];

    // Export: what GET /v1/audit/export does per page (query, links, JSON), for 100k records.
    const t1 = performance.now();
    let exported = 0;
    let bytes = 0;
    for await (const rows of auditPages(db, { since: new Date(mid) }, { order: 'asc', pageSize: 1000 })) {
      const json = (await withLinks(db, rows, now)).map((r) => `${JSON.stringify(r)}\n`).join('');
      bytes += json.length;
      exported += rows.length;
      if (exported >= 100_000) break;
    }
    const exportRate = exported / ((performance.now() - t1) / 1000);
    log(`  export: ${fmt(exported)} records (${(bytes / 1e6).toFixed(0)} MB of JSON lines) at ${fmt(exportRate)} records/s`);

    const t2 = performance.now();
    const v = await verifyAuditLog(db);
    const verifyRate = v.records / ((performance.now() - t2) / 1000);
    log(`  verify: ${fmt(v.records)} records, ${v.checkpoints} checkpoints, ${v.ok ? 'OK' : 'BROKEN'} at ${fmt(verifyRate)} records/s`);
    if (!v.ok) throw new Error(`verify failed: ${JSON.stringify(v.problems)}`);
    return { store: kind, writeWithCheckpoints: withCp, writeWithoutCheckpoints: withoutCp, records: total, fillRate, lastFillRate: rates.at(-1), queries, exportRate, verifyRate };
  } finally {
    for (const d of dbs) await d.close();
    await s.drop();
  }
}

async function main() {
  log(`bench:audit on ${cpus().length} CPUs (${cpus()[0]?.model}), load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; stores: ${stores.join(', ')}; ${fmt(RECORDS)} records`);
  const results = [];
  for (const kind of stores) results.push(await benchStore(kind));
  log(`\nload average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('\n| store | write rec/s (ckpt / none) | records | fingerprint p50/p99 ms | task | workload+window | newest 100 | page 201 | policy version+window | export rec/s | verify rec/s |');
  console.log('|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of results) {
    const q = (i: number) => `${r.queries[i]!.p50.toFixed(1)} / ${r.queries[i]!.p99.toFixed(1)}`;
    console.log(`| ${r.store} | ${fmt(r.writeWithCheckpoints)} / ${fmt(r.writeWithoutCheckpoints)} | ${fmt(r.records)} | ${q(0)} | ${q(1)} | ${q(2)} | ${q(3)} | ${q(4)} | ${q(5)} | ${fmt(r.exportRate)} | ${fmt(r.verifyRate)} |`);
  }
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(results, null, 2));
}

main().catch((e: unknown) => {
  log(`bench:audit failed: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
