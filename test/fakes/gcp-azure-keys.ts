// A signing-key publisher for the gcp and azure trust providers: a real HTTP server on loopback
// serving a JWK set at the cloud's path (Google /oauth2/v3/certs, Microsoft
// /common/discovery/v2.0/keys), with the issuer-side operations the tests need: key rotation
// (publish a new key and sign with it, optionally retiring the old one) and an outage switch.
// Tokens carry whatever `iss` the test gives (https://accounts.google.com, https://sts.windows.net/<tid>/):
// the providers take keys from the configured jwksUri, never from the issuer.
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { randomUUID } from 'node:crypto';
import { startRoutedServer } from './http.js';

export interface FakeCloudKeys {
  jwksUri: string;
  kid: string;
  /** PEM of the first key (for algorithm-confusion tests). */
  publicPem: string;
  /** Signs claims with the current key; iat/exp default to now / now+1h (`undefined` drops a claim). */
  sign(claims: JWTPayload, opts?: { kid?: string; key?: CryptoKey }): Promise<string>;
  /** Publishes a new key and signs with it from now on; `retire` also unpublishes the older keys. */
  rotate(opts?: { retire?: boolean }): Promise<string>;
  /** false: the JWKS endpoint answers 503. */
  setAvailable(up: boolean): void;
  /** How many times the JWK set was fetched. */
  fetches(): number;
  close(): Promise<void>;
}

export async function startFakeCloudKeys(path: '/oauth2/v3/certs' | '/common/discovery/v2.0/keys'): Promise<FakeCloudKeys> {
  let keys: { kid: string; privateKey: CryptoKey; publicJwk: JWK }[] = [];
  let up = true;
  const addKey = async () => {
    const kid = randomUUID().replace(/-/g, '').slice(0, 20);
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    keys.push({ kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } });
    return { kid, publicKey };
  };
  const first = await addKey();
  const publicPem = await exportSPKI(first.publicKey);
  const srv = await startRoutedServer({
    [`GET ${path}`]: () => (up ? { keys: keys.map((k) => k.publicJwk) } : { status: 503, body: { error: 'unavailable' } }),
  });
  const current = () => keys[keys.length - 1]!;
  return {
    jwksUri: `${srv.base}${path}`,
    get kid() {
      return current().kid;
    },
    publicPem,
    async sign(claims, o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload: JWTPayload = { iat: now, exp: now + 3600, ...claims };
      for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
      return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: o.kid ?? current().kid, typ: 'JWT' }).sign(o.key ?? current().privateKey);
    },
    async rotate(o = {}) {
      const { kid } = await addKey();
      if (o.retire) keys = keys.filter((k) => k.kid === kid);
      return kid;
    },
    setAvailable(v) {
      up = v;
    },
    fetches: () => srv.calls.filter((c) => c.path === path).length,
    close: srv.close,
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** An unsecured JWT (`alg: none`, empty signature). */
export const unsignedToken = (payload: JWTPayload): string => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;

/** Algorithm confusion: HS256 "signed" with the issuer's RSA public key (PEM) as the HMAC secret. */
export const hs256WithPublicKey = (payload: JWTPayload, publicPem: string, kid: string): Promise<string> =>
  new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid, typ: 'JWT' }).sign(new TextEncoder().encode(publicPem));

/** Keeps header and signature of `token` but swaps in a different payload. */
export const tamperedPayload = (token: string, payload: JWTPayload): string => {
  const [h, , s] = token.split('.');
  return `${h}.${b64(payload)}.${s}`;
};
