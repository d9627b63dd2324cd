import type { AuditLog } from '../audit/audit-log.js';
import type { AppConfig } from '../config/load-config.js';
import { resolveSecretRef } from '../config/secret-ref.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import { createApprovalService } from './approval-service.js';
import { createApprovalWebhook } from './approval-webhook.js';

/** The approval service from config (`approvals.webhook`); used by the server and the CLI. */
export function openApprovals(
  deps: { db: Db; audit: Pick<AuditLog, 'append'>; clock: Clock; logger: Logger; env: NodeJS.ProcessEnv; fetch?: typeof fetch; issuerUrl: () => string },
  config: Pick<AppConfig, 'approvals'>,
) {
  const hook = config.approvals.webhook;
  const secretRef = hook?.secret;
  // Resolved once at start-up so a missing variable fails loudly, then per call (rotated files).
  if (secretRef) resolveSecretRef(secretRef, deps.env, 'approvals.webhook.secret');
  const notify = hook
    ? createApprovalWebhook({
        url: hook.url,
        secret: secretRef && (() => resolveSecretRef(secretRef, deps.env, 'approvals.webhook.secret')),
        fetch: deps.fetch,
        logger: deps.logger,
        audit: deps.audit,
      })
    : undefined;
  return createApprovalService({ db: deps.db, audit: deps.audit, clock: deps.clock, logger: deps.logger, notify, issuerUrl: deps.issuerUrl });
}
