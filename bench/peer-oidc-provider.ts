/**
 * Peer for the benchmark: panva's oidc-provider (v9) token endpoint, run as its own process.
 *
 *   node --import tsx bench/peer-oidc-provider.ts [port]      (port 0 or none = pick one)
 *
 * One client: client_credentials, private_key_jwt (ES256), public JWKS inline. Resource
 * indicators are enabled and every resource yields an ES256-signed JWT access token with
 * scope api:read. Default in-memory adapter (jti replay detection lives there).
 *
 * The client's key pair is read from BENCH_PEER_CLIENT_JWK (a private JWK as JSON, supplied by
 * the parent, which signs the client assertions); without it a fresh one is generated and its
 * private JWK is included in the ready line. Prints one line on stdout when listening:
 *   {"port":N,"issuer":"http://127.0.0.1:N","clientId":"bench-client","resource":"https://api.bench.invalid/"}
 */
import { generateKeyPair, exportJWK, type JWK } from 'jose';
import Provider from 'oidc-provider';
import { freePort } from './children.js';

export const PEER_CLIENT_ID = 'bench-client';
export const PEER_RESOURCE = 'https://api.bench.invalid/';
export const PEER_SCOPE = 'api:read';

// oidc-provider prints development notices/warnings through console.info/console.warn; the bench
// wants a quiet child (its stdout carries the ready line).
console.info = () => {};
console.warn = () => {};

const requestedPort = Number(process.argv[2] ?? 0);

async function ecKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return exportJWK(privateKey);
}

const clientPrivate: JWK = process.env.BENCH_PEER_CLIENT_JWK ? (JSON.parse(process.env.BENCH_PEER_CLIENT_JWK) as JWK) : await ecKey();
const { d: _d, ...clientPublic } = clientPrivate;
const providerKey = { ...(await ecKey()), kid: 'peer-es256', alg: 'ES256', use: 'sig' };

// The issuer has to be known before listening (client assertions carry it as aud); resolve the
// port first when asked for "any".
const { createServer } = await import('node:http');
const port = requestedPort || (await freePort());
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: PEER_CLIENT_ID,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: PEER_SCOPE,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      id_token_signed_response_alg: 'ES256',
      jwks: { keys: [{ ...clientPublic, alg: 'ES256', use: 'sig', kid: 'bench-client-key' }] },
    },
  ],
  jwks: { keys: [providerKey] },
  scopes: [PEER_SCOPE],
  clientAuthSigningAlgValues: ['ES256'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => PEER_RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx: unknown, resourceIndicator: string) => {
        if (resourceIndicator !== PEER_RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: PEER_SCOPE,
          audience: resourceIndicator,
          accessTokenTTL: 5 * 60,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: { ClientCredentials: 5 * 60 },
});
// Errors are answered to the client; do not print them (the bench counts non-2xx itself).
provider.on('server_error', () => {});

const server = createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(
    `${JSON.stringify({
      port,
      issuer,
      clientId: PEER_CLIENT_ID,
      resource: PEER_RESOURCE,
      scope: PEER_SCOPE,
      tokenEndpoint: `${issuer}/token`,
      ...(process.env.BENCH_PEER_CLIENT_JWK ? {} : { clientPrivateJwk: clientPrivate }),
    })}\n`,
  );
});

const stop = () => server.close(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
