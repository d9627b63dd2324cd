import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { SpanKind, SpanStatusCode, type Attributes } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { DataPointType, MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import { createTestPostgresDatabase, createTestSqliteUrl, dropPgRolesWithPrefix, type TestPostgresDatabase } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, startBroker, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { createTelemetry, type Telemetry } from '../../src/telemetry/otel.js';
import { credentialFingerprint, presentedTokenFingerprint, unseal } from '../../src/lib/crypto.js';

const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';
const ROLE_PREFIX = `agsotel${randomBytes(2).toString('hex')}_`;

/** The in-memory MetricReader: metrics are read when the test asks (collect()). */
class TestMetricReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

async function metrics(reader: TestMetricReader): Promise<MetricData[]> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
}

function metric(all: MetricData[], name: string): MetricData {
  const m = all.find((x) => x.descriptor.name === name);
  if (!m) throw new Error(`metric ${name} was not exported (have: ${all.map((x) => x.descriptor.name).join(', ')})`);
  return m;
}

/** The value of the data point whose attributes are exactly `attrs` (histograms: their count). */
function pointValue(m: MetricData, attrs: Attributes): number | undefined {
  const p = m.dataPoints.find((d) => JSON.stringify(sorted(d.attributes)) === JSON.stringify(sorted(attrs)));
  if (!p) return undefined;
  return m.dataPointType === DataPointType.HISTOGRAM ? (p.value as { count: number }).count : (p.value as number);
}
const sorted = (a: Attributes) => Object.fromEntries(Object.entries(a).sort(([x], [y]) => x.localeCompare(y)));

const traceparent = () => {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, header: `00-${traceId}-${spanId}-01` };
};

async function post(url: string, path: string, body: string, headers: Record<string, string>) {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers, body });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as Record<string, unknown>, text };
}

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

