import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Secret } from '../core/secret.js';
import type { CallContext, RevocationHandle } from '../core/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import { UNBOUNDED_TTL_SECONDS, type CredentialIssuer, type IssuerCapabilities } from '../credential-issuers/credential-issuer.js';
import type { RevocationList } from './revocation-list.js';
import { seal, unseal } from '../lib/crypto.js';

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
}

export interface TaskServiceDeps {
  db: Db;
  clock: Clock;
  logger: Logger;
  kek: Secret<Buffer>;
  audit: Pick<AuditLog, 'append'>;
  issuers: { get(name: string): CredentialIssuer | undefined };
  revocations: Pick<RevocationList, 'revokeTask' | 'revokeToken'>;
}

type CredRow = Awaited<ReturnType<Db['credential']['findMany']>>[number] & {
  task?: { providerName: string; workloadSubject: string; humanSubject: string | null };
};
const withTask = { task: { select: { providerName: true, workloadSubject: true, humanSubject: true } } } as const;
/** Who the credential was issued to, for its lifecycle audit records. */
const whoOf = (c: CredRow) => ({ providerName: c.task?.providerName, workloadSubject: c.task?.workloadSubject, humanSubject: c.task?.humanSubject ?? undefined });

/**
 * Task end and the background sweep. Every state change of a credential is claimed with a
 * conditional update (state X -> Y only if still X), so two replicas never revoke the same
 * credential twice and a crash leaves a state the next sweep can resume from.
 */
