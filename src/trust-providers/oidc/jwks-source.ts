import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { Logger } from '../../log/logger.js';

export interface JwksSourceOptions {
  issuer: string;
  /** Explicit JWKS URL; otherwise taken from OIDC discovery at `<issuer>/.well-known/openid-configuration`. */
  jwksUri?: string;
  /** A JWKS file on disk (development issuer); re-read on an unknown kid, subject to the cooldown. */
  jwksFile?: string;
  /** Inline JWKS (tests, air-gapped clusters). */
  jwks?: JSONWebKeySet;
  timeoutMs: number;
  cooldownMs: number;
  cacheMaxAgeMs: number;
  logger: Logger;
  fetch?: typeof fetch;
}

export interface JwksSource {
  getKey: JWTVerifyGetKey;
  /** Forces a refetch now (admin action after an emergency key rotation at the issuer). */
  refresh(): Promise<void>;
}

/**
 * Key resolution for one trusted issuer. Remote sets use jose's `createRemoteJWKSet`, which
 * refetches on an unknown `kid` but at most once per cooldown, so random-kid tokens cannot
 * hammer the issuer. Discovery checks that the document's `issuer` is exactly ours (RFC 8414 §3.3).
 */
export function createJwksSource(opts: JwksSourceOptions): JwksSource {
  const fetchImpl = opts.fetch ?? fetch;
  if (opts.jwks) {
    const local = createLocalJWKSet(opts.jwks);
    return { getKey: local, refresh: async () => {} };
  }
  if (opts.jwksFile) return createFileJwksSource(opts.jwksFile, opts.cooldownMs);

  let remote: ReturnType<typeof createRemoteJWKSet> | undefined;
  let resolving: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined;

  async function discoverJwksUri(): Promise<string> {
    const url = `${opts.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      const res = await fetchImpl(url, { signal: AbortSignal.timeout(opts.timeoutMs), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`discovery answered HTTP ${res.status}`);
      doc = (await res.json()) as typeof doc;
    } catch (e) {
      throw new UpstreamUnavailable('the token issuer could not be reached; try again later', {
        cause: e,
        detail: { issuer: opts.issuer, stage: 'discovery', error: (e as Error).message },
      });
    }
    if (doc.issuer !== opts.issuer)
      throw new UpstreamUnavailable('the token issuer could not be reached; try again later', {
        detail: { issuer: opts.issuer, stage: 'discovery', error: 'discovery document issuer does not match the configured issuer' },
      });
    if (typeof doc.jwks_uri !== 'string')
      throw new UpstreamUnavailable('the token issuer could not be reached; try again later', {
        detail: { issuer: opts.issuer, stage: 'discovery', error: 'discovery document has no jwks_uri' },
      });
    return doc.jwks_uri;
  }

  async function getRemote() {
    if (remote) return remote;
    resolving ??= (async () => {
      const uri = opts.jwksUri ?? (await discoverJwksUri());
      remote = createRemoteJWKSet(new URL(uri), {
        timeoutDuration: opts.timeoutMs,
        cooldownDuration: opts.cooldownMs,
        cacheMaxAge: opts.cacheMaxAgeMs,
      });
      return remote;
    })().finally(() => {
      resolving = undefined;
    });
    return resolving;
  }

  return {
    getKey: async (header, token) => (await getRemote())(header, token),
    async refresh() {
      const r = await getRemote();
      await r.reload();
    },
  };
}

function createFileJwksSource(file: string, cooldownMs: number): JwksSource {
  let local: JWTVerifyGetKey | undefined;
  let loadedAt = 0;
  const load = () => {
    local = createLocalJWKSet(JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet);
    loadedAt = Date.now();
  };
  return {
    getKey: async (header, token) => {
      if (!local) load();
      try {
        return await local!(header, token);
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_JWKS_NO_MATCHING_KEY' && Date.now() - loadedAt > cooldownMs) {
          load();
          return local!(header, token);
        }
        throw e;
      }
    },
    refresh: async () => load(),
  };
}
