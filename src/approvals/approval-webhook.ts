import { createHmac } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import type { Secret } from '../core/secret.js';
import type { Logger } from '../log/logger.js';

/** The webhook body: what is asked and where to decide it. Never a token. */
export interface ApprovalNotice {
  approval_id: string;
  workload_subject: string;
  human_subject: string | null;
  target: string;
  scopes: string[];
  policy_id: string;
  approvers: string[];
  expires_at: string;
  decide_url: string;
}

export const SIGNATURE_HEADER = 'x-agent-sts-signature';
export const WEBHOOK_TIMEOUT_MS = 3000;

/** `sha256=<hex HMAC-SHA256 of the exact body>`, the value of X-Agent-STS-Signature. */
export const signatureOf = (secret: string, body: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

/** Where a signed webhook goes; shared by the approval and signal webhooks. */
export interface WebhookTarget {
  url: string;
  /** Resolved per call, so a rotated secret file is picked up. */
  secret?: () => Secret<string>;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

/**
 * POSTs `notice` as JSON (signed with X-Agent-STS-Signature when a secret is set), bounded by a
 * timeout, no redirects. Never throws: resolves to why it failed, or undefined when delivered.
 */
export async function postWebhook(target: WebhookTarget, notice: unknown): Promise<string | undefined> {
  try {
    const body = JSON.stringify(notice);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (target.secret) headers[SIGNATURE_HEADER] = signatureOf(target.secret().reveal(), body);
    const res = await (target.fetch ?? fetch)(target.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(target.timeoutMs ?? WEBHOOK_TIMEOUT_MS), redirect: 'error' });
    await res.body?.cancel().catch(() => {});
    return res.ok ? undefined : `webhook answered HTTP ${res.status}`;
  } catch (e) {
    return (e as Error).name === 'TimeoutError' ? 'webhook timed out' : `webhook unreachable: ${(e as Error).message}`;
  }
}

/**
 * A notifier that POSTs the notice as JSON to the configured URL (signed when a secret is set),
 * with a bounded timeout. It never throws: a failure is logged at warn and audited
 * (`approval.notify`, outcome failure); the approval request exists either way.
 */
export function createApprovalWebhook(deps: WebhookTarget & { logger: Logger; audit: Pick<AuditLog, 'append'> }) {
  return async function notify(notice: ApprovalNotice, ctx: { requestId: string }): Promise<void> {
    const failure = await postWebhook(deps, notice);
    if (failure) deps.logger.warn({ requestId: ctx.requestId, approvalId: notice.approval_id, reason: failure }, 'approval webhook failed');
    await deps.audit
      .append({
        event: {
          requestId: ctx.requestId, action: 'approval.notify', outcome: failure ? 'failure' : 'success', reason: failure ? `approval ${notice.approval_id}: ${failure}` : `approval ${notice.approval_id}: webhook notified`,
          workloadSubject: notice.workload_subject, humanSubject: notice.human_subject ?? undefined, target: notice.target, policyId: notice.policy_id,
        },
      })
      .catch((e: unknown) => deps.logger.error({ requestId: ctx.requestId, err: { message: (e as Error).message } }, 'could not audit an approval notification'));
  };
}
