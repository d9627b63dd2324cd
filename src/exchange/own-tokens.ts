import { jwtVerify, type JWTPayload } from 'jose';
import type { Clock } from '../lib/clock.js';
import type { TokenSigner } from '../keys/key-store.js';
import { SIGNING_ALG } from '../keys/key-store.js';
import type { RevocationList } from '../tasks/revocation-list.js';

/**
 * The tokens agent-sts signs itself, as whoever is handed one sees them: agent tokens (aud =
 * agent-sts) and agent-sts-jwt access tokens (aud = a resource). Verified like any agent-sts JWT
 * (our keys, our issuer, `typ: at+jwt`) and checked against the in-memory revocation list, which
 * every replica refreshes from the store each second. Used by introspection and revocation
 * (server/oauth-revocation.ts) and by the exchange of an access token by the resource server it
 * was issued to (exchange-service.ts).
 */
export interface OwnToken {
  kind: 'agent' | 'access';
  claims: JWTPayload & { task_id: string; jti: string; sub: string; exp: number; iat: number; client_id?: string; act?: unknown; cnf?: { jkt?: string }; scope?: string };
}

export type Inspected = { ok: true; token: OwnToken } | { ok: false; reason: string };

export interface OwnTokenDeps {
  issuerUrl: () => string;
  signer: Pick<TokenSigner, 'verificationKeys'>;
  clock: Clock;
  maxTokenBytes: number;
  revocations: Pick<RevocationList, 'isRevoked' | 'blockOf'>;
}

export function createOwnTokenInspector(deps: OwnTokenDeps) {
  /** Verifies a token as one of ours. `toleranceSeconds`: how far past `exp` it still counts. Never throws. */
  async function inspect(token: string, toleranceSeconds: number): Promise<Inspected> {
    if (token.length > deps.maxTokenBytes || token.split('.').length !== 3) return { ok: false, reason: 'not an agent-sts token' };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, deps.signer.verificationKeys(), {
        issuer: deps.issuerUrl(),
        algorithms: [SIGNING_ALG],
        typ: 'at+jwt',
        requiredClaims: ['exp', 'iat', 'jti', 'sub'],
        clockTolerance: toleranceSeconds,
        currentDate: deps.clock.now(),
      }));
    } catch (e) {
      return { ok: false, reason: `not verified (${(e as { code?: string }).code ?? 'error'})` };
    }
    if (typeof payload.task_id !== 'string') return { ok: false, reason: 'no task_id' };
    const kind = payload.aud === deps.issuerUrl() && payload.wl ? 'agent' : 'access';
    return { ok: true, token: { kind, claims: payload as OwnToken['claims'] } };
  }

  /** Workload and person a token was issued to (for the kill switch). */
  function subjectsOf(t: OwnToken): { workload?: string; human?: string } {
    const c = t.claims as OwnToken['claims'] & { wl?: { s?: string }; hu?: { s?: string } };
    if (t.kind === 'agent') return { workload: c.wl?.s, human: c.hu?.s };
    return { workload: c.client_id, human: c.client_id !== undefined && c.sub !== c.client_id ? c.sub : undefined };
  }

  /** Why an otherwise valid token is not active now; undefined when it is. */
  function inactiveReason(t: OwnToken): string | undefined {
    if (deps.revocations.isRevoked(t.claims.jti, t.claims.task_id)) return 'revoked or its task ended';
    const who = subjectsOf(t);
    const block = (who.workload ? deps.revocations.blockOf('workload', who.workload) : undefined) ?? (who.human ? deps.revocations.blockOf('human', who.human) : undefined);
    return block ? 'identity blocked (kill switch)' : undefined;
  }

  return { inspect, subjectsOf, inactiveReason };
}
export type OwnTokenInspector = ReturnType<typeof createOwnTokenInspector>;
