import type * as AuthApp from '@octokit/auth-app';
import type * as OctokitRequest from '@octokit/request';
import type { InstallationAccessTokenAuthentication } from '@octokit/auth-app';
import { z } from 'zod';
import { Secret } from '../../core/secret.js';
import type { Decision } from '../../core/types.js';
import { credentialFingerprint, fingerprint } from '../../lib/crypto.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema } from '../../config/secret-ref.js';
import { ScopeNotAllowed, TargetNotAllowed, UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { CredentialIssuer, CredentialIssuerPlugin, GrantRequirements, IssuerCapabilities } from '../credential-issuer.js';
import { grantOfDecision, paramItems, paramsOf, refuseGrantProblems, unknownParams } from '../grant-params.js';
import { HealthProblem, networkDetail, probeHealth, safeCode } from '../health.js';
import { lazyModule } from '../../lib/lazy-module.js';

// Octokit loads when a github-app issuer is built, not at every start-up.
const authApp = lazyModule<typeof AuthApp>('@octokit/auth-app');
const octokitRequest = lazyModule<typeof OctokitRequest>('@octokit/request');

/** GitHub permission levels, weakest first (STANDARDS §8.2: read/write, some permissions accept admin). */
const LEVELS = ['read', 'write', 'admin'] as const;
type Level = (typeof LEVELS)[number];
const rank = (l: Level): number => LEVELS.indexOf(l);

/** GitHub caps `repository_ids` at 500 per token request (STANDARDS §8.2). */
const MAX_REPOSITORIES = 500;

const PermissionsSchema = z
  .record(z.string().regex(/^[a-z][a-z0-9_]*$/, 'a GitHub permission name (e.g. contents, issues, pull_requests)'), z.enum(LEVELS))
  .refine((p) => Object.keys(p).length > 0, 'name at least one permission');

const RepositorySchema = z
  .object({
    /** The repository id: what is sent to GitHub. Names are informational only (repositories can be renamed and names reused). */
    id: z.number().int().positive(),
    name: z.string().min(1).optional(),
  })
  .strict();

const ScopeSchema = z
  .object({
    /** GitHub permission -> level a token for this scope carries. */
    permissions: PermissionsSchema,
    /** Repository ids (a subset of `repositories`) this scope covers; omitted = every allow-listed repository. */
    repositories: z.array(z.number().int().positive()).min(1).max(MAX_REPOSITORIES).optional(),
  })
  .strict();

export const GithubAppIssuerConfigSchema = z
  .object({
    /** The GitHub App's numeric ID (the JWT `iss`). */
    appId: z.union([z.number().int().positive(), z.string().regex(/^[0-9]+$/, 'the numeric App ID')]),
    /** The App's private key (PEM, PKCS#1 as downloaded from GitHub, or PKCS#8). A reference, never inline. */
    privateKey: SecretRefSchema,
    installationId: z.number().int().positive(),
    /** REST API root: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
    baseUrl: z
      .string()
      .url()
      .refine((u) => {
        const url = new URL(u);
        return url.protocol === 'https:' || (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname));
      }, 'https (plain http only for a loopback address)')
      .refine((u) => !new URL(u).search && !new URL(u).hash, 'no query or fragment')
      .default('https://api.github.com'),
    /** Every repository this issuer may ever put into a token. */
    repositories: z
      .array(RepositorySchema)
      .min(1)
      .max(MAX_REPOSITORIES)
      .refine((r) => new Set(r.map((x) => x.id)).size === r.length, 'repository ids must be unique'),
    /** scope -> what a token granted that scope may do, and where. */
    scopes: z.record(z.string().min(1), ScopeSchema).refine((s) => Object.keys(s).length > 0, 'map at least one scope'),
    /** Timeout of each GitHub API call, milliseconds. */
    timeoutMs: z.number().int().min(100).max(120_000).default(10_000),
  })
  .strict()
  .superRefine((c, ctx) => {
    const allowed = new Set(c.repositories.map((r) => r.id));
    for (const [scope, s] of Object.entries(c.scopes))
      for (const id of s.repositories ?? [])
        if (!allowed.has(id)) ctx.addIssue({ code: 'custom', path: ['scopes', scope, 'repositories'], message: `repository ${id} is not in the issuer's repositories allow-list` });
  });
export type GithubAppIssuerConfig = z.infer<typeof GithubAppIssuerConfigSchema>;

const PERMISSION_PARAM = /^([a-z][a-z0-9_]*):(read|write|admin)$/;

/** The repository ids a `repositories` parameter names (ids, or names as configured); unresolved items as problems. */
function repositoriesNamed(config: GithubAppIssuerConfig, value: string): { ids: number[]; problems: string[] } {
  const ids: number[] = [];
  const problems: string[] = [];
  for (const item of paramItems(value)) {
    const byName = config.repositories.filter((r) => r.name === item);
    const id = /^[0-9]+$/.test(item) ? Number(item) : byName.length === 1 ? byName[0]!.id : undefined;
    if (id !== undefined) ids.push(id);
    else problems.push(byName.length > 1 ? `repository name ${item} is ambiguous in this issuer's repositories; use its id` : `repository ${JSON.stringify(item)} is not in this issuer's repositories (give an id or a configured name)`);
  }
  return { ids, problems };
}

/**
 * A grant for a github-app target. Parameters narrow a scope, never widen it: `repositories`
 * (comma-separated ids or configured names) must be among the scope's repositories, and
 * `permissions` (`contents:read,issues:write`) among the scope's permissions at most at their
 * level. No session tags.
 */
export function checkGithubGrant(config: GithubAppIssuerConfig, grant: GrantRequirements): string[] {
  const problems: string[] = [];
  for (const [scope, params] of grant.scopes) {
    const unknown = unknownParams(scope, params, ['repositories', 'permissions'], 'github-app issuers take repositories (ids or names) and permissions (name:level)');
    if (unknown) problems.push(unknown);
    const s = Object.hasOwn(config.scopes, scope) ? config.scopes[scope] : undefined;
    if (!s) {
      if (Object.keys(params).length) problems.push(`scope ${scope}: not configured for this issuer, so its parameters narrow nothing`);
      continue;
    }
    if (params.repositories !== undefined) {
      const inScope = new Set(s.repositories ?? config.repositories.map((r) => r.id));
      const { ids, problems: unresolved } = repositoriesNamed(config, params.repositories);
      problems.push(...unresolved.map((p) => `scope ${scope}: ${p}`));
      if (!ids.length && !unresolved.length) problems.push(`scope ${scope}: parameter repositories is empty`);
      for (const id of ids) if (!inScope.has(id)) problems.push(`scope ${scope}: repository ${id} is not among the repositories this scope may hand out`);
    }
    if (params.permissions !== undefined) {
      const items = paramItems(params.permissions);
      if (!items.length) problems.push(`scope ${scope}: parameter permissions is empty`);
      for (const item of items) {
        const m = PERMISSION_PARAM.exec(item);
        const have = m && Object.hasOwn(s.permissions, m[1]!) ? s.permissions[m[1]!] : undefined;
        if (!m) problems.push(`scope ${scope}: permissions item ${JSON.stringify(item)} is not name:read, name:write or name:admin`);
        else if (!have) problems.push(`scope ${scope}: permission ${m[1]} is not one this scope grants (${Object.keys(s.permissions).join(', ')})`);
        else if (rank(m[2] as Level) > rank(have)) problems.push(`scope ${scope}: ${item} is wider than the scope's ${m[1]}:${have}`);
      }
    }
  }
  if (grant.sessionTags && Object.keys(grant.sessionTags).length) problems.push('github-app issuers cannot carry session tags (obligations.sessionTags)');
  return problems;
}

/** One granted scope's repositories and permissions: its parameters (already checked to be within the scope) or the scope's configuration. */
function scopeExtent(config: GithubAppIssuerConfig, scope: string, params: Readonly<Record<string, string>>): { repositories: number[]; permissions: Record<string, Level> } | undefined {
  const s = Object.hasOwn(config.scopes, scope) ? config.scopes[scope] : undefined;
  if (!s) return undefined;
  const repositories = params.repositories !== undefined ? repositoriesNamed(config, params.repositories).ids : (s.repositories ?? config.repositories.map((r) => r.id));
  const permissions = params.permissions !== undefined
    ? Object.fromEntries(paramItems(params.permissions).map((item) => item.split(':') as [string, Level]))
    : s.permissions;
  return { repositories, permissions };
}

/** Sealed by the host with the KEK (it holds the token: revocation needs the token itself). */
export interface GithubAppHandle {
  token: string;
  /** GitHub's own expiry: after it nothing is left to revoke. */
  githubExpiresAt: string;
  installationId: number;
  [key: string]: unknown;
}

/**
 * The library shares in-flight token requests process-wide (a module-level map keyed by installation
 * id, repository ids and permission names only — not by App, host or `refresh`). Two identical
 * concurrent requests would get the same token: one task's revocation would kill the other's token,
 * and two Apps with the same installation id on different hosts could even swap tokens. So identical
 * (or colliding) requests are serialised here; the key is at least as coarse as the library's.
 */
const inFlight = new Map<string, Promise<unknown>>();
async function oneAtATime<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const run = (inFlight.get(key) ?? Promise.resolve()).then(fn);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  inFlight.set(key, tail);
  try {
    return await run;
  } finally {
    if (inFlight.get(key) === tail) inFlight.delete(key);
  }
}

