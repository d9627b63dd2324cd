import { context, createContextKey, trace, type Context, type Span } from '@opentelemetry/api';

/** What the HTTP layer keeps in the active context for one request (see http-tracing.ts). */
export interface RequestScope {
  requestId: string;
  /** The request's SERVER span: the HTTP span, or the exchange span at the token endpoint. */
  serverSpan?: Span;
}

const REQUEST_SCOPE = createContextKey('agent-sts request scope');

export const withRequestScope = (ctx: Context, scope: RequestScope): Context => ctx.setValue(REQUEST_SCOPE, scope);
export const requestScopeOf = (ctx: Context): RequestScope | undefined => ctx.getValue(REQUEST_SCOPE) as RequestScope | undefined;

/**
 * pino `mixin`: adds `trace_id` and `span_id` of the active span, and the request id of the
 * active request, to every log line written while they are active. Without telemetry no context
 * manager is installed, the active context is always empty and this costs one lookup per line.
 * Fields given in the log call itself win (pino merges them over these).
 */
export function traceLogFields(): Record<string, string> {
  const ctx = context.active();
  const span = trace.getSpan(ctx);
  const scope = requestScopeOf(ctx);
  const out: Record<string, string> = {};
  if (scope) out.requestId = scope.requestId;
  if (span) {
    const sc = span.spanContext();
    if (trace.isSpanContextValid(sc)) {
      out.trace_id = sc.traceId;
      out.span_id = sc.spanId;
    }
  }
  return out;
}
