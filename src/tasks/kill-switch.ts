import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { CallContext } from '../core/types.js';
import type { TaskService } from './task-service.js';
import type { BlockKind, IdentityBlockView, RevocationList } from './revocation-list.js';

/** Who pulled the switch and from where (audit). */
export interface KillContext extends CallContext {
  /** `bootstrap:<name>`, `<provider>:<subject>` or `cli:<os user>`. */
  principal: string;
}

export interface KillSummary {
  subject: string;
  kind: BlockKind;
  reason: string;
  blockedBy: string;
  createdAt: Date;
  /** False when the subject was already blocked (the block is kept as it was; tasks are ended again). */
  newlyBlocked: boolean;
  tasksEnded: number;
  /** Tasks whose end is not complete yet (a revocation at a target failed; the sweep retries). */
  tasksEnding: number;
  credentials: { revoked: number; pending: number; expiresNaturally: number };
}

export interface KillSwitchDeps {
  db: Db;
  clock: Clock;
  logger: Logger;
  audit: Pick<AuditLog, 'append'>;
  tasks: Pick<TaskService, 'endTask'>;
  revocations: Pick<RevocationList, 'block' | 'unblock'>;
  /**
   * Wait before a second pass over the subject's open tasks: another replica may have started a
   * task in the moment before its next poll saw the block. Longer than the revocation poll (1 s).
   */
  settleMs?: number;
  /** Progress lines for a person (CLI). */
  onProgress?: (line: string) => void;
}

/** Refused change: the HTTP layer answers with `status`. */
export class IdentityNotBlocked extends Error {
  readonly status = 404;
  constructor(subject: string) {
    super(`no block on ${subject}`);
    this.name = 'IdentityNotBlocked';
  }
}

const SUBJECT_MAX = 512;
const REASON_MAX = 1000;

export function validateKill(subject: string, reason: string): string | undefined {
  if (!subject || subject.length > SUBJECT_MAX) return `subject: 1 to ${SUBJECT_MAX} characters`;
  if (!reason.trim() || reason.length > REASON_MAX) return `reason: 1 to ${REASON_MAX} characters`;
  return undefined;
}

/**
 * The kill switch: blocks a workload or human subject on every replica (the IdentityBlock row,
 * picked up by each replica's 1 s revocation poll; at once on this one) and ends every open task
 * of that subject through TaskService.endTask, so every credential is revoked at its target.
 * Audited as `admin.identity.kill` / `admin.identity.restore` with who and why.
 */
/**
 * The block that refuses this identity, if any: the workload, the person it acts for, or any
 * earlier agent in its delegation chain (a killed agent must not keep acting through another).
 */
export function blockOn(
  blocks: Pick<RevocationList, 'blockOf'>,
  id: { workload: { subject: string }; human?: { subject: string }; priorActors: { sub: string }[] },
): IdentityBlockView | undefined {
  return (
    blocks.blockOf('workload', id.workload.subject) ??
    (id.human ? blocks.blockOf('human', id.human.subject) : undefined) ??
    id.priorActors.map((a) => blocks.blockOf('workload', a.sub)).find(Boolean)
  );
}

