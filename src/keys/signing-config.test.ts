import { describe, expect, it } from 'vitest';
import { configProblems } from '../../test/support/config.js';
import { validateConfig } from '../config/load-config.js';

const kek = { insecureValue: 'x'.repeat(44) };

describe('keys.signingThread', () => {
  it('defaults to auto and takes on / off', () => {
    expect(validateConfig({ keys: { kek } }).keys.signingThread).toBe('auto');
    for (const mode of ['on', 'off'] as const) expect(validateConfig({ keys: { kek, signingThread: mode } }).keys.signingThread).toBe(mode);
  });

  it('refuses anything else with its path', () => {
    for (const bad of ['sometimes', true, 1, '']) {
      const p = configProblems({ keys: { kek, signingThread: bad } });
      expect(p.some((x) => x.startsWith('keys.signingThread:')), `${JSON.stringify(bad)}: ${p.join('; ')}`).toBe(true);
    }
  });
});
