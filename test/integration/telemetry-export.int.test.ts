import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startBrokerProcess, writeProcessConfig } from '../support/broker-process.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface Received {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A stand-in OpenTelemetry collector: accepts OTLP/HTTP JSON posts and keeps them. */
async function startCollector(): Promise<{ url: string; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe('OTLP export configured by the standard OTEL_* variables', () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let issuer: FakeIssuer;
  let broker: TestBroker;
  let dropStore: () => Promise<void>;
  const collectorKey = `otlp-key-${randomBytes(12).toString('hex')}`;

  beforeAll(async () => {
    collector = await startCollector();
    issuer = await startFakeOidcIssuer();
    const store = createTestSqliteUrl('agsts-otlp');
    dropStore = store.drop;
    broker = await startBroker(
      {
        storage: { url: store.url },
        trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'agent-sts-test', algorithms: ['RS256'], subjectTemplate: 'test://{sub}' } }],
        policy: { rules: [{ id: 'startup', workload: { provider: 'ci', subject: 'test://exporter-agent' }, agentToken: { maxTtl: '10m' }, grants: [] }] },
      },
      {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
          OTEL_EXPORTER_OTLP_HEADERS: `x-collector-key=${collectorKey}`,
          OTEL_SERVICE_NAME: 'agent-sts-export-test',
          OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=ci,service.namespace=sts',
          OTEL_METRIC_EXPORT_INTERVAL: '60000',
        },
      },
    );
  });

  afterAll(async () => {
    await issuer?.close();
    await collector?.close();
    await dropStore?.();
  });

  it('an exchange reaches the collector as spans and metrics (flushed at shutdown), with the resource and headers from the environment', async () => {
    expect(broker.composed.telemetry.enabled).toBe(true);
    expect(broker.composed.telemetry.description).toBe(
      `traces to OTLP ${collector.url}/v1/traces (sampler parentbased_always_on); metrics to OTLP ${collector.url}/v1/metrics every 60s; service.name agent-sts-export-test`,
    );
    const attestation = await issuer.sign({ sub: 'exporter-agent', aud: 'agent-sts-test' });
    const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: attestation, subject_token_type: JWT_TYPE });
    expect(r.status, r.text).toBe(200);
    // close() shuts telemetry down, which exports the batched spans and a last metric collection.
    await broker.close();

    const traces = collector.received.filter((x) => x.path === '/v1/traces');
    const metrics = collector.received.filter((x) => x.path === '/v1/metrics');
    expect(traces.length).toBeGreaterThanOrEqual(1);
    expect(metrics.length).toBeGreaterThanOrEqual(1);
    for (const x of [...traces, ...metrics]) {
      expect(x.headers['x-collector-key']).toBe(collectorKey);
      expect(x.headers['content-type']).toMatch(/^application\/json/);
    }
    const spanNames = traces.flatMap((t) => [...t.body.matchAll(/"name":"(agent_sts\.[a-z._]+)"/g)].map((m) => m[1]));
    expect(new Set(spanNames)).toEqual(new Set(['agent_sts.exchange', 'agent_sts.provider.verify', 'agent_sts.policy.decide', 'agent_sts.issuer.issue', 'agent_sts.audit.write']));
    const resource = JSON.parse(traces[0]!.body) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] } }[] };
    const attrs = Object.fromEntries(resource.resourceSpans[0]!.resource.attributes.map((a) => [a.key, a.value.stringValue]));
    expect(attrs).toMatchObject({ 'service.name': 'agent-sts-export-test', 'deployment.environment.name': 'ci', 'service.namespace': 'sts', 'telemetry.sdk.language': 'nodejs' });
    expect(attrs['service.instance.id']).toMatch(/^[0-9a-f-]{36}$/);
    const metricText = metrics.map((m) => m.body).join('\n');
    for (const name of ['agent_sts.exchanges', 'agent_sts.exchange.duration', 'agent_sts.stage.duration', 'agent_sts.credentials.live', 'agent_sts.revocations.pending'])
      expect(metricText).toContain(`"name":"${name}"`);

    // Neither the attestation nor the collector's key reached the exported data or the log.
    const exported = collector.received.map((x) => x.body).join('\n');
    expect(exported).not.toContain(attestation);
    expect(exported).not.toContain(r.json.access_token as string);
    expect(exported).not.toContain(collectorKey);
    expect(broker.logs.join('\n')).not.toContain(collectorKey);
  });

  it('`serve` says where telemetry goes in one line, and refuses a bad OTEL_* value naming it (exit 2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agsts-otel-serve-'));
    try {
      const config = await writeProcessConfig(dir, 'serve', { storage: { url: `file:${join(dir, 'store.db')}` }, keys: { kek: { fromEnv: 'AGENT_STS_KEK' } } });
      const kek = randomBytes(32).toString('base64');
      const on = await startBrokerProcess(config, { AGENT_STS_KEK: kek, OTEL_EXPORTER_OTLP_ENDPOINT: collector.url.replace('http://', 'http://probe:secret-pw@'), OTEL_SERVICE_NAME: 'sts-serve-test' });
      await vi.waitFor(() => expect(on.output()).toMatch(/\ntelemetry: .*\n/));
      await on.stop();
      expect(on.output()).toContain(`telemetry: traces to OTLP ${collector.url}/v1/traces (sampler parentbased_always_on); metrics to OTLP ${collector.url}/v1/metrics every 60s; service.name sts-serve-test\n`);
      expect(on.output()).not.toContain('secret-pw');

      const off = await startBrokerProcess(config, { AGENT_STS_KEK: kek });
      await vi.waitFor(() => expect(off.output()).toMatch(/\ntelemetry: .*\n/));
      await off.stop();
      expect(off.output()).toMatch(/\ntelemetry: off \(set OTEL_EXPORTER_OTLP_ENDPOINT/);

      const bad = startBrokerProcess(config, { AGENT_STS_KEK: kek, OTEL_TRACES_EXPORTER: 'zipkin' });
      await expect(bad).rejects.toThrow(/broker exited \(2\) before listening:\n.*OTEL_TRACES_EXPORTER: unknown exporter "zipkin" \(known: otlp, console, none\)/s);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
