import { z } from 'zod';
import type { JWTPayload } from 'jose';
import { parseDuration } from '../../lib/clock.js';
import { SubjectTokenRejected } from '../../errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../../lib/urns.js';
import type { HumanContext, VerifiedIdentity, WorkloadIdentity } from '../../core/types.js';
import type { ProviderDeps, TrustProvider, TrustProviderPlugin } from '../trust-provider.js';
import { createJwksSource } from './jwks-source.js';
import { verifyJwt } from './verify-jwt.js';

const duration = z.union([z.number().int().positive(), z.string().regex(/^\d+\s*(s|m|h|d)?$/)]);
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

export const OidcConfigSchema = z
  .object({
    issuer: z.string().url(),
    jwksUri: z.string().url().optional(),
    jwksFile: z.string().optional(),
    /** Audience(s) this instance requires: agent-sts's own, never a value shared with other relying parties. */
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).nonempty()]),
    /** Asymmetric algorithms only: an HMAC "signature" made with a public key can never verify. */
    algorithms: z.array(z.enum(ASYMMETRIC_ALGS)).nonempty().default(['RS256', 'ES256']),
    clockTolerance: duration.optional(),
    maxTokenAge: duration.optional(),
    requiredClaims: z.array(z.string()).default([]),
    allowNoExpiry: z.boolean().default(false),
    /** Canonical subject template; `{claim}` placeholders. Default `oidc://<issuer host+path>/{sub}`. */
    subjectTemplate: z.string().optional(),
    /** attribute name -> claim name. */
    attributes: z.record(z.string(), z.string()).default({}),
    /** This issuer authenticates people: produces a HumanContext. */
    human: z.boolean().default(false),
    groupsClaim: z.string().default('groups'),
    rolesClaim: z.string().default('roles'),
    emailClaim: z.string().default('email'),
    jwks: z
      .object({ timeout: duration.default('5s'), cooldown: duration.default('30s'), cacheMaxAge: duration.default('10m') })
      .strict()
      .default({ timeout: '5s', cooldown: '30s', cacheMaxAge: '10m' }),
  })
  .strict()
  .refine((c) => !(c.jwksUri && c.jwksFile), 'use either jwksUri or jwksFile');

export type OidcConfig = z.infer<typeof OidcConfigSchema>;

export function claimString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

/** Fills `{claim}` placeholders; a missing or non-scalar claim is a rejection, not an empty string. */
export function renderSubject(template: string, claims: JWTPayload): string {
  return template.replace(/\{([A-Za-z0-9_.-]+)\}/g, (_m, name: string) => {
    const v = claimString(claims[name]);
    if (v === undefined || v === '')
      throw new SubjectTokenRejected('subject token lacks a claim this issuer requires', { detail: { missingClaim: name } });
    return v;
  });
}

const stringList = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : [];

/**
 * Builds a verifier for one issuer; used by the oidc plugin and by plugins built on it.
 * `opts.issuers`: accept exactly this set of `iss` values (one key set) instead of `config.issuer`
 * alone, e.g. Azure tenants x token versions; `config.issuer` still drives discovery.
 */
export function createOidcVerifier(config: OidcConfig, deps: ProviderDeps, opts: { issuers?: readonly string[] } = {}) {
  const source = createJwksSource({
    issuer: config.issuer,
    jwksUri: config.jwksUri,
    jwksFile: config.jwksFile,
    timeoutMs: parseDuration(config.jwks.timeout) * 1000,
    cooldownMs: parseDuration(config.jwks.cooldown) * 1000,
    cacheMaxAgeMs: parseDuration(config.jwks.cacheMaxAge) * 1000,
    logger: deps.logger,
    fetch: deps.fetch,
  });
  const clockTolerance = config.clockTolerance !== undefined ? parseDuration(config.clockTolerance) : deps.clockTolerance;
  return {
    source,
    verify: (token: string) =>
      verifyJwt(token, source.getKey, {
        issuer: opts.issuers?.length ? [...opts.issuers] : config.issuer,
        audience: config.audience,
        algorithms: [...config.algorithms],
        clockToleranceSeconds: clockTolerance,
        maxTokenAgeSeconds: config.maxTokenAge !== undefined ? parseDuration(config.maxTokenAge) : undefined,
        requiredClaims: config.requiredClaims,
        allowNoExpiry: config.allowNoExpiry,
        currentDate: deps.clock.now(),
      }),
  };
}

export const expiryOf = (claims: JWTPayload, fallback: Date): Date =>
  typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : fallback;

export const oidcPlugin: TrustProviderPlugin<OidcConfig> = {
  type: 'oidc',
  configSchema: OidcConfigSchema as z.ZodType<OidcConfig>,
  create(name, config, deps): TrustProvider {
    const verifier = createOidcVerifier(config, deps);
    const issuerUrl = new URL(config.issuer);
    const template = config.subjectTemplate ?? `oidc://${issuerUrl.host}${issuerUrl.pathname.replace(/\/$/, '')}/{sub}`;
    return {
      type: 'oidc',
      name,
      issuer: config.issuer,
      // Lets an instance share its issuer with another one on a different audience (an IdP used
      // for people and for workloads, e.g. accounts.google.com with the gcp provider).
      audiences: typeof config.audience === 'string' ? [config.audience] : config.audience,
      acceptedTokenTypes: JWT_TOKEN_TYPES,
      refreshKeys: () => verifier.source.refresh(),
      async verify(input, ctx): Promise<VerifiedIdentity> {
        const claims = await verifier.verify(input.token);
        const expiresAt = expiryOf(claims, new Date(ctx.now.getTime() + 300_000));
        if (config.human) {
          const human: HumanContext = {
            kind: 'human',
            provider: name,
            issuer: config.issuer,
            subject: claims.sub!,
            email: claimString(claims[config.emailClaim]),
            groups: stringList(claims[config.groupsClaim]),
            roles: stringList(claims[config.rolesClaim]),
            sessionId: claimString(claims.sid),
            expiresAt,
          };
          return human;
        }
        const attributes: Record<string, string> = {};
        for (const [attr, claim] of Object.entries(config.attributes)) {
          const v = claimString(claims[claim]);
          if (v !== undefined) attributes[attr] = v;
        }
        const workload: WorkloadIdentity = {
          kind: 'workload',
          provider: name,
          providerType: 'oidc',
          subject: renderSubject(template, claims),
          attributes,
          claims,
          expiresAt,
        };
        return workload;
      },
    };
  },
};
