// Group commit of the audit log against an in-memory BatchWriter that behaves like the SQLite
// writer thread (batches applied in order, a failed batch poisons later batches of its epoch).
// What must hold: every record resolves only after its batch is durable, the chain stays unbroken
// across failures, a bad record fails only its own caller, and drain() waits for everything.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createAuditLog } from './audit-log.js';
import { genesisHash, hashAuditRow, type AuditRow } from './audit-event.js';
import type { Batch, BatchWriter } from '../storage/batch.js';
import { createLogger } from '../log/logger.js';
import type { Checkpoint } from './audit-checkpoint.js';

const logger = createLogger({ level: 'silent' });
const clock = { now: () => new Date('2030-01-02T03:04:05.000Z') };

/** Applies batches in order after a tick; `failWhen` rolls a batch back (nothing of it is kept). */
function orderedWriter(opts: { maxInFlight: number; failWhen?: (b: Batch) => boolean }) {
  const rows: AuditRow[] = [];
  const batches: Batch[] = [];
  let failedEpoch = -1;
  let chain = Promise.resolve();
  let inFlight = 0;
  let maxSeen = 0;
  const writer: BatchWriter = {
    maxInFlight: opts.maxInFlight,
    commit(b) {
      inFlight++;
      maxSeen = Math.max(maxSeen, inFlight);
      const done = chain.then(async () => {
        await new Promise((r) => setTimeout(r, 2));
        inFlight--;
        if (b.epoch === failedEpoch) throw new Error('an earlier batch of this audit chain failed; resend');
        if (opts.failWhen?.(b)) {
          failedEpoch = b.epoch;
          throw new Error('CHECK constraint failed');
        }
        batches.push(b);
        rows.push(...(b.auditRows as unknown as AuditRow[]));
      });
      chain = done.catch(() => {});
      return done;
    },
    async close() {},
  };
  return { writer, rows, batches, maxSeen: () => maxSeen };
}

function expectUnbrokenChain(rows: AuditRow[]): void {
  expect(rows.length).toBeGreaterThan(0);
  let prev = genesisHash(rows[0]!.chainId);
  rows.forEach((r, i) => {
    expect(r.seq).toBe(i + 1);
    expect(r.prevHash).toBe(prev);
    const { hash, ...rest } = r;
    expect(hashAuditRow(rest)).toBe(hash);
    prev = hash;
  });
}

const event = (requestId: string) => ({ event: { requestId, action: 'token.exchange', outcome: 'allow' as const } });

describe('audit log group commit', () => {
  it('groups records that arrive while a batch is in flight, keeps several batches in flight, and chains them in order', async () => {
    const w = orderedWriter({ maxInFlight: 2 });
    const log = createAuditLog({ batch: w.writer, clock, logger });
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(event(`r${i}`))));
    expect(results.map((r) => r.requestId)).toEqual(Array.from({ length: 200 }, (_, i) => `r${i}`));
    expect(w.rows.map((r) => r.requestId)).toEqual(results.map((r) => r.requestId));
    expectUnbrokenChain(w.rows);
    expect(w.batches.length).toBeLessThan(200); // grouped
    expect(w.maxSeen()).toBe(2); // pipelined, never above the writer's limit
    expect(w.batches.at(-1)!.head).toEqual({ chainId: log.chainId, seq: 200, hash: w.rows.at(-1)!.hash });
  });

  it('with a writer that takes any number of batches (the SQLite thread), sends the records of each event-loop turn as one batch, and the failure rules still hold', async () => {
    const w = orderedWriter({ maxInFlight: Infinity, failWhen: (b) => b.auditRows.some((r) => r.requestId === 'bad') });
    const log = createAuditLog({ batch: w.writer, clock, logger });
    const turn1 = Array.from({ length: 5 }, (_, i) => log.append(event(`a${i}`)));
    await new Promise((r) => setImmediate(r));
    const turn2 = [log.append(event('b0')), log.append(event('bad')), log.append(event('b2'))];
    const settled = await Promise.allSettled([...turn1, ...turn2]);
    expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    // one batch per turn, then the failed turn's records one by one
    expect(w.batches.map((b) => b.auditRows.map((r) => r.requestId))).toEqual([['a0', 'a1', 'a2', 'a3', 'a4'], ['b0'], ['b2']]);
    expectUnbrokenChain(w.rows);
  });

  it('resolves a record only once its batch is durable', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const writer: BatchWriter = { maxInFlight: 1, commit: () => gate, close: async () => {} };
    const log = createAuditLog({ batch: writer, clock, logger });
    let resolved = false;
    const p = log.append(event('r1')).then(() => (resolved = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(resolved).toBe(false);
    release();
    await p;
    expect(resolved).toBe(true);
  });

  it('a bad record fails only its own caller; records behind it in flight are resent and the chain has no gap', async () => {
    const w = orderedWriter({ maxInFlight: 4, failWhen: (b) => b.auditRows.some((r) => r.requestId === 'bad') });
    const log = createAuditLog({ batch: w.writer, clock, logger });
    const ids = Array.from({ length: 120 }, (_, i) => (i === 37 ? 'bad' : `r${i}`));
    const settled = await Promise.allSettled(ids.map((id) => log.append(event(id))));
    const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [ids[i]] : []));
    expect(failed).toEqual(['bad']);
    expect((settled[37] as PromiseRejectedResult).reason.message).toMatch(/CHECK constraint failed/);
    expect(w.rows.map((r) => r.requestId)).toEqual(ids.filter((id) => id !== 'bad'));
    expectUnbrokenChain(w.rows);
  });

  it('a lone failing record fails closed and later records still chain from the last durable one', async () => {
    let fail = true;
    const w = orderedWriter({ maxInFlight: 1, failWhen: () => fail });
    const log = createAuditLog({ batch: w.writer, clock, logger });
    await expect(log.append(event('first'))).rejects.toThrow(/CHECK constraint failed/);
    fail = false;
    await log.append(event('second'));
    expect(w.rows.map((r) => r.requestId)).toEqual(['second']);
    expectUnbrokenChain(w.rows);
  });

  it('drain() waits for everything queued', async () => {
    const w = orderedWriter({ maxInFlight: 2 });
    const log = createAuditLog({ batch: w.writer, clock, logger });
    for (let i = 0; i < 50; i++) void log.append(event(`r${i}`));
    await log.drain();
    expect(w.rows).toHaveLength(50);
    await log.drain(); // idle: resolves at once
  });
});

