import { context, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import { StsError } from '../errors/sts-errors.js';

/**
 * Every span and metric attribute agent-sts sets, in one list. They identify (names, ids,
 * fingerprints, the workload's canonical subject) and never reveal: no token, password, key,
 * revocation handle, request body or upstream error text is ever an attribute value. Helpers take
 * typed `SafeAttributes`, so an attribute outside this list does not compile.
 */
export const ATTR = {
  outcome: 'agent_sts.outcome',
  requestId: 'agent_sts.request.id',
  stage: 'agent_sts.stage',
  tokenRole: 'agent_sts.token.role',
  provider: 'agent_sts.provider.name',
  providerType: 'agent_sts.provider.type',
  workloadSubject: 'agent_sts.workload.subject',
  target: 'agent_sts.target',
  issuer: 'agent_sts.issuer.name',
  issuerType: 'agent_sts.issuer.type',
  policyId: 'agent_sts.policy.id',
  policyVersion: 'agent_sts.policy.version',
  taskId: 'agent_sts.task.id',
  credentialId: 'agent_sts.credential.id',
  fingerprint: 'agent_sts.credential.fingerprint',
  action: 'agent_sts.action',
  fate: 'agent_sts.revocation.fate',
  errorCode: 'agent_sts.error.code',
  errorType: 'error.type',
} as const;

export type AttrName = keyof typeof ATTR;
export type SafeAttributes = Partial<Record<AttrName, string | number | boolean | undefined>>;

/** Longest string attribute value (a requested `resource` is caller-controlled). */
const MAX_VALUE = 256;

export function toAttributes(a: SafeAttributes): Attributes {
  const out: Attributes = {};
  for (const k in a) {
    const v = a[k as AttrName];
    if (v === undefined || v === '') continue;
    out[ATTR[k as AttrName]] = typeof v === 'string' && v.length > MAX_VALUE ? v.slice(0, MAX_VALUE) : v;
  }
  return out;
}

/**
 * The low-cardinality name of what went wrong: the error class (`PolicyDenied`,
 * `UpstreamUnavailable`, `TypeError`, ...). Never the message: upstream messages can echo a
 * connection string or a token.
 */
export function errorType(e: unknown): string {
  if (e instanceof StsError) return e.name;
  const name = (e as { name?: unknown } | null)?.name;
  return typeof name === 'string' && /^[A-Za-z][\w.$]{0,63}$/.test(name) ? name : '_OTHER';
}

/** `deny` for a refusal the caller caused (4xx), `error` for everything else. */
export const failureOutcome = (e: unknown): 'deny' | 'error' => (e instanceof StsError && e.status < 500 ? 'deny' : 'error');

/** What a stage or task span can say about itself while it runs. */
export interface SpanHandle {
  set(a: SafeAttributes): void;
  /** Marks the span failed (status ERROR, `error.type`) without throwing. */
  fail(e: unknown): void;
}

export const NOOP_HANDLE: SpanHandle = { set() {}, fail() {} };

/** A handle on a span; on a span the sampler dropped, attributes are not even computed. */
export function handleFor(span: Span): SpanHandle {
  const recording = span.isRecording();
  return {
    set: (a) => {
      if (recording) span.setAttributes(toAttributes(a));
    },
    fail: (e) => markFailed(span, e),
  };
}

/** Status ERROR with the error's class as the only description; never its message or stack. */
export function markFailed(span: Span, e: unknown): void {
  const type = errorType(e);
  span.setAttribute(ATTR.errorType, type);
  if (e instanceof StsError) span.setAttribute(ATTR.errorCode, e.oauthCode);
  span.setStatus({ code: SpanStatusCode.ERROR, message: type });
}

/**
 * Runs `fn` in a new INTERNAL child span of the active context, ends it when `fn` settles and
 * marks it failed when `fn` throws. `after` sees the outcome (for metrics) before the span ends.
 */
export function inSpan<T>(
  tracer: Tracer,
  name: string,
  attributes: SafeAttributes,
  fn: (h: SpanHandle) => T | Promise<T>,
  after?: (failure: unknown, failed: boolean, span: Span) => void,
): Promise<T> {
  const parent = context.active();
  const span = tracer.startSpan(name, { kind: SpanKind.INTERNAL }, parent);
  const h = handleFor(span);
  h.set(attributes);
  const done = (failure: unknown, failed: boolean) => {
    if (failed) markFailed(span, failure);
    after?.(failure, failed, span);
    span.end();
  };
  let result: T | Promise<T>;
  try {
    result = context.with(trace.setSpan(parent, span), fn, undefined, h);
  } catch (e) {
    done(e, true);
    return Promise.reject(e);
  }
  return Promise.resolve(result).then(
    (r) => {
      done(undefined, false);
      return r;
    },
    (e: unknown) => {
      done(e, true);
      throw e;
    },
  );
}
