import { randomUUID } from 'node:crypto';
import {
  context,
  createNoopMeter,
  diag,
  DiagLogLevel,
  ProxyTracerProvider,
  type Meter,
  type MeterProvider as MeterProviderApi,
  type TextMapPropagator,
  type Tracer,
  type TracerProvider as TracerProviderApi,
} from '@opentelemetry/api';
import { parseKeyPairsIntoRecord, W3CTraceContextPropagator } from '@opentelemetry/core';
import type * as ContextAsyncHooks from '@opentelemetry/context-async-hooks';
import type * as Resources from '@opentelemetry/resources';
import type * as SdkTrace from '@opentelemetry/sdk-trace-base';
import type * as SdkMetrics from '@opentelemetry/sdk-metrics';
import type * as OtlpTraces from '@opentelemetry/exporter-trace-otlp-http';
import type * as OtlpMetrics from '@opentelemetry/exporter-metrics-otlp-http';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { ConfigError } from '../errors/sts-errors.js';
import type { Logger } from '../log/logger.js';
import { createInstruments, type Instruments } from './metrics.js';
import { lazyModule } from '../lib/lazy-module.js';

// The SDK and its exporters load only when telemetry is configured (most of a second otherwise spent at every start).
const contextAsyncHooks = lazyModule<typeof ContextAsyncHooks>('@opentelemetry/context-async-hooks');
const resources = lazyModule<typeof Resources>('@opentelemetry/resources');
const sdkTrace = lazyModule<typeof SdkTrace>('@opentelemetry/sdk-trace-base');
const sdkMetrics = lazyModule<typeof SdkMetrics>('@opentelemetry/sdk-metrics');
const otlpTraces = lazyModule<typeof OtlpTraces>('@opentelemetry/exporter-trace-otlp-http');
const otlpMetrics = lazyModule<typeof OtlpMetrics>('@opentelemetry/exporter-metrics-otlp-http');

/** Instrumentation scope of every span and instrument. */
export const SCOPE = 'agent-sts';

/**
 * Traces and metrics of one broker. When `enabled` is false every helper is a pass-through: no
 * span, no context switch, no measurement (the default: nothing is configured).
 */
export interface Telemetry {
  readonly enabled: boolean;
  /** Traces are on: spans, W3C trace context and trace ids in log lines (metrics may be on without them). */
  readonly tracing: boolean;
  readonly tracer: Tracer;
  readonly meter: Meter;
  readonly propagator: TextMapPropagator;
  readonly instruments: Instruments;
  /** Where traces and metrics go, for the `serve` start-up line. Never a header value or a URL's password. */
  readonly description: string;
  /** Exports what is buffered, then stops (bounded: a dead collector does not hold up shutdown). */
  shutdown(): Promise<void>;
}

const SHUTDOWN_BOUND_MS = 5_000;
let contextManagerInstalled = false;

/**
 * Spans find their parent through the active context, so that a stage started deep in the
 * exchange is a child of the exchange span: one process-wide AsyncLocalStorage context manager,
 * installed only when telemetry is on (it costs a little on every promise).
 */
function installContextManager(): void {
  if (contextManagerInstalled) return;
  context.setGlobalContextManager(new (contextAsyncHooks().AsyncLocalStorageContextManager)().enable());
  contextManagerInstalled = true;
}

/** Telemetry over given providers (tests use in-memory exporters; see telemetryFromEnv for `serve`). */
export function createTelemetry(opts: {
  tracerProvider?: TracerProviderApi;
  meterProvider?: MeterProviderApi;
  description?: string;
  shutdown?: () => Promise<void>;
}): Telemetry {
  const tracing = opts.tracerProvider !== undefined;
  if (tracing) installContextManager();
  const meter = opts.meterProvider?.getMeter(SCOPE) ?? createNoopMeter();
  return {
    enabled: true,
    tracing,
    tracer: (opts.tracerProvider ?? new ProxyTracerProvider()).getTracer(SCOPE),
    meter,
    propagator: new W3CTraceContextPropagator(),
    instruments: createInstruments(meter),
    description: opts.description ?? 'in-process providers',
    shutdown: opts.shutdown ?? (async () => {}),
  };
}

