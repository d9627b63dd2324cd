import type { Secret } from './secret.js';

/** Verified identity of a workload (pod, CI job, agent), as produced by a trust provider. */
export interface WorkloadIdentity {
  kind: 'workload';
  /** Trust provider instance name and type that verified it. */
  provider: string;
  providerType: string;
  /** Stable, URI-like canonical subject, e.g. `github://acme/payments@refs/heads/main`. */
  subject: string;
  /** Normalised attributes (repository_id, ref, environment, namespace, ...), all strings. */
  attributes: Record<string, string>;
  /** Raw verified claims of the attestation (never the token itself). */
  claims: Record<string, unknown>;
  expiresAt: Date;
  /**
   * The running instance the attestation came from, provider-defined and unique across providers
   * (e.g. `k8s-pod:<provider>:<pod uid>`). Stored on the tasks it opens; when the provider sees the
   * instance gone (ProviderDeps.onInstanceGone), those tasks end.
   */
  instance?: string;
}

/** Verified identity of a person, from a trust provider marked `human`. */
export interface HumanContext {
  kind: 'human';
  provider: string;
  issuer: string;
  subject: string;
  email?: string;
  groups: string[];
  roles: string[];
  sessionId?: string;
  expiresAt: Date;
}

export type VerifiedIdentity = WorkloadIdentity | HumanContext;

/** One link of a delegation chain (RFC 8693 §4.1 `act`), outermost = current actor first. */
export interface Actor {
  sub: string;
  iss?: string;
}

export interface BlendedIdentity {
  workload: WorkloadIdentity;
  human?: HumanContext;
  /** Prior actors (informational), outermost first; excludes the current workload. */
  priorActors: Actor[];
  taskId?: string;
}

/** What the caller asks for, independent of HTTP. */
export interface ExchangeTarget {
  /** Configured target name the resource/audience resolved to. */
  name: string;
  /** The requested resource URI or audience value, as sent. */
  requested: string;
}

export interface Decision {
  allow: boolean;
  policyId?: string;
  policyVersion: string;
  target?: string;
  grantedScopes: string[];
  /** Upper bound for the credential lifetime, seconds. */
  ttlCapSeconds: number;
  /** Human-readable reasons (for the audit record; not sent verbatim to callers). */
  reasons: string[];
  /** On deny: which dimension refused, used to pick the OAuth error code. */
  denial?: 'identity' | 'target' | 'scope' | 'human';
  /**
   * The rules that decided an allow: the agent's, and with a person present the person's (the
   * same id for a v1 rule, which holds both). `policyId` is the agent's.
   */
  decidingRules?: { agent: string; human?: string };
  /** What the issuance must carry or wait for (policy v2 grants). */
  obligations?: {
    /** Tags for the issued session (e.g. AWS STS session tags). */
    sessionTags?: Record<string, string>;
    /** Someone must approve first (just-in-time approval: src/approvals/). */
    approval?: { approvers: string[]; windowSeconds: number };
  };
  /** Granted scope -> parameters for the issuer's templates (policy v2 `{name, params}` scopes). */
  scopeParams?: Record<string, Record<string, string>>;
}

export interface RevocationHandle {
  [key: string]: unknown;
}

/** A minted credential. `secret` is returned once and never stored or logged. */
export interface Credential {
  id: string;
  issuedTokenType: string;
  /** RFC 8693 token_type: `Bearer`, or `N_A` for non-access-token credentials. */
  tokenType: 'Bearer' | 'N_A' | 'DPoP';
  expiresAt: Date;
  fingerprint: string;
  /** `access_token` member of the response. */
  accessToken: Secret<string>;
  /** Optional structured form (the `credentials` extension member). */
  structured?: Secret<Record<string, unknown>>;
  /** Null when nothing upstream needs revoking (e.g. our own JWTs, revoked by jti). */
  revocationHandle: RevocationHandle | null;
}

/** Per-request context passed down the stages; no HTTP objects. */
/** Credential states in which a credential still owns its account at the target (not yet revoked, failed or expired). */
export const OWNING_STATES = ['issuing', 'active', 'revoking'];

export interface CallContext {
  requestId: string;
  clientAddress?: string;
  now: Date;
  /** A verified DPoP proof (RFC 9449) sent with the request: its key's thumbprint and its `ath`. */
  dpop?: { jkt: string; ath?: string };
}
