import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { randomUUID } from 'node:crypto';

/** Issuer URL of the local development issuer; only the dev config trusts it. */
export const DEV_ISSUER = 'https://dev-issuer.agent-sts.invalid';

/**
 * A local OIDC-style issuer for trying agent-sts without a cloud: an ES256 key in the data
 * directory (`dev-issuer.key.json`, private) and its public JWKS (`jwks.json`) that the dev
 * config's `oidc` provider reads through `jwksFile`.
 */
export async function ensureDevIssuerKey(dir: string): Promise<{ jwksFile: string; created: boolean }> {
  const keyFile = join(dir, 'dev-issuer.key.json');
  const jwksFile = join(dir, 'jwks.json');
  if (existsSync(keyFile) && existsSync(jwksFile)) return { jwksFile, created: false };
  mkdirSync(dir, { recursive: true });
  const kid = `dev-${randomUUID().slice(0, 8)}`;
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  writeFileSync(keyFile, JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'ES256' }), { mode: 0o600 });
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] }, null, 2));
  return { jwksFile, created: true };
}

export async function signDevToken(dir: string, opts: { sub: string; audience: string; claims?: Record<string, unknown>; ttlSeconds?: number }): Promise<string> {
  await ensureDevIssuerKey(dir);
  const jwk = JSON.parse(readFileSync(join(dir, 'dev-issuer.key.json'), 'utf8')) as JWK & { kid: string };
  const key = await importJWK(jwk, 'ES256');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...opts.claims, iss: DEV_ISSUER, sub: opts.sub, aud: opts.audience, iat: now, exp: now + (opts.ttlSeconds ?? 600), jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid, typ: 'JWT' })
    .sign(key);
}
