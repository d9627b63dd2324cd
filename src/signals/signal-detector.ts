import type { Signal } from './signal-metrics.js';

export interface SignalSettings {
  /** `denial_burst`: at least `threshold` denials within `windowMs`. */
  denialBurst: { threshold: number; windowMs: number };
  /** `rate_spike` (off when absent). */
  rateSpike?: { factor: number; minPerMinute: number };
}

/** Minutes of an identity's traffic seen before `rate_spike` judges it (its usual rate must exist first). */
export const RATE_WARMUP_MINUTES = 10;
/** Weight of the last minute in the usual rate (exponentially weighted moving average). */
const RATE_ALPHA = 0.2;

/** Per-identity state the signals need; kept in the replica's inventory view (no database on the hot path). */
export interface SignalState {
  /** Client networks seen (stored ones included once the history is known). */
  networks: string[];
  /** Targets this workload obtained credentials for (stored ones included once the history is known). */
  targets: Set<string>;
  /** False while the stored history is not loaded: history signals are not raised then (never a false alarm). */
  historyKnown: boolean;
  /** Times (ms) of recent denials. */
  denials: number[];
  lastBurstAt: number;
  rate?: { minute: number; count: number; usual: number; since: number; spiked: number };
}

export function newSignalState(historyKnown: boolean): SignalState {
  return { networks: [], targets: new Set(), historyKnown, denials: [], lastBurstAt: -Infinity };
}

export interface ExchangeFacts {
  at: number;
  /** Client network prefix (network-prefix.ts), if the address is known. */
  network?: string;
  outcome: 'allow' | 'deny' | 'error';
  /** The target of an allowed target credential (not an agent token). */
  target?: string;
}

/**
 * Decides the signals of one exchange and records it in `s` (synchronous, in memory):
 * - `first_use_of_target`: an allowed credential for a target this workload never obtained before;
 * - `new_network`: a client network not seen for this identity, once it has any history;
 * - `denial_burst`: the denial that makes `threshold` within the window (then quiet for a window);
 * - `rate_spike`: the exchange that takes this minute's count to `minPerMinute` and `factor` times
 *   the usual rate (after RATE_WARMUP_MINUTES of traffic; once per minute).
 * The two history signals stay quiet until the stored history is known (`historyKnown`).
 */
export function detectSignals(s: SignalState, f: ExchangeFacts, settings: SignalSettings, maxNetworks: number): Signal[] {
  const out: Signal[] = [];
  if (f.target && f.outcome === 'allow' && !s.targets.has(f.target)) {
    if (s.historyKnown) out.push('first_use_of_target');
    s.targets.add(f.target);
  }
  const burst = settings.denialBurst;
  if (f.outcome === 'deny') {
    s.denials.push(f.at);
    while (s.denials.length && s.denials[0]! <= f.at - burst.windowMs) s.denials.shift();
    if (s.denials.length >= burst.threshold && f.at - s.lastBurstAt >= burst.windowMs) {
      out.push('denial_burst');
      s.lastBurstAt = f.at;
    }
    // Only the last `threshold` matter.
    if (s.denials.length > burst.threshold) s.denials.splice(0, s.denials.length - burst.threshold);
  }
  if (f.network && !s.networks.includes(f.network)) {
    if (s.historyKnown && s.networks.length) out.push('new_network');
    s.networks.push(f.network);
    if (s.networks.length > maxNetworks) s.networks.shift();
  }
  if (settings.rateSpike && rateSpike(s, f.at, settings.rateSpike)) out.push('rate_spike');
  return out;
}

function rateSpike(s: SignalState, at: number, o: { factor: number; minPerMinute: number }): boolean {
  const minute = Math.floor(at / 60_000);
  const r = (s.rate ??= { minute, count: 0, usual: 0, since: minute, spiked: -1 });
  if (minute > r.minute) {
    // The finished minute joins the usual rate; idle minutes in between count as zero.
    r.usual = RATE_ALPHA * r.count + (1 - RATE_ALPHA) * r.usual;
    r.usual *= (1 - RATE_ALPHA) ** Math.min(minute - r.minute - 1, 1000);
    r.minute = minute;
    r.count = 0;
  }
  r.count++;
  if (r.spiked === minute || minute - r.since < RATE_WARMUP_MINUTES) return false;
  if (r.count < o.minPerMinute || r.count < o.factor * r.usual) return false;
  r.spiked = minute;
  return true;
}
