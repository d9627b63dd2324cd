import { randomUUID } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import type { KillSwitch } from '../tasks/kill-switch.js';

/** Who the kill switch names as having blocked an identity the inventory disabled. */
export const AUTO_DISABLE_PRINCIPAL = 'inventory:auto-disable';
const BATCH = 100;

/**
 * Disables identities not seen for `afterDays` days (inventory.autoDisableAfterDays): each gets an
 * `inventory.auto-disable` audit record, then the kill switch blocks it (its exchanges are refused
 * on every replica, open tasks end; `agent-sts restore` lifts it) and its inventory row records
 * when and why. An identity restored after an auto-disable is left alone until it is seen again
 * and then goes unseen for the period once more. Run by the sweep leader only.
 */
export function createAutoDisable(deps: { db: Db; killSwitch: Pick<KillSwitch, 'kill'>; audit: Pick<AuditLog, 'append'>; clock: Clock; logger: Logger; afterDays: number }) {
  return async function run(): Promise<{ disabled: string[] }> {
    const now = deps.clock.now();
    const cutoff = new Date(now.getTime() - deps.afterDays * 86_400_000);
    const candidates = await deps.db.identity.findMany({ where: { lastSeenAt: { lt: cutoff } }, orderBy: { lastSeenAt: 'asc' }, take: BATCH * 4 });
    const blocked = new Set((await deps.db.identityBlock.findMany({ where: { subject: { in: candidates.map((c) => c.subject) } }, select: { subject: true } })).map((b) => b.subject));
    const disabled: string[] = [];
    for (const c of candidates) {
      if (disabled.length >= BATCH) break;
      // Already blocked (by a person or an earlier run), or restored since its auto-disable and not seen since.
      if (blocked.has(c.subject) || (c.disabledAt && c.disabledAt >= c.lastSeenAt)) continue;
      const kind = c.kind === 'human' ? 'human' : 'workload';
      const reason = `not seen since ${c.lastSeenAt.toISOString()} (inventory.autoDisableAfterDays: ${deps.afterDays})`;
      const requestId = `inventory-${randomUUID()}`;
      await deps.audit.append({
        event: { requestId, action: 'inventory.auto-disable', outcome: 'success', reason, providerName: c.providerName, ...(kind === 'human' ? { humanSubject: c.subject } : { workloadSubject: c.subject }) },
      });
      await deps.killSwitch.kill(c.subject, { reason: `auto-disabled: ${reason}`, kind }, { principal: AUTO_DISABLE_PRINCIPAL, requestId, now });
      await deps.db.identity.updateMany({ where: { kind: c.kind, subject: c.subject }, data: { disabledAt: now, disabledReason: reason } });
      disabled.push(c.subject);
    }
    if (disabled.length) deps.logger.warn({ count: disabled.length, afterDays: deps.afterDays }, 'inventory: identities not seen for too long were disabled (kill switch); `agent-sts restore <subject>` lifts it');
    return { disabled };
  };
}
