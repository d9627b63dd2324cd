import { z } from 'zod';
import { JWT_TOKEN_TYPES } from '../../lib/urns.js';
import { SubjectTokenRejected } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import type { TrustProvider, TrustProviderPlugin } from '../trust-provider.js';
import { claimString, createOidcVerifier, expiryOf, OidcConfigSchema } from '../oidc/oidc-provider.js';

export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/** Claims copied into attributes. Numeric ids are the ones policies may pin on (names can be recycled). */
export const GITHUB_ATTRIBUTE_CLAIMS = [
  'repository',
  'repository_id',
  'repository_owner',
  'repository_owner_id',
  'repository_visibility',
  'ref',
  'ref_type',
  'sha',
  'environment',
  'event_name',
  'workflow_ref',
  'job_workflow_ref',
  'job_workflow_sha',
  'runner_environment',
  'enterprise_id',
  'run_id',
  'run_attempt',
  'actor_id',
] as const;

/** Attributes that identify a repository immutably; a policy must pin one of them. */
export const GITHUB_IMMUTABLE_PINS = ['repository_id', 'repository_owner_id'] as const;

export const GithubActionsConfigSchema = z
  .object({
    /** github.com by default; GHES: `https://HOST/_services/token`; enterprise slug issuers too. */
    issuer: z.string().url().default(GITHUB_ACTIONS_ISSUER),
    jwksUri: z.string().url().optional(),
    /** Required dedicated audience. GitHub's default (the owner URL) is refused: other parties accept it too. */
    audience: z.string().min(1),
    clockTolerance: OidcConfigSchema.shape.clockTolerance,
  })
  .strict()
  .refine((c) => !/^https:\/\/github\.com\//.test(c.audience), {
    message: "audience must be agent-sts's own value, not GitHub's default owner URL (another relying party could replay it)",
  });

export type GithubActionsConfig = z.infer<typeof GithubActionsConfigSchema>;

export const githubActionsPlugin: TrustProviderPlugin<GithubActionsConfig> = {
  type: 'github-actions',
  configSchema: GithubActionsConfigSchema as z.ZodType<GithubActionsConfig>,
  create(name, config, deps): TrustProvider {
    const verifier = createOidcVerifier(
      OidcConfigSchema.parse({
        issuer: config.issuer,
        jwksUri: config.jwksUri,
        audience: config.audience,
        algorithms: ['RS256'],
        clockTolerance: config.clockTolerance,
        requiredClaims: ['repository', 'repository_id', 'repository_owner_id', 'ref', 'iat'],
      }),
      deps,
    );
    return {
      type: 'github-actions',
      name,
      issuer: config.issuer,
      acceptedTokenTypes: JWT_TOKEN_TYPES,
      refreshKeys: () => verifier.source.refresh(),
      async verify(input, ctx) {
        const claims = await verifier.verify(input.token);
        const attributes: Record<string, string> = {};
        for (const claim of GITHUB_ATTRIBUTE_CLAIMS) {
          const v = claimString(claims[claim]);
          if (v !== undefined && v !== '') attributes[claim] = v;
        }
        for (const required of ['repository', 'repository_id', 'repository_owner_id', 'ref'] as const)
          if (!attributes[required])
            throw new SubjectTokenRejected('subject token lacks a claim this issuer requires', { detail: { missingClaim: required } });
        const identity: WorkloadIdentity = {
          kind: 'workload',
          provider: name,
          providerType: 'github-actions',
          subject: `github://${attributes.repository}@${attributes.ref}`,
          attributes,
          claims,
          expiresAt: expiryOf(claims, ctx.now),
        };
        return identity;
      },
    };
  },
};
