import type NodeVault from 'node-vault';
import { z } from 'zod';
import { Secret } from '../../core/secret.js';
import { credentialFingerprint, fingerprint } from '../../lib/crypto.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema } from '../../config/secret-ref.js';
import { ScopeNotAllowed, UpstreamUnavailable } from '../../errors/sts-errors.js';
import { noGrantParameters, type CredentialIssuer, type CredentialIssuerPlugin, type IssuerCapabilities } from '../credential-issuer.js';
import { grantOfDecision, refuseGrantProblems } from '../grant-params.js';
import { HealthProblem, networkDetail, probeHealth } from '../health.js';
import { lazyModule } from '../../lib/lazy-module.js';

// node-vault loads when a vault issuer is built, not at every start-up.
const nodeVault = lazyModule<typeof NodeVault>('node-vault');

/**
 * One path segment: Vault mount and role names. No `.`/`..` segments, no empty segments, no
 * query (`?`), fragment (`#`), percent-encoding or whitespace: the path goes into the URL as is.
 */
const SEGMENT = '[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}';
const SAFE_PATH = new RegExp(`^${SEGMENT}(/${SEGMENT})*$`);
const isSafePath = (p: string) => SAFE_PATH.test(p) && !p.split('/').some((s) => s === '.' || s === '..' || s.endsWith('.'));

/** Mounts that are Vault's own machinery, never a secrets engine agent-sts may read from. */
const RESERVED_MOUNTS = new Set(['sys', 'auth', 'identity', 'cubbyhole', 'token']);

const VaultPath = z
  .string()
  .max(512)
  .refine(isSafePath, 'a relative Vault path of [A-Za-z0-9_.-] segments separated by `/`: no leading `/`, no `.`/`..` segments, no query');

const MountSchema = VaultPath.refine((m) => !RESERVED_MOUNTS.has(m.split('/')[0]!.toLowerCase()), 'sys/, auth/, identity/, cubbyhole/ and token/ are not secrets engines');

const ScopeSchema = z
  .object({
    /** Dynamic-secret path read with GET, e.g. `database/creds/readonly` or `aws/creds/deploy`. */
    path: VaultPath,
  })
  .strict();

const ApproleSchema = z
  .object({
    roleId: z.string().min(1).max(256),
    secretId: SecretRefSchema,
    /** Mount path of the AppRole auth method (`auth/<mount>/login`). */
    mount: VaultPath.default('approle'),
  })
  .strict();

export const VaultIssuerConfigSchema = z
  .object({
    /** Vault / OpenBao address, e.g. `https://vault.example.internal:8200` (without `/v1`). */
    endpoint: z
      .string()
      .url()
      .refine((u) => /^https?:$/.test(new URL(u).protocol), 'an http(s) URL')
      .refine((u) => !new URL(u).username && !new URL(u).password && !new URL(u).search, 'no credentials or query in the endpoint'),
    /** agent-sts's own Vault token (a reference, never inline). Exclusive with `auth`. */
    token: SecretRefSchema.optional(),
    /** Log in with AppRole instead of a static token; the token is renewed / re-obtained before it expires. */
    auth: z.object({ approle: ApproleSchema }).strict().optional(),
    /** Enterprise / HCP / OpenBao namespace, sent as `X-Vault-Namespace`. */
    namespace: z
      .string()
      .regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*\/?$/, 'namespace segments of [A-Za-z0-9_-] separated by `/`')
      .optional(),
    /** Secrets-engine mounts scope paths may live under, e.g. `['database', 'aws']`. */
    mounts: z.array(MountSchema).min(1),
    /** scope -> the dynamic secret a credential with that scope is read from. */
    scopes: z.record(z.string().min(1), ScopeSchema).refine((s) => Object.keys(s).length > 0, 'map at least one scope to a Vault path'),
    /** Per-request timeout. */
    timeoutMs: z.number().int().min(100).max(120_000).default(10_000),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!c.token === !c.auth) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'configure exactly one of `token` or `auth.approle`', path: ['token'] });
    for (const [scope, { path }] of Object.entries(c.scopes)) {
      if (!c.mounts.some((m) => path.startsWith(`${m}/`)))
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `scope ${scope}: ${path} is not under a configured mount (${c.mounts.join(', ')})`, path: ['scopes', scope, 'path'] });
    }
  });
