import { describe, expect, it } from 'vitest';
import { configProblems } from '../../test/support/config.js';
import { validateConfig } from '../config/load-config.js';

const base = { keys: { kek: { insecureValue: 'x'.repeat(44) } } };

const problems = (extra: Record<string, unknown>) => configProblems({ ...base, ...extra });

describe('inventory and signals configuration', () => {
  it('has defaults: flush every 5 s, stale and unused after 30 days, no auto-disable, denial bursts of 5 a minute, no rate spikes, no webhook', () => {
    const c = validateConfig(base);
    expect(c.inventory).toEqual({ flushInterval: '5s', staleAfterDays: 30, unusedGrantAfterDays: 30, maxIdentitiesInMemory: 50_000 });
    expect(c.signals).toEqual({ denialBurst: { threshold: 5, window: '1m' } });
  });

  it('accepts every key', () => {
    expect(
      problems({
        inventory: { flushInterval: '10s', staleAfterDays: 14, unusedGrantAfterDays: 60, autoDisableAfterDays: 90, maxIdentitiesInMemory: 1000 },
        signals: { denialBurst: { threshold: 10, window: '5m' }, rateSpike: { factor: 8, minPerMinute: 100 }, webhook: { url: 'https://hooks.example/signals', secret: { fromEnv: 'HOOK_SECRET' }, queueSize: 50 } },
      }),
    ).toEqual([]);
  });

  it('refuses bad values with the path of each', () => {
    const p = problems({
      inventory: { flushInterval: 'soon', autoDisableAfterDays: 0, colour: 'red' },
      signals: { denialBurst: { threshold: 1 }, rateSpike: { factor: 1 }, webhook: { url: 'not a url' } },
    });
    expect(p.some((x) => x.startsWith('inventory.flushInterval:'))).toBe(true);
    expect(p.some((x) => x.startsWith('inventory.autoDisableAfterDays:'))).toBe(true);
    expect(p.some((x) => x.startsWith('inventory:') && x.includes('colour'))).toBe(true);
    expect(p.some((x) => x.startsWith('signals.denialBurst.threshold:'))).toBe(true);
    expect(p.some((x) => x.startsWith('signals.rateSpike.factor:'))).toBe(true);
    expect(p.some((x) => x.startsWith('signals.webhook.url:'))).toBe(true);
  });
});
