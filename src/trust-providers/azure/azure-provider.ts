/**
 * `azure` trust provider: managed-identity access tokens from Azure IMDS (STANDARDS §6.2),
 * requested with `resource=<agent-sts's App ID URI>`.
 *
 * Config: `tenants` (allow-list of tenant ids, required), `audience` (agent-sts's App ID URI),
 * `clientId` (optional: agent-sts's app client id, which v2 tokens carry as `aud`), `tokenVersions`
 * (`v1` → iss `https://sts.windows.net/<tid>/`, `v2` → `https://login.microsoftonline.com/<tid>/v2.0`;
 * which one arrives depends on the app's accessTokenAcceptedVersion), `jwksUri` (default the
 * Microsoft identity platform's common key set).
 *
 * Security choices:
 * - Microsoft signs every tenant's tokens with the same keys, so a valid signature proves nothing
 *   about the tenant: `iss` must be exactly one of the configured tenant × version issuers, and
 *   `tid` must equal the tenant in that `iss` (and be allowed).
 * - The identity is keyed on (`tid`, `oid`): `oid` is the managed identity's service-principal
 *   object id (immutable). `xms_mirid` (the Azure resource id) is only parsed into attributes;
 *   Azure ids are case-insensitive, so the parsed parts are lower-cased (raw kept as mi_resource_id).
 * - Managed identities get app-only tokens: if `idtyp` is present it must be "app" (a user's
 *   delegated token for our audience is refused). RS256 only; a key outage is UpstreamUnavailable.
 */
import { z } from 'zod';
import { JWT_TOKEN_TYPES } from '../../lib/urns.js';
import { SubjectTokenRejected } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import { logRefusals, type TrustProvider, type TrustProviderPlugin } from '../trust-provider.js';
import { claimString, createOidcVerifier, expiryOf, OidcConfigSchema } from '../oidc/oidc-provider.js';

export const AZURE_JWKS_URI = 'https://login.microsoftonline.com/common/discovery/v2.0/keys';

const guid = z
  .string()
  .regex(/^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$/, 'must be a GUID')
  .transform((s) => s.toLowerCase());

export const AzureConfigSchema = z
  .object({
    tenants: z.array(guid).nonempty(),
    /** agent-sts's App ID URI (the IMDS `resource=` value); v1 tokens carry it as `aud`. */
    audience: z.string().min(1),
    /** agent-sts's application (client) id: v2 tokens carry it as `aud`. */
    clientId: guid.optional(),
    tokenVersions: z.array(z.enum(['v1', 'v2'])).nonempty().default(['v1', 'v2']),
    jwksUri: z.string().url().default(AZURE_JWKS_URI),
    clockTolerance: OidcConfigSchema.shape.clockTolerance,
    jwks: OidcConfigSchema.shape.jwks,
  })
  .strict();

export type AzureConfig = z.infer<typeof AzureConfigSchema>;

export const azureIssuer = (tenant: string, version: 'v1' | 'v2'): string =>
  version === 'v1' ? `https://sts.windows.net/${tenant}/` : `https://login.microsoftonline.com/${tenant}/v2.0`;

export interface AzureResourceId {
  subscription_id: string;
  resource_group: string;
  resource_provider: string;
  /** Type path below the namespace, e.g. `virtualmachines` or `sites/slots`. */
  resource_type: string;
  /** Name path matching resource_type, e.g. `vm-1` or `app/staging`. */
  resource_name: string;
}

/**
 * Parses `/subscriptions/<sub>/resourcegroups/<rg>/providers/<ns>/<type>/<name>[/<type>/<name>...]`
 * case-insensitively; all parts lower-cased. Undefined when the string has another shape.
 */
