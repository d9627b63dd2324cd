import { AuthorizationPending, StsError, UpstreamUnavailable, type OAuthErrorCode } from './sts-errors.js';

export interface OAuthErrorBody {
  error: OAuthErrorCode;
  error_description?: string;
  /** Extension member of an `authorization_pending` answer: the approval request to decide. */
  approval_id?: string;
}

/** Turns any thrown value into an RFC 6749 §5.2 response. Unknown errors never leak their message. */
export function toOAuthResponse(err: unknown): { status: number; body: OAuthErrorBody } {
  if (err instanceof UpstreamUnavailable)
    return { status: 503, body: { error: 'temporarily_unavailable', error_description: err.publicMessage } };
  if (err instanceof AuthorizationPending)
    return { status: err.status, body: { error: err.oauthCode, error_description: err.publicMessage, approval_id: err.approvalId } };
  if (err instanceof StsError && err.status < 500)
    return { status: err.status, body: { error: err.oauthCode, error_description: err.publicMessage } };
  return { status: 500, body: { error: 'server_error', error_description: 'internal error; see the server log' } };
}
