import type { z } from 'zod';
import type { CallContext, VerifiedIdentity } from '../core/types.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';

/** The token as presented: `subject_token`/`actor_token` and its declared type URN. */
export interface Attestation {
  token: string;
  tokenType: string;
}

/** A configured provider instance. */
export interface TrustProvider {
  readonly type: string;
  readonly name: string;
  /** The `iss` this instance verifies (used to route a JWT to its provider), if any. */
  readonly issuer?: string;
  readonly acceptedTokenTypes: readonly string[];
  /**
   * Verifies the attestation completely (signature, issuer, audience, times).
   * Throws SubjectTokenRejected on any rejection, UpstreamUnavailable when the issuer's keys cannot be fetched.
   */
  verify(input: Attestation, ctx: CallContext): Promise<VerifiedIdentity>;
  /** Forces a refresh of cached verification keys (admin action). */
  refreshKeys?(): Promise<void>;
}

export interface ProviderDeps {
  logger: Logger;
  clock: Clock;
  /** Seconds of clock-skew leeway. */
  clockTolerance: number;
  fetch?: typeof fetch;
}

export interface TrustProviderPlugin<Config = unknown> {
  readonly type: string;
  readonly configSchema: z.ZodType<Config>;
  create(name: string, config: Config, deps: ProviderDeps): TrustProvider;
}
