import { describe, expect, it } from 'vitest';
import { detectSignals, newSignalState, RATE_WARMUP_MINUTES, type SignalSettings } from './signal-detector.js';
import { networkOf } from './network-prefix.js';

const settings: SignalSettings = { denialBurst: { threshold: 3, windowMs: 60_000 } };
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);

describe('networkOf', () => {
  it('takes the /24 of an IPv4 address and the /64 of an IPv6 address', () => {
    expect(networkOf('10.1.2.3')).toBe('10.1.2.0/24');
    expect(networkOf('2001:db8:0:1:2:3:4:5')).toBe('2001:db8:0:1::/64');
    expect(networkOf('2001:DB8::1')).toBe('2001:db8:0:0::/64');
    expect(networkOf('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(networkOf('::ffff:192.0.2.7')).toBe('192.0.2.0/24');
    expect(networkOf('64:ff9b::192.0.2.7')).toBe('64:ff9b:0:0::/64');
  });

  it('has no network for a missing or unparsable address', () => {
    expect(networkOf(undefined)).toBeUndefined();
    expect(networkOf('')).toBeUndefined();
    expect(networkOf('not-an-ip')).toBeUndefined();
    expect(networkOf('10.1.2')).toBeUndefined();
  });
});

describe('detectSignals', () => {
  it('raises first_use_of_target once per target, and only for allowed credentials', () => {
    const s = newSignalState(true);
    expect(detectSignals(s, { at: T0, outcome: 'deny', target: undefined }, settings, 32)).toEqual([]);
    expect(detectSignals(s, { at: T0, outcome: 'allow', target: 'billing' }, settings, 32)).toEqual(['first_use_of_target']);
    expect(detectSignals(s, { at: T0 + 1, outcome: 'allow', target: 'billing' }, settings, 32)).toEqual([]);
    expect(detectSignals(s, { at: T0 + 2, outcome: 'allow', target: 'reports' }, settings, 32)).toEqual(['first_use_of_target']);
  });

  it('raises new_network only once the identity has a network history', () => {
    const s = newSignalState(true);
    expect(detectSignals(s, { at: T0, outcome: 'allow', network: '10.1.2.0/24' }, settings, 32)).toEqual([]);
    expect(detectSignals(s, { at: T0 + 1, outcome: 'allow', network: '10.1.2.0/24' }, settings, 32)).toEqual([]);
    expect(detectSignals(s, { at: T0 + 2, outcome: 'deny', network: '10.9.9.0/24' }, settings, 32)).toEqual(['new_network']);
    expect(detectSignals(s, { at: T0 + 3, outcome: 'allow', network: '10.9.9.0/24' }, settings, 32)).toEqual([]);
  });

  it('stays quiet about history while the stored history is unknown (never a false alarm), and records what it saw', () => {
    const s = newSignalState(false);
    s.networks.push('10.1.2.0/24');
    expect(detectSignals(s, { at: T0, outcome: 'allow', target: 'billing', network: '10.7.7.0/24' }, settings, 32)).toEqual([]);
    expect(s.targets.has('billing')).toBe(true);
    expect(s.networks).toContain('10.7.7.0/24');
    s.historyKnown = true;
    expect(detectSignals(s, { at: T0 + 1, outcome: 'allow', target: 'billing', network: '10.7.7.0/24' }, settings, 32)).toEqual([]);
  });

  it('raises denial_burst at the threshold within the window, then not again within that window', () => {
    const s = newSignalState(true);
    const deny = (at: number) => detectSignals(s, { at, outcome: 'deny' }, settings, 32);
    expect(deny(T0)).toEqual([]);
    expect(deny(T0 + 10_000)).toEqual([]);
    expect(deny(T0 + 20_000)).toEqual(['denial_burst']);
    expect(deny(T0 + 30_000)).toEqual([]);
    // Spread out: never three within a minute.
    const slow = newSignalState(true);
    for (let i = 0; i < 5; i++) expect(detectSignals(slow, { at: T0 + i * 40_000, outcome: 'deny' }, settings, 32)).toEqual([]);
    // A minute after the burst, a new burst (three within a minute again) is raised again.
    expect(deny(T0 + 84_000)).toEqual([]);
    expect(deny(T0 + 85_000)).toEqual(['denial_burst']);
  });

  it('keeps at most maxNetworks networks, newest last', () => {
    const s = newSignalState(true);
    for (let i = 0; i < 5; i++) detectSignals(s, { at: T0 + i, outcome: 'allow', network: `10.0.${i}.0/24` }, settings, 3);
    expect(s.networks).toEqual(['10.0.2.0/24', '10.0.3.0/24', '10.0.4.0/24']);
  });

  it('raises rate_spike when a minute reaches the minimum and the factor over the usual rate, after the warm-up', () => {
    const spiky: SignalSettings = { ...settings, rateSpike: { factor: 5, minPerMinute: 20 } };
    const s = newSignalState(true);
    const minute = (m: number, n: number) => {
      const raised: string[] = [];
      for (let i = 0; i < n; i++) raised.push(...detectSignals(s, { at: T0 + m * 60_000 + i, outcome: 'allow' }, spiky, 32));
      return raised;
    };
    // A busy first minute is not a spike: there is no usual rate yet.
    expect(minute(0, 50)).toEqual([]);
    for (let m = 1; m <= RATE_WARMUP_MINUTES; m++) expect(minute(m, 2)).toEqual([]);
    expect(minute(RATE_WARMUP_MINUTES + 1, 19)).toEqual([]);
    expect(minute(RATE_WARMUP_MINUTES + 2, 40)).toEqual(['rate_spike']);
  });
});
