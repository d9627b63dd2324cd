import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Secret } from '../core/secret.js';
import type { CallContext, RevocationHandle } from '../core/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { UNBOUNDED_TTL_SECONDS, type CredentialIssuer, type IssuerCapabilities } from '../credential-issuers/credential-issuer.js';
import type { RevocationList } from './revocation-list.js';
import { seal, unseal } from '../lib/crypto.js';
import type { ChaosHook } from '../lib/chaos-hook.js';
import type { Telemetry } from '../telemetry/otel.js';
import { createTaskTelemetry } from '../telemetry/task-telemetry.js';
import type { SpanHandle } from '../telemetry/spans.js';

export const handleAad = (credentialId: string) => `revocation-handle:${credentialId}`;

export function sealHandle(kek: Secret<Buffer>, credentialId: string, handle: RevocationHandle | null): string | null {
  return handle ? seal(kek.reveal(), JSON.stringify(handle), handleAad(credentialId)) : null;
}

/**
 * What task end did to a credential. `expires_naturally`: its issuer cannot revoke it
 * (capabilities.revocable false), so it stays valid until its expiresAt.
 */
export type CredentialFate = 'revoked' | 'expired' | 'expires_naturally' | 'revocation_pending' | 'failed';

/** `issuerType` of the rows of agent-sts's own agent tokens (written by the exchange service). */
export const AGENT_TOKEN_ISSUER_TYPE = 'agent-token';
/**
 * Agent tokens are not issued by a plugin: agent-sts is their only relying party and checks the
 * revocation list on every exchange, so they are revocable.
 */
export const AGENT_TOKEN_CAPABILITIES: IssuerCapabilities = Object.freeze({ revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS });

export interface TaskEndResult {
  taskId: string;
  state: 'ended' | 'ending';
  /** `revokedAt`: when agent-sts ended it (fate `revoked`, also for one revoked earlier); null otherwise. */
  credentials: { id: string; target: string; tokenType: string; fingerprint: string; expiresAt: string; fate: CredentialFate; revokedAt: string | null }[];
  /** The sub-agents' tasks that ended with it. */
  children: TaskEndResult[];
}

/** What revoking one credential came to, and the credential (never its secret or handle). */
export interface RevokeOneResult {
  fate: CredentialFate | 'revoking' | 'issuing' | 'active';
  credential: { id: string; taskId: string; target: string; issuerName: string; issuerType: string; state: string; expiresAt: Date };
  /** agent-sts's own JWT access token, marked revoked: verifiers that check it offline accept it until then. */
  offlineValidUntil?: Date;
}

export interface SweepResult {
  expired: number;
  retried: number;
  /** Issuances abandoned by a dead process, undone and marked failed. */
  recovered: number;
  tasksEnded: number;
  /** Revocations still queued after the pass. */
  pending: number;
}

export interface TaskServiceDeps {
  db: Db;
  clock: Clock;
  logger: Logger;
  kek: Secret<Buffer>;
  audit: Pick<AuditLog, 'append'>;
  issuers: { get(name: string): CredentialIssuer | undefined };
  revocations: Pick<RevocationList, 'revokeTask' | 'revokeToken'>;
  /** Test hook only (see lib/chaos-hook.ts). */
  chaos?: ChaosHook;
  /** Spans `agent_sts.task.end` / `agent_sts.credential.revoke` and the revocation counter; absent or off: none. */
  telemetry?: Telemetry;
}

/**
 * The durable revocation queue: a credential whose revocation failed stays `revoking` and is tried
 * again at `nextRevokeAt`, after 5 s, 10 s, 20 s, ... at most 5 minutes apart, forever, until its
 * issuer confirms (never given up: a login left at the target is worse than a noisy queue).
 */