describe('hash of records written before issuerName and flags existed', () => {
  const base = {
    id: 'r1', chainId: 'c1', seq: 1, time: new Date('2026-01-01T00:00:00.000Z'), requestId: 'q', action: 'token.exchange', outcome: 'allow',
    reason: null, providerName: 'p', workloadSubject: 'w', humanSubject: null, delegationChain: null, target: 't', requestedScope: null,
    grantedScope: null, policyId: null, policyVersion: null, taskId: null, credentialId: null, credentialFingerprint: null,
    credentialExpiresAt: null, clientAddress: null, prevHash: 'x',
  };
  // The canonical form of the first 23 fields, as the first release computed it.
  const legacy = createHash('sha256').update(JSON.stringify(Object.values(base).map((v) => (v instanceof Date ? v.toISOString() : v)))).digest('hex');

  it('keeps the old hash while the new fields are null', () => {
    expect(hashAuditRow({ ...base, issuerName: null, flags: null })).toBe(legacy);
  });

  it('covers the new fields once set: changing one changes the hash', () => {
    const a = hashAuditRow({ ...base, issuerName: 'pg', flags: null });
    expect(a).not.toBe(legacy);
    expect(hashAuditRow({ ...base, issuerName: 'pg', flags: 'new_network' })).not.toBe(a);
    expect(hashAuditRow({ ...base, issuerName: null, flags: 'new_network' })).not.toBe(legacy);
  });
});

describe('periodic signed checkpoints', () => {
  const checkpointSink = (opts: { everyRecords: number; everyMs: number; fail?: () => boolean }) => {
    const written: Checkpoint[] = [];
    let attempts = 0;
    return {
      written,
      attempts: () => attempts,
      policy: {
        everyRecords: opts.everyRecords,
        everyMs: opts.everyMs,
        async write(c: Checkpoint) {
          attempts++;
          await new Promise((r) => setTimeout(r, 1));
          if (opts.fail?.()) throw new Error('database is locked');
          written.push(c);
        },
      },
    };
  };

  it('checkpoints the durable tip every N records and at drain, out of band, each one on a record boundary with its hash', async () => {
    const w = orderedWriter({ maxInFlight: 2 });
    const sink = checkpointSink({ everyRecords: 50, everyMs: 60_000 });
    const log = createAuditLog({ batch: w.writer, clock, logger, checkpoints: sink.policy, maxBatch: 20 });
    await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(event(`r${i}`))));
    await log.close();
    const bySeq = new Map(w.rows.map((r) => [r.seq, r.hash]));
    expect(sink.written.length).toBeGreaterThanOrEqual(3);
    for (const c of sink.written) expect(c).toMatchObject({ chainId: log.chainId, kind: 'periodic', hash: bySeq.get(c.seq) });
    expect(sink.written.map((c) => c.seq)).toEqual([...sink.written.map((c) => c.seq)].sort((a, b) => a - b));
    expect(sink.written.at(-1)!.seq).toBe(200);
    // Gaps between checkpoints are about N records (the tip of a durable batch, never less than N).
    const seqs = sink.written.map((c) => c.seq);
    for (let i = 1; i < seqs.length - 1; i++) expect(seqs[i]! - seqs[i - 1]!).toBeGreaterThanOrEqual(50);
  });

  it('checkpoints after T seconds when fewer than N records came', async () => {
    const w = orderedWriter({ maxInFlight: 1 });
    const sink = checkpointSink({ everyRecords: 10_000, everyMs: 30 });
    const log = createAuditLog({ batch: w.writer, clock, logger, checkpoints: sink.policy });
    await log.append(event('a'));
    await log.append(event('b'));
    await new Promise((r) => setTimeout(r, 120));
    expect(sink.written.map((c) => c.seq)).toEqual([2]);
    await log.close();
    expect(sink.written.map((c) => c.seq)).toEqual([2]); // nothing new: no second checkpoint
  });

  it('a failing checkpoint write is logged and retried later; it never fails or delays an append', async () => {
    let failing = true;
    const w = orderedWriter({ maxInFlight: 1 });
    const sink = checkpointSink({ everyRecords: 5, everyMs: 20, fail: () => failing });
    const log = createAuditLog({ batch: w.writer, clock, logger, checkpoints: sink.policy });
    for (let i = 0; i < 12; i++) await log.append(event(`r${i}`));
    expect(w.rows).toHaveLength(12);
    expect(sink.attempts()).toBeGreaterThan(0);
    expect(sink.written).toEqual([]);
    failing = false;
    await new Promise((r) => setTimeout(r, 1100)); // past the first backoff (1 s)
    expect(sink.written.map((c) => c.seq)).toEqual([12]);
    await log.close();
  });
});
