import type { Clock } from '../lib/clock.js';
import { atEndOfTurn } from '../lib/end-of-turn.js';
import type { Logger } from '../log/logger.js';
import { randomLowerId, uuidv7 } from '../lib/crypto.js';
import { genesisHash, toRow, type AuditEventInput, type AuditRow } from './audit-event.js';
import type { CheckpointPolicy } from './audit-checkpoint.js';
import type { BatchWriter, Row, CredentialInsert, CredentialUpdate, TaskInsert, TaskUpdate } from '../storage/batch.js';

export type { CredentialInsert, CredentialUpdate, TaskInsert, TaskUpdate };

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
  /** Arrival order: retried records keep their place. */
  order: number;
  /** Set after its batch failed: committed on its own to find the record at fault. */
  alone?: boolean;
}

export interface AuditLogDeps {
  /** Where batches go: `Database.batch`. */
  batch: BatchWriter;
  clock: Clock;
  logger: Logger;
  /** Largest number of records committed in one transaction. */
  maxBatch?: number;
  /** Signed checkpoints of this chain (none when absent: one-shot CLI chains without a key). */
  checkpoints?: CheckpointPolicy;
}

/**
 * Append-only, hash-chained issuance log with group commit. Each process writes its own chain
 * (so replicas never contend for one head row); records queued while a transaction is in flight
 * are committed together in the next one. `append()` resolves only once its record — and the
 * task/credential rows that go with it — are durable, so callers answer after that, never before.
 */
export function createAuditLog(deps: AuditLogDeps) {
  const chainId = `${deps.clock.now().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}-${randomLowerId(8)}`;
  /** Last record known durable, and the tip including batches still in flight. */
  let durable = { seq: 0, hash: genesisHash(chainId) };
  let tip = durable;
  /** Bumped when a batch fails: later in-flight batches chained on it are refused by the writer. */
  let epoch = 0;
  let order = 0;
  let queue: Pending[] = [];
  let inFlight = 0;
  let idle: (() => void)[] = [];
  const maxBatch = deps.maxBatch ?? 256;
  const maxInFlight = Math.max(1, deps.batch.maxInFlight);
  const checkpoints = createChainCheckpoints(chainId, deps, () => durable);

  function send(batch: Pending[]): void {
    const time = deps.clock.now();
    const sentEpoch = epoch;
    let prev = tip.hash;
    let s = tip.seq;
    const rows = batch.map((p) => {
      const row = toRow(p.write.event, { id: uuidv7(), chainId, seq: ++s, time, prevHash: prev });
      prev = row.hash;
      return row;
    });
    const end = { seq: s, hash: prev };
    tip = end;
    inFlight++;
    deps.batch
      .commit({
        epoch: sentEpoch,
        time,
        tasks: batch.flatMap((p) => p.write.tasks ?? []),
        credentials: batch.flatMap((p) => p.write.credentials ?? []),
        credentialUpdates: batch.flatMap((p) => p.write.credentialUpdates ?? []),
        taskUpdates: batch.flatMap((p) => p.write.taskUpdates ?? []),
        auditRows: rows as unknown as Row[],
        head: { chainId, ...end },
      })
      .then(
        () => {
          durable = end;
          batch.forEach((p, i) => p.resolve(rows[i]!));
          checkpoints.afterDurable();
        },
        (e: unknown) => {
          if (sentEpoch !== epoch) {
            // Chained on a batch that failed before it: not this batch's fault, send it again.
            requeue(batch);
            return;
          }
          // Nothing of this batch was written (one transaction); the chain goes back to the last
          // durable record. Retry its records one by one so a single bad record fails only its
          // own caller; a lone failure fails closed.
          epoch++;
          tip = durable;
          if (batch.length > 1) {
            batch.forEach((p) => (p.alone = true));
            requeue(batch);
            return;
          }
          deps.logger.error({ err: { message: (e as Error).message }, action: batch[0]!.write.event.action }, 'audit write failed');
          batch[0]!.reject(e);
        },
      )
      .finally(() => {
        inFlight--;
        pump();
      });
  }

  function requeue(batch: Pending[]): void {
    queue = [...batch, ...queue].sort((x, y) => x.order - y.order);
  }

  /**
   * Group commit: whatever queued while earlier batches were in flight goes out as the next
   * batch. Writers that apply batches in order (the SQLite thread) get the next batch while the
   * current one is still syncing, so the disk never waits for the event loop.
   */
  function pump(): void {
    while (queue.length) {
      if (queue[0]!.alone) {
        if (inFlight > 0) return;
        send(queue.splice(0, 1));
        return;
      }
      if (inFlight >= maxInFlight) return;
      let n = 0;
      while (n < queue.length && n < maxBatch && !queue[n]!.alone) n++;
      send(queue.splice(0, n));
    }
    if (inFlight === 0) {
      const waiting = idle;
      idle = [];
      waiting.forEach((w) => w());
    }
  }

  /**
   * A writer without an in-flight limit (the SQLite thread) gets each event-loop turn's records
   * as one batch: after the turn's I/O, so every request that arrived in it joins.
   */
  let pumpScheduled = false;
  const schedulePump = () => {
    if (pumpScheduled) return;
    pumpScheduled = true;
    atEndOfTurn('handoff', () => {
      pumpScheduled = false;
      pump();
    });
  };

  function append(write: AuditWrite): Promise<AuditRow> {
    return new Promise<AuditRow>((resolve, reject) => {
      queue.push({ write, resolve, reject, order: ++order });
      if (maxInFlight === Infinity) schedulePump();
      else pump();
    });
  }

  /** Resolves when everything queued so far is written, and checkpointed when a policy is set. */
  async function drain(): Promise<void> {
    if (queue.length || inFlight) await new Promise<void>((r) => idle.push(r));
    await checkpoints.now();
  }

  return {
    append,
    chainId,
    drain,
    /** Shutdown: drain, write the last checkpoint, stop the checkpoint timer. */
    close: async () => {
      await drain();
      checkpoints.stop();
    },
  };
}
export type AuditLog = ReturnType<typeof createAuditLog>;

