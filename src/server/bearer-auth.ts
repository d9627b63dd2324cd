import { timingSafeEqual } from 'node:crypto';
import { sha256Hex } from '../lib/crypto.js';

/** Static bearer credentials (auditors, admins), compared by SHA-256 in constant time. */
export function createBearerAuth(clients: readonly { name: string; tokenSha256: string }[]) {
  const hashes = clients.map((c) => ({ name: c.name, hash: Buffer.from(c.tokenSha256, 'hex') }));
  return {
    /** Returns the client name, or undefined. */
    authenticate(authorization: string | undefined): string | undefined {
      const m = /^Bearer ([\x21-\x7E]{1,4096})$/i.exec(authorization ?? '');
      if (!m) return undefined;
      const h = Buffer.from(sha256Hex(m[1]!), 'hex');
      let found: string | undefined;
      for (const c of hashes) if (timingSafeEqual(c.hash, h)) found = c.name;
      return found;
    },
  };
}
export type BearerAuth = ReturnType<typeof createBearerAuth>;

/** The token of an `Authorization: Bearer <token>` or `Authorization: DPoP <token>` header (RFC 6750, RFC 9449 §7.1). */
export function presentedToken(authorization: string | undefined): { scheme: 'bearer' | 'dpop'; token: string } | undefined {
  const m = /^(Bearer|DPoP) ([\x21-\x7E]{1,65536})$/i.exec(authorization ?? '');
  return m ? { scheme: m[1]!.toLowerCase() as 'bearer' | 'dpop', token: m[2]! } : undefined;
}

export function bearerToken(authorization: string | undefined): string | undefined {
  const p = presentedToken(authorization);
  return p?.scheme === 'bearer' ? p.token : undefined;
}
