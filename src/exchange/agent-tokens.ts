import { jwtVerify } from 'jose';
import { z } from 'zod';
import { sha256Hex } from '../lib/crypto.js';
import { epochSeconds, type Clock } from '../lib/clock.js';
import { SubjectTokenRejected } from '../errors/sts-errors.js';
import type { TokenSigner } from '../keys/key-store.js';
import type { Actor, BlendedIdentity, HumanContext, WorkloadIdentity } from '../core/types.js';
import { subjectClaims } from '../credential-issuers/agent-sts-jwt/agent-sts-jwt-issuer.js';
import { SIGNING_ALG } from '../keys/key-store.js';

/** What an agent token proves once its signature is verified. */
export interface AgentTokenIdentity extends BlendedIdentity, AgentTokenLimits {
  taskId: string;
  tokenId: string;
  expiresAt: Date;
  /** DPoP (RFC 9449): the thumbprint of the key this token is bound to (`cnf.jkt`); it is accepted only with a proof by that key. */
  jkt?: string;
}

/** What narrows an agent token beyond policy (sub-agent tokens) and how its task stays alive. */
export interface AgentTokenLimits {
  /** The only scopes it may obtain (sub-agent tokens); undefined: whatever policy grants. */
  scopeCeiling?: string[];
  /** The only targets (names) it may reach (sub-agent tokens); undefined: whatever policy grants. */
  targetCeiling?: string[];
  /** The task ends after this long without a heartbeat or exchange; exchanges refresh it. */
  idleTimeoutSeconds?: number;
}

const ActSchema: z.ZodType<{ sub: string; iss?: string; act?: unknown }> = z.object({ sub: z.string(), iss: z.string().optional(), act: z.unknown().optional() });

const AgentClaimsSchema = z.object({
  sub: z.string(),
  jti: z.string(),
  exp: z.number(),
  task_id: z.string(),
  act: ActSchema.optional(),
  scp: z.array(z.string()).optional(),
  tgt: z.array(z.string()).optional(),
  idle: z.number().int().positive().optional(),
  cnf: z.object({ jkt: z.string().min(1) }).optional(),
  wl: z.object({ p: z.string(), pt: z.string(), s: z.string(), a: z.record(z.string(), z.string()) }),
  hu: z
    .object({ p: z.string(), iss: z.string(), s: z.string(), email: z.string().optional(), g: z.array(z.string()), r: z.array(z.string()) })
    .optional(),
});

/** RFC 8693 §4.1 `act`, outermost first, as a list (stops at the first link that is not one). */
export function flattenAct(act: unknown): Actor[] {
  const out: Actor[] = [];
  let cur = act;
  while (cur && typeof cur === 'object') {
    const parsed = ActSchema.safeParse(cur);
    if (!parsed.success) break;
    out.push({ sub: parsed.data.sub, ...(parsed.data.iss ? { iss: parsed.data.iss } : {}) });
    cur = parsed.data.act;
  }
  return out;
}

export interface AgentTokenDeps {
  signer: TokenSigner;
  issuer: string;
  clock: Clock;
  clockTolerance: number;
  /** Returns true when the token id or its task has been revoked (in-memory, hot path). */
  isRevoked: (tokenId: string, taskId: string) => boolean;
  cacheSize?: number;
}

/**
 * Agent tokens: ES256 JWTs with `typ: at+jwt`, audience agent-sts itself. The workload (and the
 * human it acts for) travel in private claims so the per-tool-call path needs no store lookup.
 * Verified tokens are cached by SHA-256 until they expire; revocation is checked on every use.
 */
