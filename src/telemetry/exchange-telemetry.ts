import { context, createContextKey, SpanKind, trace, type Attributes } from '@opentelemetry/api';
import type { AuditEventInput } from '../audit/audit-event.js';
import { StsError } from '../errors/sts-errors.js';
import type { Telemetry } from './otel.js';
import { requestScopeOf } from './log-fields.js';
import { ATTR, errorType, failureOutcome, inSpan, markFailed, NOOP_HANDLE, toAttributes, type SafeAttributes, type SpanHandle } from './spans.js';

/** The stages of one exchange, each a child span `agent_sts.<stage>` and a `agent_sts.stage.duration` sample. */
export type ExchangeStage = 'provider.verify' | 'policy.decide' | 'issuer.issue' | 'audit.write';

/** What a successful exchange returned, as far as telemetry may know it (ids and fingerprints). */
interface ExchangeOutcome {
  taskId: string;
  credential: { id: string; fingerprint: string };
}

/** Facts learned during an exchange that its audit event does not (yet) hold. */
interface Notes {
  issuer?: string;
  issuerType?: string;
}
const NOTES = createContextKey('agent-sts exchange notes');

export interface ExchangeTelemetry {
  /**
   * Runs one exchange in span `agent_sts.exchange` and counts it. Attributes come from the audit
   * event (which by contract never holds a secret) and the result's ids and fingerprint. SERVER
   * when it is the request's own span (token endpoint: root, or child of the caller's traceparent),
   * INTERNAL under another route's HTTP span.
   */
  exchange<T extends ExchangeOutcome>(event: AuditEventInput, fn: () => Promise<T>): Promise<T>;
  /** Runs one stage in a child span, timed into `agent_sts.stage.duration`. */
  stage<T>(stage: ExchangeStage, attributes: SafeAttributes, fn: (h: SpanHandle) => T | Promise<T>): Promise<T>;
  /** Records the credential issuer the exchange is for (so a refused exchange is counted under it too). */
  note(n: Notes): void;
}

const PASS_THROUGH: ExchangeTelemetry = {
  exchange: (_event, fn) => fn(),
  stage: async (_stage, _a, fn) => fn(NOOP_HANDLE),
  note: () => {},
};

export function createExchangeTelemetry(t: Telemetry | undefined): ExchangeTelemetry {
  if (!t?.enabled) return PASS_THROUGH;
  const { tracer, instruments } = t;

  function exchange<T extends ExchangeOutcome>(event: AuditEventInput, fn: () => Promise<T>): Promise<T> {
    const parent = context.active();
    const parentSpan = trace.getSpan(parent);
    const isServer = !parentSpan || parentSpan.spanContext().isRemote === true;
    const span = tracer.startSpan('agent_sts.exchange', { kind: isServer ? SpanKind.SERVER : SpanKind.INTERNAL, attributes: { [ATTR.requestId]: event.requestId } }, parent);
    const scope = requestScopeOf(parent);
    if (isServer && scope) scope.serverSpan = span;
    const notes: Notes = {};
    const started = performance.now();

    const finish = (result: T | undefined, failure: unknown, failed: boolean) => {
      const outcome = failed ? failureOutcome(failure) : 'allow';
      const provider = event.providerName;
      const issuer = event.issuerName ?? notes.issuer;
      if (span.isRecording())
        span.setAttributes(
          toAttributes({
            outcome,
            provider,
            workloadSubject: event.workloadSubject,
            target: event.target,
            issuer,
            issuerType: notes.issuerType,
            policyId: event.policyId,
            policyVersion: event.policyVersion,
            taskId: result?.taskId ?? event.taskId,
            credentialId: result?.credential.id,
            fingerprint: result?.credential.fingerprint,
          }),
        );
      const metric: Attributes = toAttributes({ outcome, provider, issuer });
      instruments.exchangeDuration.record((performance.now() - started) / 1000, metric);
      if (failed) {
        // A refusal (4xx) is the exchange working as intended: error.type and the OAuth code are
        // recorded, but only a server-side failure sets the span status to ERROR.
        if (outcome === 'error') markFailed(span, failure);
        else {
          span.setAttribute(ATTR.errorType, errorType(failure));
          if (failure instanceof StsError) span.setAttribute(ATTR.errorCode, failure.oauthCode);
        }
      }
      // The SDK keeps the attributes object it is given: the counter gets its own.
      instruments.exchanges.add(1, failed ? { ...metric, [ATTR.errorType]: errorType(failure) } : metric);
      span.end();
    };

    const ctx = trace.setSpan(parent, span).setValue(NOTES, notes);
    return context.with(ctx, fn).then(
      (r) => {
        finish(r, undefined, false);
        return r;
      },
      (e: unknown) => {
        finish(undefined, e, true);
        throw e;
      },
    );
  }

  function stage<T>(stage: ExchangeStage, attributes: SafeAttributes, fn: (h: SpanHandle) => T | Promise<T>): Promise<T> {
    const started = performance.now();
    // The histogram is split by provider (verify) and issuer (issue), also when the stage learns them as it runs.
    const known = { provider: attributes.provider, issuer: attributes.issuer };
    const run = (h: SpanHandle) =>
      fn({
        set: (a) => {
          h.set(a);
          if (a.provider !== undefined) known.provider = a.provider;
          if (a.issuer !== undefined) known.issuer = a.issuer;
        },
        fail: h.fail,
      });
    return inSpan(tracer, `agent_sts.${stage}`, { stage, ...attributes }, run, (failure, failed) => {
      const a = toAttributes({ stage, ...known });
      if (failed) a[ATTR.errorType] = errorType(failure);
      instruments.stageDuration.record((performance.now() - started) / 1000, a);
    });
  }

  function note(n: Notes): void {
    const notes = context.active().getValue(NOTES) as Notes | undefined;
    if (notes) Object.assign(notes, n);
  }

  return { exchange, stage, note };
}