export function createKillSwitch(deps: KillSwitchDeps) {
  const settleMs = deps.settleMs ?? 1500;
  const say = (line: string) => deps.onProgress?.(line);

  async function endOpenTasks(subject: string, kind: BlockKind, reason: string, ctx: KillContext, seen: Set<string>, sum: KillSummary): Promise<void> {
    const where = kind === 'human' ? { humanSubject: subject } : { workloadSubject: subject };
    const open = await deps.db.task.findMany({ where: { ...where, state: { in: ['open', 'ending'] } }, select: { id: true }, orderBy: { createdAt: 'asc' } });
    for (const { id } of open) {
      if (seen.has(id)) continue;
      seen.add(id);
      const r = await deps.tasks.endTask(id, `kill switch (${ctx.principal}): ${reason}`, { requestId: ctx.requestId, clientAddress: ctx.clientAddress, now: deps.clock.now() });
      if (!r) continue;
      const fates = r.credentials.map((c) => c.fate);
      const revoked = fates.filter((f) => f === 'revoked').length;
      const pending = fates.filter((f) => f === 'revocation_pending').length;
      const natural = fates.filter((f) => f === 'expires_naturally').length;
      sum.credentials.revoked += revoked;
      sum.credentials.pending += pending;
      sum.credentials.expiresNaturally += natural;
      if (r.state === 'ended') sum.tasksEnded++;
      else sum.tasksEnding++;
      say(`  task ${id}: ${r.state} (${revoked} revoked${pending ? `, ${pending} revocation pending` : ''}${natural ? `, ${natural} expire naturally` : ''})`);
    }
  }

  /** Blocks the subject and ends its open tasks. Idempotent: killing a blocked subject ends what is left. */
  async function kill(subject: string, o: { reason: string; kind: BlockKind }, ctx: KillContext): Promise<KillSummary> {
    const existing = await deps.db.identityBlock.findUnique({ where: { subject } });
    let row = existing;
    if (!row) {
      // The audit record first (append-only, durable before the block takes effect); then the row.
      await deps.audit.append({
        event: {
          requestId: ctx.requestId, action: 'admin.identity.kill', outcome: 'success', clientAddress: ctx.clientAddress,
          reason: `by ${ctx.principal}: ${o.reason}`,
          ...(o.kind === 'human' ? { humanSubject: subject } : { workloadSubject: subject }),
        },
      });
      try {
        row = await deps.db.identityBlock.create({ data: { subject, kind: o.kind, reason: o.reason, blockedBy: ctx.principal, createdAt: deps.clock.now() } });
      } catch (e) {
        // Two admins at once: the other one's block stands.
        row = await deps.db.identityBlock.findUnique({ where: { subject } });
        if (!row) throw e;
      }
    }
    const kind: BlockKind = row.kind === 'human' ? 'human' : 'workload';
    deps.revocations.block({ subject, kind, reason: row.reason, blockedBy: row.blockedBy });
    say(existing ? `${subject} was already blocked (${existing.kind}, by ${existing.blockedBy}); ending what is left` : `blocked ${kind} ${subject}: new exchanges are refused on every replica within 1 s`);
    const sum: KillSummary = {
      subject, kind, reason: row.reason, blockedBy: row.blockedBy, createdAt: row.createdAt, newlyBlocked: !existing,
      tasksEnded: 0, tasksEnding: 0, credentials: { revoked: 0, pending: 0, expiresNaturally: 0 },
    };
    const seen = new Set<string>();
    await endOpenTasks(subject, kind, row.reason, ctx, seen, sum);
    if (settleMs > 0) {
      // A replica that had not polled yet may have opened a task in the meantime: look once more.
      await new Promise((r) => setTimeout(r, settleMs));
      await endOpenTasks(subject, kind, row.reason, ctx, seen, sum);
    }
    deps.logger.warn({ requestId: ctx.requestId, subject, kind, by: ctx.principal, tasksEnded: sum.tasksEnded, tasksEnding: sum.tasksEnding, ...sum.credentials }, 'kill switch pulled');
    return sum;
  }

  /** Lifts the block. Throws IdentityNotBlocked when there is none. */
  async function restore(subject: string, ctx: KillContext): Promise<{ subject: string; kind: BlockKind }> {
    const row = await deps.db.identityBlock.findUnique({ where: { subject } });
    if (!row) throw new IdentityNotBlocked(subject);
    const kind: BlockKind = row.kind === 'human' ? 'human' : 'workload';
    await deps.audit.append({
      event: {
        requestId: ctx.requestId, action: 'admin.identity.restore', outcome: 'success', clientAddress: ctx.clientAddress,
        reason: `by ${ctx.principal} (blocked by ${row.blockedBy} at ${row.createdAt.toISOString()}: ${row.reason})`,
        ...(kind === 'human' ? { humanSubject: subject } : { workloadSubject: subject }),
      },
    });
    // deleteMany: a concurrent restore already removed it — the outcome is the same.
    await deps.db.identityBlock.deleteMany({ where: { subject } });
    deps.revocations.unblock(kind, subject);
    return { subject, kind };
  }

  async function list() {
    return deps.db.identityBlock.findMany({ orderBy: { createdAt: 'asc' } });
  }

  return { kill, restore, list };
}
export type KillSwitch = ReturnType<typeof createKillSwitch>;
