import type { Db } from '../storage/prisma-client.js';
import { genesisHash, hashAuditRow, type AuditRow } from './audit-event.js';
import { checkpointVerifier, type CheckpointRow } from './audit-checkpoint.js';

/** What broke at the first broken link of a chain. */
export type BreakKind = 'edited' | 'deleted' | 'reordered' | 'inserted' | 'tail truncated' | 'head mismatch' | 'checkpoint forged';

export interface VerifyProblem {
  chainId: string;
  seq?: number;
  id?: string;
  what: BreakKind;
  problem: string;
}

export interface ChainSummary {
  chainId: string;
  /** First record verified (after an archive checkpoint: the record after the pruned ones). */
  from: number;
  /** Last record present. */
  through: number;
  /** Records before `from` were pruned under a valid archive checkpoint. */
  prunedThrough: number;
  checkpoints: number;
  ok: boolean;
}

export interface VerifyResult {
  ok: boolean;
  chains: number;
  records: number;
  checkpoints: number;
  problems: VerifyProblem[];
  chainSummaries: ChainSummary[];
}

export interface VerifyOptions {
  pageSize?: number;
  /** Called after each page: records verified so far, records in the store. */
  onProgress?: (done: number, total: number) => void;
  /** Only this chain. */
  chainId?: string;
}

/** Hash of a record as if it had sequence number `seq` (where did a moved record come from?). */
const hashAt = (r: AuditRow, seq: number) => hashAuditRow({ ...r, seq });

/**
 * Recomputes every chain — each record's hash, its link to the previous record, gap-free
 * sequence numbers — and checks it against the chain head and the signed checkpoints: each
 * checkpoint's signature (agent-sts's keys, retired ones included), that the record it names exists
 * with that hash, that the chain is not shorter than its latest checkpoint. A chain pruned by
 * `agent-sts audit archive --prune` starts at its archive checkpoint. Reports the first broken link
 * of each chain, saying what happened (edited, deleted, reordered, inserted, tail truncated), plus
 * every forged checkpoint.
 */
export async function verifyAuditLog(db: Db, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const pageSize = opts.pageSize ?? 5000;
  const only = opts.chainId ? { chainId: opts.chainId } : {};
  const total = await db.auditEvent.count({ where: only });
  const groups = await db.auditEvent.groupBy({ by: ['chainId'], where: only, _count: { _all: true } });
  const allCheckpoints = (await db.auditCheckpoint.findMany({ where: only, orderBy: [{ chainId: 'asc' }, { seq: 'asc' }] })) as CheckpointRow[];
  const heads = await db.auditChainHead.findMany({ where: only, select: { chainId: true } });
  const chainIds = [...new Set([...groups.map((g) => g.chainId), ...heads.map((h) => h.chainId), ...allCheckpoints.map((c) => c.chainId)])].sort();
  const verifyCheckpoint = await checkpointVerifier(db);

  const problems: VerifyProblem[] = [];
  const chainSummaries: ChainSummary[] = [];
  let done = 0;
  for (const chainId of chainIds) {
    const checkpoints: CheckpointRow[] = [];
    for (const cp of allCheckpoints.filter((c) => c.chainId === chainId)) {
      const bad = await verifyCheckpoint(cp);
      if (bad) problems.push({ chainId, seq: cp.seq, id: cp.id, what: 'checkpoint forged', problem: `the ${cp.kind} checkpoint of record ${cp.seq} is forged: ${bad}` });
      else checkpoints.push(cp);
    }
    const r = await verifyChain(db, chainId, checkpoints, pageSize, (n) => {
      done += n;
      opts.onProgress?.(done, total);
    });
    if (r.problem) problems.push(r.problem);
    chainSummaries.push({ chainId, from: r.from, through: r.through, prunedThrough: r.from - 1, checkpoints: checkpoints.length, ok: !r.problem && !problems.some((p) => p.chainId === chainId) });
  }
  return { ok: problems.length === 0, chains: chainIds.length, records: total, checkpoints: allCheckpoints.length, problems, chainSummaries };
}

async function verifyChain(
  db: Db,
  chainId: string,
  checkpoints: CheckpointRow[],
  pageSize: number,
  progress: (n: number) => void,
): Promise<{ from: number; through: number; problem?: VerifyProblem }> {
  // Start after the latest valid archive checkpoint: what it covers was pruned into an archive file.
  const archive = checkpoints.filter((c) => c.kind === 'archive' && c.prunedThrough !== null).sort((a, b) => b.prunedThrough! - a.prunedThrough!)[0];
  const from = archive ? archive.prunedThrough! + 1 : 1;
  let prevHash = archive ? archive.hash : genesisHash(chainId);
  let expected = from;
  const bySeq = new Map(checkpoints.filter((c) => c.seq >= from).map((c) => [c.seq, c]));
  const found = (problem: Omit<VerifyProblem, 'chainId'>) => ({ from, through: expected - 1, problem: { chainId, ...problem } });

  let cursor = from - 1;
  for (;;) {
    // Walk to the end of the chain as it is now; then look at the head (read after the walk, so
    // records committed meanwhile are not mistaken for records past the head).
    for (;;) {
      const page = (await db.auditEvent.findMany({ where: { chainId, seq: { gt: cursor } }, orderBy: { seq: 'asc' }, take: pageSize })) as AuditRow[];
      if (!page.length) break;
      for (const row of page) {
        if (row.seq !== expected || row.prevHash !== prevHash || hashAuditRow(row) !== row.hash) {
          progress(page.length);
          return found(await diagnose(db, chainId, expected, prevHash, row, archive));
        }
        const cp = bySeq.get(row.seq);
        if (cp && cp.hash !== row.hash) {
          progress(page.length);
          const before = [...bySeq.keys()].filter((seq) => seq < row.seq).pop();
          return found({
            seq: row.seq,
            id: row.id,
            what: 'edited',
            problem: `record ${row.seq} does not match its signed checkpoint: records ${before !== undefined ? `after ${before}` : `from ${from}`} up to ${row.seq} were rewritten with recomputed hashes: edited`,
          });
        }
        prevHash = row.hash;
        expected = row.seq + 1;
        cursor = row.seq;
      }
      progress(page.length);
    }
    const head = await db.auditChainHead.findUnique({ where: { chainId } });
    const last = expected - 1;
    if (head && head.seq > last) {
      // Committed while we walked? Then there is more to read.
      if (await db.auditEvent.count({ where: { chainId, seq: { gt: last } } })) continue;
      return found({ seq: head.seq, what: 'tail truncated', problem: `chain ends at record ${last} but its head says ${head.seq}: records were deleted from the end` });
    }
    const latest = [...bySeq.values()].pop();
    if (latest && latest.seq > last)
      return found({ seq: latest.seq, what: 'tail truncated', problem: `chain ends at record ${last} but a signed checkpoint covers record ${latest.seq}: records were deleted from the end` });
    if (!head) {
      if (last >= from) return found({ seq: last, what: 'head mismatch', problem: 'chain head record is missing' });
      return { from, through: last };
    }
    if (head.seq < last)
      return found({ seq: head.seq + 1, what: 'inserted', problem: `chain continues to record ${last} past its head (${head.seq}): records were appended after the head: inserted` });
    if (head.seq === last && head.hash !== prevHash)
      return found({ seq: last, what: 'head mismatch', problem: 'the last record does not match the chain head: edited (hash recomputed) or the head was changed' });
    return { from, through: last };
  }
}

