import { createReadStream, existsSync } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import type { Db } from '../storage/prisma-client.js';
import type { TokenSigner } from '../keys/key-store.js';
import type { Clock } from '../lib/clock.js';
import { genesisHash, hashAuditRow, type AuditRow } from './audit-event.js';
import { checkpointVerifier, signCheckpoint, type CheckpointRow } from './audit-checkpoint.js';

/** Records deleted per transaction by a prune: a live writer never waits long for the lock. */
const PRUNE_STEP = 10_000;

/** A refusal a person can act on (printed as is by the CLI). */
export class ArchiveRefused extends Error {}

/** The part of one chain an archive takes: records `from`..`through`. */
export interface ChainRange {
  chainId: string;
  from: number;
  through: number;
  /** Hash the first record links to (genesis, or the chain's previous archive checkpoint). */
  startPrevHash: string;
}

export interface ArchivePlan {
  before: Date;
  chains: ChainRange[];
  records: number;
}

export interface WrittenChain extends ChainRange {
  count: number;
  lastHash: string;
  /** Hashes of the records where a prune step ends (see {@link pruneArchived}). */
  stepHashes: Record<number, string>;
}

export interface WrittenArchive {
  file: string;
  records: number;
  sha256: string;
  chains: WrittenChain[];
}

/** Archive line: the stored row exactly (dates as ISO strings), so every hash can be recomputed from the file. */
export const archiveLine = (r: AuditRow) =>
  JSON.stringify({ ...r, time: r.time.toISOString(), credentialExpiresAt: r.credentialExpiresAt?.toISOString() ?? null });

export function parseArchiveLine(line: string): AuditRow {
  const o = JSON.parse(line) as AuditRow & { time: string; credentialExpiresAt: string | null };
  if (typeof o !== 'object' || o === null || typeof o.chainId !== 'string' || typeof o.seq !== 'number' || typeof o.hash !== 'string') throw new Error('not an audit record');
  return { ...o, time: new Date(o.time), credentialExpiresAt: o.credentialExpiresAt ? new Date(o.credentialExpiresAt) : null };
}

/** Latest valid archive checkpoint per chain (where verification of what is left starts). */
async function archiveAnchors(db: Db): Promise<Map<string, CheckpointRow>> {
  const verify = await checkpointVerifier(db);
  const out = new Map<string, CheckpointRow>();
  for (const cp of (await db.auditCheckpoint.findMany({ where: { kind: 'archive' }, orderBy: { seq: 'asc' } })) as CheckpointRow[]) {
    if (cp.prunedThrough === null || (await verify(cp))) continue;
    const prev = out.get(cp.chainId);
    if (!prev || prev.prunedThrough! < cp.prunedThrough) out.set(cp.chainId, cp);
  }
  return out;
}

/**
 * What an archive of everything older than `before` takes, per chain: from its first record still
 * in the store up to the record before its first one at or after the cutoff — a record boundary of
 * the chain, even if the clock went backwards in between.
 */
export async function planArchive(db: Db, before: Date): Promise<ArchivePlan> {
  const groups = await db.auditEvent.groupBy({ by: ['chainId'], _min: { seq: true }, _max: { seq: true } });
  const anchors = await archiveAnchors(db);
  const chains: ChainRange[] = [];
  for (const g of groups.sort((a, b) => (a.chainId < b.chainId ? -1 : 1))) {
    const from = g._min.seq!;
    const firstKept = await db.auditEvent.findFirst({ where: { chainId: g.chainId, time: { gte: before } }, orderBy: { seq: 'asc' }, select: { seq: true } });
    const through = firstKept ? firstKept.seq - 1 : g._max.seq!;
    if (through < from) continue;
    const anchor = anchors.get(g.chainId);
    chains.push({ chainId: g.chainId, from, through, startPrevHash: anchor && anchor.prunedThrough === from - 1 ? anchor.hash : genesisHash(g.chainId) });
  }
  return { before, chains, records: chains.reduce((n, c) => n + c.through - c.from + 1, 0) };
}

/**
 * Writes the planned records to `file` as JSON lines, chain by chain in sequence order, checking
 * every hash and link on the way (a broken chain is not archived: verify it first). The file is
 * written under a temporary name, fsynced, renamed, its directory fsynced; then it is read back
 * and its record count and last hash per chain compared with what was read from the store.
 */
