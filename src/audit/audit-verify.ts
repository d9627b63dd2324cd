import type { Db } from '../storage/prisma-client.js';
import { genesisHash, hashAuditRow, type AuditRow } from './audit-event.js';

export interface VerifyProblem {
  chainId: string;
  seq?: number;
  id?: string;
  problem: string;
}

export interface VerifyResult {
  ok: boolean;
  chains: number;
  records: number;
  problems: VerifyProblem[];
}

/**
 * Recomputes every chain: each record's hash, its link to the previous record, gap-free
 * sequence numbers, and the recorded head (so a deleted tail is noticed too).
 * Reports the first broken link of each chain.
 */
export async function verifyAuditLog(db: Db, opts: { pageSize?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<VerifyResult> {
  const pageSize = opts.pageSize ?? 2000;
  const total = await db.auditEvent.count();
  const heads = await db.auditChainHead.findMany();
  const chainIds = new Set([...heads.map((h) => h.chainId), ...(await db.auditEvent.findMany({ distinct: ['chainId'], select: { chainId: true } })).map((r) => r.chainId)]);
  const problems: VerifyProblem[] = [];
  let done = 0;
  for (const chainId of [...chainIds].sort()) {
    const head = heads.find((h) => h.chainId === chainId);
    let prevHash = genesisHash(chainId);
    let expectedSeq = 1;
    let broken = false;
    let cursor = 0;
    for (;;) {
      const page = (await db.auditEvent.findMany({ where: { chainId, seq: { gt: cursor } }, orderBy: { seq: 'asc' }, take: pageSize })) as AuditRow[];
      if (!page.length) break;
      for (const row of page) {
        done++;
        cursor = row.seq;
        if (broken) continue;
        const problem =
          row.seq !== expectedSeq
            ? `record ${expectedSeq} is missing (next present is ${row.seq}): deleted`
            : row.prevHash !== prevHash
              ? 'link to the previous record is broken'
              : hashAuditRow(row) !== row.hash
                ? 'record content does not match its hash: edited'
                : undefined;
        if (problem) {
          problems.push({ chainId, seq: row.seq, id: row.id, problem });
          broken = true;
        }
        prevHash = row.hash;
        expectedSeq = row.seq + 1;
      }
      opts.onProgress?.(done, total);
    }
    if (!broken) {
      if (!head) problems.push({ chainId, problem: 'chain head record is missing' });
      else if (head.seq !== expectedSeq - 1 || head.hash !== prevHash)
        problems.push({ chainId, seq: head.seq, problem: `chain ends at record ${expectedSeq - 1} but its head says ${head.seq}: records were deleted from the end` });
    }
  }
  return { ok: problems.length === 0, chains: chainIds.size, records: total, problems };
}