/**
 * Says what happened at the first broken link: position `p` should hold the record linking to
 * `prevHash`, and holds `row` instead. Sequence numbers are hashed, so a record moved to another
 * position (swapped, renumbered after a deletion or an insertion) is recognised by finding the
 * position at which its own hash is right.
 */
async function diagnose(db: Db, chainId: string, p: number, prevHash: string, row: AuditRow, archive: CheckpointRow | undefined): Promise<Omit<VerifyProblem, 'chainId'>> {
  const genesis = genesisHash(chainId);
  const at = (seq: number) => db.auditEvent.findUnique({ where: { chainId_seq: { chainId, seq } } }) as Promise<AuditRow | null>;
  // No index on hash: a scan of one chain, done at most a few times, only once something broke.
  const byHash = (hash: string) => db.auditEvent.findFirst({ where: { chainId, hash } }) as Promise<AuditRow | null>;
  const byPrev = (hash: string) => db.auditEvent.findFirst({ where: { chainId, prevHash: hash } }) as Promise<AuditRow | null>;

  /** The position a record was written at, if its hash is intact (undefined: its content was changed). */
  async function origin(r: AuditRow, depth = 0): Promise<number | undefined> {
    if (hashAuditRow(r) === r.hash) return r.seq;
    for (let d = 1; d <= 64; d++) for (const s of [r.seq - d, r.seq + d]) if (s >= 1 && hashAt(r, s) === r.hash) return s;
    if (r.prevHash === genesis) return hashAt(r, 1) === r.hash ? 1 : undefined;
    if (archive && r.prevHash === archive.hash) return hashAt(r, archive.seq + 1) === r.hash ? archive.seq + 1 : undefined;
    if (depth > 3) return undefined;
    const q = await byHash(r.prevHash);
    const oq = q ? await origin(q, depth + 1) : undefined;
    return oq !== undefined && hashAt(r, oq + 1) === r.hash ? oq + 1 : undefined;
  }

  if (row.seq > p) {
    // A gap. Was the record only moved (its seq changed to somewhere else)?
    const moved = await byPrev(prevHash);
    if (moved && moved.seq !== p && (await origin(moved)) === p)
      return { seq: p, id: moved.id, what: 'reordered', problem: `record ${p} was moved to position ${moved.seq}: reordered` };
    return { seq: p, id: row.id, what: 'deleted', problem: `record ${p} is missing (next present is ${row.seq}): deleted` };
  }

  const o = await origin(row);
  if (o === row.seq) {
    // Its own hash is right, but it does not link to the record before it.
    const next = await at(p + 1);
    if (next && (await origin(next)) === p)
      return { seq: p, id: row.id, what: 'inserted', problem: `record ${p} was inserted (the original record ${p} follows, renumbered): inserted` };
    return { seq: p, id: row.id, what: 'edited', problem: 'link to the previous record is broken: replaced or edited (hash recomputed)' };
  }
  if (o === undefined) {
    const next = await at(p + 1);
    if (next && (await origin(next)) === p)
      return { seq: p, id: row.id, what: 'inserted', problem: `record ${p} was inserted (the original record ${p} follows, renumbered): inserted` };
    return { seq: p, id: row.id, what: 'edited', problem: 'record content does not match its hash: edited' };
  }
  if (o < p) {
    const first = await at(o);
    return { seq: o, id: first?.id, what: 'inserted', problem: `record(s) ${o}..${p - 1} were inserted: the original record ${o} follows at ${p}, renumbered: inserted` };
  }
  // o > p: this record belongs further down the chain.
  const there = await at(o);
  if (there && (await origin(there)) === p)
    return { seq: p, id: row.id, what: 'reordered', problem: `records ${p} and ${o} were swapped: reordered` };
  if (!(await byHash(row.prevHash)))
    return { seq: p, id: row.id, what: 'deleted', problem: `record(s) ${p}..${o - 1} were deleted and later records renumbered: deleted` };
  return { seq: p, id: row.id, what: 'reordered', problem: `record ${o} was moved to position ${p}: reordered` };
}
