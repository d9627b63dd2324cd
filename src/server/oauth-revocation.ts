import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { TokenSigner } from '../keys/key-store.js';
import { credentialFingerprint, fingerprintCandidates, legacyJwtFingerprint, ownJwtFingerprint, presentedTokenFingerprint } from '../lib/crypto.js';
import { MalformedRequest, UnsupportedTokenType } from '../errors/sts-errors.js';
import { AGENT_TOKEN_ISSUER_TYPE, type TaskService } from '../tasks/task-service.js';
import type { RevocationList } from '../tasks/revocation-list.js';
import type { BearerAuth } from './bearer-auth.js';
import { createOwnTokenInspector, type OwnToken } from '../exchange/own-tokens.js';
import type { AdminApp } from './admin-instances.js';

export const REVOCATION_PATH = '/oauth2/revoke';
export const INTROSPECTION_PATH = '/oauth2/introspect';

export interface OAuthTokenEndpointsDeps {
  issuerUrl: () => string;
  signer: Pick<TokenSigner, 'verificationKeys'>;
  clock: Clock;
  /** Seconds past `exp` an agent token is still accepted by the exchange (so still worth revoking). */
  clockTolerance: number;
  maxTokenBytes: number;
  revocations: Pick<RevocationList, 'isRevoked' | 'revokeToken' | 'blockOf'>;
  tasks: Pick<TaskService, 'endTask' | 'revokeOne'>;
  db: Db;
  audit: Pick<AuditLog, 'append'>;
  logger: Logger;
  /** `tokens.revokeEndsTask`: revoking an agent token ends its whole task (every credential in it). */
  revokeEndsTask: boolean;
  /** `auth.introspectionClients`: resource servers allowed to introspect (Bearer or HTTP Basic). */
  introspectionClients: BearerAuth;
}

/** One x-www-form-urlencoded body; single-valued parameters only (RFC 6749 §3.2). */
function parseSingleForm(req: FastifyRequest): Record<string, string> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw new MalformedRequest('content type must be application/x-www-form-urlencoded');
  if (Object.keys(req.query as object).length) throw new MalformedRequest('parameters must be sent in the request body, not the URL');
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(typeof req.body === 'string' ? req.body : '')) {
    if (k in out) throw new MalformedRequest(`parameter ${k} is repeated`);
    out[k] = v;
  }
  if (!out.token) throw new MalformedRequest('token is required');
  return out;
}

/** HTTP Basic credentials (RFC 6749 §2.3.1: each part form-urlencoded, then base64). */
function basicCredentials(authorization: string): { id: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]{1,8192})$/i.exec(authorization);
  if (!m) return undefined;
  const raw = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = raw.indexOf(':');
  if (colon < 0) return undefined;
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch {
      return undefined;
    }
  };
  const id = decode(raw.slice(0, colon));
  const secret = decode(raw.slice(colon + 1));
  return id !== undefined && secret !== undefined ? { id, secret } : undefined;
}

/**
 * RFC 7009 revocation and RFC 7662 introspection of the tokens agent-sts signs itself: agent
 * tokens (aud = agent-sts) and agent-sts-jwt access tokens (aud = a resource), seen through the
 * own-token inspector (exchange/own-tokens.ts).
 */