export type VaultIssuerConfig = z.infer<typeof VaultIssuerConfigSchema>;

export interface VaultHandle {
  leaseId: string;
  [key: string]: unknown;
}

interface VaultSecretResponse {
  lease_id?: unknown;
  lease_duration?: unknown;
  renewable?: unknown;
  data?: unknown;
}

interface VaultAuthResponse {
  auth?: { client_token?: unknown; lease_duration?: unknown; renewable?: unknown } | null;
}

/** Vault's default `max_lease_ttl` (768h): no lease outlives it unless the operator raised the system maximum. */
export const VAULT_DEFAULT_MAX_LEASE_SECONDS = 768 * 3600;

/**
 * Revocable: `sys/leases/revoke`. The lease's own TTL comes from the secrets-engine role, which the
 * configuration does not know; a credential lives min(lease_duration, granted lifetime), so any
 * lifetime up to Vault's system maximum can be honoured or shortened by revocation at expiry.
 */
const CAPABILITIES: IssuerCapabilities = Object.freeze({
  revocable: true,
  minTtlSeconds: 1,
  maxTtlSeconds: VAULT_DEFAULT_MAX_LEASE_SECONDS,
  maxTtlReason: "no Vault lease outlives Vault's default max_lease_ttl of 768h",
});

/** A failed token lookup, in words: status and error codes only (Vault's error text is not repeated). */
function healthDetail(f: VaultFailure): string {
  if (f.status === undefined) return networkDetail(f.code, 'Vault') ?? `Vault unreachable${f.code ? ` (${f.code})` : ''}`;
  if (f.status === 403 || f.status === 401) return `Vault answered ${f.status} to a lookup of agent-sts's own token (token or AppRole credentials rejected)`;
  if (f.status === 400) return "Vault answered 400 (the AppRole login was rejected: role_id or secret_id)";
  if (f.status === 503) return 'Vault answered 503 (sealed, or a standby that cannot serve)';
  if (f.status === 429) return 'Vault answered 429 (rate-limited)';
  return `Vault answered ${f.status}`;
}

/** JSON with object keys sorted at every level: the same secret always serialises the same way. */
export function canonicalJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    return v;
  };
  return JSON.stringify(sort(value));
}

interface VaultFailure {
  status?: number;
  code?: string;
  errors: string[];
}

/**
 * What we keep of a node-vault / axios error. The raw errors must not travel further: axios errors
 * carry the request config (the `X-Vault-Token` header, the AppRole secret_id in the body).
 */
function failureOf(e: unknown): VaultFailure {
  const src = e as { response?: { statusCode?: unknown; body?: unknown }; code?: unknown };
  const status = typeof src.response?.statusCode === 'number' ? src.response.statusCode : undefined;
  const body = src.response?.body as { errors?: unknown } | undefined;
  const errors = Array.isArray(body?.errors) ? body.errors.filter((x): x is string => typeof x === 'string').map((x) => x.slice(0, 300)) : [];
  const code = typeof src.code === 'string' && /^[A-Z_]{1,40}$/.test(src.code) ? src.code : undefined;
  return { status, code, errors };
}

function cleanError(f: VaultFailure, what: string): Error {
  const err = new Error(`vault ${what} failed: ${f.status !== undefined ? `HTTP ${f.status}` : (f.code ?? 'no response')}${f.errors.length ? ` (${f.errors.join('; ')})` : ''}`);
  err.name = 'VaultError';
  return Object.assign(err, f.status !== undefined ? { status: f.status } : {}, f.code ? { code: f.code } : {});
}

