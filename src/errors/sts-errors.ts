/**
 * One error hierarchy for the whole broker. Each class says what happened and carries the
 * RFC 6749 §5.2 / RFC 8693 §2.2.2 code it maps to. `publicMessage` is safe to send to the
 * caller (generic, no token content, no policy internals); `detail` is for logs and audit only.
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'authorization_pending'
  | 'unsupported_token_type'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'temporarily_unavailable'
  | 'server_error';

export abstract class StsError extends Error {
  abstract readonly oauthCode: OAuthErrorCode;
  abstract readonly status: number;
  readonly detail?: Record<string, unknown>;
  constructor(
    readonly publicMessage: string,
    opts?: { cause?: unknown; detail?: Record<string, unknown> },
  ) {
    super(publicMessage, { cause: opts?.cause });
    this.name = new.target.name;
    this.detail = opts?.detail;
  }
}

export class MalformedRequest extends StsError {
  readonly oauthCode = 'invalid_request';
  readonly status = 400;
}
export class GrantTypeUnsupported extends StsError {
  readonly oauthCode = 'unsupported_grant_type';
  readonly status = 400;
}
export class ClientAuthFailed extends StsError {
  readonly oauthCode = 'invalid_client';
  readonly status = 401;
}
export class SubjectTokenRejected extends StsError {
  readonly oauthCode = 'invalid_request';
  readonly status = 400;
}
export class PolicyDenied extends StsError {
  readonly oauthCode = 'invalid_request';
  readonly status = 400;
}
export class TargetNotAllowed extends StsError {
  readonly oauthCode = 'invalid_target';
  readonly status = 400;
}
export class ScopeNotAllowed extends StsError {
  readonly oauthCode = 'invalid_scope';
  readonly status = 400;
}
/**
 * The grant needs a person's approval first (just-in-time approval). `authorization_pending` is
 * borrowed from RFC 8628 §3.5 (a code the client retries on); the answer carries the
 * `approval_id` extension member so the agent can point a person at the request.
 */
export class AuthorizationPending extends StsError {
  readonly oauthCode = 'authorization_pending';
  readonly status = 400;
  constructor(
    readonly approvalId: string,
    opts?: { detail?: Record<string, unknown> },
  ) {
    super(`approval required: request ${approvalId} is waiting for a decision`, opts);
  }
}
/** RFC 7009 §2.2.1: revocation of this kind of token is not supported (its issuer cannot revoke it). */
export class UnsupportedTokenType extends StsError {
  readonly oauthCode = 'unsupported_token_type';
  readonly status = 400;
}
/** RFC 9449 §5: the DPoP proof is missing where the token is bound to a key, or it is invalid (signature, htm/htu, age, replay, key). */
export class InvalidDpopProof extends StsError {
  readonly oauthCode = 'invalid_dpop_proof';
  readonly status = 400;
}
/** RFC 9449 §8: the server wants a proof carrying the nonce it gives in the `DPoP-Nonce` header; retry with it. */
export class UseDpopNonce extends StsError {
  readonly oauthCode = 'use_dpop_nonce';
  readonly status = 400;
}
/** An upstream (IdP JWKS, database, cloud API) could not be reached: retry later. */
export class UpstreamUnavailable extends StsError {
  readonly oauthCode = 'temporarily_unavailable';
  readonly status = 503;
}
/** Bad configuration; raised at load time, never from a request. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}
