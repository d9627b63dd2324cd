import { describe, expect, it } from 'vitest';
import { AlwaysOffSampler, AlwaysOnSampler, BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type Sampler } from '@opentelemetry/sdk-trace-base';
import { MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import type { AuditEventInput } from '../audit/audit-event.js';
import { PolicyDenied } from '../errors/sts-errors.js';
import { createExchangeTelemetry } from './exchange-telemetry.js';
import { createTelemetry } from './otel.js';

class TestMetricReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

async function points(reader: TestMetricReader, name: string) {
  const { resourceMetrics } = await reader.collect();
  const m: MetricData | undefined = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((x) => x.descriptor.name === name);
  return (m?.dataPoints ?? []).map((p) => [p.attributes, typeof p.value === 'number' ? p.value : (p.value as { count: number }).count]);
}

const event = (): AuditEventInput => ({ requestId: 'r-1', action: 'token.exchange', outcome: 'error', providerName: 'ci' });

/** A refused credential exchange: verify, then the issuer is known, then policy says no. */
async function refusedExchange(tel: ReturnType<typeof createExchangeTelemetry>) {
  const e = event();
  await expect(
    tel.exchange(e, async () => {
      await tel.stage('provider.verify', { tokenRole: 'subject' }, (h) => h.set({ provider: 'ci', providerType: 'oidc' }));
      tel.note(e, { issuer: 'app-pg', issuerType: 'postgres' });
      await tel.stage('policy.decide', {}, () => {
        throw new PolicyDenied('not permitted');
      });
      return { taskId: 't', credential: { id: 'c', fingerprint: 'f' } };
    }),
  ).rejects.toBeInstanceOf(PolicyDenied);
}

describe('exchange telemetry', () => {
  it('metrics only (no tracer provider): counts and times without spans or a context manager', async () => {
    const reader = new TestMetricReader();
    const telemetry = createTelemetry({ meterProvider: new MeterProvider({ readers: [reader] }) });
    expect(telemetry.tracing).toBe(false);
    await refusedExchange(createExchangeTelemetry(telemetry));
    // The issuer noted during the exchange is on the count, without a trace context to carry it.
    expect(await points(reader, 'agent_sts.exchanges')).toEqual([
      [{ 'agent_sts.outcome': 'deny', 'agent_sts.provider.name': 'ci', 'agent_sts.issuer.name': 'app-pg', 'error.type': 'PolicyDenied' }, 1],
    ]);
    expect(await points(reader, 'agent_sts.stage.duration')).toEqual([
      [{ 'agent_sts.stage': 'provider.verify', 'agent_sts.provider.name': 'ci' }, 1],
      [{ 'agent_sts.stage': 'policy.decide', 'error.type': 'PolicyDenied' }, 1],
    ]);
  });

  const traced = (sampler: Sampler) => {
    const spans = new InMemorySpanExporter();
    const reader = new TestMetricReader();
    const telemetry = createTelemetry({
      tracerProvider: new BasicTracerProvider({ sampler, spanProcessors: [new SimpleSpanProcessor(spans)] }),
      meterProvider: new MeterProvider({ readers: [reader] }),
    });
    return { spans, reader, tel: createExchangeTelemetry(telemetry) };
  };

  it('a sampled exchange gets one child span per stage; the refusing stage is ERROR, the exchange is not', async () => {
    const { spans, tel } = traced(new AlwaysOnSampler());
    await refusedExchange(tel);
    const all = spans.getFinishedSpans();
    const ex = all.find((s) => s.name === 'agent_sts.exchange')!;
    expect(all.map((s) => s.name).sort()).toEqual(['agent_sts.exchange', 'agent_sts.policy.decide', 'agent_sts.provider.verify']);
    for (const s of all.filter((x) => x !== ex)) expect(s.parentSpanContext?.spanId).toBe(ex.spanContext().spanId);
    expect(ex.attributes).toMatchObject({ 'agent_sts.outcome': 'deny', 'agent_sts.issuer.name': 'app-pg', 'agent_sts.issuer.type': 'postgres', 'error.type': 'PolicyDenied' });
    expect(ex.status.code).toBe(0);
    expect(all.find((s) => s.name === 'agent_sts.policy.decide')!.status).toEqual({ code: 2, message: 'PolicyDenied' });
  });

  it('an exchange the sampler dropped makes no stage spans but is still measured', async () => {
    const { spans, reader, tel } = traced(new AlwaysOffSampler());
    await refusedExchange(tel);
    expect(spans.getFinishedSpans()).toEqual([]);
    expect((await points(reader, 'agent_sts.stage.duration')).length).toBe(2);
    expect((await points(reader, 'agent_sts.exchanges'))[0]![1]).toBe(1);
  });
});