/**
 * Dynamic secrets from HashiCorp Vault / OpenBao (STANDARDS §9, §7.3): each credential is one read
 * of the granted scope's path (`GET /v1/database/creds/readonly`, `GET /v1/aws/creds/deploy`, ...),
 * i.e. one Vault lease. The revocation handle is the lease id, which only Vault knows, so there is
 * no planHandle(): a crash between Vault's answer and the host storing the handle leaves a lease
 * that Vault itself ends at its TTL.
 *
 * Lifetime: Vault cannot shorten a lease (`sys/leases/renew` only extends), so the credential
 * reports `expires_in` = min(lease_duration, ttl) and the sweep revokes the lease at that time
 * (needsActiveRevocation). Revocation: `PUT sys/leases/revoke`, idempotent (Vault answers 204 for
 * unknown or expired leases).
 *
 * Never logged: the secret data, agent-sts's token, the AppRole secret_id, the lease id (it is
 * enough to revoke the credential) — logs carry a fingerprint of the lease id only.
 */
export const vaultIssuerPlugin: CredentialIssuerPlugin<VaultIssuerConfig> = {
  type: 'vault',
  configSchema: VaultIssuerConfigSchema as unknown as z.ZodType<VaultIssuerConfig>,
  capabilities: () => CAPABILITIES,
  create(name, config, deps): CredentialIssuer {
    const client = nodeVault()({
      apiVersion: 'v1',
      endpoint: config.endpoint,
      debug: () => undefined, // node-vault's debug output includes request bodies (AppRole secret_id)
      requestOptions: { timeout: config.timeoutMs, strictSSL: true },
      // node-vault 0.12 (axios) ignores requestOptions in client.request(); rpDefaults is applied.
      rpDefaults: { timeout: config.timeoutMs },
    } as Parameters<typeof NodeVault>[0]);
    // node-vault falls back to VAULT_TOKEN / VAULT_NAMESPACE / VAULT_PREFIX from the process
    // environment; agent-sts sends only what its configuration says.
    Object.assign(client as unknown as Record<string, unknown>, { token: '', namespace: '', pathPrefix: '' });

    const where = `credentialIssuers.${name}`;
    const staticToken = () => deps.secret(config.token!, `${where}.token`);
    const log = deps.logger.child({ issuer: name, issuerType: 'vault' });

    const headers = (token: string): Record<string, string> => ({
      'X-Vault-Token': token,
      ...(config.namespace ? { 'X-Vault-Namespace': config.namespace } : {}),
    });

    const unavailable = (f: VaultFailure, what: string, extra: Record<string, unknown> = {}) =>
      new UpstreamUnavailable('the secrets backend is unavailable; try again later', {
        cause: cleanError(f, what),
        detail: { issuer: name, ...(f.status !== undefined ? { status: f.status } : {}), ...(f.code ? { code: f.code } : {}), ...extra },
      });

    /** Maps a failed call to the error the host should see: UpstreamUnavailable for transport, sealed and auth problems. */
    function mapFailure(f: VaultFailure, what: string): Error {
      if (f.status === undefined) return unavailable(f, what); // no HTTP answer at all
      if (f.status === 401 || f.status === 403) return unavailable(f, what, { cause: 'own-credentials-rejected' });
      if (f.status >= 500 || f.status === 429 || f.status === 412) return unavailable(f, what); // sealed, standby, rate-limited, not yet replicated
      return cleanError(f, what);
    }

    // ---- agent-sts's own Vault token (static, or AppRole with renewal) ----
    let session: { token: Secret<string>; renewAt: number; expiresAt: number; renewable: boolean } | undefined;
    let pendingLogin: Promise<string> | undefined;

    function adopt(res: VaultAuthResponse, what: string): string {
      const token = res.auth?.client_token;
      const ttl = Number(res.auth?.lease_duration ?? 0);
      if (typeof token !== 'string' || !token) throw cleanError({ errors: ['no auth.client_token in the response'] }, what);
      const now = deps.clock.now().getTime();
      // ttl 0 = a token without expiry (root/periodic tokens with no TTL); re-check hourly anyway.
      const life = ttl > 0 ? ttl * 1000 : 3_600_000;
      session = { token: new Secret(token), renewAt: now + Math.floor(life * 0.66), expiresAt: now + life, renewable: res.auth?.renewable === true };
      log.debug({ tokenFp: fingerprint(token), ttl }, `vault token ${what === 'login' ? 'obtained' : 'renewed'}`);
      return token;
    }

    async function approleLogin(): Promise<string> {
      const approle = config.auth!.approle;
      const secretId = deps.secret(approle.secretId, `${where}.auth.approle.secretId`);
      try {
        const res = (await client.request({
          path: `/auth/${approle.mount}/login`,
          method: 'POST',
          json: { role_id: approle.roleId, secret_id: secretId.reveal() },
          headers: config.namespace ? { 'X-Vault-Namespace': config.namespace } : {},
        })) as VaultAuthResponse;
        return adopt(res, 'login');
      } catch (e) {
        if (e instanceof Error && e.name === 'VaultError') throw e;
        const f = failureOf(e);
        // AppRole answers 400 "invalid role or secret ID" for bad credentials.
        if (f.status === 400 || f.status === 401 || f.status === 403) throw unavailable(f, 'approle login', { cause: 'own-credentials-rejected' });
        throw mapFailure(f, 'approle login');
      }
    }

    async function refreshSession(): Promise<string> {
      const current = session;
      if (current?.renewable && deps.clock.now().getTime() < current.expiresAt - 5000) {
        try {
          const res = (await client.request({ path: '/auth/token/renew-self', method: 'POST', json: {}, headers: headers(current.token.reveal()) })) as VaultAuthResponse;
          return adopt(res, 'renew');
        } catch (e) {
          const f = failureOf(e);
          log.warn({ status: f.status, code: f.code }, 'vault token renewal failed; logging in again');
        }
      }
      return approleLogin();
    }

    async function ownToken(): Promise<string> {
      if (!config.auth) return staticToken().reveal();
      if (session && deps.clock.now().getTime() < session.renewAt) return session.token.reveal();
      pendingLogin ??= refreshSession().finally(() => {
        pendingLogin = undefined;
      });
      return pendingLogin;
    }

    /** One authenticated call; with AppRole, a 403 (token revoked or expired early) triggers one fresh login. */
    async function call<T>(what: string, req: { path: string; method: string; json?: unknown }): Promise<T> {
      for (let attempt = 0; ; attempt++) {
        const token = await ownToken();
        try {
          return (await client.request({ ...req, headers: headers(token) })) as T;
        } catch (e) {
          const f = failureOf(e);
          if (config.auth && attempt === 0 && f.status === 403) {
            session = undefined;
            continue;
          }
          throw mapFailure(f, what);
        }
      }
    }

    function leasePrefixes(): string[] {
      return Object.values(config.scopes).map((s) => `${s.path}/`);
    }

    function checkHandle(h: unknown): VaultHandle {
      const handle = h as VaultHandle;
      if (typeof handle?.leaseId !== 'string' || handle.leaseId.length > 1024 || !isSafePath(handle.leaseId))
        throw new Error(`vault issuer ${name}: the revocation handle has no valid lease id`);
      if (!leasePrefixes().some((p) => handle.leaseId.startsWith(p)))
        throw new Error(`vault issuer ${name}: refusing to revoke a lease outside the configured scope paths`);
      return handle;
    }

    async function revokeLease(leaseId: string): Promise<'revoked' | 'unknown'> {
      try {
        await call('lease revocation', { path: '/sys/leases/revoke', method: 'PUT', json: { lease_id: leaseId, sync: true } });
        return 'revoked';
      } catch (e) {
        // Vault answers 204 for unknown/expired leases; older versions and OpenBao may say 400 "invalid lease".
        const status = (e as { status?: number }).status;
        if (status === 400 && /invalid lease|lease not found|lease is not found/i.test((e as Error).message)) return 'unknown';
        throw e;
      }
    }

    return {
      type: 'vault',
      name,
      issuedTokenTypes: [TOKEN_TYPE.vaultSecret],
      needsActiveRevocation: true,
      capabilities: CAPABILITIES,
      async issue(req, ctx) {
        const scopes = req.decision.grantedScopes;
        if (scopes.length !== 1)
          throw new ScopeNotAllowed('request exactly one scope for this target', { detail: { issuer: name, reason: 'vault issues one lease per credential', scopes: scopes.length } });
        const scope = scopes[0]!;
        const path = Object.hasOwn(config.scopes, scope) ? config.scopes[scope]!.path : undefined;
        if (!path) throw new ScopeNotAllowed('the requested scope is not available for this target', { detail: { issuer: name, scope } });
        refuseGrantProblems(name, noGrantParameters('vault', grantOfDecision(req.decision)));

        const res = await call<VaultSecretResponse>('secret read', { path: `/${path}`, method: 'GET' });
        if (res === null || typeof res !== 'object' || Array.isArray(res))
          throw new UpstreamUnavailable('the secret store answered something unusable; try again later', { detail: { issuer: name, cause: 'api-error', reason: 'the answer is not a Vault JSON envelope' } });
        const leaseId = res.lease_id;
        const leaseDuration = res.lease_duration;
        const data = res.data;
        const valid =
          typeof leaseId === 'string' && leaseId.startsWith(`${path}/`) && typeof leaseDuration === 'number' && Number.isInteger(leaseDuration) && leaseDuration > 0 && data !== null && typeof data === 'object' && !Array.isArray(data);
        if (!valid) {
          if (typeof leaseId === 'string' && leaseId.startsWith(`${path}/`)) await revokeLease(leaseId).catch(() => undefined);
          throw new Error(`vault issuer ${name}: ${path} did not return a dynamic secret with a lease (lease_id under the path, lease_duration > 0, data object); static secrets are not supported`);
        }
        const expiresIn = Math.min(leaseDuration, req.ttlSeconds);
        const expiresAt = new Date(ctx.now.getTime() + expiresIn * 1000);
        const secretJson = canonicalJson(data);
        log.debug(
          { requestId: ctx.requestId, credentialId: req.credentialId, scope, path, leaseFp: fingerprint(leaseId), leaseDuration, renewable: res.renewable === true, expiresIn },
          'vault lease issued',
        );
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.vaultSecret,
          tokenType: 'N_A',
          expiresAt,
          fingerprint: credentialFingerprint(secretJson),
          accessToken: new Secret(secretJson),
          structured: new Secret({ ...(data as Record<string, unknown>), expires_at: expiresAt.toISOString() }),
          revocationHandle: { leaseId } satisfies VaultHandle,
        };
      },
      /**
       * `GET auth/token/lookup-self` with agent-sts's own token (after an AppRole login when configured):
       * Vault reachable, unsealed, and accepting the credentials issue() uses. The answer (it holds the
       * token itself) is dropped unread. node-vault takes no per-request signal: past the bound the
       * request runs on (to timeoutMs) unanswered.
       */
      async health() {
        return probeHealth(
          async () => {
            try {
              await call('token lookup', { path: '/auth/token/lookup-self', method: 'GET' });
            } catch (e) {
              // call() throws UpstreamUnavailable (cause: a VaultError) or a VaultError; anything else
              // comes from resolving agent-sts's own secret before any request was made.
              const src = e instanceof UpstreamUnavailable ? e.cause : e;
              if (!(src instanceof Error) || src.name !== 'VaultError') throw new HealthProblem("agent-sts's Vault credentials could not be read (secret reference does not resolve)");
              const { status, code } = src as { status?: number; code?: string };
              if (status === undefined && code === undefined) throw new HealthProblem('Vault gave no usable answer');
              throw new HealthProblem(healthDetail({ status, code, errors: [] }));
            }
          },
          () => 'Vault health check failed',
        );
      },
      async revoke(h, ctx) {
        const { leaseId } = checkHandle(h);
        const outcome = await revokeLease(leaseId);
        log.debug({ requestId: ctx.requestId, leaseFp: fingerprint(leaseId), outcome }, 'vault lease revoked');
      },
      async close() {
        client.stopAllRenewals();
        session = undefined;
      },
    };
  },
};
