import type { AuditLog } from '../audit/audit-log.js';
import type { AuditEventInput } from '../audit/audit-event.js';
import type { BlendedIdentity, CallContext } from '../core/types.js';
import { AuthorizationPending, PolicyDenied } from '../errors/sts-errors.js';
import type { Clock } from '../lib/clock.js';
import { sha256Hex } from '../lib/crypto.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import type { ApprovalNotice } from './approval-webhook.js';

export type ApprovalState = 'pending' | 'approved' | 'denied' | 'expired';

export interface ApprovalRecord {
  id: string;
  state: string;
  requestKey: string;
  workloadSubject: string;
  humanSubject: string | null;
  target: string;
  scopes: string;
  policyId: string;
  approvers: string;
  createdAt: Date;
  expiresAt: Date;
  decidedBy: string | null;
  decidedAt: Date | null;
  reason: string | null;
}

/** What the exchange asks the gate about: the identity, the decided grant and its obligation. */
export interface ApprovalGateInput {
  identity: BlendedIdentity;
  target: string;
  grantedScopes: string[];
  /** The deciding rule(s): the request key changes when a different rule grants. */
  policyId: string;
  approval: { approvers: string[]; windowSeconds: number };
}

/** Who decides, as the admin API / CLI authenticated them. */
export interface Decider {
  /** `bootstrap:<name>`, `cli:<os user>` or `<provider>:<subject>`. */
  principal: string;
  /** Groups of a person verified by a trust provider (role mapping); empty otherwise. */
  groups: string[];
  requestId: string;
  clientAddress?: string;
  now: Date;
}

/** A decision that may not be made; `status` is the admin API's answer (403, 404, 409). */
export class ApprovalDecisionRefused extends Error {
  constructor(
    readonly status: 403 | 404 | 409,
    readonly title: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApprovalDecisionRefused';
  }
}

/**
 * The request key: SHA-256 over who asks (workload, person), for what (target, sorted scopes) and
 * under which rule — never over tokens, so a retry with a fresh token finds the same approval.
 */
export function approvalRequestKey(i: { workloadSubject: string; humanSubject?: string; target: string; scopes: string[]; policyId: string }): string {
  return sha256Hex(JSON.stringify(['agent-sts approval v1', i.workloadSubject, i.humanSubject ?? null, i.target, [...i.scopes].sort(), i.policyId]));
}

/**
 * The id of the `generation`-th approval request of a request key (0 for its first, 1 once that
 * one is over, ...). Deterministic, so replicas creating "the next request" for one key at once
 * all try to insert the same primary key: one insert wins, the others fail on it and answer with
 * the winner's request (no second pending row, no second webhook), without a schema change.
 */
export function approvalIdFor(requestKey: string, generation: number): string {
  return `apr_${sha256Hex(`agent-sts approval id v1\n${requestKey}\n${generation}`).slice(0, 24)}`;
}

/** Prisma's unique-constraint violation (P2002), or the driver's (SQLite / PostgreSQL) when not wrapped. */
function isUniqueViolation(e: unknown): boolean {
  const x = e as { code?: unknown; cause?: { code?: unknown; originalCode?: unknown } };
  return x.code === 'P2002' || x.code === '23505' || x.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || x.cause?.originalCode === '23505';
}

/** Attempts of one gate() to create the next request when others keep winning and losing it at once (in practice 1–2). */
const CREATE_ATTEMPTS = 5;

/** The subject part of a principal (`github:octocat` -> `octocat`; `bootstrap:alice` -> `alice`). */
const subjectOf = (principal: string) => principal.slice(principal.indexOf(':') + 1);

/**
 * May this principal decide? Approver entries name principals exactly (`bootstrap:alice`,
 * `cli:alice`, `people:alice@example.com`), a subject verified by a trust provider (`alice@example.com`,
 * matched against the subject of a provider principal only — never of a bootstrap token or OS user),
 * or a group (`group:sre-leads`, matched against the groups of a person verified by a trust provider).
 */
export function isApprover(approvers: string[], d: Pick<Decider, 'principal' | 'groups'>): boolean {
  const providerPrincipal = !d.principal.startsWith('bootstrap:') && !d.principal.startsWith('cli:');
  return approvers.some((a) => {
    if (a.startsWith('group:')) return providerPrincipal && d.groups.includes(a.slice('group:'.length));
    if (a === d.principal) return true;
    return providerPrincipal && !a.includes(':') && a === subjectOf(d.principal);
  });
}

