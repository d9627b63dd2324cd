/**
 * Client side of the peer: starts bench/peer-oidc-provider.ts as its own process, signs the
 * client assertions (private_key_jwt, ES256, unique jti each) and checks that a token request
 * really yields a JWT access token.
 */
import { fileURLToPath } from 'node:url';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import { startChild, type Child } from './children.js';
import type { LoadTarget } from './load.js';

const PEER_SCRIPT = fileURLToPath(new URL('./peer-oidc-provider.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface PeerReady {
  port: number;
  issuer: string;
  clientId: string;
  resource: string;
  scope: string;
  tokenEndpoint: string;
}

export interface Peer {
  child: Child;
  info: PeerReady;
  target: LoadTarget;
  /** A decoded sample access token (header + payload), checked to be a JWT. */
  sample: { header: Record<string, unknown>; payload: Record<string, unknown>; raw: string };
  stop: () => Promise<void>;
}

export async function startPeer(log: (line: string) => void = () => {}): Promise<Peer> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk: JWK = await exportJWK(privateKey);
  const child = startChild(process.execPath, ['--import', 'tsx', PEER_SCRIPT, '0'], {
    cwd: ROOT,
    env: { ...process.env, BENCH_PEER_CLIENT_JWK: JSON.stringify(jwk), NODE_ENV: 'production' },
  });
  const info = await child.firstJsonLine<PeerReady>();
  log(`  peer: oidc-provider listening at ${info.issuer} (pid ${child.pid})`);

  const key = (await importJWK(jwk, 'ES256')) as CryptoKey;
  const makeBodies = makeAssertionBodies(info, key);

  // Smoke: one request must answer 200 with a JWT access token for the resource.
  const [body] = await makeBodies(1);
  const res = await fetch(info.tokenEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: body! });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`peer smoke request: HTTP ${res.status} ${text}`);
  const answer = JSON.parse(text) as { access_token?: string; token_type?: string; scope?: string };
  const raw = answer.access_token ?? '';
  let header: Record<string, unknown>, payload: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(raw) as Record<string, unknown>;
    payload = decodeJwt(raw) as Record<string, unknown>;
  } catch {
    throw new Error(`peer smoke request: the access token is not a JWT: ${text}`);
  }
  if (header.alg !== 'ES256' || payload.aud !== info.resource) throw new Error(`peer smoke request: unexpected access token ${JSON.stringify({ header, payload })}`);
  log(`  peer: smoke OK, JWT access token alg=${String(header.alg)} typ=${String(header.typ)} aud=${String(payload.aud)} scope=${String(payload.scope)}`);

  return {
    child,
    info,
    sample: { header, payload, raw },
    target: {
      name: 'oidc-provider client_credentials (peer)',
      url: info.tokenEndpoint,
      serverPid: child.pid,
      bodies: { unique: makeBodies, maxRatePerSec: 10_000 },
    },
    stop: () => child.stop(),
  };
}

let jtiCounter = 0;
function makeAssertionBodies(info: PeerReady, key: CryptoKey) {
  const prefix = `${process.pid}-${Date.now().toString(36)}-`;
  return async (count: number): Promise<string[]> => {
    const out = new Array<string>(count);
    // Lifetime covers precompute + warm-up/run; oidc-provider keeps each jti until exp.
    const exp = Math.floor(Date.now() / 1000) + 600;
    for (let i = 0; i < count; i++) {
      const assertion = await new SignJWT({ jti: `${prefix}${jtiCounter++}` })
        .setProtectedHeader({ alg: 'ES256', kid: 'bench-client-key' })
        .setIssuer(info.clientId)
        .setSubject(info.clientId)
        .setAudience(info.issuer)
        .setIssuedAt()
        .setExpirationTime(exp)
        .sign(key);
      out[i] = new URLSearchParams({
        grant_type: 'client_credentials',
        client_id: info.clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
        resource: info.resource,
        scope: info.scope,
      }).toString();
    }
    return out;
  };
}