export function createAgentTokens(deps: AgentTokenDeps) {
  const cache = new Map<string, AgentTokenIdentity>();
  const max = deps.cacheSize ?? 10_000;

  /** `jkt`: bind the token to that DPoP key (`cnf.jkt`, RFC 9449 §6.1). */
  async function mint(id: BlendedIdentity & { taskId: string }, tokenId: string, expiresAt: Date, limits: AgentTokenLimits = {}, issuedAt: Date = deps.clock.now(), jkt?: string): Promise<string> {
    const w = id.workload;
    const h = id.human;
    return deps.signer.sign(
      {
        iss: deps.issuer,
        aud: deps.issuer,
        ...subjectClaims(id),
        iat: epochSeconds(issuedAt),
        exp: epochSeconds(expiresAt),
        jti: tokenId,
        task_id: id.taskId,
        ...(limits.scopeCeiling ? { scope: limits.scopeCeiling.join(' '), scp: limits.scopeCeiling } : {}),
        ...(limits.targetCeiling ? { tgt: limits.targetCeiling } : {}),
        ...(limits.idleTimeoutSeconds ? { idle: limits.idleTimeoutSeconds } : {}),
        ...(jkt ? { cnf: { jkt } } : {}),
        wl: { p: w.provider, pt: w.providerType, s: w.subject, a: w.attributes },
        ...(h ? { hu: { p: h.provider, iss: h.issuer, s: h.subject, ...(h.email ? { email: h.email } : {}), g: h.groups, r: h.roles } } : {}),
      },
      'at+jwt',
    );
  }

  /** True when this token was verified before and is still cached (a cheap first test for "is it ours?"). */
  function isCached(token: string): boolean {
    return cache.has(sha256Hex(token));
  }

  async function verify(token: string, opts: { ignoreRevocation?: boolean } = {}): Promise<AgentTokenIdentity> {
    const key = sha256Hex(token);
    const now = deps.clock.now();
    let id = cache.get(key);
    if (!id) {
      let payload;
      try {
        ({ payload } = await jwtVerify(token, deps.signer.verificationKeys(), {
          issuer: deps.issuer,
          audience: deps.issuer,
          algorithms: [SIGNING_ALG],
          typ: 'at+jwt',
          clockTolerance: deps.clockTolerance,
          requiredClaims: ['exp', 'iat', 'jti', 'sub'],
          currentDate: now,
        }));
      } catch (e) {
        throw new SubjectTokenRejected('agent token could not be verified', { detail: { code: (e as { code?: string }).code } });
      }
      const c = AgentClaimsSchema.safeParse(payload);
      if (!c.success) throw new SubjectTokenRejected('agent token could not be verified', { detail: { reason: 'not an agent token' } });
      const { wl, hu } = c.data;
      const workload: WorkloadIdentity = { kind: 'workload', provider: wl.p, providerType: wl.pt, subject: wl.s, attributes: wl.a, claims: {}, expiresAt: new Date(c.data.exp * 1000) };
      const human: HumanContext | undefined = hu
        ? { kind: 'human', provider: hu.p, issuer: hu.iss, subject: hu.s, email: hu.email, groups: hu.g, roles: hu.r, expiresAt: new Date(c.data.exp * 1000) }
        : undefined;
      const actors = flattenAct(c.data.act);
      id = {
        workload,
        human,
        // With a human the workload is the current actor; only actors before it are "prior".
        priorActors: human ? actors.slice(1) : actors,
        taskId: c.data.task_id,
        tokenId: c.data.jti,
        expiresAt: new Date(c.data.exp * 1000),
        ...(c.data.scp ? { scopeCeiling: c.data.scp } : {}),
        ...(c.data.tgt ? { targetCeiling: c.data.tgt } : {}),
        ...(c.data.idle ? { idleTimeoutSeconds: c.data.idle } : {}),
        ...(c.data.cnf ? { jkt: c.data.cnf.jkt } : {}),
      };
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(key, id);
    } else if (id.expiresAt.getTime() + deps.clockTolerance * 1000 <= now.getTime()) {
      cache.delete(key);
      throw new SubjectTokenRejected('agent token could not be verified', { detail: { code: 'ERR_JWT_EXPIRED' } });
    }
    if (!opts.ignoreRevocation && deps.isRevoked(id.tokenId, id.taskId))
      throw new SubjectTokenRejected('agent token has been revoked', { detail: { reason: 'revoked', taskId: id.taskId } });
    return id;
  }

  return { mint, verify, isCached };
}
export type AgentTokens = ReturnType<typeof createAgentTokens>;
