import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import type { CredentialIssuer, IssuerHealth } from './credential-issuer.js';

/** Bound of one issuer health check: readiness probes must answer quickly whatever the upstream does. */
export const HEALTH_TIMEOUT_MS = 2000;
/** How long checkIssuers() reuses its last answer, so frequent /readyz probes do not hammer upstreams. */
export const HEALTH_CACHE_MS = 10_000;

const seconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);
export const timedOutDetail = (ms: number) => `timed out after ${seconds(ms)}`;

/** An error code safe to show (ECONNREFUSED, 28P01, ER_ACCESS_DENIED_ERROR, InvalidClientTokenId): never free text. */
export function safeCode(e: unknown): string | undefined {
  const seen = new Set<unknown>();
  for (let cur = e as { code?: unknown; cause?: unknown } | undefined; cur && typeof cur === 'object' && !seen.has(cur); cur = cur.cause as typeof cur) {
    seen.add(cur);
    if (typeof cur.code === 'string' && /^[A-Za-z0-9_]{1,40}$/.test(cur.code)) return cur.code;
  }
  return undefined;
}

/** A failure a probe describes itself (its text is written by agent-sts, never copied from upstream). */
export class HealthProblem extends Error {
  constructor(readonly detail: string) {
    super(detail);
    this.name = 'HealthProblem';
  }
}

/** Transport failures, in words: `${what} connection refused`, ... ; undefined for other codes. */
export function networkDetail(code: string | undefined, what: string): string | undefined {
  switch (code) {
    case 'ECONNREFUSED':
      return `${what} connection refused`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${what} host not found (${code})`;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `${what} unreachable (${code})`;
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
      return `${what} connection reset (${code})`;
    case 'CERT_HAS_EXPIRED':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `${what} TLS certificate not accepted (${code})`;
    default:
      return undefined;
  }
}

/**
 * Runs one health probe under a time bound. The probe gets an AbortSignal that fires at the bound
 * (pass it on where the client supports it); `describe` turns a failure into the detail and must not
 * return upstream text that could carry a secret.
 */
export async function probeHealth(probe: (signal: AbortSignal) => Promise<void>, describe: (e: unknown) => string, timeoutMs = HEALTH_TIMEOUT_MS): Promise<IssuerHealth> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => {
      controller.abort();
      resolve('timeout');
    }, timeoutMs);
  });
  try {
    const outcome = await Promise.race([probe(controller.signal).then(() => 'ok' as const), timeout]);
    return outcome === 'ok' ? { ok: true } : { ok: false, detail: timedOutDetail(timeoutMs) };
  } catch (e) {
    if (controller.signal.aborted) return { ok: false, detail: timedOutDetail(timeoutMs) };
    return { ok: false, detail: e instanceof HealthProblem ? e.detail : describe(e) };
  } finally {
    clearTimeout(timer);
  }
}

export interface CheckIssuersOptions {
  /** Per-issuer bound, milliseconds (default HEALTH_TIMEOUT_MS). */
  timeoutMs?: number;
  /** How long an answer is reused, milliseconds (default HEALTH_CACHE_MS; 0: never). */
  cacheMs?: number;
  clock?: Clock;
}

/**
 * Health of every issuer, for /readyz: per issuer name `'ok'` or what failed. The checks run in
 * parallel, each bounded by `timeoutMs`; an answer is reused for `cacheMs`, and callers arriving
 * while a round is running share it. Issuers without health() have nothing upstream: `'ok'`.
 *
 * `issuers` is read on every round when it can be iterated again (an array, a Map's values via the
 * Map, a Set), so issuers added later are checked; a one-shot iterator is read once.
 */
export function checkIssuers(issuers: Iterable<CredentialIssuer>, opts: CheckIssuersOptions = {}): () => Promise<Record<string, 'ok' | string>> {
  const timeoutMs = opts.timeoutMs ?? HEALTH_TIMEOUT_MS;
  const cacheMs = opts.cacheMs ?? HEALTH_CACHE_MS;
  const clock = opts.clock ?? systemClock;
  const oneShot = (issuers[Symbol.iterator]() as unknown) === issuers;
  const fixed = oneShot ? [...issuers] : undefined;
  let cached: { at: number; result: Record<string, 'ok' | string> } | undefined;
  let running: Promise<Record<string, 'ok' | string>> | undefined;

  async function one(issuer: CredentialIssuer): Promise<'ok' | string> {
    if (!issuer.health) return 'ok';
    const health = issuer.health.bind(issuer);
    // A health() that rejects broke its contract; its message could hold anything, so only its class is shown.
    const h = await probeHealth(
      async () => {
        const r = await health();
        if (!r.ok) throw new HealthProblem(r.detail);
      },
      (e) => `health check failed (${e instanceof Error ? e.name : typeof e})`,
      timeoutMs,
    );
    return h.ok ? 'ok' : h.detail;
  }

  async function round(): Promise<Record<string, 'ok' | string>> {
    const list = fixed ?? [...issuers];
    const answers = await Promise.all(list.map(one));
    const result: Record<string, 'ok' | string> = {};
    list.forEach((issuer, i) => (result[issuer.name] = answers[i]!));
    cached = { at: clock.now().getTime(), result };
    return result;
  }

  return async () => {
    if (cached && clock.now().getTime() - cached.at < cacheMs) return { ...cached.result };
    running ??= round().finally(() => {
      running = undefined;
    });
    return { ...(await running) };
  };
}

/**
 * Health of a database issuer's admin connection: its secret reference resolves, and `selectOne`
 * (a `SELECT 1` over the admin pool, bounded by the caller's statement timeout) answers.
 */
export function adminConnectionHealth(resolveAdminUrl: () => unknown, selectOne: () => Promise<unknown>, describe: (e: unknown) => string): Promise<IssuerHealth> {
  return probeHealth(async () => {
    try {
      resolveAdminUrl();
    } catch {
      throw new HealthProblem('the admin URL secret reference does not resolve');
    }
    await selectOne();
  }, describe);
}
