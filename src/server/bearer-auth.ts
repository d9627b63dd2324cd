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

export function bearerToken(authorization: string | undefined): string | undefined {
  const m = /^Bearer ([\x21-\x7E]{1,65536})$/i.exec(authorization ?? '');
  return m?.[1];
}
