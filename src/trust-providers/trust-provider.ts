import type { z } from 'zod';
import type { CallContext, VerifiedIdentity } from '../core/types.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';
import { StsError } from '../errors/sts-errors.js';
import { fingerprint } from '../lib/crypto.js';

/** The token as presented: `subject_token`/`actor_token` and its declared type URN. */
export interface Attestation {
  token: string;
  tokenType: string;
}

/**
 * Why a verification could not be completed on agent-sts's own side (never the caller's fault).
 * Carried as `detail.cause` of UpstreamUnavailable: the caller sees only a generic temporary
 * error (503 temporarily_unavailable); logs, the audit reason and `providers test` show this.
 */
export type UpstreamCause =
  /** The issuer's keys (JWKS / discovery) could not be fetched or parsed. */
  | 'keys-unavailable'
  /** The platform API (Kubernetes API server, STS, ...) could not be reached or timed out. */
  | 'api-unreachable'
  /** The platform API refused agent-sts's own credentials (401) or permissions (403). */
  | 'own-credentials-rejected'
  /** The platform API answered something unusable (5xx, malformed body). */
  | 'api-error';

/** A configured provider instance. */
export interface TrustProvider {
  readonly type: string;
  readonly name: string;
  /** The `iss` this instance verifies (used to route a JWT to its provider), if any. */
  readonly issuer?: string;
  /** Further `iss` values this instance verifies (an Azure instance trusting several tenants). */
  readonly issuers?: readonly string[];
  /**
   * With `issuer`: the audiences this instance requires. When several instances share one issuer
   * (Kubernetes clusters left on the default issuer, an IdP used for people and for workloads),
   * a token goes to the one instance whose audience it carries.
   */
  readonly audiences?: readonly string[];
  /**
   * Token types it accepts. JWT types are routed by `iss` (+ `aud`); any other type
   * (urn:agent-sts:token-type:...) is routed to the instances that accept that type.
   */
  readonly acceptedTokenTypes: readonly string[];
  /**
   * Non-JWT types only, when several instances accept the same type: a cheap check without I/O
   * whether this attestation is meant for this instance (e.g. its account or region allow-list).
   */
  matches?(input: Attestation): boolean;
  /**
   * Verifies the attestation completely (signature, issuer, audience, times).
   * Throws SubjectTokenRejected on any rejection of the attestation, UpstreamUnavailable with a
   * `detail.cause` (UpstreamCause) when agent-sts's own side kept it from deciding. Never allows
   * when in doubt.
   */
  verify(input: Attestation, ctx: CallContext): Promise<VerifiedIdentity>;
  /** Forces a refresh of cached verification keys (admin action). */
  refreshKeys?(): Promise<void>;
  /**
   * Starts background work that reports through ProviderDeps (e.g. a watch on the platform's
   * workloads). Called by the server once it serves, never by CLI commands; idempotent.
   */
  start?(): void;
  /** Stops background work (the instance left the set, or shutdown). Idempotent; never throws. */
  close?(): void;
}

export interface ProviderDeps {
  logger: Logger;
  clock: Clock;
  /** Seconds of clock-skew leeway. */
  clockTolerance: number;
  fetch?: typeof fetch;
  /** agent-sts's public issuer URL, known once the server listens (the aws-iam server-id value). */
  serverId: () => string;
  /** Single-use guard shared by all replicas (replayed signed requests, reused identity documents). */
  replay: ReplayGuard;
  /** Environment for secret references (`fromEnv`) in a provider's config. */
  env: NodeJS.ProcessEnv;
  /**
   * Reports that a running instance (WorkloadIdentity.instance) is gone, e.g. its pod was deleted:
   * the server ends the instance's open tasks with `reason`. Absent outside the server.
   */
  onInstanceGone?(instance: string, reason: string): void;
  /**
   * Reports every running instance whose id starts with `prefix`, as of `asOf` (a complete list
   * of the platform's workloads): the server ends the open tasks, opened before `asOf`, of any
   * other instance with that prefix, with `reason(instance)` (their workload went away while no
   * replica was watching). `scope.subjectPrefix`: the list covers only the workloads whose subject
   * starts with it (one Kubernetes namespace), so only those tasks are compared. Absent outside the server.
   */
  onInstancesListed?(prefix: string, present: ReadonlySet<string>, asOf: Date, reason: (instance: string) => string, scope?: InstanceListScope): void;
}

/** What a list of running instances covers, beyond its instance-id prefix. */
export interface InstanceListScope {
  /** Only tasks whose workload subject starts with this (e.g. `k8s://prod/ns/agents/`). */
  subjectPrefix?: string;
}

/** Records one-time use of an attestation (by a hash, never the attestation itself). */
export interface ReplayGuard {
  /**
   * Claims `key` for `provider` until `until` (null: forever). Resolves true the first time,
   * false when the key was claimed before and has not expired — the caller then refuses.
   */
  claimOnce(provider: string, key: string, until: Date | null): Promise<boolean>;
}

export interface TrustProviderPlugin<Config = unknown> {
  readonly type: string;
  readonly configSchema: z.ZodType<Config>;
  create(name: string, config: Config, deps: ProviderDeps): TrustProvider;
}

/**
 * Wraps a plugin's verification so every refusal is logged at debug level with the provider, the
 * error and its detail, and a fingerprint of the attestation — never the attestation itself.
 */
export function logRefusals(type: string, name: string, logger: Logger, verify: (input: Attestation, ctx: CallContext) => Promise<VerifiedIdentity>) {
  return async (input: Attestation, ctx: CallContext): Promise<VerifiedIdentity> => {
    try {
      return await verify(input, ctx);
    } catch (e) {
      if (e instanceof StsError) logger.debug({ provider: name, tokenFingerprint: fingerprint(input.token), error: e.name, detail: e.detail }, `${type} attestation not accepted`);
      throw e;
    }
  };
}
