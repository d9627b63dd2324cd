import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { randomUUID } from 'node:crypto';
import { startRoutedServer } from './http.js';

export interface FakeIssuer {
  issuer: string;
  jwksUri: string;
  kid: string;
  publicPem: string;
  /** Signs claims as this issuer (iss/iat/exp/jti defaulted; pass overrides or `undefined` to drop). */
  sign(claims: JWTPayload, opts?: { kid?: string; alg?: 'RS256' | 'ES256'; key?: CryptoKey; typ?: string }): Promise<string>;
  /** Adds a new key to the served JWKS (issuer-side rotation) and makes it the signing key. */
  rotate(): Promise<string>;
  calls: { method: string; path: string }[];
  close(): Promise<void>;
}

/**
 * A real OIDC issuer on loopback: discovery document + JWKS over HTTP, RS256 keys like GitHub's.
 * Used with the real `oidc` / `github-actions` providers (which fetch and cache its JWKS).
 */
export async function startFakeOidcIssuer(opts: { path?: string } = {}): Promise<FakeIssuer> {
  const keys: { kid: string; privateKey: CryptoKey; publicJwk: JWK }[] = [];
  const addKey = async () => {
    const kid = `k-${randomUUID().slice(0, 8)}`;
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    keys.push({ kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } });
    return { kid, publicKey };
  };
  const first = await addKey();
  const publicPem = await exportSPKI(first.publicKey);
  const prefix = opts.path ?? '';
  let issuer = '';
  const srv = await startRoutedServer({
    [`GET ${prefix}/.well-known/openid-configuration`]: () => ({ issuer, jwks_uri: `${issuer}/.well-known/jwks`, id_token_signing_alg_values_supported: ['RS256'] }),
    [`GET ${prefix}/.well-known/jwks`]: () => ({ keys: keys.map((k) => k.publicJwk) }),
  });
  issuer = `${srv.base}${prefix}`;
  const current = () => keys[keys.length - 1]!;
  return {
    issuer,
    jwksUri: `${issuer}/.well-known/jwks`,
    get kid() {
      return current().kid;
    },
    publicPem,
    async sign(claims, o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload: JWTPayload = { iss: issuer, iat: now, exp: now + 300, jti: randomUUID(), ...claims };
      for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
      return new SignJWT(payload)
        .setProtectedHeader({ alg: o.alg ?? 'RS256', kid: o.kid ?? current().kid, typ: o.typ ?? 'JWT' })
        .sign(o.key ?? current().privateKey);
    },
    async rotate() {
      return (await addKey()).kid;
    },
    calls: srv.calls,
    close: srv.close,
  };
}
