import { describe, expect, it } from 'vitest';
import { configProblems } from '../../test/support/config.js';
import { validateConfig } from '../config/load-config.js';

const base = { keys: { kek: { insecureValue: 'x'.repeat(44) } } };

describe('audit configuration (audit.checkpointEvery)', () => {
  it('defaults to a signed checkpoint every 10,000 records or 60 s', () => {
    expect(validateConfig(base).audit).toEqual({ checkpointEvery: { records: 10_000, interval: '60s' } });
  });

  it('refuses bad values with the path of each', () => {
    const p = configProblems({ ...base, audit: { checkpointEvery: { records: 0, interval: 'soon', colour: 'red' } } });
    expect(p.some((x) => x.startsWith('audit.checkpointEvery.records:'))).toBe(true);
    expect(p.some((x) => x.startsWith('audit.checkpointEvery.interval:'))).toBe(true);
    expect(p.some((x) => x.startsWith('audit.checkpointEvery') && x.includes('colour'))).toBe(true);
    expect(configProblems({ ...base, audit: { retention: '1y' } }).some((x) => x.startsWith('audit') && x.includes('retention'))).toBe(true);
  });
});
