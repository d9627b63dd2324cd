import { z } from 'zod';
import { Secret } from '../../core/secret.js';
import { ownJwtFingerprint } from '../../lib/crypto.js';
import { epochSeconds } from '../../lib/clock.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import type { Actor, BlendedIdentity, Decision } from '../../core/types.js';
import type { CredentialIssuer, CredentialIssuerPlugin, GrantRequirements, IssuedCredential, IssuerCapabilities } from '../credential-issuer.js';
import { grantOfDecision, paramsOf, refuseGrantProblems, renderSessionTags, sessionTagTemplateProblems } from '../grant-params.js';

export const AgentStsJwtConfigSchema = z.object({}).strict();
export type AgentStsJwtConfig = z.infer<typeof AgentStsJwtConfigSchema>;

/** RFC 8693 §4.1 `act`: the current actor outermost, prior actors nested beneath it. */
export function actClaim(actors: Actor[]): Record<string, unknown> | undefined {
  let act: Record<string, unknown> | undefined;
  for (const a of [...actors].reverse()) act = { sub: a.sub, ...(a.iss ? { iss: a.iss } : {}), ...(act ? { act } : {}) };
  return act;
}

/** `sub` is the human when the agent acts for one (the agent is then the actor), else the workload. */
export function subjectClaims(id: BlendedIdentity) {
  const actors: Actor[] = id.human ? [{ sub: id.workload.subject }, ...id.priorActors] : id.priorActors;
  const act = actClaim(actors);
  return { sub: id.human ? id.human.subject : id.workload.subject, client_id: id.workload.subject, ...(act ? { act } : {}) };
}

/**
 * Longest lifetime of an agent-sts-jwt access token. Resource servers verify these JWTs offline
 * against the JWKS, so a token cannot be taken back once handed out; a day is the most any policy
 * may give one (tokens.accessTokenMaxTtl, 15m by default, caps it further).
 */
export const AGENT_STS_JWT_MAX_TTL_SECONDS = 86_400;

const CAPABILITIES: IssuerCapabilities = Object.freeze({
  revocable: false,
  revokedForIntrospection: true,
  ownJwts: true,
  minTtlSeconds: 1,
  maxTtlSeconds: AGENT_STS_JWT_MAX_TTL_SECONDS,
  maxTtlReason: 'its JWTs are verified offline and cannot be revoked, so agent-sts issues them for at most 24h',
});

/** Any scope parameters (they become claims); session tags whose placeholders are known. */
export function checkJwtGrant(_config: AgentStsJwtConfig, grant: GrantRequirements): string[] {
  return Object.entries(grant.sessionTags ?? {}).flatMap(([k, v]) => sessionTagTemplateProblems(k, v));
}

/** Claims carrying the grant's scope parameters and session tags to the resource server (none when the grant has neither). */
function grantClaims(req: { decision: Decision; identity: BlendedIdentity; taskId: string }): Record<string, unknown> {
  const params = Object.fromEntries(req.decision.grantedScopes.map((s) => [s, paramsOf(req.decision, s)] as const).filter(([, p]) => Object.keys(p).length));
  const tags = req.decision.obligations?.sessionTags;
  return {
    ...(Object.keys(params).length ? { scope_params: params } : {}),
    ...(tags && Object.keys(tags).length ? { session_tags: renderSessionTags(tags, req.identity, req.taskId) } : {}),
  };
}

/**
 * Audience-bound JWT access tokens (RFC 9068, `typ: at+jwt`) for internal APIs and MCP servers.
 * `aud` is exactly the requested resource/audience; `jti` is the credential id, so a token is
 * revoked by id and traced to its issuance by fingerprint. The grant's scope parameters travel as
 * `scope_params` ({ scope: { name: value } }, granted scopes only) and its session tags as
 * `session_tags`, for the resource server to enforce. For a target with `dpop`, a token issued to a
 * request with a DPoP proof is bound to the proof's key (`cnf.jkt`, `token_type: DPoP`).
 */
export const agentStsJwtPlugin: CredentialIssuerPlugin<AgentStsJwtConfig> = {
  type: 'agent-sts-jwt',
  configSchema: AgentStsJwtConfigSchema,
  capabilities: () => CAPABILITIES,
  checkGrant: checkJwtGrant,
  create(name, _config, deps): CredentialIssuer {
    // No health(): nothing upstream (signing keys are checked by /readyz on their own).
    return {
      type: 'agent-sts-jwt',
      name,
      issuedTokenTypes: [TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt],
      needsActiveRevocation: false,
      capabilities: CAPABILITIES,
      async issue(req, ctx): Promise<IssuedCredential> {
        refuseGrantProblems(name, checkJwtGrant({}, grantOfDecision(req.decision)));
        const iat = epochSeconds(ctx.now);
        const exp = iat + req.ttlSeconds;
        const { signingInput, token } = deps.signer.signDeferred(
          {
            iss: deps.issuerUrl,
            ...subjectClaims(req.identity),
            aud: req.requestedTarget,
            iat,
            exp,
            jti: req.credentialId,
            task_id: req.taskId,
            ...(req.decision.grantedScopes.length ? { scope: req.decision.grantedScopes.join(' ') } : {}),
            ...grantClaims(req),
            // RFC 9449 §6.1: usable only with a proof by this key.
            ...(req.dpopJkt ? { cnf: { jkt: req.dpopJkt } } : {}),
          },
          'at+jwt',
        );
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.accessToken,
          tokenType: req.dpopJkt ? 'DPoP' : 'Bearer',
          expiresAt: new Date(exp * 1000),
          fingerprint: ownJwtFingerprint(signingInput, req.credentialId),
          // The signature is still being made: the exchange records the token meanwhile.
          accessToken: token.then((t) => new Secret(t)),
          revocationHandle: null,
        };
      },
      async revoke() {
        // Nothing upstream to call. The jti goes on agent-sts's own revocation list, which only agent-sts
        // consults: resource servers verify offline, hence capabilities.revocable = false.
      },
    };
  },
};
