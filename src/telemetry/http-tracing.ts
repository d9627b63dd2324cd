import type { IncomingMessage, ServerResponse } from 'node:http';
import { context, defaultTextMapGetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import type { FastifyInstance, FastifyRequest, RawServerDefault } from 'fastify';
import { ATTR_CLIENT_ADDRESS, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE } from '@opentelemetry/semantic-conventions';
import type { Logger } from '../log/logger.js';
import type { Telemetry } from './otel.js';
import { withRequestScope, type RequestScope } from './log-fields.js';
import { ATTR, errorType } from './spans.js';

type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

/** Routes whose handler opens the request's SERVER span itself (the exchange span). */
const OWN_SPAN_ROUTES = new Set(['/oauth2/token']);
/** Probes: polled every few seconds by orchestrators; traced, they would bury real requests. */
const UNTRACED_ROUTES = new Set(['/healthz', '/readyz']);

const TRACE = 'agentStsTrace';
type Traced = FastifyRequest & { [TRACE]: RequestTrace | null };

interface RequestTrace {
  ctx: Context;
  scope: RequestScope;
  /** This layer's HTTP span (absent on OWN_SPAN_ROUTES). */
  span?: Span;
  ended: boolean;
}

/**
 * W3C trace context for every request: the caller's `traceparent` is continued, a SERVER span
 * `<METHOD> <route>` covers each route (except the token endpoint, where the exchange span is the
 * request's span, and the health probes), and the handler runs inside that context so that spans
 * and log lines below it carry the trace. The span holds the method, route template, status and
 * client address: no URL query, header or body.
 */
export function registerHttpTracing(app: App, telemetry: Telemetry): void {
  if (!telemetry.tracing) return;
  // A request property declared up front (Fastify's way: no per-request shape change, no WeakMap).
  app.decorateRequest(TRACE, null);
  const traceOf = (req: FastifyRequest) => (req as Traced)[TRACE];
  const { tracer, propagator } = telemetry;

  app.addHook('onRequest', (req, _reply, done) => {
    const route = req.routeOptions.url;
    if (route && UNTRACED_ROUTES.has(route)) return done();
    const scope: RequestScope = { requestId: req.id };
    let ctx = withRequestScope(propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter), scope);
    let span: Span | undefined;
    if (!route || !OWN_SPAN_ROUTES.has(route)) {
      span = tracer.startSpan(
        route ? `${req.method} ${route}` : req.method,
        {
          kind: SpanKind.SERVER,
          attributes: { [ATTR_HTTP_REQUEST_METHOD]: req.method, ...(route ? { [ATTR_HTTP_ROUTE]: route } : {}), [ATTR_CLIENT_ADDRESS]: req.ip, [ATTR.requestId]: req.id },
        },
        ctx,
      );
      scope.serverSpan = span;
      ctx = trace.setSpan(ctx, span);
    }
    (req as Traced)[TRACE] = { ctx, scope, span, ended: false };
    done();
  });

  // The last global step before the handler: the handler (and every promise it starts) runs in the request's context.
  app.addHook('preHandler', (req, _reply, done) => {
    const t = traceOf(req);
    if (!t) return done();
    context.with(t.ctx, done);
  });

  app.addHook('onError', (req, _reply, err, done) => {
    traceOf(req)?.span?.setAttribute(ATTR.errorType, errorType(err));
    done();
  });

  // Runs before the app's own onResponse hooks (registered later), inside the request's server
  // span, so the `request` log line carries its trace_id and span_id.
  app.addHook('onResponse', (req, reply, done) => {
    const t = traceOf(req);
    if (!t) return done();
    end(t, reply.statusCode);
    const span = t.scope.serverSpan;
    context.with(span ? trace.setSpan(t.ctx, span) : t.ctx, done);
  });

  app.addHook('onRequestAbort', (req, done) => {
    const t = traceOf(req);
    if (t) end(t, undefined);
    done();
  });

  function end(t: RequestTrace, status: number | undefined): void {
    if (t.ended || !t.span) return;
    t.ended = true;
    if (status === undefined) t.span.setStatus({ code: SpanStatusCode.ERROR, message: 'client aborted the request' });
    else {
      t.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      if (status >= 500) t.span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${status}` });
    }
    t.span.end();
  }
}
