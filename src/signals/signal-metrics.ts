import type { Meter } from '@opentelemetry/api';

/** Names of the behaviour signals an exchange can raise (its audit record's `flags`). */
export const SIGNALS = ['first_use_of_target', 'denial_burst', 'new_network', 'rate_spike'] as const;
export type Signal = (typeof SIGNALS)[number];

export const SIGNAL_COUNTER = 'agent_sts.signals';

/**
 * Counts raised signals on the OpenTelemetry counter `agent_sts.signals` (attribute `signal`) of
 * the broker's meter (src/telemetry: a no-op meter while telemetry is off).
 */
export function createSignalMetrics(meter: Meter) {
  const counter = meter.createCounter(SIGNAL_COUNTER, { description: 'Behaviour signals raised on token exchanges, by signal' });
  return {
    count(signals: readonly Signal[]): void {
      for (const signal of signals) counter.add(1, { signal });
    },
  };
}
export type SignalMetrics = ReturnType<typeof createSignalMetrics>;