/** Never stores or returns anything: every token comes fresh from GitHub (see issue()). */
const NO_CACHE = { get: (): string => '', set: (): void => {} };

const TOKEN_PATTERN = /\b(gh[opsuvr]_[A-Za-z0-9_]+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|v1\.[0-9a-f]{40})\b/g;
const PEM_PATTERN = /-----BEGIN[^-]*-----[\s\S]*?(-----END[^-]*-----|$)/g;

/** A description of an upstream error with anything token- or key-shaped removed; never the original object. */
function scrubbed(e: unknown, secrets: readonly string[] = []): Error {
  const src = e as { message?: string; status?: number; name?: string; cause?: { code?: string; cause?: { code?: string } } };
  let message = String(src.message ?? 'error');
  for (const s of secrets) if (s) message = message.split(s).join('[redacted]');
  message = message.replace(PEM_PATTERN, '[redacted]').replace(TOKEN_PATTERN, '[redacted]');
  const out = new Error(message.slice(0, 500)) as Error & Record<string, unknown>;
  out.name = 'GitHubError';
  if (typeof src.status === 'number') out.status = src.status;
  const code = src.cause?.code ?? src.cause?.cause?.code;
  if (code) out.code = code;
  return out;
}

/** A failed `GET /app/installations/{id}`, in words: status codes and error codes only, never GitHub's text. */
function githubHealthDetail(e: unknown, installationId: number): string {
  const http = (e as { response?: { status?: unknown } }).response;
  const status = typeof http?.status === 'number' ? http.status : undefined;
  if (status === undefined) return networkDetail(safeCode(e), 'GitHub API') ?? `GitHub API unreachable${safeCode(e) ? ` (${safeCode(e)})` : ''}`;
  if (status === 401) return 'GitHub API answered 401 for the App JWT (wrong App ID or private key)';
  if (status === 404) return `GitHub API answered 404 for installation ${installationId} (not installed, or installed for another App)`;
  if (status === 403 || status === 429) return `GitHub API answered ${status} (rate-limited or forbidden)`;
  return `GitHub API answered ${status}`;
}

