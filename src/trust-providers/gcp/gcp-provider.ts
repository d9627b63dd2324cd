/**
 * `gcp` trust provider: Compute Engine / GKE / Cloud Run metadata-server identity tokens
 * (STANDARDS §6.1), requested with `audience=<agent-sts's audience>&format=full`.
 *
 * Config: `audience` (required, agent-sts's own value), `issuer` (default
 * https://accounts.google.com), `extraIssuers` (e.g. the legacy spelling `accounts.google.com`;
 * only the configured set is accepted), `jwksUri` (default Google's JWK set), `projects`
 * (allow-list of project ids), `requireComputeEngine` (default true).
 *
 * Security choices:
 * - Any Google-signed ID token for our audience verifies — including one minted for a person or
 *   for any service account of any project — so the audience must be ours alone, and the identity
 *   is keyed on the verified service-account email *and* the project from the
 *   `google.compute_engine` block. Tokens without that block (format=standard) are refused unless
 *   `requireComputeEngine: false`; then the subject carries no project (`gcp://sa/<email>`).
 * - `email_verified` must be true: the email is part of the subject.
 * - RS256 only (Google's only signing algorithm), keys from the configured JWKS through the shared
 *   oidc verifier (unknown-kid refetch with cooldown); a key outage is UpstreamUnavailable.
 * - Policies should pin `instance_id` (never reused) rather than `instance_name` (reusable), and
 *   `service_account_id` (the SA's numeric id, `sub`) when an SA might be deleted and recreated.
 */
import { z } from 'zod';
import { JWT_TOKEN_TYPES } from '../../lib/urns.js';
import { SubjectTokenRejected } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import { logRefusals, type TrustProvider, type TrustProviderPlugin } from '../trust-provider.js';
import { claimString, createOidcVerifier, expiryOf, OidcConfigSchema } from '../oidc/oidc-provider.js';

export const GOOGLE_ISSUER = 'https://accounts.google.com';
export const GOOGLE_JWKS_URI = 'https://www.googleapis.com/oauth2/v3/certs';

export const GcpConfigSchema = z
  .object({
    /** agent-sts's own audience, as passed to the metadata server's `audience=` parameter. */
    audience: z.string().min(1),
    issuer: z.string().url().default(GOOGLE_ISSUER),
    /** Further accepted `iss` spellings (Google historically also used `accounts.google.com`). */
    extraIssuers: z.array(z.string().min(1)).default([]),
    jwksUri: z.string().url().default(GOOGLE_JWKS_URI),
    /** Allow-list of project ids; unset = any project (policies must then pin project_id). */
    projects: z.array(z.string().min(1)).nonempty().optional(),
    /** Refuse format=standard tokens (no google.compute_engine block). */
    requireComputeEngine: z.boolean().default(true),
    clockTolerance: OidcConfigSchema.shape.clockTolerance,
    jwks: OidcConfigSchema.shape.jwks,
  })
  .strict();

export type GcpConfig = z.infer<typeof GcpConfigSchema>;

const reject = (reason: string, extra: Record<string, unknown> = {}) =>
  new SubjectTokenRejected('subject token could not be verified', { detail: { reason, ...extra } });

/** The `google.compute_engine` block of a format=full token, as strings; undefined when absent. */
function computeEngineOf(claims: Record<string, unknown>): Record<string, string> | undefined {
  const google = claims.google;
  const ce = google && typeof google === 'object' ? (google as Record<string, unknown>).compute_engine : undefined;
  if (ce === undefined) return undefined;
  if (!ce || typeof ce !== 'object' || Array.isArray(ce)) throw reject('malformed google.compute_engine block');
  const out: Record<string, string> = {};
  for (const k of ['project_id', 'project_number', 'zone', 'instance_id', 'instance_name', 'instance_creation_timestamp'] as const) {
    const v = claimString((ce as Record<string, unknown>)[k]);
    if (v !== undefined && v !== '') out[k] = v;
  }
  for (const k of ['project_id', 'project_number', 'instance_id'] as const)
    if (!out[k]) throw reject('google.compute_engine block lacks a required field', { missingClaim: `google.compute_engine.${k}` });
  return out;
}

export const gcpPlugin: TrustProviderPlugin<GcpConfig> = {
  type: 'gcp',
  configSchema: GcpConfigSchema as z.ZodType<GcpConfig>,
  create(name, config, deps): TrustProvider {
    const issuers = [...new Set([config.issuer, ...config.extraIssuers])];
    const verifier = createOidcVerifier(
      OidcConfigSchema.parse({
        issuer: config.issuer,
        jwksUri: config.jwksUri,
        audience: config.audience,
        algorithms: ['RS256'],
        clockTolerance: config.clockTolerance,
        requiredClaims: ['iat', 'email'],
        jwks: config.jwks,
      }),
      deps,
      { issuers },
    );

    async function verifyToken(token: string, now: Date): Promise<WorkloadIdentity> {
      const claims = await verifier.verify(token);
      const email = claimString(claims.email);
      if (!email) throw reject('token has no service-account email', { missingClaim: 'email' });
      // Only a boolean true: the email becomes part of the subject.
      if (claims.email_verified !== true) throw reject('email_verified is not true');
      const ce = computeEngineOf(claims);
      if (!ce && config.requireComputeEngine) throw reject('no google.compute_engine block (format=standard token)');
      if (config.projects && !(ce && config.projects.includes(ce.project_id!)))
        throw reject('project not allowed', { project_id: ce?.project_id ?? null });
      const attributes: Record<string, string> = { service_account_email: email, service_account_id: claims.sub!, ...(ce ?? {}) };
      return {
        kind: 'workload',
        provider: name,
        providerType: 'gcp',
        subject: ce ? `gcp://${ce.project_id}/sa/${email}` : `gcp://sa/${email}`,
        attributes,
        claims,
        expiresAt: expiryOf(claims, now),
      };
    }

    return {
      type: 'gcp',
      name,
      issuer: config.issuer,
      issuers,
      audiences: [config.audience],
      acceptedTokenTypes: JWT_TOKEN_TYPES,
      refreshKeys: () => verifier.source.refresh(),
      verify: logRefusals('gcp', name, deps.logger, async (input, ctx) => {
      return await verifyToken(input.token, ctx.now);
      }),
    };
  },
};
