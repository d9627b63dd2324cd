import { validateConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors/sts-errors.js';

/** The problems `validateConfig` reports for a raw configuration (what `config check` prints); [] when valid. */
export function configProblems(raw: unknown): string[] {
  try {
    validateConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}