export interface ApprovalServiceDeps {
  db: Db;
  audit: Pick<AuditLog, 'append'>;
  clock: Clock;
  logger: Logger;
  /** Sends the webhook (never throws, never awaited by the exchange); absent: no webhook configured. */
  notify?: (notice: ApprovalNotice, ctx: { requestId: string }) => Promise<void>;
  /** Public base URL of the broker (for `decide_url`). */
  issuerUrl: () => string;
}

export function createApprovalService(deps: ApprovalServiceDeps) {
  const db = deps.db;

  /**
   * The exchange's gate: returns the id of an approved, unexpired approval for this request (the
   * exchange then issues), or throws AuthorizationPending (pending; a new request is created when
   * none is live) or PolicyDenied (denied).
   */
  async function gate(input: ApprovalGateInput, ctx: CallContext): Promise<string> {
    const { identity } = input;
    const requestKey = approvalRequestKey({ workloadSubject: identity.workload.subject, humanSubject: identity.human?.subject, target: input.target, scopes: input.grantedScopes, policyId: input.policyId });
    const now = ctx.now;
    // Lapsed requests are marked so the admin list shows them as expired.
    await db.policyApproval.updateMany({ where: { requestKey, state: { in: ['pending', 'approved'] }, expiresAt: { lte: now } }, data: { state: 'expired' } });
    const expiresAt = new Date(now.getTime() + input.approval.windowSeconds * 1000);
    const scopes = [...input.grantedScopes].sort();
    let row: ApprovalRecord | undefined;
    for (let attempt = 1; !row; attempt++) {
      const live = await db.policyApproval.findFirst({ where: { requestKey, state: { in: ['pending', 'approved', 'denied'] }, expiresAt: { gt: now } }, orderBy: { createdAt: 'desc' } });
      if (live?.state === 'approved') return live.id;
      if (live?.state === 'denied')
        throw new PolicyDenied('the approval request was denied', { detail: { reasons: [`approval ${live.id} denied by ${live.decidedBy}: ${live.reason ?? ''}`] } });
      if (live) throw new AuthorizationPending(live.id, { detail: { reasons: [`approval ${live.id} is pending`] } });

      // None live: create the key's next request. Its id is fixed by the key and how many of the key's
      // requests are over (rows are never deleted), so a replica racing us for it collides on the primary
      // key — also one that created it after our read above: it is live, so it is not counted here.
      const generation = await db.policyApproval.count({ where: { requestKey, OR: [{ state: 'expired' }, { expiresAt: { lte: now } }] } });
      try {
        row = await db.policyApproval.create({
          data: {
            id: approvalIdFor(requestKey, generation), state: 'pending', requestKey, workloadSubject: identity.workload.subject, humanSubject: identity.human?.subject ?? null,
            target: input.target, scopes: scopes.join(' '), policyId: input.policyId, approvers: JSON.stringify(input.approval.approvers), createdAt: now, expiresAt,
          },
        });
      } catch (e) {
        // Lost the race: the winner's row is committed; the next round answers with it.
        if (!isUniqueViolation(e) || attempt >= CREATE_ATTEMPTS) throw e;
      }
    }
    const id = row.id;
    await deps.audit.append({
      event: {
        ...baseEvent(row, ctx.requestId, ctx.clientAddress),
        action: 'approval.request',
        outcome: 'success',
        providerName: identity.workload.provider,
        reason: `approval ${id} requested (approvers ${input.approval.approvers.join(', ')}; expires ${expiresAt.toISOString()})`,
      },
    });
    if (deps.notify) {
      const notice: ApprovalNotice = {
        approval_id: id, workload_subject: row.workloadSubject, human_subject: row.humanSubject, target: row.target, scopes, policy_id: row.policyId,
        approvers: input.approval.approvers, expires_at: expiresAt.toISOString(), decide_url: `${deps.issuerUrl()}/v1/admin/approvals/${id}`,
      };
      // Never blocks the exchange: the approval exists whether or not the webhook is reached.
      void deps.notify(notice, { requestId: ctx.requestId });
    }
    throw new AuthorizationPending(id, { detail: { reasons: [`approval ${id} requested`] } });
  }

  async function list(filter: { state?: ApprovalState; now?: Date } = {}): Promise<ApprovalRecord[]> {
    const now = filter.now ?? deps.clock.now();
    // A lapsed pending/approved row is reported as expired even before a retry marks it.
    const rows = await db.policyApproval.findMany({ orderBy: { createdAt: 'asc' }, take: 1000 });
    return rows.map((r) => effective(r, now)).filter((r) => !filter.state || r.state === filter.state);
  }

  async function get(id: string, now = deps.clock.now()): Promise<ApprovalRecord | undefined> {
    const r = await db.policyApproval.findUnique({ where: { id } });
    return r ? effective(r, now) : undefined;
  }

  /** Approves or denies a pending, unexpired request; audited (`approval.approve` / `approval.deny`). */
  async function decide(id: string, verdict: 'approve' | 'deny', reason: string, d: Decider): Promise<ApprovalRecord> {
    const r = await get(id, d.now);
    if (!r) throw new ApprovalDecisionRefused(404, 'approval not found', `no approval request ${id}`);
    if (r.state !== 'pending') throw new ApprovalDecisionRefused(409, 'not pending', `approval request ${id} is ${r.state}; only a pending request can be decided`);
    const refusal = refusalFor(r, d);
    if (refusal) {
      await deps.audit.append({ event: { ...baseEvent(r, d.requestId, d.clientAddress), action: `approval.${verdict}`, outcome: 'deny', reason: `refused for ${d.principal}: ${refusal}` } });
      throw new ApprovalDecisionRefused(403, 'forbidden', refusal);
    }
    const state = verdict === 'approve' ? 'approved' : 'denied';
    // Conditional update: of two deciders at once, one wins and the other gets 409.
    const n = await db.policyApproval.updateMany({ where: { id, state: 'pending', expiresAt: { gt: d.now } }, data: { state, decidedBy: d.principal, decidedAt: d.now, reason } });
    if (n.count !== 1) throw new ApprovalDecisionRefused(409, 'not pending', `approval request ${id} was decided or expired meanwhile`);
    await deps.audit.append({ event: { ...baseEvent(r, d.requestId, d.clientAddress), action: `approval.${verdict}`, outcome: 'success', reason: `${state} by ${d.principal}: ${reason}` } });
    return { ...r, state, decidedBy: d.principal, decidedAt: d.now, reason };
  }

  return { gate, list, get, decide };
}
export type ApprovalService = ReturnType<typeof createApprovalService>;

