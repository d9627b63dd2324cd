import { randomUUID } from 'node:crypto';
import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import { randomLowerId } from '../lib/crypto.js';
import { genesisHash, toRow, type AuditEventInput, type AuditRow } from './audit-event.js';

export interface TaskInsert {
  id: string;
  state: string;
  providerName: string;
  workloadSubject: string;
  humanSubject?: string | null;
  parentTaskId?: string | null;
  deadline: Date;
}

export interface CredentialInsert {
  id: string;
  taskId: string;
  issuerName: string;
  issuerType: string;
  tokenType: string;
  target: string;
  state: string;
  fingerprint: string;
  expiresAt: Date;
  sealedRevocationHandle?: string | null;
}

export interface CredentialUpdate {
  id: string;
  data: { state?: string; fingerprint?: string; expiresAt?: Date; sealedRevocationHandle?: string | null; revokedAt?: Date | null; lastError?: string | null };
}

export interface TaskUpdate {
  id: string;
  data: { state?: string; endedAt?: Date; endReason?: string };
}

/** Rows written atomically together with one audit record. */
export interface AuditWrite {
  event: AuditEventInput;
  tasks?: TaskInsert[];
  credentials?: CredentialInsert[];
  credentialUpdates?: CredentialUpdate[];
  taskUpdates?: TaskUpdate[];
}

interface Pending {
  write: AuditWrite;
  resolve: (row: AuditRow) => void;
  reject: (e: unknown) => void;
}

export interface AuditLogDeps {
  db: Db;
  clock: Clock;
  logger: Logger;
  /** Largest number of records committed in one transaction. */
  maxBatch?: number;
}

/**
 * Append-only, hash-chained issuance log with group commit. Each process writes its own chain
 * (so replicas never contend for one head row); records queued while a transaction is in flight
 * are committed together in the next one. `append()` resolves only once its record — and the
 * task/credential rows that go with it — are durable, so callers answer after that, never before.
 */
export function createAuditLog(deps: AuditLogDeps) {
  const chainId = `${deps.clock.now().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}-${randomLowerId(8)}`;
  let seq = 0;
  let head = genesisHash(chainId);
  let queue: Pending[] = [];
  let flushing: Promise<void> | undefined;
  const maxBatch = deps.maxBatch ?? 256;

  async function commit(batch: Pending[]): Promise<void> {
    const time = deps.clock.now();
    let prev = head;
    let s = seq;
    const rows = batch.map((p) => {
      const row = toRow(p.write.event, { id: randomUUID(), chainId, seq: ++s, time, prevHash: prev });
      prev = row.hash;
      return row;
    });
    const tasks = batch.flatMap((p) => p.write.tasks ?? []);
    const creds = batch.flatMap((p) => p.write.credentials ?? []);
    const credUpdates = batch.flatMap((p) => p.write.credentialUpdates ?? []);
    const taskUpdates = batch.flatMap((p) => p.write.taskUpdates ?? []);
    try {
      await deps.db.$transaction([
        ...(tasks.length ? [deps.db.task.createMany({ data: tasks })] : []),
        ...(creds.length ? [deps.db.credential.createMany({ data: creds })] : []),
        ...credUpdates.map((u) => deps.db.credential.update({ where: { id: u.id }, data: u.data })),
        ...taskUpdates.map((u) => deps.db.task.update({ where: { id: u.id }, data: u.data })),
        deps.db.auditEvent.createMany({ data: rows }),
        deps.db.auditChainHead.upsert({ where: { chainId }, create: { chainId, seq: s, hash: prev }, update: { seq: s, hash: prev } }),
      ]);
    } catch (e) {
      // Nothing of this batch was written (one transaction). Retry its records one by one so a
      // single bad record fails only its own caller; a lone failure fails closed.
      if (batch.length > 1) {
        for (const p of batch) await commit([p]);
        return;
      }
      deps.logger.error({ err: { message: (e as Error).message }, action: batch[0]!.write.event.action }, 'audit write failed');
      batch[0]!.reject(e);
      return;
    }
    seq = s;
    head = prev;
    batch.forEach((p, i) => p.resolve(rows[i]!));
  }

  async function flush(): Promise<void> {
    while (queue.length) {
      const batch = queue.slice(0, maxBatch);
      queue = queue.slice(batch.length);
      await commit(batch);
    }
  }

  function schedule(): void {
    if (flushing) return;
    flushing = flush().finally(() => {
      flushing = undefined;
      if (queue.length) schedule();
    });
  }

  function append(write: AuditWrite): Promise<AuditRow> {
    return new Promise<AuditRow>((resolve, reject) => {
      queue.push({ write, resolve, reject });
      schedule();
    });
  }

  return {
    append,
    chainId,
    /** Resolves when everything queued so far is written (shutdown). */
    drain: async () => {
      while (flushing) await flushing;
    },
  };
}
export type AuditLog = ReturnType<typeof createAuditLog>;