export function createOAuthTokenEndpoints(deps: OAuthTokenEndpointsDeps) {
  const { inspect, inactiveReason } = createOwnTokenInspector(deps);

  async function introspect(token: string): Promise<{ active: false; reason: string } | { active: true; body: Record<string, unknown> }> {
    const r = await inspect(token, 0);
    if (!r.ok) return { active: false, reason: r.reason };
    const why = inactiveReason(r.token);
    if (why) return { active: false, reason: why };
    const c = r.token.claims;
    return {
      active: true,
      body: {
        active: true,
        ...(typeof c.scope === 'string' ? { scope: c.scope } : {}),
        ...(typeof c.client_id === 'string' ? { client_id: c.client_id } : {}),
        // RFC 9449 §6.2: a bound token is a DPoP token, and its key is given so the resource server can check the proof.
        token_type: c.cnf ? 'DPoP' : 'Bearer',
        exp: c.exp,
        iat: c.iat,
        sub: c.sub,
        aud: c.aud,
        iss: c.iss,
        jti: c.jti,
        task_id: c.task_id,
        ...(c.act ? { act: c.act } : {}),
        ...(c.cnf ? { cnf: c.cnf } : {}),
      },
    };
  }

  /** Marks the credential row of one of our own tokens revoked (idempotent, audited). */
  async function revokeOwnCredential(token: string, t: OwnToken, ctx: CallContext): Promise<string> {
    // Only the row of this very token (same fingerprint, in any form it was ever stored in) and only a token with nothing upstream.
    const forms = [...fingerprintCandidates(ownJwtFingerprint(token, t.claims.jti)), ...fingerprintCandidates(legacyJwtFingerprint(token, t.claims.jti))];
    const r = await deps.tasks.revokeOne(t.claims.jti, 'revoked by its holder (RFC 7009)', ctx, (row) =>
      forms.includes(row.fingerprint) && !row.sealedRevocationHandle && (t.kind !== 'agent' || row.issuerType === AGENT_TOKEN_ISSUER_TYPE),
    );
    return r ? r.fate : 'no matching credential';
  }

  /**
   * A credential agent-sts obtained upstream (a database password, a GitHub token, an AWS session
   * token, a Vault secret as handed out): found by its fingerprint through its issuance record
   * (the audit log's fingerprint index; the credential table has none), then revoked at its target
   * like at task end. A credential whose issuer cannot revoke it is refused with RFC 7009's
   * `unsupported_token_type`: its holder is told it stays valid until it expires.
   */
  async function revokeUpstream(token: string, ctx: CallContext): Promise<string> {
    const fp = credentialFingerprint(token);
    const issued = await deps.db.auditEvent.findFirst({ where: { credentialFingerprint: fp, credentialId: { not: null }, outcome: 'allow' }, select: { credentialId: true } });
    if (!issued) return 'not an agent-sts credential';
    const r = await deps.tasks.revokeOne(issued.credentialId!, 'revoked by its holder (RFC 7009)', ctx, (row) => row.fingerprint === fp && row.issuerType !== AGENT_TOKEN_ISSUER_TYPE);
    if (!r) return 'no matching credential';
    if (r.fate === 'expires_naturally')
      throw new UnsupportedTokenType(`credentials of this issuer (${r.credential.issuerType}) cannot be revoked; this one stays valid until ${r.credential.expiresAt.toISOString()}`);
    return r.fate;
  }

  async function revoke(token: string, ctx: CallContext): Promise<string> {
    // Anything still accepted by the exchange (exp + clock tolerance) is worth revoking.
    const r = await inspect(token, deps.clockTolerance);
    if (!r.ok) return token.length > deps.maxTokenBytes ? r.reason : revokeUpstream(token, ctx);
    if (r.token.kind === 'agent' && deps.revokeEndsTask) {
      const ended = await deps.tasks.endTask(r.token.claims.task_id, 'agent token revoked by its holder (RFC 7009)', ctx);
      return ended ? `task ${ended.state}` : 'no such task';
    }
    return revokeOwnCredential(token, r.token, ctx);
  }

  /** The introspecting client (Bearer token or HTTP Basic id + secret), or undefined. */
  function introspectionClient(authorization: string | undefined): string | undefined {
    if (!authorization) return undefined;
    const basic = basicCredentials(authorization);
    if (basic) {
      const name = deps.introspectionClients.authenticate(`Bearer ${basic.secret}`);
      return name !== undefined && name === basic.id ? name : undefined;
    }
    return deps.introspectionClients.authenticate(authorization);
  }

  const noStore = (reply: FastifyReply) => reply.header('cache-control', 'no-store').header('pragma', 'no-cache');

  function register(app: AdminApp, ctxOf: (req: FastifyRequest) => CallContext): void {
    /**
     * RFC 7009. No client authentication: agents are public clients, and presenting the token
     * proves possession of it — which is all revoking it needs. Unknown or invalid tokens get the
     * same 200 as revoked ones (§2.2), so the endpoint is no oracle.
     */
    app.post(REVOCATION_PATH, async (req, reply) => {
      noStore(reply);
      const form = parseSingleForm(req);
      const ctx = ctxOf(req);
      const outcome = await revoke(form.token!, ctx);
      // The fingerprint (a JWT decode and a SHA-256) only when the line is written.
      if (deps.logger.isLevelEnabled('debug'))
        deps.logger.debug({ requestId: ctx.requestId, fingerprint: presentedTokenFingerprint(form.token!), hint: form.token_type_hint, outcome }, 'revocation request');
      return reply.code(200).send();
    });

    /** RFC 7662, for resource servers: client authentication required (§2.1), then `{active}` only. */
    app.post(INTROSPECTION_PATH, async (req, reply) => {
      noStore(reply);
      const auth = req.headers.authorization;
      const client = introspectionClient(auth);
      if (!client) {
        const scheme = /^basic /i.test(auth ?? '') ? 'Basic realm="agent-sts"' : /^bearer /i.test(auth ?? '') ? 'Bearer realm="agent-sts"' : 'Basic realm="agent-sts", Bearer realm="agent-sts"';
        return reply.code(401).header('www-authenticate', scheme).type('application/json').send({ error: 'invalid_client', error_description: 'client authentication failed' });
      }
      const form = parseSingleForm(req);
      const r = await introspect(form.token!);
      if (!r.active) {
        // The caller learns only `active: false`; the reason stays in the debug log.
        if (deps.logger.isLevelEnabled('debug'))
          deps.logger.debug({ requestId: req.id, client, fingerprint: presentedTokenFingerprint(form.token!), reason: r.reason }, 'introspection: inactive');
        return reply.type('application/json').send({ active: false });
      }
      return reply.type('application/json').send(r.body);
    });
  }

  return { register, introspect, revoke };
}
export type OAuthTokenEndpoints = ReturnType<typeof createOAuthTokenEndpoints>;
