import type { z } from 'zod';
import type { BlendedIdentity, CallContext, Credential, Decision, RevocationHandle } from '../core/types.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';
import type { TokenSigner } from '../keys/key-store.js';
import type { SecretResolver } from '../config/secret-ref.js';

/**
 * What `issue()` returns: a credential whose access token may still be in the making. agent-sts's
 * own JWTs are fingerprinted by their signed part (lib/crypto.ts `ownJwtFingerprint`), so the
 * exchange writes their audit record while the signature is being made and answers once both are
 * done; everything else here (id, fingerprint, expiry) is final.
 */
export type IssuedCredential = Omit<Credential, 'accessToken'> & { accessToken: Credential['accessToken'] | Promise<Credential['accessToken']> };

/** The credential once its access token is complete (callers that do not record it meanwhile). */
export async function completed(issued: IssuedCredential | Promise<IssuedCredential>): Promise<Credential> {
  const c = await issued;
  return { ...c, accessToken: await c.accessToken };
}

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
  /** Bind the credential to this DPoP key thumbprint (only for issuers with capabilities.ownJwts). */
  dpopJkt?: string;
}

/**
 * What an issuer can promise about its credentials, known from its parsed configuration alone (so
 * config loading can check policy lifetimes against it before anything is built).
 */
export interface IssuerCapabilities {
  /**
   * Whether revoke() ends a credential everywhere it is accepted before it expires. `false`: once
   * handed out it stays valid until its expiry (task end can only say "expires naturally at").
   */
  revocable: boolean;
  /**
   * Not revocable where it is verified offline, but agent-sts can mark it revoked (its holder's RFC
   * 7009 call, an operator's revocation): introspection and agent-sts itself then refuse it. Its own
   * signed JWTs only; `revocable` stays false, as verifiers that do not introspect accept it until it expires.
   */
  revokedForIntrospection?: boolean;
  /** Shortest lifetime this issuer can issue, seconds. */
  minTtlSeconds: number;
  /** Longest lifetime this issuer can issue, seconds (UNBOUNDED_TTL_SECONDS: no upstream limit). */
  maxTtlSeconds: number;
  /** Why the minimum is what it is, for configuration errors ("AssumeRole cannot issue shorter sessions"). No secrets. */
  minTtlReason?: string;
  /** Why the maximum is what it is, for configuration errors. No secrets. */
  maxTtlReason?: string;
  /**
   * The credential row is stored before anything exists upstream (the issuer has planHandle()), so
   * the broker can count a task's live credentials strictly before creating one more
   * (targets[].maxLivePerTask).
   */
  recordsBeforeIssue?: boolean;
  /**
   * Its credentials are agent-sts's own signed JWTs (agent-sts-jwt): they can be bound to a DPoP
   * key (targets[].dpop, IssueRequest.dpopJkt) and exchanged by the workload that serves their
   * target (targets[].servedBy).
   */
  ownJwts?: boolean;
}

/** The upstream sets no maximum lifetime: policy and the task cap it. */
export const UNBOUNDED_TTL_SECONDS = Number.MAX_SAFE_INTEGER;

/**
 * The answer of a health check. `detail` says what failed ("admin connection refused", "GitHub API
 * answered 401 for the App JWT", "timed out after 2 s") and never contains a secret: no URL with a
 * password, no token, no upstream error text that could echo one.
 */
export type IssuerHealth = { ok: true } | { ok: false; detail: string };

/** A configured issuer instance. */
export interface CredentialIssuer {
  readonly type: string;
  readonly name: string;
  /** Token type URNs this instance can issue (`requested_token_type`). */
  readonly issuedTokenTypes: readonly string[];
  /** Whether revoke() must be called on expiry (e.g. database roles); JWTs just lapse. */
  readonly needsActiveRevocation: boolean;
  /** The same values as the plugin's capabilities(config) for this instance's configuration. */
  readonly capabilities: IssuerCapabilities;
  /**
   * For issuers with upstream state: decides the revocation handle before the upstream call, so
   * the host can persist it first and a crash mid-issuance can still be cleaned up.
   */
  planHandle?(req: { taskId: string; credentialId: string }): RevocationHandle;
  issue(req: IssueRequest, ctx: CallContext): Promise<IssuedCredential>;
  /** Idempotent: revoking an unknown or already-revoked handle resolves. */
  revoke(handle: RevocationHandle, ctx: CallContext): Promise<void>;
  /**
   * One cheap call proving the upstream is reachable and accepts agent-sts's own credentials, bounded
   * by a short timeout (HEALTH_TIMEOUT_MS). Resolves, never rejects. Absent: nothing upstream to check.
   */
  health?(): Promise<IssuerHealth>;
  /**
   * For issuers that create accounts at the target (database logins): every account there whose
   * name carries this instance's prefix, with the handle revoke() takes to remove it. Used by
   * `agent-sts doctor` to find accounts no credential owns. Names only, never secrets.
   */
  listManaged?(): Promise<{ name: string; handle: RevocationHandle }[]>;
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

/** What one policy grant asks of the issuer of its target (checked when the policy set loads). */
export interface GrantRequirements {
  /** Granted scope -> its parameters (an empty object when it has none). */
  scopes: ReadonlyMap<string, Readonly<Record<string, string>>>;
  /** The grant's session-tag obligation. */
  sessionTags?: Readonly<Record<string, string>>;
  /**
   * The grant can decide alone: no human rule can add parameters to it (a v1 rule, or an agent
   * rule that does not require a person). Parameters the issuer needs must then be in the grant.
   */
  standalone: boolean;
}

export interface CredentialIssuerPlugin<Config = unknown> {
  readonly type: string;
  readonly configSchema: z.ZodType<Config>;
  /** Static: from the parsed config alone, without building an instance or calling anything. */
  capabilities(config: Config): IssuerCapabilities;
  /**
   * Problems with a policy grant for a target of this issuer, from the parsed config alone: scope
   * parameters it does not know or that would go beyond its configuration (a role not in its
   * allow-list, a repository it may not hand out), session tags it cannot carry. One sentence per
   * problem, without location (the caller adds file:line). issue() applies the same rules again
   * (fail closed): this is where a policy author hears about them first. Absent: the issuer takes
   * no scope parameters and no session tags.
   */
  checkGrant?(config: Config, grant: GrantRequirements): string[];
  create(name: string, config: Config, deps: IssuerDeps): CredentialIssuer;
}

/** checkGrant of an issuer type that takes no parameters and carries no session tags. */
export function noGrantParameters(type: string, grant: GrantRequirements): string[] {
  const problems: string[] = [];
  for (const [scope, params] of grant.scopes)
    if (Object.keys(params).length) problems.push(`scope ${scope}: ${type} issuers take no scope parameters (got ${Object.keys(params).join(', ')})`);
  if (grant.sessionTags && Object.keys(grant.sessionTags).length) problems.push(`${type} issuers cannot carry session tags (obligations.sessionTags)`);
  return problems;
}
