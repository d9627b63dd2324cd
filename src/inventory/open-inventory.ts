import type { Meter } from '@opentelemetry/api';
import type { AuditLog } from '../audit/audit-log.js';
import type { AppConfig } from '../config/load-config.js';
import { resolveSecretRef } from '../config/secret-ref.js';
import { parseDuration, type Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { PolicyEngine } from '../policy/policy-engine.js';
import type { Db } from '../storage/prisma-client.js';
import type { KillSwitch } from '../tasks/kill-switch.js';
import { createSignalMetrics } from '../signals/signal-metrics.js';
import { createSignalWebhook } from '../signals/signal-webhook.js';
import { createAccessReview } from './access-review.js';
import { createAutoDisable } from './auto-disable.js';
import { createExchangeMonitor, ruleOwners } from './exchange-monitor.js';
import { createInventoryService } from './inventory-service.js';
import { createInventoryStore } from './inventory-store.js';
import { createInventoryView } from './inventory-view.js';

/** Reading the inventory (API and CLI): the service and access reviews over the store and the policy in force. */
export function openInventoryReader(deps: { db: Db; clock: Clock; engine: () => PolicyEngine; beforeRead?: () => Promise<unknown> }, config: Pick<AppConfig, 'inventory'>) {
  const service = createInventoryService({ ...deps, settings: config.inventory });
  const review = createAccessReview({ ...deps, inventory: service });
  return { service, review };
}

/**
 * The server's inventory and signals from config (`inventory`, `signals`): the in-memory view the
 * exchange reports to (monitor), its flushes, the reader for the API, the webhook, and the
 * auto-disable job when `inventory.autoDisableAfterDays` is set.
 */
export function openInventory(
  deps: { db: Db; clock: Clock; logger: Logger; env: NodeJS.ProcessEnv; fetch?: typeof fetch; engine: () => PolicyEngine; audit: Pick<AuditLog, 'append'>; killSwitch: Pick<KillSwitch, 'kill'>; meter: Meter },
  config: Pick<AppConfig, 'inventory' | 'signals'>,
) {
  const flushIntervalMs = parseDuration(config.inventory.flushInterval) * 1000;
  const s = config.signals;
  const view = createInventoryView({
    store: createInventoryStore(deps.db),
    clock: deps.clock,
    logger: deps.logger,
    maxIdentities: config.inventory.maxIdentitiesInMemory,
    flushIntervalMs,
    signals: { denialBurst: { threshold: s.denialBurst.threshold, windowMs: parseDuration(s.denialBurst.window) * 1000 }, rateSpike: s.rateSpike },
  });
  const hook = s.webhook;
  const secretRef = hook?.secret;
  // Resolved once at start-up so a missing variable fails loudly, then per call (rotated files).
  if (secretRef) resolveSecretRef(secretRef, deps.env, 'signals.webhook.secret');
  const webhook = hook
    ? createSignalWebhook({ url: hook.url, queueSize: hook.queueSize, fetch: deps.fetch, logger: deps.logger, secret: secretRef && (() => resolveSecretRef(secretRef, deps.env, 'signals.webhook.secret')) })
    : undefined;
  const monitor = createExchangeMonitor({ view, metrics: createSignalMetrics(deps.meter), webhook, ownersOf: ruleOwners(deps.engine) });
  const reader = openInventoryReader({ db: deps.db, clock: deps.clock, engine: deps.engine, beforeRead: () => view.flush() }, config);
  const afterDays = config.inventory.autoDisableAfterDays;
  const autoDisable = afterDays ? createAutoDisable({ db: deps.db, killSwitch: deps.killSwitch, audit: deps.audit, clock: deps.clock, logger: deps.logger, afterDays }) : undefined;
  return { view, monitor, webhook, flushIntervalMs, autoDisable, ...reader };
}
export type Inventory = ReturnType<typeof openInventory>;
