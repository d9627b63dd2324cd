import type { AuditEventInput } from '../audit/audit-event.js';
import type { BlendedIdentity } from '../core/types.js';
import type { PolicyEngine } from '../policy/policy-engine.js';
import { networkOf } from '../signals/network-prefix.js';
import type { Signal, SignalMetrics } from '../signals/signal-metrics.js';
import type { SignalWebhook } from '../signals/signal-webhook.js';
import type { InventoryView, SeenIdentity } from './inventory-view.js';

/** The workload attribute that names its owner, when a trust provider maps one (e.g. from a token claim). */
export const OWNER_ATTRIBUTE = 'owner';

/** What the exchange learns from the monitor, before it writes its audit record. */
export interface Observed {
  /** Signals for the record's `flags` (already counted and sent to the webhook). */
  flags: Signal[];
  /** Call once the audit record is written: counts the credential as used. */
  committed(): void;
}

export interface ExchangeMonitor {
  /**
   * Records an exchange whose identity was verified (allowed, denied or failed) in the inventory
   * view and returns its signals. Synchronous and in memory: never delays the exchange.
   * `targetCredential`: the record is for a target credential (not an agent token).
   */
  observe(identity: BlendedIdentity, event: AuditEventInput, o: { now: Date; targetCredential: boolean }): Observed;
}

/** Owners of a policy rule (v2 document owners), cached per policy version. */
export function ruleOwners(engine: () => Pick<PolicyEngine, 'version' | 'model'>) {
  let cache: { version: string; owners: Map<string, readonly string[]> } | undefined;
  return (ruleId: string): readonly string[] | undefined => {
    const e = engine();
    if (cache?.version !== e.version) cache = { version: e.version, owners: new Map(e.model.rules.filter((r) => r.owners?.length).map((r) => [r.id, r.owners!])) };
    return cache.owners.get(ruleId);
  };
}

export function workloadSeen(identity: BlendedIdentity, owner?: string): SeenIdentity {
  const w = identity.workload;
  return { kind: 'workload', subject: w.subject, provider: w.provider, details: { providerType: w.providerType, attributes: w.attributes }, owner };
}

export function humanSeen(identity: BlendedIdentity): SeenIdentity | undefined {
  const h = identity.human;
  if (!h) return undefined;
  return { kind: 'human', subject: h.subject, provider: h.provider, details: { issuer: h.issuer, email: h.email, groups: h.groups, roles: h.roles } };
}

export function createExchangeMonitor(deps: {
  view: Pick<InventoryView, 'observe' | 'recordUse'>;
  metrics: SignalMetrics;
  webhook?: Pick<SignalWebhook, 'send'>;
  ownersOf: (ruleId: string) => readonly string[] | undefined;
}): ExchangeMonitor {
  const none = () => {};
  return {
    observe(identity, event, o) {
      const outcome = event.outcome === 'allow' ? 'allow' : event.outcome === 'deny' ? 'deny' : 'error';
      // Owner: the workload's own `owner` attribute, else the owners of the policy document whose rule allowed it.
      const owners = outcome === 'allow' && event.policyId ? deps.ownersOf(event.policyId) : undefined;
      const owner = identity.workload.attributes[OWNER_ATTRIBUTE] || owners?.join(', ') || undefined;
      const target = outcome === 'allow' && o.targetCredential ? event.target : undefined;
      const flags = deps.view.observe({ workload: workloadSeen(identity, owner), human: humanSeen(identity), at: o.now, clientAddress: event.clientAddress, outcome, target });
      if (flags.length) {
        deps.metrics.count(flags);
        deps.webhook?.send({
          request_id: event.requestId,
          time: o.now.toISOString(),
          signals: flags,
          workload_subject: identity.workload.subject,
          provider: identity.workload.provider,
          human_subject: identity.human?.subject ?? null,
          target: event.target ?? null,
          outcome: event.outcome,
          client_network: networkOf(event.clientAddress) ?? null,
        });
      }
      if (!target) return { flags, committed: none };
      const scopes = event.grantedScope ? event.grantedScope.split(' ') : [];
      return { flags, committed: () => deps.view.recordUse(identity.workload.subject, target, scopes, o.now) };
    },
  };
}
