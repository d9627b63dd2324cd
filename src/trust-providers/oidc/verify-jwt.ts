import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { StsError, SubjectTokenRejected, UpstreamUnavailable } from '../../errors/sts-errors.js';

export interface JwtVerifyPolicy {
  /** The accepted `iss` value, or the exact set of accepted values (an instance trusting several issuers). */
  issuer: string | string[];
  audience: string | string[];
  algorithms: string[];
  clockToleranceSeconds: number;
  maxTokenAgeSeconds?: number;
  requiredClaims: string[];
  /** When false (default), tokens without `exp` are refused. */
  allowNoExpiry?: boolean;
  typ?: string;
  currentDate?: Date;
}

/** jose error codes that mean "the issuer's keys could not be obtained" rather than "bad token". */
const UPSTREAM_CODES = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

/**
 * Verifies a JWT against one trusted issuer's keys. Every rejection becomes SubjectTokenRejected
 * with a generic public message; the precise jose code goes to `detail` for logs and audit.
 */
export async function verifyJwt(token: string, keys: JWTVerifyGetKey, p: JwtVerifyPolicy): Promise<JWTPayload> {
  try {
    const { payload } = await jwtVerify(token, keys, {
      issuer: p.issuer,
      audience: p.audience,
      algorithms: p.algorithms,
      clockTolerance: p.clockToleranceSeconds,
      maxTokenAge: p.maxTokenAgeSeconds,
      requiredClaims: [...new Set([...(p.allowNoExpiry ? [] : ['exp']), 'sub', ...p.requiredClaims])],
      typ: p.typ,
      currentDate: p.currentDate,
    });
    return payload;
  } catch (e) {
    if (e instanceof StsError) throw e;
    const code = (e as { code?: string }).code;
    if (code && UPSTREAM_CODES.has(code))
      throw new UpstreamUnavailable('the token issuer could not be reached; try again later', { cause: e, detail: { cause: 'keys-unavailable', issuer: p.issuer, code } });
    if (e instanceof errors.JOSEError) {
      const claim = (e as { claim?: string }).claim;
      throw new SubjectTokenRejected('subject token could not be verified', { detail: { issuer: p.issuer, code, claim, reason: e.message } });
    }
    // Not a jose validation error: fetching keys failed (network, HTTP status).
    throw new UpstreamUnavailable('the token issuer could not be reached; try again later', {
      cause: e,
      detail: { cause: 'keys-unavailable', issuer: p.issuer, error: (e as Error).message },
    });
  }
}