export function disabledTelemetry(description = 'off'): Telemetry {
  const meter = createNoopMeter();
  return {
    enabled: false,
    tracing: false,
    tracer: new ProxyTracerProvider().getTracer(SCOPE),
    meter,
    propagator: new W3CTraceContextPropagator(),
    instruments: createInstruments(meter),
    description,
    shutdown: async () => {},
  };
}

type Signal = 'traces' | 'metrics';
const EXPORTERS = ['otlp', 'console', 'none'] as const;
const SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;

const present = (v: string | undefined): v is string => typeof v === 'string' && v.trim() !== '';

/** The OTLP/HTTP URL of one signal, as the OpenTelemetry specification derives it. */
export function otlpUrl(env: NodeJS.ProcessEnv, signal: Signal): string {
  const specific = env[`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`];
  if (present(specific)) return specific.trim();
  const base = present(env.OTEL_EXPORTER_OTLP_ENDPOINT) ? env.OTEL_EXPORTER_OTLP_ENDPOINT.trim() : 'http://localhost:4318';
  return `${base.replace(/\/+$/, '')}/v1/${signal}`;
}

/** OTEL_<SIGNAL>_EXPORTER, or `otlp` when an OTLP endpoint is configured, else nothing (agent-sts's default: off). */
function exportersFor(env: NodeJS.ProcessEnv, signal: Signal, problems: string[]): string[] {
  const name = `OTEL_${signal.toUpperCase()}_EXPORTER`;
  const raw = env[name];
  if (!present(raw)) {
    const endpoint = present(env.OTEL_EXPORTER_OTLP_ENDPOINT) || present(env[`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`]);
    return endpoint ? ['otlp'] : [];
  }
  const names = [...new Set(raw.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean))];
  for (const n of names) if (!(EXPORTERS as readonly string[]).includes(n)) problems.push(`${name}: unknown exporter "${n}" (known: ${EXPORTERS.join(', ')})`);
  return names.includes('none') ? [] : names.filter((n) => n !== 'none');
}

/** The sampler the environment names (`make`: built only when traces are exported). */
function samplerFrom(env: NodeJS.ProcessEnv, problems: string[]): { make: () => SdkTrace.Sampler; label: string } {
  const name = present(env.OTEL_TRACES_SAMPLER) ? env.OTEL_TRACES_SAMPLER.trim().toLowerCase() : 'parentbased_always_on';
  let ratio = 1;
  if (name.endsWith('traceidratio') && present(env.OTEL_TRACES_SAMPLER_ARG)) {
    ratio = Number(env.OTEL_TRACES_SAMPLER_ARG);
    if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) problems.push(`OTEL_TRACES_SAMPLER_ARG: "${env.OTEL_TRACES_SAMPLER_ARG}" is not a ratio between 0 and 1`);
  }
  switch (name) {
    case 'always_on':
      return { make: () => new (sdkTrace().AlwaysOnSampler)(), label: name };
    case 'always_off':
      return { make: () => new (sdkTrace().AlwaysOffSampler)(), label: name };
    case 'traceidratio':
      return { make: () => new (sdkTrace().TraceIdRatioBasedSampler)(ratio), label: `${name} ${ratio}` };
    case 'parentbased_always_on':
      return { make: () => new (sdkTrace().ParentBasedSampler)({ root: new (sdkTrace().AlwaysOnSampler)() }), label: name };
    case 'parentbased_always_off':
      return { make: () => new (sdkTrace().ParentBasedSampler)({ root: new (sdkTrace().AlwaysOffSampler)() }), label: name };
    case 'parentbased_traceidratio':
      return { make: () => new (sdkTrace().ParentBasedSampler)({ root: new (sdkTrace().TraceIdRatioBasedSampler)(ratio) }), label: `${name} ${ratio}` };
    default:
      problems.push(`OTEL_TRACES_SAMPLER: unknown sampler "${name}" (known: ${SAMPLERS.join(', ')})`);
      return { make: () => new (sdkTrace().AlwaysOffSampler)(), label: name };
  }
}