const statusOf = (e: unknown): number | undefined =>
  (e as { name?: string }).name === 'HttpError' && typeof (e as { status?: unknown }).status === 'number' ? (e as { status: number }).status : undefined;

/** GitHub fixes every installation token at one hour (STANDARDS §8.2). */
export const GITHUB_TOKEN_LIFETIME_SECONDS = 3600;

/**
 * Revocable: `DELETE /installation/token`. GitHub always issues a token for one hour; a shorter
 * lifetime is agent-sts revoking it at that time (needsActiveRevocation), a longer one is impossible.
 */
const CAPABILITIES: IssuerCapabilities = Object.freeze({
  revocable: true,
  minTtlSeconds: 1,
  maxTtlSeconds: GITHUB_TOKEN_LIFETIME_SECONDS,
  maxTtlReason: 'GitHub installation tokens live one hour and cannot be extended',
});

/**
 * GitHub App installation access tokens (STANDARDS §8): per grant, a token narrowed by repository
 * id and permission to the union of what the granted scopes map to, each scope narrowed further by
 * the grant's `repositories` / `permissions` parameters — never wider than configured.
 *
 * Lifetime: GitHub fixes a token at about one hour and it cannot be shortened. The credential's
 * expiresAt is min(GitHub's expires_at, now + ttlSeconds); when the shorter bound applies, the sweep
 * revokes the token at that time (needsActiveRevocation), and task end revokes it earlier.
 * Revocation is `DELETE /installation/token` authenticated with the token itself, so the handle
 * carries the token (the host seals handles with the KEK). There is no planHandle: the token exists
 * only once GitHub answered, so a crash between GitHub's answer and the host's commit leaves a token
 * that nothing revokes; it lapses at GitHub's expiry (≤ 1 h) and was never handed out.
 *
 * Scopes with different repositories or permissions are merged into one token: GitHub tokens carry
 * one permission set for all their repositories, so the union applies to every repository in it.
 */