export const REVOKE_BACKOFF = { baseMs: 5_000, capMs: 5 * 60_000 } as const;
/** Failed attempts 1, 10, 20, ... are audited and logged at warn; the others at debug only. */
export const AUDIT_EVERY_NTH_FAILURE = 10;
/** A revocation pending longer than this is "stuck": logged at warn by the sweep (at most once a minute). */
export const STUCK_AFTER_MS = 5 * 60_000;
/**
 * How long a revocation claimed by one replica (task end, sweep) is left to it before the sweep
 * tries it too: a replica that died mid-revocation is retried after this; a slow one at worst
 * revokes twice, which is idempotent.
 */
export const REVOKE_CLAIM_MS = 15_000;
/** `issuing` rows older than this are cleaned up even if their replica may still be alive. */
export const ISSUING_GRACE_MS = 2 * 60_000;

/** Delay after the n-th failed attempt (n >= 1). */
export const revokeBackoffMs = (attempt: number) => Math.min(REVOKE_BACKOFF.capMs, REVOKE_BACKOFF.baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 20));

/**
 * When a pending revocation started, estimated from the backoff schedule (no column records it):
 * the sweep's lag between due time and attempt makes it at most attempts × sweep interval too recent.
 */
export function pendingSinceOf(c: { revokeAttempts: number; nextRevokeAt: Date | null }): Date | null {
  if (!c.nextRevokeAt) return null;
  let back = c.revokeAttempts === 0 ? REVOKE_CLAIM_MS : 0;
  for (let n = 1; n <= c.revokeAttempts; n++) back += revokeBackoffMs(n);
  return new Date(c.nextRevokeAt.getTime() - back);
}

/** The revocation queue, oldest first (for the CLI). */
export async function pendingRevocations(db: Db, limit = 1000): Promise<PendingRevocation[]> {
  const rows = await db.credential.findMany({
    where: { state: 'revoking' },
    select: { id: true, taskId: true, target: true, issuerName: true, revokeAttempts: true, lastError: true, nextRevokeAt: true },
    orderBy: { nextRevokeAt: 'asc' },
    take: limit,
  });
  return rows.map((r) => ({
    credentialId: r.id, taskId: r.taskId, target: r.target, issuerName: r.issuerName, attempts: r.revokeAttempts, lastError: r.lastError, nextTryAt: r.nextRevokeAt, pendingSince: pendingSinceOf(r),
  }));
}

/** How many revocations are pending and since when (for /readyz). */
export async function revocationSummary(db: Db): Promise<{ pending: number; oldestPendingSince: Date | null }> {
  const rows = await db.credential.findMany({ where: { state: 'revoking' }, select: { revokeAttempts: true, nextRevokeAt: true }, take: 10_000 });
  let oldest: Date | null = null;
  for (const r of rows) {
    const since = pendingSinceOf(r);
    if (since && (!oldest || since < oldest)) oldest = since;
  }
  return { pending: rows.length, oldestPendingSince: oldest };
}

/** One pending revocation, for the CLI and the warn log. Never a secret or a handle. */
export interface PendingRevocation {
  credentialId: string;
  taskId: string;
  target: string;
  issuerName: string;
  attempts: number;
  lastError: string | null;
  nextTryAt: Date | null;
  pendingSince: Date | null;
}

type CredRow = Awaited<ReturnType<Db['credential']['findMany']>>[number] & {
  task?: { providerName: string; workloadSubject: string; humanSubject: string | null };
};
const withTask = { task: { select: { providerName: true, workloadSubject: true, humanSubject: true } } } as const;
/** Who the credential was issued to, for its lifecycle audit records. */
const whoOf = (c: CredRow) => ({ issuerName: c.issuerName, providerName: c.task?.providerName, workloadSubject: c.task?.workloadSubject, humanSubject: c.task?.humanSubject ?? undefined });

/**
 * Task end and the background sweep. Every state change of a credential is claimed with a
 * conditional update (state X -> Y only if still X), so two replicas never revoke the same
 * credential twice and a crash leaves a state the next sweep can resume from.
 */
