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
