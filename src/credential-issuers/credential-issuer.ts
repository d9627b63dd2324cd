import type { z } from 'zod';
import type { BlendedIdentity, CallContext, Credential, Decision, RevocationHandle } from '../core/types.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';
import type { TokenSigner } from '../keys/key-store.js';
import type { SecretResolver } from '../config/secret-ref.js';

export interface IssueRequest {
  decision: Decision;
  identity: BlendedIdentity;
  taskId: string;
  /** Credential id chosen by the host (also the JWT `jti`); stored before any upstream call. */
  credentialId: string;
  /** What the client asked for at the target (resource URI or audience). */
  requestedTarget: string;
  /** Lifetime to issue, seconds (already capped by policy, task and configuration). */
  ttlSeconds: number;
  /** The handle from planHandle(), already stored (sealed) with the `issuing` credential row. */
  plannedHandle?: RevocationHandle;
}

/** A configured issuer instance. */
export interface CredentialIssuer {
  readonly type: string;
  readonly name: string;
  /** Token type URNs this instance can issue (`requested_token_type`). */
  readonly issuedTokenTypes: readonly string[];
  /** Whether revoke() must be called on expiry (e.g. database roles); JWTs just lapse. */
  readonly needsActiveRevocation: boolean;
  /**
   * For issuers with upstream state: decides the revocation handle before the upstream call, so
   * the host can persist it first and a crash mid-issuance can still be cleaned up.
   */
  planHandle?(req: { taskId: string; credentialId: string }): RevocationHandle;
  issue(req: IssueRequest, ctx: CallContext): Promise<Credential>;
  /** Idempotent: revoking an unknown or already-revoked handle resolves. */
  revoke(handle: RevocationHandle, ctx: CallContext): Promise<void>;
  close?(): Promise<void>;
}

export interface IssuerDeps {
  logger: Logger;
  clock: Clock;
  signer: TokenSigner;
  issuerUrl: string;
  env: NodeJS.ProcessEnv;
  /** Resolves this instance's secret references (env, file, or sealed under the KEK for this instance). */
  secret: SecretResolver;
}

export interface CredentialIssuerPlugin<Config = unknown> {
  readonly type: string;
  readonly configSchema: z.ZodType<Config>;
  create(name: string, config: Config, deps: IssuerDeps): CredentialIssuer;
}