export function createTaskService(deps: TaskServiceDeps) {
  const tel = createTaskTelemetry(deps.telemetry);

  async function claim(id: string, from: string[], to: string): Promise<boolean> {
    // A claimed revocation is due again after REVOKE_CLAIM_MS: if this replica dies now, the sweep picks it up.
    const data = to === 'revoking' ? { state: to, nextRevokeAt: new Date(deps.clock.now().getTime() + REVOKE_CLAIM_MS) } : { state: to };
    const r = await deps.db.credential.updateMany({ where: { id, state: { in: from } }, data });
    return r.count === 1;
  }

  /** An `ending` task no call holds at `at`: its holder let go, or died and its claim lapsed. */
  const unheldEnding = (at: Date) => ({ state: 'ending', OR: [{ endClaimedUntil: null }, { endClaimedUntil: { lte: at } }] });
  /** A queued revocation due at `at` (never tried, or its retry time or another caller's claim has passed). */
  const dueRevocation = (at: Date) => ({ state: 'revoking', OR: [{ nextRevokeAt: null }, { nextRevokeAt: { lte: at } }] });

  /**
   * Revokes one credential upstream (if needed) and records the outcome (`at`: when). Never throws.
   * `why`: who revoked it, for the record (`<why> at <time>`; default `revoked`).
   */
  function revokeCredential(cred: CredRow, finalState: 'revoked' | 'expired' | 'failed', ctx: CallContext, action: string, why = 'revoked'): Promise<{ fate: CredentialFate; at: Date }> {
    return tel.revoke(cred, action, (s) => revokeOnce(cred, finalState, ctx, action, why, s));
  }

  async function revokeOnce(cred: CredRow, finalState: 'revoked' | 'expired' | 'failed', ctx: CallContext, action: string, why: string, s: SpanHandle): Promise<{ fate: CredentialFate; at: Date }> {
    const issuer = deps.issuers.get(cred.issuerName);
    const now = deps.clock.now();
    try {
      if (cred.sealedRevocationHandle) {
        if (!issuer) throw new Error(`issuer instance ${cred.issuerName} is no longer configured`);
        const handle = JSON.parse(unseal(deps.kek.reveal(), cred.sealedRevocationHandle, handleAad(cred.id))) as RevocationHandle;
        await issuer.revoke(handle, ctx);
        deps.chaos?.('during-revocation');
      }
    } catch (e) {
      s.fail(e);
      const message = (e as Error).message.slice(0, 500);
      const attempt = cred.revokeAttempts + 1;
      const nextRevokeAt = new Date(now.getTime() + revokeBackoffMs(attempt));
      await deps.db.credential.update({ where: { id: cred.id }, data: { state: 'revoking', revokeAttempts: attempt, lastError: message, nextRevokeAt } });
      const loud = attempt === 1 || attempt % AUDIT_EVERY_NTH_FAILURE === 0;
      deps.logger[loud ? 'warn' : 'debug']({ credentialId: cred.id, issuer: cred.issuerName, attempt, nextRevokeAt, err: message }, 'revocation failed; the sweep retries it');
      if (loud)
        await deps.audit.append({
          event: {
            requestId: ctx.requestId, action, outcome: 'failure', clientAddress: ctx.clientAddress, reason: `revocation pending (attempt ${attempt}, next ${nextRevokeAt.toISOString()}): ${message}`,
            ...whoOf(cred), taskId: cred.taskId, credentialId: cred.id, credentialFingerprint: cred.fingerprint, target: cred.target,
          },
        });
      return { fate: 'revocation_pending', at: now };
    }
    deps.revocations.revokeToken(cred.id);
    const reason =
      finalState === 'revoked' ? `${why} at ${now.toISOString()}` : finalState === 'expired' ? `expired at ${cred.expiresAt.toISOString()}` : `issuance did not complete; cleaned up at ${now.toISOString()}`;
    await deps.audit.append({
      event: { requestId: ctx.requestId, action, outcome: 'success', clientAddress: ctx.clientAddress, reason, ...whoOf(cred), taskId: cred.taskId, credentialId: cred.id, credentialFingerprint: cred.fingerprint, target: cred.target, credentialExpiresAt: cred.expiresAt },
      credentialUpdates: [{ id: cred.id, data: { state: finalState, revokedAt: now, lastError: null } }],
    });
    return { fate: finalState, at: now };
  }

  /**
   * What the credential's issuer declared; undefined when its issuer instance is no longer configured.
   * Decides the fate at task end: revocable credentials are revoked, the others expire naturally.
   */
  function capabilitiesOf(cred: CredRow): IssuerCapabilities | undefined {
    return cred.issuerType === AGENT_TOKEN_ISSUER_TYPE ? AGENT_TOKEN_CAPABILITIES : deps.issuers.get(cred.issuerName)?.capabilities;
  }

  /** Records once, at task end, that a credential nothing can revoke stays valid until its expiry. */
  async function recordNaturalExpiry(cred: CredRow, ctx: CallContext): Promise<void> {
    await deps.audit.append({
      event: {
        requestId: ctx.requestId, action: 'credential.lapse', outcome: 'success',
        reason: `expires naturally at ${cred.expiresAt.toISOString()} (issuer ${cred.issuerName} cannot revoke it)`,
        ...whoOf(cred), taskId: cred.taskId, credentialId: cred.id, credentialFingerprint: cred.fingerprint, target: cred.target, credentialExpiresAt: cred.expiresAt,
      },
    });
  }

  /**
   * Revokes one credential at its target now, before its task ends (its holder's RFC 7009 call, an
   * operator's revocation). Only an `active` one is claimed (so a task end, the sweep or another
   * replica never revokes it twice); one past its expiry is recorded as expired. A failed upstream
   * call leaves it queued for the sweep (`revocation_pending`). An issuer that cannot revoke leaves
   * it as it is (`expires_naturally`), except agent-sts's own JWTs, which are marked revoked for
   * introspection (`offlineValidUntil`: verifiers that check them offline accept them until then).
   * Otherwise: the state it was already in. Undefined: no such credential, or `matches` refused it.
   */
  async function revokeOne(credentialId: string, why: string, ctx: CallContext, matches?: (c: CredRow) => boolean): Promise<RevokeOneResult | undefined> {
    const c = await deps.db.credential.findUnique({ where: { id: credentialId }, include: withTask });
    if (!c || (matches && !matches(c))) return undefined;
    const caps = capabilitiesOf(c);
    const offline = caps?.revokedForIntrospection === true && !caps.revocable;
    const result = (fate: RevokeOneResult['fate'], state: string): RevokeOneResult => ({
      fate,
      credential: { id: c.id, taskId: c.taskId, target: c.target, issuerName: c.issuerName, issuerType: c.issuerType, state, expiresAt: c.expiresAt },
      ...(offline && fate === 'revoked' ? { offlineValidUntil: c.expiresAt } : {}),
    });
    if (!offline && !(caps ? caps.revocable : c.sealedRevocationHandle !== null)) return result(c.state === 'active' ? 'expires_naturally' : (c.state as CredentialFate), c.state);
    if (!(await claim(c.id, ['active'], 'revoking'))) {
      // Not active (any more): report the state it is in now, which a concurrent call may just have set.
      const current = (await deps.db.credential.findUnique({ where: { id: c.id }, select: { state: true } }))?.state ?? c.state;
      return result(current as RevokeOneResult['fate'], current);
    }
    const expired = c.expiresAt <= deps.clock.now();
    const { fate } = await revokeCredential(c, expired ? 'expired' : 'revoked', ctx, expired ? 'credential.expire' : 'credential.revoke', why);
    return result(fate, fate === 'revocation_pending' ? 'revoking' : fate);
  }

  /** Ends a task: revokes every credential in it that can be revoked. Idempotent. */
  function endTask(taskId: string, reason: string, ctx: CallContext): Promise<TaskEndResult | undefined> {
    return tel.taskEnd(taskId, () => endTaskOnce(taskId, reason, ctx));
  }

  /** `mayClaim` false: report what is there without taking the ending (a call whose claim was taken over). */
  async function endTaskOnce(taskId: string, reason: string, ctx: CallContext, mayClaim = true): Promise<TaskEndResult | undefined> {
    const task = await deps.db.task.findUnique({ where: { id: taskId } });
    if (!task) return undefined;
    deps.revocations.revokeTask(taskId);
    // One call at a time ends a task (replicas, the pod watcher, the sweep's retry and the agent race
    // here): the call that moves it out of `open`, or that takes over an `ending` whose holder let
    // go or died, holds it until endClaimedUntil and keeps the claim fresh while it works.
    let claimedAt = deps.clock.now();
    const claimUntil = (from = claimedAt) => new Date(from.getTime() + REVOKE_CLAIM_MS);
    const opened =
      mayClaim &&
      task.state === 'open' &&
      (await deps.db.task.updateMany({ where: { id: taskId, state: 'open' }, data: { state: 'ending', endReason: reason, endClaimedUntil: claimUntil() } })).count === 1;
    const tookOver =
      mayClaim &&
      !opened &&
      task.state === 'ending' &&
      (await deps.db.task.updateMany({ where: { id: taskId, ...unheldEnding(claimedAt) }, data: { endClaimedUntil: claimUntil() } })).count === 1;
    const held = opened || tookOver;
    // Another call holds the ending: it revokes the credentials and ends the sub-agents' tasks, and
    // this one reports what it sees without touching them, so the two never split the work.
    const lostRace = !held && task.state !== 'ended';
    /**
     * Refreshes this call's claim (at most every half claim; `force`: now), only if it is still
     * this call's: one that stalled past its claim (a hung revocation) may have been taken over.
     * False then: the call stops and reports, and never records a second end.
     */
    const keepClaim = async (force = false): Promise<boolean> => {
      const at = deps.clock.now();
      if (!force && at.getTime() - claimedAt.getTime() < REVOKE_CLAIM_MS / 2) return true;
      const kept = (await deps.db.task.updateMany({ where: { id: taskId, state: 'ending', endClaimedUntil: claimUntil() }, data: { endClaimedUntil: claimUntil(at) } })).count === 1;
      if (kept) claimedAt = at;
      return kept;
    };
    const takenOver = () => {
      deps.logger.warn({ taskId, requestId: ctx.requestId }, 'another call took over this task ending (this one stalled past its claim); reporting what it sees');
      return endTaskOnce(taskId, reason, ctx, false);
    };
    const creds = await deps.db.credential.findMany({ where: { taskId }, orderBy: { issuedAt: 'asc' }, include: withTask });
    const now = deps.clock.now();
    const results: TaskEndResult['credentials'] = [];
    for (const c of creds) {
      const caps = capabilitiesOf(c);
      // Unknown issuer: with a handle it was revocable (revoke() then fails and stays pending); without one nothing can be revoked.
      const revocable = caps ? caps.revocable : c.sealedRevocationHandle !== null;
      let fate: CredentialFate;
      let revokedAt = c.state === 'revoked' ? c.revokedAt : null;
      if (c.state === 'revoked' || c.state === 'expired' || c.state === 'failed') fate = c.state;
      else if (lostRace) fate = revocable ? 'revocation_pending' : 'expires_naturally';
      else if (!revocable) {
        // Nothing can end it early, so its row stays as it is: valid until expiresAt, when the sweep records credential.expire.
        fate = c.expiresAt <= now ? 'expired' : 'expires_naturally';
        if (fate === 'expires_naturally' && opened && c.state === 'active') await recordNaturalExpiry(c, ctx);
      } else if (c.expiresAt <= now && !c.sealedRevocationHandle && (await claim(c.id, ['active'], 'expired'))) fate = 'expired';
      else if (await claim(c.id, ['active', 'issuing', 'revoking'], 'revoking')) {
        const r = await revokeCredential(c, 'revoked', ctx, 'credential.revoke');
        fate = r.fate;
        if (fate === 'revoked') revokedAt = r.at;
        if (!(await keepClaim())) return takenOver();
      } else fate = 'revocation_pending';
      results.push({ id: c.id, target: c.target, tokenType: c.tokenType, fingerprint: c.fingerprint, expiresAt: c.expiresAt.toISOString(), fate, revokedAt: revokedAt?.toISOString() ?? null });
    }
    // Sub-agents' tasks end with their parent (depth-first: a child's own children first).
    const children: TaskEndResult[] = [];
    if (!lostRace)
      for (const child of await deps.db.task.findMany({ where: { parentTaskId: taskId, state: { in: ['open', 'ending'] } }, select: { id: true }, orderBy: { createdAt: 'asc' } })) {
        const r = await endTask(child.id, `parent task ${taskId} ended`, ctx);
        if (r) children.push(r);
        if (!(await keepClaim())) return takenOver();
      }
    const pending = lostRace || results.some((r) => r.fate === 'revocation_pending') || children.some((c) => c.state !== 'ended');
    const state = pending ? 'ending' : 'ended';
    // Only the holder records the end: a call that lost the race must not write a second record.
    // The task only ever moves on from `ending` to `ended`, never back. It keeps the reason it was
    // ended for; a call that completes an ending begun earlier says so in its record.
    if (held) {
      if (!(await keepClaim(true))) return takenOver();
      const endReason = tookOver ? (task.endReason ?? reason) : reason;
      const recorded = tookOver && endReason !== reason ? `${endReason} (completed: ${reason})` : endReason;
      await deps.audit.append({
        event: { requestId: ctx.requestId, action: 'task.end', outcome: pending ? 'failure' : 'success', reason: recorded, taskId, providerName: task.providerName, workloadSubject: task.workloadSubject, humanSubject: task.humanSubject ?? undefined },
        // Pending: the claim is let go, so the sweep (or the agent, again) retries as soon as a revocation is due.
        taskUpdates: [{ id: taskId, data: pending ? { endClaimedUntil: null } : { state: 'ended', endedAt: deps.clock.now(), endReason, endClaimedUntil: null } }],
      });
    }
    return { taskId, state, credentials: results, children };
  }

  /**
   * One sweep pass, run only by the sweep leader (tasks/lease.ts); on start-up its first pass is the
   * recovery. In order: expired credentials, the revocation queue (due retries, and issuances left
   * `issuing` by a process that died: revoked through their planned handle, then failed), tasks
   * past their deadline or idle timeout, and tasks whose ending can now complete.
   * `issuingBefore`: `issuing` rows older than this are abandoned (default now - ISSUING_GRACE_MS);
   * `shouldContinue`: checked between steps, false stops the pass (leadership lost).
   */
  async function sweep(ctx: CallContext, opts: { issuingBefore?: Date; shouldContinue?: () => boolean } = {}): Promise<SweepResult> {
    const now = deps.clock.now();
    const more = opts.shouldContinue ?? (() => true);
    const out: SweepResult = { expired: 0, retried: 0, recovered: 0, tasksEnded: 0, pending: 0 };
    const due = await deps.db.credential.findMany({ where: { state: 'active', expiresAt: { lte: now } }, take: 500, include: withTask });
    for (const c of due) {
      if (!more()) return out;
      if (!(await claim(c.id, ['active'], 'revoking'))) continue;
      if ((await revokeCredential(c, 'expired', ctx, 'credential.expire')).fate === 'expired') out.expired++;
    }
    const abandoned = opts.issuingBefore ?? new Date(now.getTime() - ISSUING_GRACE_MS);
    const queue = await deps.db.credential.findMany({
      where: { OR: [dueRevocation(now), { state: 'issuing', issuedAt: { lt: abandoned } }] },
      orderBy: { nextRevokeAt: 'asc' },
      take: 200,
      include: withTask,
    });
    for (const c of queue) {
      if (!more()) return out;
      // Claimed again (with a fresh due time) so a concurrent task end does not race this attempt.
      const from = c.state === 'issuing' ? { state: 'issuing' } : dueRevocation(now);
      const claimed = await deps.db.credential.updateMany({ where: { id: c.id, ...from }, data: { state: 'revoking', nextRevokeAt: new Date(now.getTime() + REVOKE_CLAIM_MS) } });
      if (claimed.count !== 1) continue;
      // Never completed (fingerprint still 'pending'): nothing was handed out, so it ends as failed.
      const final = c.state === 'issuing' || c.fingerprint === 'pending' ? 'failed' : c.expiresAt <= now ? 'expired' : 'revoked';
      const action = final === 'failed' ? 'credential.recover' : final === 'expired' ? 'credential.expire' : 'credential.revoke';
      const { fate } = await revokeCredential(c, final, ctx, action);
      if (fate === 'revocation_pending') continue;
      if (final === 'failed') out.recovered++;
      else out.retried++;
    }
    if (!more()) return out;
    const ended = await tasksToEnd(now);
    for (const t of ended) {
      if (!more()) return out;
      const r = await endTask(t.id, t.reason, ctx);
      if (r?.state === 'ended') out.tasksEnded++;
    }
    out.pending = await deps.db.credential.count({ where: { state: 'revoking' } });
    await warnIfStuck(now);
    return out;
  }

  /**
   * Open tasks past their deadline or idle timeout, and `ending` tasks none of whose credentials
   * is still queued (the queue retries those with backoff; the task ends once they are done) and
   * none of whose sub-agent tasks is still ending.
   */
  async function tasksToEnd(now: Date): Promise<{ id: string; reason: string }[]> {
    const [overdue, idle, ending] = await Promise.all([
      deps.db.task.findMany({ where: { state: 'open', deadline: { lte: now } }, select: { id: true }, take: 200 }),
      deps.db.task.findMany({
        where: { state: 'open', idleTimeoutSeconds: { not: null }, OR: [{ lastActivityAt: { lte: now } }, { lastActivityAt: null }] },
        select: { id: true, idleTimeoutSeconds: true, lastActivityAt: true, createdAt: true },
        orderBy: { lastActivityAt: 'asc' },
        take: 1000,
      }),
      // Not while another call holds the ending (it is under way), nor while a revocation is queued.
      deps.db.task.findMany({
        where: { ...unheldEnding(now), credentials: { none: { state: 'revoking' } } },
        select: { id: true },
        take: 200,
      }),
    ]);
    const isIdle = (t: (typeof idle)[number]) => (t.lastActivityAt ?? t.createdAt).getTime() + t.idleTimeoutSeconds! * 1000 <= now.getTime();
    // Nor while a sub-agent's task is still ending: its own retry (or its holder) completes it first,
    // then the parent's. Retried before, the parent recorded another failed end on every pass.
    const waiting = ending.length
      ? new Set((await deps.db.task.findMany({ where: { parentTaskId: { in: ending.map((t) => t.id) }, state: 'ending' }, select: { parentTaskId: true } })).map((c) => c.parentTaskId))
      : new Set();
    return [
      ...overdue.map((t) => ({ id: t.id, reason: 'deadline' })),
      ...idle.filter(isIdle).filter((t) => !overdue.some((o) => o.id === t.id)).map((t) => ({ id: t.id, reason: 'idle timeout' })),
      ...ending.filter((t) => !waiting.has(t.id)).map((t) => ({ id: t.id, reason: 'retry' })),
    ];
  }

  let lastStuckWarning = 0;
  /** The "metric": a warn line (at most once a minute) while revocations are pending longer than STUCK_AFTER_MS. */
  async function warnIfStuck(now: Date): Promise<void> {
    if (now.getTime() - lastStuckWarning < 60_000) return;
    const { pending, oldestPendingSince } = await revocationSummary(deps.db);
    if (!oldestPendingSince || now.getTime() - oldestPendingSince.getTime() < STUCK_AFTER_MS) return;
    lastStuckWarning = now.getTime();
    deps.logger.warn({ pendingRevocations: pending, oldestPendingSince }, 'revocations are stuck: see `agent-sts revocations list` and the issuers\' health in /readyz');
  }

  return { endTask, revokeOne, sweep, pendingRevocations: (limit?: number) => pendingRevocations(deps.db, limit), revocationSummary: () => revocationSummary(deps.db) };
}
export type TaskService = ReturnType<typeof createTaskService>;
