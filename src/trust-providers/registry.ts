import { decodeJwt } from 'jose';
import { SubjectTokenRejected } from '../errors/sts-errors.js';
import type { TrustProvider } from './trust-provider.js';

/**
 * The set of trusted provider instances. Only registered instances are trusted: a token is
 * routed by its (unverified) `iss` to the one instance configured for that issuer, which then
 * verifies it completely. Nothing in a request can introduce a new issuer.
 */
export function createTrustRegistry(providers: readonly TrustProvider[]) {
  const byName = new Map(providers.map((p) => [p.name, p] as const));
  const byIssuer = new Map<string, TrustProvider>();
  for (const p of providers) {
    if (!p.issuer) continue;
    if (byIssuer.has(p.issuer))
      throw new Error(`trust providers "${byIssuer.get(p.issuer)!.name}" and "${p.name}" both claim issuer ${p.issuer}`);
    byIssuer.set(p.issuer, p);
  }
  return {
    /** Picks the provider for a JWT. Throws SubjectTokenRejected for untrusted issuers. */
    resolveFor(token: string, tokenType: string): TrustProvider {
      let iss: unknown;
      try {
        iss = decodeJwt(token).iss;
      } catch {
        throw new SubjectTokenRejected('subject token is not a well-formed JWT', { detail: { reason: 'undecodable' } });
      }
      const p = typeof iss === 'string' ? byIssuer.get(iss) : undefined;
      if (!p) throw new SubjectTokenRejected('subject token issuer is not trusted', { detail: { reason: 'untrusted issuer' } });
      if (!p.acceptedTokenTypes.includes(tokenType))
        throw new SubjectTokenRejected('token type does not match the token', { detail: { provider: p.name, tokenType } });
      return p;
    },
    get: (name: string) => byName.get(name),
    list: () => [...byName.values()],
  };
}
export type TrustRegistry = ReturnType<typeof createTrustRegistry>;
