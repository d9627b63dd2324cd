import { StsError } from '../errors/sts-errors.js';
import { toOAuthResponse, type OAuthErrorBody } from '../errors/to-oauth-response.js';

interface FastifyLikeError {
  statusCode?: number;
  code?: string;
  validation?: unknown;
}

/** Errors fastify raises before our handler runs (body size, media type, malformed body). */
export function frameworkError(err: unknown): { status: number; message: string } | undefined {
  const e = err as FastifyLikeError;
  if (err instanceof StsError || typeof e?.statusCode !== 'number' || e.statusCode >= 500) return undefined;
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, message: 'request body is too large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, message: 'unsupported content type' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, message: 'request body is not valid JSON' };
    default:
      return { status: e.statusCode, message: 'malformed request' };
  }
}

/** Token endpoint errors: RFC 6749 §5.2 JSON. Framework errors become `invalid_request`. */
export function oauthError(err: unknown): { status: number; body: OAuthErrorBody } {
  const f = frameworkError(err);
  if (f) return { status: f.status === 415 ? 400 : f.status, body: { error: 'invalid_request', error_description: f.message } };
  return toOAuthResponse(err);
}

/** Everything else: RFC 9457 problem+json. */
export function problem(status: number, title: string, detail?: string) {
  return { type: 'about:blank', title, status, ...(detail ? { detail } : {}) };
}

export function problemFor(err: unknown): { status: number; body: ReturnType<typeof problem> } {
  const f = frameworkError(err);
  if (f) return { status: f.status, body: problem(f.status, f.message) };
  // The OAuth error code is the short title; the public message explains it.
  if (err instanceof StsError) return { status: err.status, body: problem(err.status, err.oauthCode, err.publicMessage) };
  return { status: 500, body: problem(500, 'internal error; see the server log') };
}