/**
 * Periodic signed checkpoints of one chain: after a durable batch that brings the chain
 * `everyRecords` past the last checkpoint, or every `everyMs` while records keep coming. Written
 * out of band — never awaited by `append()` — so the hot path does not wait for a signature or a
 * second write; a failed write is logged and retried with backoff, and never fails an exchange.
 */
function createChainCheckpoints(chainId: string, deps: AuditLogDeps, durable: () => { seq: number; hash: string }) {
  const policy = deps.checkpoints;
  let last = 0;
  let running: Promise<void> | undefined;
  let retryAt = 0;
  let backoffMs = 1000;
  let timer: NodeJS.Timeout | undefined;

  async function write(): Promise<void> {
    const at = durable();
    if (!policy || at.seq <= last) return;
    try {
      await policy.write({ chainId, seq: at.seq, hash: at.hash, time: deps.clock.now(), kind: 'periodic' });
      last = Math.max(last, at.seq);
      backoffMs = 1000;
      retryAt = 0;
    } catch (e) {
      retryAt = Date.now() + backoffMs;
      backoffMs = Math.min(backoffMs * 2, Math.max(policy.everyMs, 1000));
      deps.logger.error({ chainId, seq: at.seq, err: { message: (e as Error).message } }, 'audit checkpoint write failed; retrying later (records are unaffected)');
    }
  }

  /** One write at a time; a request while one runs is served by the next trigger. */
  function start(): Promise<void> {
    running ??= write().finally(() => (running = undefined));
    return running;
  }

  return {
    afterDurable(): void {
      if (!policy) return;
      if (!timer) {
        timer = setInterval(() => {
          if (durable().seq > last && Date.now() >= retryAt) void start();
        }, policy.everyMs);
        timer.unref();
      }
      if (durable().seq - last >= policy.everyRecords && Date.now() >= retryAt) void start();
    },
    /** Checkpoints whatever is durable now (drain, shutdown); waits for a write in progress first. */
    async now(): Promise<void> {
      if (!policy) return;
      if (running) await running;
      await start();
    },
    stop(): void {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}