export function parseAzureResourceId(id: string): AzureResourceId | undefined {
  const parts = id.split('/');
  if (parts[0] !== '' || parts.length < 9 || (parts.length - 7) % 2 !== 0 || parts.slice(1).some((p) => p === '')) return undefined;
  const lc = parts.map((p) => p.toLowerCase());
  if (lc[1] !== 'subscriptions' || lc[3] !== 'resourcegroups' || lc[5] !== 'providers') return undefined;
  const rest = lc.slice(7);
  return {
    subscription_id: lc[2]!,
    resource_group: lc[4]!,
    resource_provider: lc[6]!,
    resource_type: rest.filter((_, i) => i % 2 === 0).join('/'),
    resource_name: rest.filter((_, i) => i % 2 === 1).join('/'),
  };
}

const reject = (reason: string, extra: Record<string, unknown> = {}) =>
  new SubjectTokenRejected('subject token could not be verified', { detail: { reason, ...extra } });

export const azurePlugin: TrustProviderPlugin<AzureConfig> = {
  type: 'azure',
  configSchema: AzureConfigSchema as z.ZodType<AzureConfig>,
  create(name, config, deps): TrustProvider {
    const tenants = new Set(config.tenants);
    const byIssuer = new Map<string, { tenant: string; ver: '1.0' | '2.0' }>();
    for (const tenant of tenants)
      for (const v of new Set(config.tokenVersions)) byIssuer.set(azureIssuer(tenant, v), { tenant, ver: v === 'v1' ? '1.0' : '2.0' });
    const issuers = [...byIssuer.keys()];
    const audiences = [config.audience, ...(config.clientId ? [config.clientId] : [])];
    const verifier = createOidcVerifier(
      OidcConfigSchema.parse({
        issuer: issuers[0],
        jwksUri: config.jwksUri,
        audience: audiences,
        algorithms: ['RS256'],
        clockTolerance: config.clockTolerance,
        requiredClaims: ['iat', 'oid', 'tid'],
        jwks: config.jwks,
      }),
      deps,
      { issuers },
    );

    async function verifyToken(token: string, now: Date): Promise<WorkloadIdentity> {
      const claims = await verifier.verify(token);
      // jose already checked iss is one of `issuers`.
      const expected = byIssuer.get(claims.iss!)!;
      const tid = claimString(claims.tid)?.toLowerCase();
      if (!tid || tid !== expected.tenant || !tenants.has(tid)) throw reject('tid does not match the tenant of iss', { tid: tid ?? null, iss: claims.iss });
      const oid = claimString(claims.oid)?.toLowerCase();
      if (!oid) throw reject('token has no oid', { missingClaim: 'oid' });
      if (claims.idtyp !== undefined && claims.idtyp !== 'app') throw reject('not an app-only token', { idtyp: claimString(claims.idtyp) ?? null });
      if (claims.ver !== undefined && claims.ver !== expected.ver) throw reject('token version does not match its issuer', { ver: claimString(claims.ver) ?? null });

      const attributes: Record<string, string> = { tenant_id: tid, object_id: oid };
      const appId = claimString(claims.appid) ?? claimString(claims.azp);
      if (appId) attributes.app_id = appId.toLowerCase();
      const mirid = claimString(claims.xms_mirid);
      if (mirid) {
        attributes.mi_resource_id = mirid;
        const parsed = parseAzureResourceId(mirid);
        if (parsed) Object.assign(attributes, parsed);
        else deps.logger.debug({ provider: name }, 'azure xms_mirid has an unexpected shape; resource attributes omitted');
      }
      return {
        kind: 'workload',
        provider: name,
        providerType: 'azure',
        subject: `azure://${tid}/${oid}`,
        attributes,
        claims,
        expiresAt: expiryOf(claims, now),
      };
    }

    return {
      type: 'azure',
      name,
      issuers,
      audiences,
      acceptedTokenTypes: JWT_TOKEN_TYPES,
      refreshKeys: () => verifier.source.refresh(),
      verify: logRefusals('azure', name, deps.logger, async (input, ctx) => {
      return await verifyToken(input.token, ctx.now);
      }),
    };
  },
};