describe('OpenTelemetry: spans, metrics and log correlation of real exchanges', () => {
  let issuer: FakeIssuer;
  let appDb: TestPostgresDatabase;
  let group: string;
  let broker: TestBroker;
  let dropStore: () => Promise<void>;
  const spans = new InMemorySpanExporter();
  const reader = new TestMetricReader();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const meterProvider = new MeterProvider({ readers: [reader] });
  let telemetry: Telemetry;
  /** Every secret the suite sends or receives; none may appear in a span, a metric or a log line. */
  const secrets: { what: string; value: string }[] = [];

  beforeAll(async () => {
    issuer = await startFakeOidcIssuer();
    appDb = await createTestPostgresDatabase('agsts_otel_app');
    group = `agsts_otel_reader_${randomBytes(4).toString('hex')}`;
    const c = new pg.Client({ connectionString: appDb.url });
    await c.connect();
    await c.query(`CREATE ROLE ${c.escapeIdentifier(group)} NOLOGIN`);
    await c.query(`GRANT CONNECT ON DATABASE ${c.escapeIdentifier(appDb.name)} TO ${c.escapeIdentifier(group)}`);
    await c.end();
    const store = createTestSqliteUrl('agsts-otel');
    dropStore = store.drop;
    telemetry = createTelemetry({ tracerProvider, meterProvider });
    broker = await startBroker(
      {
        storage: { url: store.url },
        trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'agent-sts-test', algorithms: ['RS256'], subjectTemplate: 'test://{sub}' } }],
        credentialIssuers: [
          { name: 'tokens', type: 'agent-sts-jwt' },
          { name: 'app-pg', type: 'postgres', config: { adminUrl: { fromEnv: 'APP_DB_ADMIN_URL' }, roles: { read: group }, rolePrefix: ROLE_PREFIX } },
        ],
        targets: [
          { name: 'billing-api', resources: ['https://billing.test/'], issuer: 'tokens', scopes: ['invoices:read', 'invoices:write'] },
          { name: 'app-db', audiences: ['app-db'], issuer: 'app-pg', scopes: ['read'] },
        ],
        policy: {
          rules: [
            {
              id: 'otel-agent',
              workload: { provider: 'ci', subject: 'test://otel-agent' },
              agentToken: { maxTtl: '30m' },
              grants: [
                { target: 'billing-api', scopes: ['invoices:read'], maxTtl: '5m' },
                { target: 'app-db', scopes: ['read'], maxTtl: '10m' },
              ],
            },
          ],
        },
      },
      { env: { APP_DB_ADMIN_URL: appDb.url }, telemetry },
    );
    secrets.push(
      { what: 'KEK', value: broker.env.TEST_KEK! },
      { what: 'auditor token', value: TEST_AUDITOR_TOKEN },
      { what: 'admin token', value: TEST_ADMIN_TOKEN },
      { what: 'PostgreSQL admin URL', value: appDb.url },
    );
  });

  afterAll(async () => {
    await broker?.close();
    await tracerProvider.shutdown();
    await meterProvider.shutdown();
    await issuer?.close();
    await dropPgRolesWithPrefix(ROLE_PREFIX).catch(() => {});
    await appDb?.drop();
    if (group) await dropPgRolesWithPrefix(group).catch(() => {});
    await dropStore?.();
  });

  const named = (name: string) => spans.getFinishedSpans().filter((s) => s.name === name);
  const childrenOf = (parent: ReadableSpan) => spans.getFinishedSpans().filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId);
  const exchangeOf = (requestId: string) => {
    const found = named('agent_sts.exchange').filter((s) => s.attributes['agent_sts.request.id'] === requestId);
    expect(found).toHaveLength(1);
    return found[0]!;
  };

  let agentToken = '';
  let taskId = '';

  it('start-up exchange: a SERVER span continuing the caller\'s traceparent, one child span per stage', async () => {
    const attestation = await issuer.sign({ sub: 'otel-agent', aud: 'agent-sts-test' });
    secrets.push({ what: 'attestation', value: attestation });
    const tp = traceparent();
    const r = await post(broker.url, '/oauth2/token', form({ grant_type: TOKEN_EXCHANGE, subject_token: attestation, subject_token_type: JWT_TYPE }), {
      'content-type': 'application/x-www-form-urlencoded',
      traceparent: tp.header,
      'x-request-id': 'otel-startup-1',
    });
    expect(r.status, r.text).toBe(200);
    agentToken = r.json.access_token as string;
    taskId = r.json.task_id as string;
    secrets.push({ what: 'agent token', value: agentToken });

    const ex = exchangeOf('otel-startup-1');
    expect(ex.kind).toBe(SpanKind.SERVER);
    expect(ex.spanContext().traceId).toBe(tp.traceId);
    expect(ex.parentSpanContext).toMatchObject({ spanId: tp.spanId, isRemote: true });
    expect(ex.status.code).toBe(SpanStatusCode.UNSET);
    expect(ex.attributes).toMatchObject({
      'agent_sts.outcome': 'allow',
      'agent_sts.provider.name': 'ci',
      'agent_sts.workload.subject': 'test://otel-agent',
      'agent_sts.issuer.name': 'agent-sts',
      'agent_sts.policy.id': 'otel-agent',
      'agent_sts.task.id': taskId,
      'agent_sts.credential.fingerprint': presentedTokenFingerprint(agentToken),
    });
    expect(ex.attributes['agent_sts.credential.id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof ex.attributes['agent_sts.policy.version']).toBe('string');

    const stages = childrenOf(ex);
    expect(stages.map((s) => s.name)).toEqual(['agent_sts.provider.verify', 'agent_sts.policy.decide', 'agent_sts.issuer.issue', 'agent_sts.audit.write']);
    for (const s of stages) {
      expect(s.kind).toBe(SpanKind.INTERNAL);
      expect(s.spanContext().traceId).toBe(tp.traceId);
      expect(s.status.code).toBe(SpanStatusCode.UNSET);
    }
    expect(stages[0]!.attributes).toMatchObject({ 'agent_sts.provider.name': 'ci', 'agent_sts.provider.type': 'oidc', 'agent_sts.token.role': 'subject' });
    expect(stages[1]!.attributes).toMatchObject({ 'agent_sts.policy.id': 'otel-agent' });
    expect(stages[2]!.attributes).toMatchObject({ 'agent_sts.issuer.name': 'agent-sts', 'agent_sts.issuer.type': 'agent-token' });
  });

  it('PostgreSQL credential exchange: issuer, target and fingerprint on the span; the issue stage names the postgres issuer', async () => {
    const r = await post(
      broker.url,
      '/oauth2/token',
      form({ grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'app-db', scope: 'read', requested_token_type: PG_CREDS }),
      { 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': 'otel-pg-1' },
    );
    expect(r.status, r.text).toBe(200);
    const cred = r.json.credentials as { username: string; password: string };
    secrets.push({ what: 'PostgreSQL password', value: cred.password }, { what: 'access_token of the PostgreSQL exchange', value: r.json.access_token as string });

    const ex = exchangeOf('otel-pg-1');
    // No traceparent: the exchange span is the root of a new trace.
    expect(ex.kind).toBe(SpanKind.SERVER);
    expect(ex.parentSpanContext).toBeUndefined();
    expect(ex.attributes).toMatchObject({
      'agent_sts.outcome': 'allow',
      'agent_sts.provider.name': 'ci',
      'agent_sts.target': 'app-db',
      'agent_sts.issuer.name': 'app-pg',
      'agent_sts.issuer.type': 'postgres',
      'agent_sts.task.id': taskId,
      'agent_sts.credential.fingerprint': credentialFingerprint(cred.password),
    });
    const stages = childrenOf(ex);
    expect(stages.map((s) => s.name)).toEqual(['agent_sts.provider.verify', 'agent_sts.policy.decide', 'agent_sts.issuer.issue', 'agent_sts.audit.write']);
    expect(stages[0]!.attributes).toMatchObject({ 'agent_sts.provider.name': 'agent-sts', 'agent_sts.provider.type': 'agent-token' });
    expect(stages[2]!.attributes).toMatchObject({ 'agent_sts.issuer.name': 'app-pg', 'agent_sts.issuer.type': 'postgres' });
  });

  it('denied exchanges: outcome deny, the error class and OAuth code; the failing stage is marked, the refusal is still audited', async () => {
    const r = await post(
      broker.url,
      '/oauth2/token',
      form({ grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://billing.test/', scope: 'invoices:write' }),
      { 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': 'otel-deny-1' },
    );
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_scope');
    const ex = exchangeOf('otel-deny-1');
    expect(ex.attributes).toMatchObject({
      'agent_sts.outcome': 'deny',
      'agent_sts.issuer.name': 'tokens',
      'agent_sts.target': 'billing-api',
      'error.type': 'ScopeNotAllowed',
      'agent_sts.error.code': 'invalid_scope',
    });
    // A refusal is the broker working: the span is not an error (only server-side failures are).
    expect(ex.status.code).toBe(SpanStatusCode.UNSET);
    const stages = childrenOf(ex);
    expect(stages.map((s) => s.name)).toEqual(['agent_sts.provider.verify', 'agent_sts.policy.decide', 'agent_sts.audit.write']);
    expect(stages[1]!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'ScopeNotAllowed' });
    expect(stages[1]!.attributes).toMatchObject({ 'error.type': 'ScopeNotAllowed', 'agent_sts.policy.id': 'otel-agent' });

    // A forged attestation: the verify stage fails; its message (which names the JOSE check) is not recorded.
    const forged = `${(await issuer.sign({ sub: 'otel-agent', aud: 'agent-sts-test' })).slice(0, -6)}AAAAAA`;
    secrets.push({ what: 'forged attestation', value: forged });
    const bad = await post(broker.url, '/oauth2/token', form({ grant_type: TOKEN_EXCHANGE, subject_token: forged, subject_token_type: JWT_TYPE }), {
      'content-type': 'application/x-www-form-urlencoded',
      'x-request-id': 'otel-deny-2',
    });
    expect(bad.status).toBe(400);
    const ex2 = exchangeOf('otel-deny-2');
    expect(ex2.attributes).toMatchObject({ 'agent_sts.outcome': 'deny', 'error.type': 'SubjectTokenRejected', 'agent_sts.error.code': 'invalid_request' });
    const verify = childrenOf(ex2).find((s) => s.name === 'agent_sts.provider.verify')!;
    expect(verify.status).toEqual({ code: SpanStatusCode.ERROR, message: 'SubjectTokenRejected' });
    expect(verify.events).toEqual([]);
  });

  it('an exchange under another route (POST /v1/tasks) is an INTERNAL child of that route\'s SERVER span', async () => {
    const attestation = await issuer.sign({ sub: 'otel-agent', aud: 'agent-sts-test' });
    secrets.push({ what: 'attestation (POST /v1/tasks)', value: attestation });
    const tp = traceparent();
    const r = await post(broker.url, '/v1/tasks', JSON.stringify({ subject_token: attestation, subject_token_type: JWT_TYPE, purpose: 'otel test' }), {
      'content-type': 'application/json',
      traceparent: tp.header,
      'x-request-id': 'otel-task-open-1',
    });
    expect(r.status, r.text).toBe(201);
    secrets.push({ what: 'agent token (POST /v1/tasks)', value: r.json.agent_token as string });
    await vi.waitFor(() => expect(named('POST /v1/tasks')).toHaveLength(1));
    const http = named('POST /v1/tasks')[0]!;
    expect(http.kind).toBe(SpanKind.SERVER);
    expect(http.parentSpanContext).toMatchObject({ spanId: tp.spanId, isRemote: true });
    expect(http.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.route': '/v1/tasks', 'http.response.status_code': 201 });
    const ex = exchangeOf('otel-task-open-1');
    expect(ex.kind).toBe(SpanKind.INTERNAL);
    expect(ex.parentSpanContext?.spanId).toBe(http.spanContext().spanId);
  });

  it('task end: DELETE span -> agent_sts.task.end -> one agent_sts.credential.revoke per revocable credential', async () => {
    const tp = traceparent();
    const res = await fetch(`${broker.url}/v1/tasks/${taskId}`, { method: 'DELETE', headers: { authorization: `Bearer ${agentToken}`, traceparent: tp.header } });
    expect(res.status).toBe(200);
    const receipt = (await res.json()) as { state: string; credentials: { fate: string }[] };
    expect(receipt.state).toBe('ended');
    expect(receipt.credentials.map((c) => c.fate)).toEqual(['revoked', 'revoked']);

    await vi.waitFor(() => expect(named('DELETE /v1/tasks/:id')).toHaveLength(1));
    const http = named('DELETE /v1/tasks/:id')[0]!;
    expect(http.kind).toBe(SpanKind.SERVER);
    expect(http.spanContext().traceId).toBe(tp.traceId);
    expect(http.attributes).toMatchObject({ 'http.route': '/v1/tasks/:id', 'http.response.status_code': 200 });
    const end = childrenOf(http).filter((s) => s.name === 'agent_sts.task.end');
    expect(end).toHaveLength(1);
    expect(end[0]!.attributes).toMatchObject({ 'agent_sts.task.id': taskId });
    const revokes = childrenOf(end[0]!).filter((s) => s.name === 'agent_sts.credential.revoke');
    expect(revokes.map((s) => [s.attributes['agent_sts.issuer.name'], s.attributes['agent_sts.revocation.fate']]).sort()).toEqual([
      ['agent-sts', 'revoked'],
      ['app-pg', 'revoked'],
    ]);
    for (const s of revokes) {
      expect(s.attributes).toMatchObject({ 'agent_sts.task.id': taskId, 'agent_sts.action': 'credential.revoke' });
      // agent-sts's own token carries its jti first; the PostgreSQL login is opaque.
      expect(s.attributes['agent_sts.credential.fingerprint']).toMatch(s.attributes['agent_sts.issuer.name'] === 'agent-sts' ? /^jwt:[0-9a-f-]{36}:sha256:[0-9a-f]{64}$/ : /^sha256:[0-9a-f]{64}$/);
      expect(s.status.code).toBe(SpanStatusCode.UNSET);
    }
  });

  it('metrics: exchanges by outcome/provider/issuer/error, stage and exchange durations, revocations, store gauges', async () => {
    const all = await metrics(reader);
    const exchanges = metric(all, 'agent_sts.exchanges');
    expect(exchanges.dataPointType).toBe(DataPointType.SUM);
    // start-up (token endpoint) + start-up (POST /v1/tasks) by ci; the PostgreSQL login; the two refusals.
    expect(pointValue(exchanges, { 'agent_sts.outcome': 'allow', 'agent_sts.provider.name': 'ci', 'agent_sts.issuer.name': 'agent-sts' })).toBe(2);
    expect(pointValue(exchanges, { 'agent_sts.outcome': 'allow', 'agent_sts.provider.name': 'ci', 'agent_sts.issuer.name': 'app-pg' })).toBe(1);
    expect(pointValue(exchanges, { 'agent_sts.outcome': 'deny', 'agent_sts.provider.name': 'ci', 'agent_sts.issuer.name': 'tokens', 'error.type': 'ScopeNotAllowed' })).toBe(1);
    expect(pointValue(exchanges, { 'agent_sts.outcome': 'deny', 'error.type': 'SubjectTokenRejected' })).toBe(1);
    expect(exchanges.dataPoints.reduce((n, p) => n + (p.value as number), 0)).toBe(5);

    const duration = metric(all, 'agent_sts.exchange.duration');
    expect(duration.descriptor.unit).toBe('s');
    expect(pointValue(duration, { 'agent_sts.outcome': 'allow', 'agent_sts.provider.name': 'ci', 'agent_sts.issuer.name': 'app-pg' })).toBe(1);

    const stages = metric(all, 'agent_sts.stage.duration');
    expect(stages.descriptor.unit).toBe('s');
    expect(stages.dataPointType).toBe(DataPointType.HISTOGRAM);
    expect(pointValue(stages, { 'agent_sts.stage': 'issuer.issue', 'agent_sts.issuer.name': 'app-pg' })).toBe(1);
    expect(pointValue(stages, { 'agent_sts.stage': 'issuer.issue', 'agent_sts.issuer.name': 'agent-sts' })).toBe(2);
    expect(pointValue(stages, { 'agent_sts.stage': 'provider.verify', 'agent_sts.provider.name': 'ci' })).toBe(2);
    expect(pointValue(stages, { 'agent_sts.stage': 'provider.verify', 'agent_sts.provider.name': 'agent-sts' })).toBe(2);
    expect(pointValue(stages, { 'agent_sts.stage': 'policy.decide', 'error.type': 'ScopeNotAllowed' })).toBe(1);
    expect(pointValue(stages, { 'agent_sts.stage': 'audit.write' })).toBe(5);
    const pgIssue = stages.dataPoints.find((p) => p.attributes['agent_sts.issuer.name'] === 'app-pg')!.value as { sum: number; buckets: { boundaries: number[] } };
    expect(pgIssue.sum).toBeGreaterThan(0);
    expect(pgIssue.sum).toBeLessThan(10); // seconds, not milliseconds
    expect(pgIssue.buckets.boundaries).toContain(0.005);

    const revocations = metric(all, 'agent_sts.revocations');
    expect(pointValue(revocations, { 'agent_sts.issuer.name': 'app-pg', 'agent_sts.revocation.fate': 'revoked' })).toBe(1);
    expect(pointValue(revocations, { 'agent_sts.issuer.name': 'agent-sts', 'agent_sts.revocation.fate': 'revoked' })).toBe(1);

    // Gauges read the store at collection time: the open task of POST /v1/tasks holds one live agent token.
    const live = metric(all, 'agent_sts.credentials.live');
    expect(live.dataPointType).toBe(DataPointType.GAUGE);
    expect(pointValue(live, { 'agent_sts.issuer.name': 'agent-sts' })).toBe(1);
    expect(pointValue(metric(all, 'agent_sts.revocations.pending'), {})).toBe(0);
    expect(pointValue(metric(all, 'agent_sts.revocations.failed'), {})).toBe(0);
  });

  it('log lines inside a request carry its request id, trace_id and span_id', async () => {
    const ex = exchangeOf('otel-startup-1');
    const lines = broker.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.requestId === 'otel-startup-1');
    const request = lines.find((l) => l.msg === 'request');
    expect(request).toMatchObject({ trace_id: ex.spanContext().traceId, span_id: ex.spanContext().spanId, status: 200 });
    // Lines written by the stages carry the stage span's id, within the same trace.
    const inTrace = broker.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.trace_id === ex.spanContext().traceId);
    expect(inTrace.length).toBeGreaterThanOrEqual(1);
    for (const l of inTrace) expect(l.requestId).toBe('otel-startup-1');
  });

  it('no secret of the suite appears in any span, metric attribute or log line', async () => {
    await broker.composed.audit.drain();
    // The broker's signing keys and the KEK-sealed revocation handles are secrets too.
    const kek = Buffer.from(broker.env.TEST_KEK!, 'base64');
    for (const k of await broker.composed.db.signingKey.findMany()) {
      secrets.push({ what: `signing key ${k.kid}`, value: (JSON.parse(unseal(kek, k.sealedPrivateKey, `signing-key:${k.kid}`)) as { d: string }).d });
      secrets.push({ what: `sealed signing key ${k.kid}`, value: k.sealedPrivateKey });
    }
    for (const c of await broker.composed.db.credential.findMany({ where: { sealedRevocationHandle: { not: null } } })) {
      const handle = unseal(kek, c.sealedRevocationHandle!, `revocation-handle:${c.id}`);
      secrets.push({ what: `sealed revocation handle ${c.id}`, value: c.sealedRevocationHandle! });
      // The role name is an identifier (it may appear); the handle as a whole is what must not.
      secrets.push({ what: `revocation handle ${c.id}`, value: handle });
    }
    expect(secrets.length).toBeGreaterThanOrEqual(14);
    for (const s of secrets) expect(s.value.length, s.what).toBeGreaterThanOrEqual(16);

    const spanText = JSON.stringify(
      spans.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status, links: s.links, resource: s.resource.attributes })),
    );
    const metricText = JSON.stringify((await metrics(reader)).map((m) => ({ name: m.descriptor.name, points: m.dataPoints.map((p) => p.attributes) })));
    const logText = broker.logs.join('\n');
    // The haystacks are real: they hold what the suite produced (fingerprints, ids, names).
    expect(spans.getFinishedSpans().length).toBeGreaterThanOrEqual(25);
    expect(spanText).toContain(presentedTokenFingerprint(agentToken));
    expect(metricText).toContain('app-pg');
    expect(logText).toContain('otel-pg-1');
    for (const s of secrets) {
      expect(spanText.includes(s.value), `${s.what} in a span`).toBe(false);
      expect(metricText.includes(s.value), `${s.what} in a metric`).toBe(false);
      expect(logText.includes(s.value), `${s.what} in a log line`).toBe(false);
    }
  });
});