export async function writeArchive(db: Db, plan: ArchivePlan, file: string, onProgress?: (done: number, total: number) => void): Promise<WrittenArchive> {
  if (existsSync(file)) throw new ArchiveRefused(`${file} exists; archives are never overwritten: choose another --out`);
  const partial = `${file}.partial`;
  let fh: FileHandle | undefined = await open(partial, 'w');
  const digest = createHash('sha256');
  const chains: WrittenChain[] = [];
  let done = 0;
  try {
    let buffer: string[] = [];
    const flush = async () => {
      const chunk = buffer.join('');
      buffer = [];
      digest.update(chunk);
      await fh!.write(chunk);
    };
    for (const c of plan.chains) {
      let prev = c.startPrevHash;
      let expected = c.from;
      const stepHashes: Record<number, string> = {};
      for (let cursor = c.from - 1; cursor < c.through; ) {
        const page = (await db.auditEvent.findMany({ where: { chainId: c.chainId, seq: { gt: cursor, lte: c.through } }, orderBy: { seq: 'asc' }, take: 5000 })) as AuditRow[];
        if (!page.length) break;
        for (const r of page) {
          if (r.seq !== expected || r.prevHash !== prev || hashAuditRow(r) !== r.hash)
            throw new ArchiveRefused(`chain ${c.chainId} is broken at record ${expected}; nothing was archived. Run \`agent-sts audit verify\` to see what happened`);
          buffer.push(`${archiveLine(r)}\n`);
          if ((r.seq - c.from + 1) % PRUNE_STEP === 0) stepHashes[r.seq] = r.hash;
          prev = r.hash;
          expected++;
        }
        cursor = page[page.length - 1]!.seq;
        done += page.length;
        await flush();
        onProgress?.(done, plan.records);
      }
      if (expected - 1 !== c.through) throw new ArchiveRefused(`chain ${c.chainId} changed while it was archived (records up to ${c.through} expected); nothing was archived, try again`);
      chains.push({ ...c, count: c.through - c.from + 1, lastHash: prev, stepHashes });
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(partial, file);
    const dir = await open(dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (e) {
    await fh?.close().catch(() => {});
    await rm(partial, { force: true });
    throw e;
  }
  await checkReadBack(file, chains);
  return { file, records: done, sha256: digest.digest('hex'), chains };
}

/** Reads the written file back: every chain's record count and last hash must be what was written. */
async function checkReadBack(file: string, chains: WrittenChain[]): Promise<void> {
  const seen = new Map<string, { count: number; last: string }>();
  for await (const line of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) {
    if (!line) continue;
    const r = parseArchiveLine(line);
    const s = seen.get(r.chainId) ?? { count: 0, last: '' };
    s.count++;
    s.last = r.hash;
    seen.set(r.chainId, s);
  }
  for (const c of chains) {
    const s = seen.get(c.chainId);
    if (!s || s.count !== c.count || s.last !== c.lastHash)
      throw new ArchiveRefused(`${file} does not read back as written (chain ${c.chainId}: ${s?.count ?? 0} of ${c.count} records); nothing was pruned. Check the disk and try again`);
  }
}

/**
 * Deletes the archived records from the store. Per chain, in steps of {@link PRUNE_STEP}
 * records: each step deletes records `from`..`k` and writes a signed `archive` checkpoint
 * (record `k`'s hash, `prunedThrough` = k) in the same transaction, after checking that record `k`
 * still has the hash the archive holds. So the store is consistent after every step, and a live
 * server's writer never waits long for the database lock.
 */
export async function pruneArchived(
  db: Db,
  written: WrittenArchive,
  deps: { signer: Pick<TokenSigner, 'sign'>; clock: Clock; onProgress?: (done: number, total: number) => void },
): Promise<{ deleted: number; checkpoints: CheckpointRow[] }> {
  let deleted = 0;
  const checkpoints: CheckpointRow[] = [];
  for (const c of written.chains) {
    for (let start = c.from; start <= c.through; start += PRUNE_STEP) {
      const end = Math.min(start + PRUNE_STEP - 1, c.through);
      const hash = end === c.through ? c.lastHash : c.stepHashes[end];
      if (!hash) throw new Error(`record ${end} of chain ${c.chainId} is not in the archive`);
      const cp = await signCheckpoint(deps.signer, { chainId: c.chainId, seq: end, hash, time: deps.clock.now(), kind: 'archive', prunedThrough: end });
      await db.$transaction(
        async (tx) => {
          const last = await tx.auditEvent.findUnique({ where: { chainId_seq: { chainId: c.chainId, seq: end } }, select: { hash: true } });
          if (last?.hash !== hash) throw new ArchiveRefused(`record ${end} of chain ${c.chainId} changed since it was archived; nothing more was pruned`);
          const n = await tx.auditEvent.deleteMany({ where: { chainId: c.chainId, seq: { gte: start, lte: end } } });
          if (n.count !== end - start + 1) throw new ArchiveRefused(`chain ${c.chainId} records ${start}..${end}: ${n.count} present, ${end - start + 1} archived; nothing of this step was pruned`);
          await tx.auditCheckpoint.create({ data: cp });
        },
        { maxWait: 10_000, timeout: 120_000 },
      );
      deleted += end - start + 1;
      checkpoints.push(cp);
      deps.onProgress?.(deleted, written.records);
    }
  }
  return { deleted, checkpoints };
}

export interface ArchiveVerifyResult {
  ok: boolean;
  records: number;
  chains: { chainId: string; from: number; through: number; records: number; startAnchored: boolean; sealed: boolean; checkpointsMatched: number }[];
  problems: string[];
}

/**
 * Verifies an archive file on its own and against the store's checkpoints: per chain, sequence
 * numbers without gaps, every hash and link; the first record links to the genesis or to a valid
 * archive checkpoint ("start anchored"); the last record is the one a valid archive checkpoint
 * sealed when it was pruned ("sealed"), and every valid checkpoint inside the range matches.
 */
export async function verifyArchiveFile(db: Db, file: string): Promise<ArchiveVerifyResult> {
  const verify = await checkpointVerifier(db);
  const problems: string[] = [];
  const chains: ArchiveVerifyResult['chains'] = [];
  const cps = new Map<string, CheckpointRow[]>();
  for (const cp of (await db.auditCheckpoint.findMany({ orderBy: { seq: 'asc' } })) as CheckpointRow[]) {
    const bad = await verify(cp);
    if (bad) continue; // `audit verify` reports forged checkpoints; here they simply do not count
    cps.set(cp.chainId, [...(cps.get(cp.chainId) ?? []), cp]);
  }
  let cur: { chainId: string; from: number; expected: number; prev: string; broken: boolean; matched: number } | undefined;
  let records = 0;
  const finish = () => {
    if (!cur) return;
    const through = cur.expected - 1;
    const mine = cps.get(cur.chainId) ?? [];
    const startAnchored = cur.from === 1 ? true : mine.some((c) => c.kind === 'archive' && c.prunedThrough === cur!.from - 1);
    const sealed = mine.some((c) => c.kind === 'archive' && c.seq === through && c.prunedThrough === through);
    if (!cur.broken && !startAnchored) problems.push(`chain ${cur.chainId}: record ${cur.from} links to nothing known (no archive checkpoint of record ${cur.from - 1}); verify the earlier archive first`);
    chains.push({ chainId: cur.chainId, from: cur.from, through, records: through - cur.from + 1, startAnchored, sealed, checkpointsMatched: cur.matched });
  };
  let lineNo = 0;
  for await (const line of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) {
    lineNo++;
    if (!line) continue;
    let r: AuditRow;
    try {
      r = parseArchiveLine(line);
    } catch {
      problems.push(`line ${lineNo}: not an audit record`);
      continue;
    }
    records++;
    if (!cur || cur.chainId !== r.chainId) {
      finish();
      const mine = cps.get(r.chainId) ?? [];
      const anchor = r.seq === 1 ? genesisHash(r.chainId) : mine.find((c) => c.kind === 'archive' && c.prunedThrough === r.seq - 1)?.hash;
      cur = { chainId: r.chainId, from: r.seq, expected: r.seq, prev: anchor ?? r.prevHash, broken: false, matched: 0 };
    }
    if (cur.broken) continue;
    const what = r.seq !== cur.expected ? `record ${cur.expected} is missing` : r.prevHash !== cur.prev ? 'link to the previous record is broken' : hashAuditRow(r) !== r.hash ? 'record content does not match its hash: edited' : undefined;
    const cp = (cps.get(r.chainId) ?? []).filter((c) => c.seq === r.seq);
    const cpBad = !what && cp.some((c) => c.hash !== r.hash);
    if (what || cpBad) {
      problems.push(`chain ${r.chainId} record ${r.seq} (line ${lineNo}): ${what ?? 'does not match its signed checkpoint: edited'}`);
      cur.broken = true;
      continue;
    }
    cur.matched += cp.length;
    cur.prev = r.hash;
    cur.expected = r.seq + 1;
  }
  finish();
  return { ok: problems.length === 0, records, chains, problems };
}