function headersFor(env: NodeJS.ProcessEnv, signal: Signal): Record<string, string> {
  return { ...parseKeyPairsIntoRecord(env.OTEL_EXPORTER_OTLP_HEADERS), ...parseKeyPairsIntoRecord(env[`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_HEADERS`]) };
}

/** A URL for a log line: without user name and password (an endpoint may carry them). */
function shownUrl(url: string, problems: string[], variable: string): string | undefined {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    problems.push(`${variable}: "${url.replace(/\/\/[^/@]*@/, '//…@')}" is not a URL`);
    return undefined;
  }
}

/**
 * Telemetry from the standard OpenTelemetry environment variables (`serve`). Off unless asked
 * for: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER (otlp, console, none; comma lists allowed) or,
 * without them, an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or the per-signal one) turns on OTLP
 * for that signal. OTEL_SDK_DISABLED=true turns everything off. Bad values are configuration
 * errors (the broker does not start), like any other configuration mistake.
 * The OTLP exporters also honour OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}{TIMEOUT,COMPRESSION,CERTIFICATE,...}
 * and the batch processor OTEL_BSP_*, read by the OpenTelemetry SDK itself.
 */
export function telemetryFromEnv(env: NodeJS.ProcessEnv): Telemetry {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return disabledTelemetry('off (OTEL_SDK_DISABLED=true)');
  const problems: string[] = [];
  const traces = exportersFor(env, 'traces', problems);
  const metrics = exportersFor(env, 'metrics', problems);
  const protocol = env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim();
  if (present(protocol) && protocol !== 'http/json' && protocol !== 'http/protobuf' && [...traces, ...metrics].includes('otlp'))
    problems.push(`OTEL_EXPORTER_OTLP_PROTOCOL: "${protocol}" is not supported (agent-sts exports OTLP over HTTP: http/json)`);
  const { make: makeSampler, label: samplerLabel } = samplerFrom(env, problems);
  const intervalRaw = env.OTEL_METRIC_EXPORT_INTERVAL;
  const interval = present(intervalRaw) ? Number(intervalRaw) : 60_000;
  if (!Number.isInteger(interval) || interval < 100) problems.push(`OTEL_METRIC_EXPORT_INTERVAL: "${intervalRaw}" is not a number of milliseconds (at least 100)`);
  const timeoutRaw = env.OTEL_METRIC_EXPORT_TIMEOUT;
  const timeoutGiven = present(timeoutRaw) ? Number(timeoutRaw) : 30_000;
  if (!Number.isFinite(timeoutGiven) || timeoutGiven <= 0) problems.push(`OTEL_METRIC_EXPORT_TIMEOUT: "${timeoutRaw}" is not a number of milliseconds`);
  // The SDK refuses an export timeout longer than the interval.
  const timeout = Math.min(timeoutGiven, interval);

  const spanExporters: SdkTrace.SpanExporter[] = [];
  const traceTo: string[] = [];
  for (const e of traces) {
    if (e === 'console') {
      spanExporters.push(new (sdkTrace().ConsoleSpanExporter)());
      traceTo.push('stdout');
    } else {
      const url = otlpUrl(env, 'traces');
      const shown = shownUrl(url, problems, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT');
      if (shown) spanExporters.push(new (otlpTraces().OTLPTraceExporter)({ url, headers: headersFor(env, 'traces') }));
      traceTo.push(`OTLP ${shown}`);
    }
  }
  const metricExporters: SdkMetrics.PushMetricExporter[] = [];
  const metricsTo: string[] = [];
  for (const e of metrics) {
    if (e === 'console') {
      metricExporters.push(new (sdkMetrics().ConsoleMetricExporter)());
      metricsTo.push('stdout');
    } else {
      const url = otlpUrl(env, 'metrics');
      const shown = shownUrl(url, problems, 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT');
      if (shown) metricExporters.push(new (otlpMetrics().OTLPMetricExporter)({ url, headers: headersFor(env, 'metrics') }));
      metricsTo.push(`OTLP ${shown}`);
    }
  }
  if (problems.length) throw new ConfigError(problems.map((p) => `${p} (OpenTelemetry environment; see README "Observability")`));
  if (!spanExporters.length && !metricExporters.length)
    return disabledTelemetry('off (set OTEL_EXPORTER_OTLP_ENDPOINT, or OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER, to export traces and metrics)');

  const fromEnv = parseKeyPairsIntoRecord(env.OTEL_RESOURCE_ATTRIBUTES);
  const serviceName = present(env.OTEL_SERVICE_NAME) ? env.OTEL_SERVICE_NAME.trim() : (fromEnv[ATTR_SERVICE_NAME] ?? 'agent-sts');
  const resource = resources().resourceFromAttributes({
    ...resources().defaultResource().attributes,
    'service.instance.id': randomUUID(),
    ...fromEnv,
    [ATTR_SERVICE_NAME]: serviceName,
  });
  const tracerProvider = spanExporters.length
    ? new (sdkTrace().BasicTracerProvider)({ resource, sampler: makeSampler(), spanProcessors: spanExporters.map((exporter) => new (sdkTrace().BatchSpanProcessor)(exporter)) })
    : undefined;
  const meterProvider = metricExporters.length
    ? new (sdkMetrics().MeterProvider)({ resource, readers: metricExporters.map((exporter) => new (sdkMetrics().PeriodicExportingMetricReader)({ exporter, exportIntervalMillis: interval, exportTimeoutMillis: timeout })) })
    : undefined;
  return createTelemetry({
    tracerProvider,
    meterProvider,
    description: [
      `traces ${traceTo.length ? `to ${traceTo.join(' and ')} (sampler ${samplerLabel})` : 'off'}`,
      `metrics ${metricsTo.length ? `to ${metricsTo.join(' and ')} every ${interval / 1000}s` : 'off'}`,
      `service.name ${serviceName}`,
    ].join('; '),
    shutdown: () => bounded(Promise.all([tracerProvider?.shutdown(), meterProvider?.shutdown()]).then(() => {})),
  });
}

async function bounded(p: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, SHUTDOWN_BOUND_MS).unref()))]);
  clearTimeout(timer);
}

/**
 * The SDK reports export failures (collector down, 4xx) through its diagnostic logger: those go to
 * the broker's log at warn, the same message at most once a minute. They carry the exporter's
 * error, never span content.
 */
export function logTelemetryDiagnostics(logger: Logger): void {
  const lastSeen = new Map<string, number>();
  const log = (message: string, ...args: unknown[]) => {
    const key = message.slice(0, 200);
    const now = Date.now();
    if ((lastSeen.get(key) ?? -Infinity) > now - 60_000) return;
    lastSeen.set(key, now);
    if (lastSeen.size > 100) lastSeen.clear();
    const detail = args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : '')).filter(Boolean).join('; ');
    const hint = /export/i.test(message) ? ' (is the collector at the OTLP endpoint up and reachable?)' : '';
    logger.warn({ component: 'opentelemetry', detail: detail.slice(0, 500) || undefined }, `telemetry: ${message.slice(0, 300)}${hint}`);
  };
  const quiet = () => {};
  diag.setLogger({ error: log, warn: log, info: quiet, debug: quiet, verbose: quiet }, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
}
