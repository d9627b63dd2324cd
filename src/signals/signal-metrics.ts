import { metrics, type Counter, type MeterProvider } from '@opentelemetry/api';

/** Names of the behaviour signals an exchange can raise (its audit record's `flags`). */
export const SIGNALS = ['first_use_of_target', 'denial_burst', 'new_network', 'rate_spike'] as const;
export type Signal = (typeof SIGNALS)[number];

export const SIGNAL_COUNTER = 'agent_sts.signals';

/**
 * Counts raised signals on the OpenTelemetry counter `agent_sts.signals` (attribute `signal`),
 * through the global API only: a no-op until an SDK registers a meter provider. The counter is
 * taken from whichever provider is registered when a signal is counted, so one registered after
 * start-up (src/telemetry) still receives them.
 */
export function createSignalMetrics() {
  let provider: MeterProvider | undefined;
  let counter: Counter | undefined;
  return {
    count(signals: readonly Signal[]): void {
      if (!signals.length) return;
      const current = metrics.getMeterProvider();
      if (current !== provider || !counter) {
        provider = current;
        counter = current.getMeter('agent-sts').createCounter(SIGNAL_COUNTER, { description: 'Behaviour signals raised on token exchanges, by signal' });
      }
      for (const signal of signals) counter.add(1, { signal });
    },
  };
}
export type SignalMetrics = ReturnType<typeof createSignalMetrics>;