/** Why this decider may not decide this request, or undefined. */
function refusalFor(r: ApprovalRecord, d: Decider): string | undefined {
  const subject = subjectOf(d.principal);
  // Nobody approves their own request: not the person it acts for, not the agent itself.
  if (subject === r.humanSubject || subject === r.workloadSubject) return 'a request cannot be decided by the identity it is for';
  const approvers = JSON.parse(r.approvers) as string[];
  if (!isApprover(approvers, d)) return 'this principal is not an approver of this request';
  return undefined;
}

function effective(r: ApprovalRecord, now: Date): ApprovalRecord {
  return (r.state === 'pending' || r.state === 'approved') && r.expiresAt.getTime() <= now.getTime() ? { ...r, state: 'expired' } : r;
}

function baseEvent(r: Pick<ApprovalRecord, 'workloadSubject' | 'humanSubject' | 'target' | 'scopes' | 'policyId'>, requestId: string, clientAddress?: string): Omit<AuditEventInput, 'action' | 'outcome'> {
  return { requestId, clientAddress, workloadSubject: r.workloadSubject, humanSubject: r.humanSubject ?? undefined, target: r.target, requestedScope: r.scopes || undefined, policyId: r.policyId };
}

/** The admin API's / CLI's JSON view of an approval request. */
export function approvalJson(r: ApprovalRecord) {
  return {
    id: r.id,
    state: r.state,
    workload_subject: r.workloadSubject,
    human_subject: r.humanSubject,
    target: r.target,
    scopes: r.scopes ? r.scopes.split(' ') : [],
    policy_id: r.policyId,
    approvers: JSON.parse(r.approvers) as string[],
    created_at: r.createdAt.toISOString(),
    expires_at: r.expiresAt.toISOString(),
    decided_by: r.decidedBy,
    decided_at: r.decidedAt?.toISOString() ?? null,
    reason: r.reason,
  };
}
