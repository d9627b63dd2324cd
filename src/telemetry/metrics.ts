import type { Counter, Histogram, Meter } from '@opentelemetry/api';
import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import { ATTR } from './spans.js';

/**
 * Bucket boundaries (seconds) of the duration histograms: the SDK's default boundaries are meant
 * for milliseconds; an exchange takes ~1 ms in memory, tens of ms with an upstream call.
 */
export const DURATION_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The instruments of meter `agent-sts` (names and attributes are listed in README "Observability"). */
export interface Instruments {
  /** `agent_sts.exchanges`: outcome (allow|deny|error), provider, issuer, error.type. */
  exchanges: Counter;
  /** `agent_sts.exchange.duration` (s): outcome, provider, issuer. */
  exchangeDuration: Histogram;
  /** `agent_sts.stage.duration` (s): stage, provider (verify), issuer (issue), error.type. */
  stageDuration: Histogram;
  /** `agent_sts.revocations`: revocation attempts by issuer and fate. */
  revocations: Counter;
  /** `agent_sts.doctor.orphans`: accounts at a target no credential owns, found by `agent-sts doctor`. */
  doctorOrphans: Counter;
}

export function createInstruments(meter: Meter): Instruments {
  const seconds = (description: string) => ({ description, unit: 's', advice: { explicitBucketBoundaries: DURATION_BUCKETS_S } });
  return {
    exchanges: meter.createCounter('agent_sts.exchanges', { description: 'Token exchanges, by outcome, trust provider, credential issuer and error', unit: '{exchange}' }),
    exchangeDuration: meter.createHistogram('agent_sts.exchange.duration', seconds('Duration of one token exchange, from the parsed request to the audited answer')),
    stageDuration: meter.createHistogram('agent_sts.stage.duration', seconds('Duration of one exchange stage: provider.verify, policy.decide, issuer.issue, audit.write')),
    revocations: meter.createCounter('agent_sts.revocations', { description: 'Revocation attempts, by credential issuer and fate (revoked, expired, failed, revocation_pending)', unit: '{credential}' }),
    doctorOrphans: meter.createCounter('agent_sts.doctor.orphans', { description: 'Accounts at a target that no credential owns, found by agent-sts doctor', unit: '{account}' }),
  };
}

interface StoreSnapshot {
  live: Map<string, number>;
  pending: number;
  failed: number;
}

/**
 * Observable gauges read from the store at collection time, never per request:
 * `agent_sts.credentials.live` (active, unexpired credentials by issuer),
 * `agent_sts.revocations.pending` (the revocation queue) and `agent_sts.revocations.failed` (queued
 * revocations whose last attempt failed). One snapshot (three indexed queries) serves every reader
 * for `cacheMs`, so several readers or a short export interval do not multiply the queries.
 */
export function observeStore(meter: Meter, deps: { db: Db; clock: Clock; logger: Logger }, opts: { cacheMs?: number } = {}): void {
  const cacheMs = opts.cacheMs ?? 10_000;
  const live = meter.createObservableGauge('agent_sts.credentials.live', { description: 'Active, unexpired credentials, by credential issuer', unit: '{credential}' });
  const pending = meter.createObservableGauge('agent_sts.revocations.pending', { description: 'Credentials waiting in the revocation queue', unit: '{credential}' });
  const failed = meter.createObservableGauge('agent_sts.revocations.failed', { description: 'Queued revocations whose last attempt failed (retried with backoff)', unit: '{credential}' });
  // An issuer whose last credential ended reports 0 rather than disappearing from the series.
  const seenIssuers = new Set<string>();
  let cached: { at: number; snapshot: Promise<StoreSnapshot> } | undefined;

  async function query(): Promise<StoreSnapshot> {
    const now = deps.clock.now();
    const [groups, queued, failing] = await Promise.all([
      deps.db.credential.groupBy({ by: ['issuerName'], where: { state: 'active', expiresAt: { gt: now } }, _count: { _all: true } }),
      deps.db.credential.count({ where: { state: 'revoking' } }),
      deps.db.credential.count({ where: { state: 'revoking', revokeAttempts: { gt: 0 } } }),
    ]);
    return { live: new Map(groups.map((g) => [g.issuerName, g._count._all])), pending: queued, failed: failing };
  }

  function snapshot(): Promise<StoreSnapshot> {
    const now = Date.now();
    if (!cached || now - cached.at >= cacheMs) {
      const entry = { at: now, snapshot: query() };
      entry.snapshot.catch(() => {
        if (cached === entry) cached = undefined;
      });
      cached = entry;
    }
    return cached.snapshot;
  }

  meter.addBatchObservableCallback(
    async (result) => {
      let s: StoreSnapshot;
      try {
        s = await snapshot();
      } catch (e) {
        deps.logger.warn({ err: { name: (e as Error).name } }, 'telemetry: could not read credential counts from the store; the gauges skip this collection');
        return;
      }
      for (const name of s.live.keys()) seenIssuers.add(name);
      for (const name of seenIssuers) result.observe(live, s.live.get(name) ?? 0, { [ATTR.issuer]: name });
      result.observe(pending, s.pending);
      result.observe(failed, s.failed);
    },
    [live, pending, failed],
  );
}
