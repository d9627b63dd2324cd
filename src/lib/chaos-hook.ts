/**
 * TEST HOOK for the crash-safety test (test/e2e/chaos.e2e.test.ts): kills this process with SIGKILL
 * at a named point of issuance or revocation. Enabled only by the environment variable
 * `AGENT_STS_CHAOS=<point>[:<n>]` (the n-th time the point is reached, default 1), read by
 * compose() from the environment it is given; the configuration file has no way to set it.
 * Never set it in production.
 */
export const CHAOS_POINTS = ['before-upstream', 'after-upstream', 'during-revocation'] as const;
export type ChaosPoint = (typeof CHAOS_POINTS)[number];
export type ChaosHook = (point: ChaosPoint) => void;

export function chaosHookFrom(value: string | undefined, kill: () => void = () => process.kill(process.pid, 'SIGKILL')): ChaosHook | undefined {
  if (!value) return undefined;
  const [point, nth = '1'] = value.split(':');
  if (!CHAOS_POINTS.includes(point as ChaosPoint) || !/^\d+$/.test(nth) || Number(nth) < 1)
    throw new Error(`AGENT_STS_CHAOS must be <point>[:<n>] with point one of ${CHAOS_POINTS.join(', ')}`);
  let seen = 0;
  return (p) => {
    if (p === point && ++seen === Number(nth)) kill();
  };
}
