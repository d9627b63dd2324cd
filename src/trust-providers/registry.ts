import { decodeJwt } from 'jose';
import { SubjectTokenRejected } from '../errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../lib/urns.js';
import type { Attestation, TrustProvider } from './trust-provider.js';

/**
 * The set of trusted provider instances. Only registered instances are trusted: a JWT is routed
 * by its (unverified) `iss` — and, when several instances share that issuer, its `aud` — to the
 * one instance configured for it, which then verifies it completely; any other token type goes to
 * the instance(s) that accept that type. Nothing in a request can introduce a new issuer.
 */
export function createTrustRegistry(providers: readonly TrustProvider[]) {
  const byName = new Map<string, TrustProvider>();
  const byIssuer = new Map<string, TrustProvider[]>();
  const byType = new Map<string, TrustProvider[]>();
  for (const p of providers) {
    if (byName.has(p.name)) throw new Error(`two trust providers are named "${p.name}"`);
    byName.set(p.name, p);
    for (const iss of new Set([...(p.issuer ? [p.issuer] : []), ...(p.issuers ?? [])])) {
      const same = byIssuer.get(iss) ?? [];
      for (const q of same) {
        const shared = !p.audiences?.length || !q.audiences?.length ? ['(any)'] : p.audiences.filter((a) => q.audiences!.includes(a));
        if (shared.length)
          throw new Error(
            `trust providers "${q.name}" and "${p.name}" both claim issuer ${iss}` +
              (shared[0] === '(any)' ? '; give each its own audience to register both' : ` and audience ${shared[0]}`),
          );
      }
      byIssuer.set(iss, [...same, p]);
    }
    for (const t of p.acceptedTokenTypes) if (!JWT_TOKEN_TYPES.includes(t)) byType.set(t, [...(byType.get(t) ?? []), p]);
  }

  function forJwt(token: string, tokenType: string): TrustProvider {
    let claims: { iss?: unknown; aud?: unknown };
    try {
      claims = decodeJwt(token);
    } catch {
      throw new SubjectTokenRejected('subject token is not a well-formed JWT', { detail: { reason: 'undecodable' } });
    }
    const candidates = typeof claims.iss === 'string' ? (byIssuer.get(claims.iss) ?? []) : [];
    let p: TrustProvider | undefined;
    if (candidates.length === 1) p = candidates[0];
    else if (candidates.length > 1) {
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      const hits = candidates.filter((c) => c.audiences!.some((a) => aud.includes(a)));
      if (hits.length === 1) p = hits[0];
      else throw new SubjectTokenRejected('subject token audience is not accepted', { detail: { reason: 'no provider for this issuer and audience' } });
    }
    if (!p) throw new SubjectTokenRejected('subject token issuer is not trusted', { detail: { reason: 'untrusted issuer' } });
    if (!p.acceptedTokenTypes.includes(tokenType))
      throw new SubjectTokenRejected('token type does not match the token', { detail: { provider: p.name, tokenType } });
    return p;
  }

  function forType(input: Attestation): TrustProvider {
    const candidates = byType.get(input.tokenType) ?? [];
    const hits = candidates.length > 1 ? candidates.filter((c) => c.matches?.(input) ?? false) : candidates;
    if (hits.length === 1) return hits[0]!;
    if (!candidates.length) throw new SubjectTokenRejected('no trust provider accepts this token type', { detail: { reason: 'no provider for token type', tokenType: input.tokenType } });
    throw new SubjectTokenRejected('subject token is not accepted by any trust provider', {
      detail: { reason: hits.length ? 'several providers match' : 'no provider matches', tokenType: input.tokenType },
    });
  }

  return {
    /** Picks the provider for an attestation. Throws SubjectTokenRejected when none is trusted for it. */
    resolveFor(token: string, tokenType: string): TrustProvider {
      return JWT_TOKEN_TYPES.includes(tokenType) ? forJwt(token, tokenType) : forType({ token, tokenType });
    },
    get: (name: string) => byName.get(name),
    list: () => [...byName.values()],
  };
}
export type TrustRegistry = ReturnType<typeof createTrustRegistry>;