export const githubAppIssuerPlugin: CredentialIssuerPlugin<GithubAppIssuerConfig> = {
  type: 'github-app',
  configSchema: GithubAppIssuerConfigSchema as unknown as z.ZodType<GithubAppIssuerConfig>,
  capabilities: () => CAPABILITIES,
  checkGrant: checkGithubGrant,
  create(name, config, deps): CredentialIssuer {
    const baseUrl = (config.baseUrl ?? 'https://api.github.com').replace(/\/+$/, '');
    const timeoutMs = config.timeoutMs ?? 10_000;
    const allowedRepos = new Map(config.repositories.map((r) => [r.id, r]));
    const request = octokitRequest().request.defaults({
      baseUrl,
      headers: { 'user-agent': 'agent-sts', accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28' },
      request: { fetch: (url: string, init: RequestInit) => fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) }) },
    });
    const log = {
      warn: (message: unknown) => deps.logger.warn({ issuer: name }, `@octokit/auth-app: ${scrubbed({ message }).message}`),
      debug: () => {},
      info: () => {},
      error: (message: unknown) => deps.logger.error({ issuer: name }, `@octokit/auth-app: ${scrubbed({ message }).message}`),
    };

    const unavailable = (e: unknown, cause: string, secrets: readonly string[] = []) =>
      new UpstreamUnavailable('GitHub is unavailable; try again later', {
        cause: scrubbed(e, secrets),
        detail: { issuer: name, status: statusOf(e), cause },
      });

    function issueError(e: unknown): Error {
      const status = statusOf(e);
      if (status === undefined) return unavailable(e, 'own-credentials-invalid'); // the JWT could not be signed: unusable private key
      if (status === 401) return unavailable(e, 'own-credentials-rejected'); // GitHub refused the App JWT: wrong key or App ID
      if (status === 404) return unavailable(e, 'installation-not-found');
      if (status === 403 || status === 429) return unavailable(e, status === 429 ? 'rate-limited' : 'installation-forbidden');
      if (status === 422)
        return new TargetNotAllowed('the requested repositories or permissions are not available to this GitHub App installation', {
          cause: scrubbed(e),
          detail: { issuer: name, status },
        });
      return unavailable(e, status >= 500 || status === 0 ? 'upstream-error' : 'unexpected-response');
    }

    /**
     * Repositories and permissions of the granted scopes (each narrowed by its parameters), merged;
     * refuses anything outside the configuration.
     */
    function narrow(decision: Decision): { repositoryIds: number[]; permissions: Record<string, Level> } {
      const grantedScopes = decision.grantedScopes;
      if (!grantedScopes.length) throw new ScopeNotAllowed('no scope was granted for this GitHub App target', { detail: { issuer: name } });
      refuseGrantProblems(name, checkGithubGrant(config, grantOfDecision(decision)));
      const repos = new Set<number>();
      const permissions: Record<string, Level> = {};
      const extents = grantedScopes.map((scope) => {
        const e = scopeExtent(config, scope, paramsOf(decision, scope));
        if (!e) throw new ScopeNotAllowed('a granted scope is not configured for this GitHub App target', { detail: { issuer: name, scope } });
        return { scope, ...e };
      });
      // A token has one permission set for all its repositories: merging scopes that name
      // different repositories would give each repository the other scopes' permissions.
      const repoSets = new Set(extents.map((e) => JSON.stringify([...new Set(e.repositories)].sort((a, b) => a - b))));
      if (repoSets.size > 1)
        throw new ScopeNotAllowed('these scopes cover different repositories; request them in separate exchanges', { detail: { issuer: name, scopes: [...grantedScopes] } });
      for (const { scope, repositories, permissions: scopePermissions } of extents) {
        for (const id of repositories) {
          if (!allowedRepos.has(id))
            throw new TargetNotAllowed('a granted scope names a repository outside the allow-list', { detail: { issuer: name, scope, repositoryId: id } });
          repos.add(id);
        }
        for (const [p, level] of Object.entries(scopePermissions)) {
          if (!LEVELS.includes(level)) throw new ScopeNotAllowed('a granted scope names an unknown permission level', { detail: { issuer: name, scope, permission: p } });
          const had = permissions[p];
          if (!had || rank(level) > rank(had)) permissions[p] = level;
        }
      }
      if (!repos.size || repos.size > MAX_REPOSITORIES || !Object.keys(permissions).length)
        throw new ScopeNotAllowed('the granted scopes map to no usable repositories or permissions', { detail: { issuer: name } });
      return { repositoryIds: [...repos].sort((a, b) => a - b), permissions };
    }

    async function deleteToken(token: string): Promise<'revoked' | 'gone'> {
      try {
        await request('DELETE /installation/token', { headers: { authorization: `Bearer ${token}` } });
        return 'revoked';
      } catch (e) {
        // 401: the token is already revoked or expired, which is what revocation wants.
        if (statusOf(e) === 401) return 'gone';
        throw unavailable(e, statusOf(e) === undefined || statusOf(e)! >= 500 || statusOf(e) === 0 ? 'upstream-error' : 'unexpected-response', [token]);
      }
    }

    function checkHandle(h: unknown): GithubAppHandle {
      const handle = h as Partial<GithubAppHandle>;
      if (typeof handle.token !== 'string' || !/^[A-Za-z0-9_.-]{10,255}$/.test(handle.token))
        throw new Error(`github-app issuer ${name}: the revocation handle holds no token`);
      return handle as GithubAppHandle;
    }

    return {
      type: 'github-app',
      name,
      issuedTokenTypes: [TOKEN_TYPE.githubInstallationToken, TOKEN_TYPE.accessToken],
      needsActiveRevocation: true,
      capabilities: CAPABILITIES,
      async issue(req, ctx) {
        const { repositoryIds, permissions } = narrow(req.decision);
        const privateKey = deps.secret(config.privateKey, `credentialIssuers.${name}.privateKey`);
        // A new auth instance per call with a cache that stores nothing, and refresh: true. The
        // library's default cache would hand the same token to the next identical request for 59
        // minutes, including one we have since revoked (DELETE /installation/token) — a dead or,
        // worse, another task's token. Per grant, one token, straight from GitHub.
        const appAuth = authApp().createAppAuth({ appId: config.appId, privateKey: privateKey.reveal(), installationId: config.installationId, request, cache: NO_CACHE, log });
        const key = `${config.installationId}|${repositoryIds.join(',')}|${Object.keys(permissions).sort().join(',')}`;
        let inst: InstallationAccessTokenAuthentication;
        try {
          // Copies: the library sorts repositoryIds in place.
          inst = await oneAtATime(key, () => appAuth({ type: 'installation', repositoryIds: [...repositoryIds], permissions: { ...permissions }, refresh: true }));
        } catch (e) {
          throw issueError(e);
        }
        // An answer without a token (GitHub or a proxy answering something that is not the
        // access-token JSON) is an upstream failure: there is nothing to hand out or revoke.
        if (typeof inst?.token !== 'string' || !inst.token || Number.isNaN(Date.parse(String(inst.expiresAt))))
          throw new UpstreamUnavailable('GitHub could not issue a token; try again later', { detail: { issuer: name, cause: 'api-error', reason: 'malformed access-token answer' } });
        const token = inst.token;
        const githubExpiresAt = new Date(inst.expiresAt);
        const revokeNow = async (why: string) => {
          await deleteToken(token).catch((re: unknown) =>
            deps.logger.error({ issuer: name, fingerprint: fingerprint(token), err: { message: (re as Error).message } }, 'could not revoke a refused GitHub token; it lapses at its GitHub expiry'),
          );
          deps.logger.warn({ issuer: name, fingerprint: fingerprint(token), reason: why }, 'GitHub token refused after issuance');
        };

        // GitHub must have narrowed exactly as asked; anything wider is revoked at once.
        const got = (inst.repositoryIds ?? []).map(Number);
        const wider =
          !inst.repositoryIds || got.some((id) => !repositoryIds.includes(id)) ||
          Object.entries(inst.permissions ?? {}).some(([p, l]) => {
            if (p === 'metadata' && l === 'read') return false; // GitHub adds metadata:read to every installation token
            const asked = permissions[p];
            return !asked || !LEVELS.includes(l as Level) || rank(l as Level) > rank(asked);
          });
        if (wider) {
          await revokeNow('wider-than-requested');
          throw new UpstreamUnavailable('GitHub returned a token wider than requested', { detail: { issuer: name, cause: 'token-wider-than-requested' } });
        }
        if (!(githubExpiresAt.getTime() > ctx.now.getTime() + 1000)) {
          await revokeNow('expiry-in-the-past');
          throw new UpstreamUnavailable('GitHub returned a token that has already expired (clock skew?)', { detail: { issuer: name, cause: 'token-already-expired', githubExpiresAt: inst.expiresAt } });
        }

        const expiresAt = new Date(Math.min(githubExpiresAt.getTime(), ctx.now.getTime() + req.ttlSeconds * 1000));
        const granted = repositoryIds.map((id) => ({ id, ...(allowedRepos.get(id)?.name ? { name: allowedRepos.get(id)!.name } : {}) }));
        deps.logger.debug(
          { issuer: name, installationId: config.installationId, repositoryIds, permissions, fingerprint: fingerprint(token), expiresAt, githubExpiresAt },
          'GitHub installation token issued',
        );
        const handle: GithubAppHandle = { token, githubExpiresAt: githubExpiresAt.toISOString(), installationId: config.installationId };
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.githubInstallationToken,
          tokenType: 'Bearer',
          expiresAt,
          fingerprint: credentialFingerprint(token),
          accessToken: new Secret(token),
          structured: new Secret({
            token,
            api_url: baseUrl,
            installation_id: config.installationId,
            repositories: granted,
            permissions: inst.permissions,
            expires_at: expiresAt.toISOString(),
            github_expires_at: githubExpiresAt.toISOString(),
          }),
          revocationHandle: handle,
        };
      },
      /**
       * `GET /app/installations/{id}` with the App JWT: GitHub reachable, the App ID and private key
       * accepted, and the installation still there and not suspended (what issue() needs). No token is minted.
       */
      async health() {
        return probeHealth(async (signal) => {
          let jwt: string;
          try {
            const privateKey = deps.secret(config.privateKey, `credentialIssuers.${name}.privateKey`);
            jwt = (await authApp().createAppAuth({ appId: config.appId, privateKey: privateKey.reveal(), request, log })({ type: 'app' })).token;
          } catch {
            throw new HealthProblem('the App private key could not sign a JWT (unresolvable reference or not a usable RSA key)');
          }
          let installation: { suspended_at?: unknown };
          try {
            const res = await request('GET /app/installations/{installation_id}', {
              installation_id: config.installationId,
              headers: { authorization: `bearer ${jwt}` },
              request: { fetch: (url: string, init: RequestInit) => fetch(url, { ...init, signal }) },
            });
            installation = res.data as { suspended_at?: unknown };
          } catch (e) {
            throw new HealthProblem(githubHealthDetail(e, config.installationId));
          }
          if (installation?.suspended_at) throw new HealthProblem(`GitHub App installation ${config.installationId} is suspended`);
        }, () => 'GitHub health check failed');
      },
      async revoke(h, ctx) {
        const handle = checkHandle(h);
        const lapsed = Date.parse(handle.githubExpiresAt);
        if (Number.isFinite(lapsed) && lapsed <= ctx.now.getTime()) return; // GitHub has already ended it
        const outcome = await deleteToken(handle.token);
        deps.logger.debug({ issuer: name, fingerprint: fingerprint(handle.token), outcome }, 'GitHub installation token revoked');
      },
    };
  },
};
