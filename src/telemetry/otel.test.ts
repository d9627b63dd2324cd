import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../errors/sts-errors.js';
import { otlpUrl, telemetryFromEnv, type Telemetry } from './otel.js';

const started: Telemetry[] = [];
const fromEnv = (env: NodeJS.ProcessEnv) => {
  const t = telemetryFromEnv(env);
  started.push(t);
  return t;
};
afterEach(async () => {
  await Promise.all(started.splice(0).map((t) => t.shutdown()));
});

function problemsOf(env: NodeJS.ProcessEnv): string[] {
  try {
    fromEnv(env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('telemetryFromEnv', () => {
  it('is off when nothing is set, and says how to turn it on', () => {
    const t = fromEnv({});
    expect(t.enabled).toBe(false);
    expect(t.description).toMatch(/^off \(set OTEL_EXPORTER_OTLP_ENDPOINT/);
  });

  it('OTEL_SDK_DISABLED=true wins over a configured endpoint', () => {
    const t = fromEnv({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' });
    expect(t.enabled).toBe(false);
    expect(t.description).toBe('off (OTEL_SDK_DISABLED=true)');
  });

  it('an OTLP endpoint turns on both signals, each at its spec-derived path', () => {
    const t = fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/', OTEL_METRIC_EXPORT_INTERVAL: '15000' });
    expect(t.enabled).toBe(true);
    expect(t.description).toBe(
      'traces to OTLP http://collector:4318/v1/traces (sampler parentbased_always_on); metrics to OTLP http://collector:4318/v1/metrics every 15s; service.name agent-sts',
    );
  });

  it('per-signal endpoints are used as given; OTEL_<SIGNAL>_EXPORTER=none turns one signal off', () => {
    expect(otlpUrl({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://t.example/custom', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x:4318' }, 'traces')).toBe('https://t.example/custom');
    expect(otlpUrl({}, 'metrics')).toBe('http://localhost:4318/v1/metrics');
    const t = fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none', OTEL_SERVICE_NAME: 'sts-eu' });
    expect(t.description).toBe('traces off; metrics to OTLP http://collector:4318/v1/metrics every 60s; service.name sts-eu');
    const m = fromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' });
    expect(m.description).toMatch(/^traces to OTLP http:\/\/collector:4318\/v1\/traces .*; metrics off;/);
  });

  it('console exporters and samplers from OTEL_TRACES_EXPORTER / OTEL_TRACES_SAMPLER(_ARG)', () => {
    const t = fromEnv({ OTEL_TRACES_EXPORTER: 'console', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' });
    expect(t.description).toBe('traces to stdout (sampler parentbased_traceidratio 0.25); metrics off; service.name agent-sts');
  });

  it('never shows header values or an endpoint password', () => {
    const t = fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://user:hunter2secret@collector.example:4318', OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc123secret' });
    expect(t.description).toContain('https://collector.example:4318/v1/traces');
    expect(t.description).not.toMatch(/hunter2secret|abc123secret|user/);
  });

  it('refuses bad values, all at once, naming each variable', () => {
    const problems = problemsOf({
      OTEL_TRACES_EXPORTER: 'jaeger',
      OTEL_TRACES_SAMPLER: 'sometimes',
      OTEL_METRIC_EXPORT_INTERVAL: 'soon',
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
    });
    expect(problems).toHaveLength(4);
    expect(problems[0]).toMatch(/^OTEL_TRACES_EXPORTER: unknown exporter "jaeger" \(known: otlp, console, none\)/);
    expect(problems.join('\n')).toMatch(/OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" is not supported/);
    expect(problems.join('\n')).toMatch(/OTEL_TRACES_SAMPLER: unknown sampler "sometimes"/);
    expect(problems.join('\n')).toMatch(/OTEL_METRIC_EXPORT_INTERVAL: "soon" is not a number of milliseconds/);
    expect(problemsOf({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' })[0]).toMatch(/OTEL_TRACES_SAMPLER_ARG: "2" is not a ratio/);
    expect(problemsOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' })[0]).toMatch(/is not a URL/);
  });
});
