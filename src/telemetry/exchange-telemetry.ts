import { context, SpanKind, trace, type Attributes, type Span } from '@opentelemetry/api';
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

export interface ExchangeTelemetry {
  /**
   * Runs one exchange in span `agent_sts.exchange` and counts it. Attributes come from the audit
   * event (which by contract never holds a secret) and the result's ids and fingerprint. SERVER
   * when it is the request's own span (token endpoint: root, or child of the caller's traceparent),
   * INTERNAL under another route's HTTP span.
   */
  exchange<T extends ExchangeOutcome>(event: AuditEventInput, fn: () => Promise<T>): Promise<T>;
  /**
   * Runs one stage, timed into `agent_sts.stage.duration`; in a child span when the exchange is
   * traced (traces on and this exchange sampled), else timed only.
   */
  stage<T>(stage: ExchangeStage, attributes: SafeAttributes, fn: (h: SpanHandle) => T | Promise<T>): Promise<T>;
  /** Records the credential issuer the exchange (`event`) is for, so a refused exchange is counted under it too. */
  note(event: AuditEventInput, n: Notes): void;
}

const PASS_THROUGH: ExchangeTelemetry = {
  exchange: (_event, fn) => fn(),
  stage: async (_stage, _a, fn) => fn(NOOP_HANDLE),
  note: () => {},
};

export function createExchangeTelemetry(t: Telemetry | undefined): ExchangeTelemetry {
  if (!t?.enabled) return PASS_THROUGH;
  const { tracer, instruments, tracing } = t;
  const notesOf = new WeakMap<AuditEventInput, Notes>();

  function exchange<T extends ExchangeOutcome>(event: AuditEventInput, fn: () => Promise<T>): Promise<T> {
    const notes: Notes = {};
    notesOf.set(event, notes);
    const started = performance.now();
    let span: Span | undefined;
    let run = fn;
    if (tracing) {
      const parent = context.active();
      const parentSpan = trace.getSpan(parent);
      const isServer = !parentSpan || parentSpan.spanContext().isRemote === true;
      const s = tracer.startSpan('agent_sts.exchange', { kind: isServer ? SpanKind.SERVER : SpanKind.INTERNAL, attributes: { [ATTR.requestId]: event.requestId } }, parent);
      const scope = requestScopeOf(parent);
      if (isServer && scope) scope.serverSpan = s;
      const ctx = trace.setSpan(parent, s);
      span = s;
      run = () => context.with(ctx, fn);
    }

    const finish = (result: T | undefined, failure: unknown, failed: boolean) => {
      const outcome = failed ? failureOutcome(failure) : 'allow';
      const provider = event.providerName;
      const issuer = event.issuerName ?? notes.issuer;
      if (span?.isRecording()) {
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
        if (failed) {
          // A refusal (4xx) is the exchange working as intended: error.type and the OAuth code are
          // recorded, but only a server-side failure sets the span status to ERROR.
          if (outcome === 'error') markFailed(span, failure);
          else {
            span.setAttribute(ATTR.errorType, errorType(failure));
            if (failure instanceof StsError) span.setAttribute(ATTR.errorCode, failure.oauthCode);
          }
        }
      }
      const metric: Attributes = toAttributes({ outcome, provider, issuer });
      instruments.exchangeDuration.record((performance.now() - started) / 1000, metric);
      // The SDK keeps the attributes object it is given: the counter gets its own.
      instruments.exchanges.add(1, failed ? { ...metric, [ATTR.errorType]: errorType(failure) } : metric);
      span?.end();
    };

    return run().then(
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
    const learn = (a: SafeAttributes) => {
      if (a.provider !== undefined) known.provider = a.provider;
      if (a.issuer !== undefined) known.issuer = a.issuer;
    };
    const record = (failure: unknown, failed: boolean) => {
      const a = toAttributes({ stage, ...known });
      if (failed) a[ATTR.errorType] = errorType(failure);
      instruments.stageDuration.record((performance.now() - started) / 1000, a);
    };
    if (!tracing || !trace.getSpan(context.active())?.isRecording()) {
      // No trace to add a span to (traces off, or this exchange was not sampled): timed only.
      let result: T | Promise<T>;
      try {
        result = fn({ set: learn, fail: () => {} });
      } catch (e) {
        record(e, true);
        return Promise.reject(e);
      }
      return Promise.resolve(result).then(
        (r) => {
          record(undefined, false);
          return r;
        },
        (e: unknown) => {
          record(e, true);
          throw e;
        },
      );
    }
    const run = (h: SpanHandle) =>
      fn({
        set: (a) => {
          h.set(a);
          learn(a);
        },
        fail: h.fail,
      });
    return inSpan(tracer, `agent_sts.${stage}`, { stage, ...attributes }, run, record);
  }

  function note(event: AuditEventInput, n: Notes): void {
    const notes = notesOf.get(event);
    if (notes) Object.assign(notes, n);
  }

  return { exchange, stage, note };
}