export function createTaskService(deps: TaskServiceDeps) {
  async function claim(id: string, from: string[], to: string): Promise<boolean> {
    const r = await deps.db.credential.updateMany({ where: { id, state: { in: from } }, data: { state: to } });
    return r.count === 1;
  }

  /** Revokes one credential upstream (if needed) and records the outcome (`at`: when). Never throws. */
  async function revokeCredential(cred: CredRow, finalState: 'revoked' | 'expired' | 'failed', ctx: CallContext, action: string): Promise<{ fate: CredentialFate; at: Date }> {
    const issuer = deps.issuers.get(cred.issuerName);
    const now = deps.clock.now();
    try {
      if (cred.sealedRevocationHandle) {
        if (!issuer) throw new Error(`issuer instance ${cred.issuerName} is no longer configured`);
        const handle = JSON.parse(unseal(deps.kek.reveal(), cred.sealedRevocationHandle, handleAad(cred.id))) as RevocationHandle;
        await issuer.revoke(handle, ctx);
      }
    } catch (e) {
      const message = (e as Error).message.slice(0, 500);
      await deps.db.credential.update({ where: { id: cred.id }, data: { state: 'revoking', revokeAttempts: { increment: 1 }, lastError: message } });
      deps.logger.warn({ credentialId: cred.id, issuer: cred.issuerName, err: message }, 'revocation failed; the sweep retries it');
      await deps.audit.append({
        event: { requestId: ctx.requestId, action, outcome: 'failure', reason: `revocation pending: ${message}`, ...whoOf(cred), taskId: cred.taskId, credentialId: cred.id, credentialFingerprint: cred.fingerprint, target: cred.target },
      });
      return { fate: 'revocation_pending', at: now };
    }
    deps.revocations.revokeToken(cred.id);
    const reason =
      finalState === 'revoked' ? `revoked at ${now.toISOString()}` : finalState === 'expired' ? `expired at ${cred.expiresAt.toISOString()}` : `issuance did not complete; cleaned up at ${now.toISOString()}`;
    await deps.audit.append({
      event: { requestId: ctx.requestId, action, outcome: 'success', reason, ...whoOf(cred), taskId: cred.taskId, credentialId: cred.id, credentialFingerprint: cred.fingerprint, target: cred.target, credentialExpiresAt: cred.expiresAt },
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

  /** Ends a task: revokes every credential in it that can be revoked. Idempotent. */
  async function endTask(taskId: string, reason: string, ctx: CallContext): Promise<TaskEndResult | undefined> {
    const task = await deps.db.task.findUnique({ where: { id: taskId } });
    if (!task) return undefined;
    deps.revocations.revokeTask(taskId);
    // Whoever moves the task out of `open` writes the one-off records (replicas and retries race here).
    const ending = task.state === 'open' && (await deps.db.task.updateMany({ where: { id: taskId, state: 'open' }, data: { state: 'ending' } })).count === 1;
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
      else if (!revocable) {
        // Nothing can end it early, so its row stays as it is: valid until expiresAt, when the sweep records credential.expire.
        fate = c.expiresAt <= now ? 'expired' : 'expires_naturally';
        if (fate === 'expires_naturally' && ending && c.state === 'active') await recordNaturalExpiry(c, ctx);
      } else if (c.expiresAt <= now && !c.sealedRevocationHandle && (await claim(c.id, ['active'], 'expired'))) fate = 'expired';
      else if (await claim(c.id, ['active', 'issuing', 'revoking'], 'revoking')) {
        const r = await revokeCredential(c, 'revoked', ctx, 'credential.revoke');
        fate = r.fate;
        if (fate === 'revoked') revokedAt = r.at;
      } else fate = 'revocation_pending';
      results.push({ id: c.id, target: c.target, tokenType: c.tokenType, fingerprint: c.fingerprint, expiresAt: c.expiresAt.toISOString(), fate, revokedAt: revokedAt?.toISOString() ?? null });
    }
    const pending = results.some((r) => r.fate === 'revocation_pending');
    const state = pending ? 'ending' : 'ended';
    if (task.state !== 'ended') {
      await deps.audit.append({
        event: { requestId: ctx.requestId, action: 'task.end', outcome: pending ? 'failure' : 'success', reason, taskId, providerName: task.providerName, workloadSubject: task.workloadSubject, humanSubject: task.humanSubject ?? undefined },
        taskUpdates: [{ id: taskId, data: pending ? { state: 'ending' } : { state: 'ended', endedAt: deps.clock.now(), endReason: reason } }],
      });
    }
    return { taskId, state, credentials: results };
  }

  /** One sweep pass: expired credentials, retried revocations, stale issuances, tasks past deadline. */
  async function sweep(ctx: CallContext): Promise<{ expired: number; retried: number; tasksEnded: number }> {
    const now = deps.clock.now();
    let expired = 0;
    let retried = 0;
    let tasksEnded = 0;
    const due = await deps.db.credential.findMany({ where: { state: 'active', expiresAt: { lte: now } }, take: 500, include: withTask });
    for (const c of due) {
      if (!(await claim(c.id, ['active'], 'revoking'))) continue;
      if ((await revokeCredential(c, 'expired', ctx, 'credential.expire')).fate === 'expired') expired++;
    }
    const stale = new Date(now.getTime() - 5 * 60_000);
    const stuck = await deps.db.credential.findMany({
      where: { OR: [{ state: 'revoking' }, { state: 'issuing', issuedAt: { lt: stale } }] },
      take: 200,
      include: withTask,
    });
    for (const c of stuck) {
      // A crash between "row written" and "issuance completed": undo whatever may exist upstream.
      const final = c.state === 'issuing' ? 'failed' : c.expiresAt <= now ? 'expired' : 'revoked';
      if (c.state === 'issuing' && !(await claim(c.id, ['issuing'], 'revoking'))) continue;
      const { fate } = await revokeCredential(c, final, ctx, 'credential.revoke');
      if (fate !== 'revocation_pending') retried++;
    }
    const overdue = await deps.db.task.findMany({ where: { OR: [{ state: 'open', deadline: { lte: now } }, { state: 'ending' }] }, select: { id: true, state: true }, take: 200 });
    for (const t of overdue) {
      const r = await endTask(t.id, t.state === 'open' ? 'deadline' : 'retry', ctx);
      if (r?.state === 'ended') tasksEnded++;
    }
    return { expired, retried, tasksEnded };
  }

  return { endTask, sweep };
}
export type TaskService = ReturnType<typeof createTaskService>;
