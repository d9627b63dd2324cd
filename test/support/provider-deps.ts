// ProviderDeps for tests that drive a trust-provider plugin directly (no server): a silent
// logger, a settable clock, and an in-memory single-use guard with the semantics of the
// database-backed one (src/trust-providers/replay-guard.ts).
import { createLogger } from '../../src/log/logger.js';
import { systemClock, type Clock } from '../../src/lib/clock.js';
import type { ProviderDeps, ReplayGuard } from '../../src/trust-providers/trust-provider.js';

export function memoryReplayGuard(clock: Clock = systemClock): ReplayGuard & { claims: Map<string, Date | null> } {
  const claims = new Map<string, Date | null>();
  return {
    claims,
    async claimOnce(provider, key, until) {
      const k = `${provider}\u0000${key}`;
      const held = claims.get(k);
      if (claims.has(k) && (held === null || held!.getTime() > clock.now().getTime())) return false;
      claims.set(k, until);
      return true;
    },
  };
}

export function testProviderDeps(over: Partial<ProviderDeps> = {}): ProviderDeps {
  const clock = over.clock ?? systemClock;
  return {
    logger: createLogger({ level: 'silent' }),
    clock,
    clockTolerance: 60,
    serverId: () => 'https://sts.test.invalid',
    replay: memoryReplayGuard(clock),
    env: {},
    ...over,
  };
}

/**
 * Verifies `token` and expects a refusal of class `error` whose detail contains `detail`; the
 * message and detail must not contain the token's payload. Returns the error.
 */
export async function expectRefusal(
  provider: { verify(i: { token: string; tokenType: string }, ctx: { requestId: string; now: Date }): Promise<unknown> },
  token: string,
  tokenType: string,
  error: abstract new (...args: never[]) => Error,
  detail: Record<string, unknown>,
): Promise<Error> {
  const { expect } = await import('vitest');
  const err = await provider.verify({ token, tokenType }, { requestId: 'test', now: new Date() }).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err).toBeInstanceOf(error);
  expect((err as { detail?: unknown }).detail).toMatchObject(detail);
  expect(JSON.stringify({ m: err!.message, d: (err as { detail?: unknown }).detail })).not.toContain(token.split('.')[1] ?? token);
  return err!;
}
