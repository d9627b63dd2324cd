import { describe, expect, it } from 'vitest';
import { MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import type { Db } from '../storage/prisma-client.js';
import { createLogger } from '../log/logger.js';
import { observeStore } from './metrics.js';
import { Secret } from '../core/secret.js';
import type { CredentialIssuer } from '../credential-issuers/credential-issuer.js';
import { runDoctor } from '../tasks/doctor.js';
import { createTelemetry } from './otel.js';

class TestMetricReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

/** A store whose credential counts the test sets; counts the queries it answers. */
function fakeStore() {
  const state = { live: [{ issuerName: 'app-pg', _count: { _all: 3 } }, { issuerName: 'agent-sts', _count: { _all: 5 } }], pending: 2, failed: 1, fail: false, queries: 0 };
  const credential = {
    groupBy: async () => {
      state.queries++;
      if (state.fail) throw new Error('connection refused by postgres://admin:topsecret@db');
      return state.live;
    },
    count: async (q: { where: { revokeAttempts?: unknown } }) => (q.where.revokeAttempts ? state.failed : state.pending),
  };
  return { state, db: { credential } as unknown as Db };
}

async function gauges(reader: TestMetricReader): Promise<Record<string, [Record<string, unknown>, number][]>> {
  const { resourceMetrics } = await reader.collect();
  const all: MetricData[] = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
  return Object.fromEntries(all.map((m) => [m.descriptor.name, m.dataPoints.map((p) => [p.attributes, p.value as number] as [Record<string, unknown>, number])]));
}

function setup(cacheMs: number) {
  const reader = new TestMetricReader();
  const provider = new MeterProvider({ readers: [reader] });
  const store = fakeStore();
  const lines: string[] = [];
  const logger = createLogger({ level: 'warn', destination: { write: (l: string) => void lines.push(l) } });
  observeStore(provider.getMeter('agent-sts'), { db: store.db, clock: { now: () => new Date() }, logger }, { cacheMs });
  return { reader, store, lines };
}

describe('store gauges', () => {
  it('report live credentials by issuer and the revocation queue, read at collection time', async () => {
    const { reader } = setup(0);
    const g = await gauges(reader);
    expect(g['agent_sts.credentials.live']).toEqual([
      [{ 'agent_sts.issuer.name': 'app-pg' }, 3],
      [{ 'agent_sts.issuer.name': 'agent-sts' }, 5],
    ]);
    expect(g['agent_sts.revocations.pending']).toEqual([[{}, 2]]);
    expect(g['agent_sts.revocations.failed']).toEqual([[{}, 1]]);
  });

  it('one snapshot serves every collection within the cache time; a later one queries again', async () => {
    const cached = setup(60_000);
    await gauges(cached.reader);
    cached.store.state.pending = 7;
    expect((await gauges(cached.reader))['agent_sts.revocations.pending']).toEqual([[{}, 2]]);
    expect(cached.store.state.queries).toBe(1);

    const fresh = setup(0);
    await gauges(fresh.reader);
    fresh.store.state.pending = 7;
    expect((await gauges(fresh.reader))['agent_sts.revocations.pending']).toEqual([[{}, 7]]);
    expect(fresh.store.state.queries).toBe(2);
  });

  it('an issuer whose last credential ended reports 0 instead of vanishing', async () => {
    const { reader, store } = setup(0);
    await gauges(reader);
    store.state.live = [{ issuerName: 'agent-sts', _count: { _all: 1 } }];
    expect((await gauges(reader))['agent_sts.credentials.live']).toEqual([
      [{ 'agent_sts.issuer.name': 'app-pg' }, 0],
      [{ 'agent_sts.issuer.name': 'agent-sts' }, 1],
    ]);
  });

  it('a store failure skips the gauges for that collection, logs the error class only, and is retried next time', async () => {
    const { reader, store, lines } = setup(60_000);
    store.state.fail = true;
    const g = await gauges(reader);
    expect(g['agent_sts.credentials.live'] ?? []).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/could not read credential counts/);
    expect(lines[0]).not.toMatch(/topsecret/);
    store.state.fail = false;
    expect((await gauges(reader))['agent_sts.revocations.pending']).toEqual([[{}, 2]]);
  });
});

describe('agent_sts.doctor.orphans', () => {
  it('counts the orphans doctor finds per issuer, 0 for a clean one', async () => {
    const reader = new TestMetricReader();
    const telemetry = createTelemetry({ meterProvider: new MeterProvider({ readers: [reader] }) });
    const issuer = (name: string, accounts: string[]) =>
      ({ name, type: 'postgres', listManaged: async () => accounts.map((role) => ({ name: role, handle: { role } })) }) as unknown as CredentialIssuer;
    const db = { credential: { findMany: async () => [] } } as unknown as Db;
    const reports = await runDoctor(
      { db, clock: { now: () => new Date() }, kek: new Secret(Buffer.alloc(32)), audit: { append: async () => ({}) as never }, issuers: [issuer('pg-a', ['ags_1', 'ags_2']), issuer('pg-b', [])], telemetry },
      { fix: false, ctx: { requestId: 'doctor-test', now: new Date() } },
    );
    expect(reports.map((r) => r.orphans.length)).toEqual([2, 0]);
    const { resourceMetrics } = await reader.collect();
    const orphans = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === 'agent_sts.doctor.orphans')!;
    expect(orphans.dataPoints.map((p) => [p.attributes, p.value])).toEqual([
      [{ 'agent_sts.issuer.name': 'pg-a', 'agent_sts.issuer.type': 'postgres' }, 2],
      [{ 'agent_sts.issuer.name': 'pg-b', 'agent_sts.issuer.type': 'postgres' }, 0],
    ]);
  });
});
