import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import { epochSeconds } from '../lib/clock.js';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../lib/urns.js';
import type { TokenSigner } from '../keys/key-store.js';
import type { AgentTokenIdentity, AgentTokens } from '../exchange/agent-tokens.js';
import type { ExchangeService } from '../exchange/exchange-service.js';
import { parseExchangeRequest } from '../exchange/parse-request.js';
import type { TaskEndResult, TaskService } from '../tasks/task-service.js';
import { taskView } from '../tasks/task-view.js';
import { presentedToken } from './bearer-auth.js';
import { InvalidDpopProof, UseDpopNonce } from '../errors/sts-errors.js';
import { DPOP_ALGS, requireBoundProof, type DpopVerifier } from '../exchange/dpop.js';
import type { RoleAuth } from './role-auth.js';
import { sendProblem, type AdminApp } from './admin-instances.js';
import { readJsonBody, refuseBody } from './json-body.js';

/** `typ` of the signed task-end receipt (verify it with the JWKS like any agent-sts JWT). */
export const RECEIPT_TYP = 'task-receipt+jwt';

const OpenTaskBody = z
  .object({
    subject_token: z.string().min(1),
    subject_token_type: z.string().min(1),
    actor_token: z.string().min(1).optional(),
    actor_token_type: z.string().min(1).optional(),
    /** What the task is for, in a few words: shown to auditors. */
    purpose: z.string().trim().min(1).max(200),
    /** Requested lifetime of the task, seconds (capped by policy and configuration). */
    ttl_seconds: z.number().int().min(1).max(31_536_000).optional(),
    /** The task ends itself after this long without a heartbeat or an exchange. */
    idle_timeout_seconds: z.number().int().min(10).max(86_400).optional(),
  })
  .strict();

export interface TaskRouteDeps {
  db: Db;
  clock: Clock;
  issuerUrl: () => string;
  maxTokenBytes: number;
  agentTokens: AgentTokens;
  exchange: ExchangeService;
  tasks: Pick<TaskService, 'endTask'>;
  signer: TokenSigner;
  roles: RoleAuth;
  ctxOf: (req: FastifyRequest) => CallContext;
  dpop: DpopVerifier;
}

/**
 * Tasks: open one explicitly (purpose, deadline, idle timeout), read it (never a secret), keep it
 * alive with heartbeats, end it with a signed receipt. An agent token authorizes its own task and
 * its sub-agents' tasks (descendants); auditors and admins may read any task.
 */
export function registerTaskRoutes(app: AdminApp, deps: TaskRouteDeps) {
  const unauthorized = (reply: FastifyReply, detail: string) => {
    reply.header('www-authenticate', 'Bearer');
    return sendProblem(reply, 401, 'unauthorized', detail);
  };

  /** The request's verified DPoP proof for this route (RFC 9449 §4.3: htm, htu without the query). */
  const proofOf = (req: FastifyRequest) => deps.dpop.verify(req.headers.dpop, req.method, `${deps.issuerUrl()}${req.url.split('?')[0]}`);

  /**
   * The agent token the request presents and its identity: `Authorization: Bearer <token>`, or
   * `Authorization: DPoP <token>` with a `DPoP` proof by the key a bound token names (RFC 9449 §7.1).
   * `none`: no token; `unverified`: not a valid agent token (another credential may be);
   * `refused`: the answer has been sent.
   */
  async function presentedAgent(req: FastifyRequest, reply: FastifyReply, opts: { ignoreRevocation: boolean }): Promise<AgentTokenIdentity | 'none' | 'unverified' | 'refused'> {
    const presented = presentedToken(req.headers.authorization);
    if (!presented || presented.token.length > deps.maxTokenBytes) return 'none';
    const { scheme, token } = presented;
    const agent = await deps.agentTokens.verify(token, opts).catch(() => undefined);
    if (!agent) return 'unverified';
    const dpopScheme = scheme === 'dpop';
    try {
      if (agent.jkt && !dpopScheme) throw new InvalidDpopProof('this agent token is bound to a key (DPoP): present it as `Authorization: DPoP <token>` with a DPoP proof');
      if (!agent.jkt && dpopScheme) {
        await unauthorized(reply, 'this agent token is not bound to a key: present it as `Authorization: Bearer <token>`');
        return 'refused';
      }
      if (agent.jkt) requireBoundProof(agent.jkt, token, await proofOf(req));
    } catch (e) {
      if (!(e instanceof InvalidDpopProof) && !(e instanceof UseDpopNonce)) throw e;
      // RFC 9449 §7.1, §9: 401 with the DPoP challenge (and, for use_dpop_nonce, the nonce to retry with).
      reply.header('www-authenticate', `DPoP error="${e.oauthCode}", algs="${DPOP_ALGS.join(' ')}"`);
      await sendProblem(reply, 401, 'unauthorized', e.publicMessage);
      return 'refused';
    }
    return agent;
  }

  /** The verified agent token of the request, or undefined (answer already sent). */
  async function agentOf(req: FastifyRequest, reply: FastifyReply, opts: { ignoreRevocation: boolean }): Promise<AgentTokenIdentity | undefined> {
    const agent = await presentedAgent(req, reply, opts);
    if (agent === 'refused') return undefined;
    if (agent === 'none' || agent === 'unverified') {
      await unauthorized(reply, agent === 'none' ? 'an agent token of this task is required' : 'the agent token could not be verified');
      return undefined;
    }
    return agent;
  }

  /** True when `agentTask` is `taskId` or one of its ancestors (a parent manages its sub-agents). */
  async function governs(agentTask: string, taskId: string): Promise<boolean> {
    let id: string | null = taskId;
    for (let hops = 0; id && hops < 16; hops++) {
      if (id === agentTask) return true;
      const t: { parentTaskId: string | null } | null = await deps.db.task.findUnique({ where: { id }, select: { parentTaskId: true } });
      id = t?.parentTaskId ?? null;
    }
    return false;
  }

  /** The agent may act on this task (its own or a descendant's); otherwise the refusal is sent. */
  async function mayAct(agent: AgentTokenIdentity, req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply): Promise<boolean> {
    if (await governs(agent.taskId, req.params.id)) return true;
    // 403 for another agent's task, 404 for no such task.
    const exists = await deps.db.task.findUnique({ where: { id: req.params.id }, select: { id: true } });
    await sendProblem(reply, exists ? 403 : 404, exists ? 'forbidden' : 'task not found', exists ? 'the agent token belongs to another task' : undefined);
    return false;
  }

  /** Agent of this task (or an ancestor) → ok; otherwise the refusal has been sent. */
  async function authorize(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, opts: { ignoreRevocation: boolean }): Promise<boolean> {
    const agent = await agentOf(req, reply, opts);
    return agent !== undefined && mayAct(agent, req, reply);
  }

  app.post('/v1/tasks', async (req, reply) => {
    const body = readJsonBody(req, OpenTaskBody);
    if (!body.ok) return refuseBody(reply, body);
    const b = body.value;
    if (b.idle_timeout_seconds && b.ttl_seconds && b.idle_timeout_seconds >= b.ttl_seconds)
      return sendProblem(reply, 400, 'invalid request', 'idle_timeout_seconds must be shorter than ttl_seconds');
    // The same validation as the token endpoint (token types, sizes), then the start-up exchange.
    const form: Record<string, string[]> = { grant_type: [GRANT_TYPE_TOKEN_EXCHANGE], subject_token: [b.subject_token], subject_token_type: [b.subject_token_type] };
    if (b.actor_token) form.actor_token = [b.actor_token];
    if (b.actor_token_type) form.actor_token_type = [b.actor_token_type];
    const parsed = parseExchangeRequest(form, { maxTokenBytes: deps.maxTokenBytes });
    // With a DPoP proof for this endpoint, the agent token is bound to its key (RFC 9449).
    const proof = await proofOf(req);
    const ctx = { ...deps.ctxOf(req), ...(proof ? { dpop: proof } : {}) };
    const r = await deps.exchange.exchange(parsed, ctx, { task: { purpose: b.purpose, ttlSeconds: b.ttl_seconds, idleTimeoutSeconds: b.idle_timeout_seconds } });
    const expiresIn = Math.max(0, Math.floor((r.credential.expiresAt.getTime() - ctx.now.getTime()) / 1000));
    reply.header('cache-control', 'no-store').header('location', `/v1/tasks/${r.taskId}`);
    return reply.code(201).send({
      task_id: r.taskId,
      purpose: b.purpose,
      agent_token: r.credential.accessToken!.reveal(),
      issued_token_type: TOKEN_TYPE.accessToken,
      token_type: r.credential.tokenType,
      expires_in: expiresIn,
      deadline: r.credential.expiresAt.toISOString(),
      idle_timeout_seconds: b.idle_timeout_seconds ?? null,
    });
  });

  app.get<{ Params: { id: string } }>('/v1/tasks/:id', async (req, reply) => {
    // An agent token (verified once) of this task or an ancestor's; else an auditor or admin credential.
    const agent = await presentedAgent(req, reply, { ignoreRevocation: true });
    if (agent === 'refused') return reply;
    if (typeof agent === 'object') {
      if (!(await mayAct(agent, req, reply))) return reply;
    } else if (!(await deps.roles.check(req.headers.authorization, ['auditor', 'admin'], deps.ctxOf(req))).ok) {
      return unauthorized(reply, 'an agent token of this task (or its parent), or an auditor or admin credential, is required');
    }
    const view = await taskView(deps.db, req.params.id);
    if (!view) return sendProblem(reply, 404, 'task not found');
    reply.header('cache-control', 'no-store');
    return view;
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/heartbeat', async (req, reply) => {
    if (!(await authorize(req, reply, { ignoreRevocation: false }))) return reply;
    const now = deps.clock.now();
    const updated = await deps.db.task.updateMany({ where: { id: req.params.id, state: 'open' }, data: { lastActivityAt: now } });
    if (updated.count !== 1) return sendProblem(reply, 409, 'task has ended', 'a task that is ending or ended cannot be kept alive; open a new one');
    const t = await deps.db.task.findUniqueOrThrow({ where: { id: req.params.id }, select: { idleTimeoutSeconds: true, deadline: true } });
    const idleUntil = t.idleTimeoutSeconds ? new Date(Math.min(now.getTime() + t.idleTimeoutSeconds * 1000, t.deadline.getTime())) : null;
    return { task_id: req.params.id, state: 'open', idle_timeout_seconds: t.idleTimeoutSeconds, ends_if_idle_at: idleUntil?.toISOString() ?? null, deadline: t.deadline.toISOString() };
  });

  app.delete<{ Params: { id: string } }>('/v1/tasks/:id', async (req, reply) => {
    // A revoked agent token may still end its own task.
    if (!(await authorize(req, reply, { ignoreRevocation: true }))) return reply;
    const result = await deps.tasks.endTask(req.params.id, 'ended by agent', deps.ctxOf(req));
    if (!result) return sendProblem(reply, 404, 'task not found');
    return sendTaskEnd(reply, result, deps);
  });
}

/** The answer to a task end: 200 ended or 202 still ending, every credential's fate and the signed receipt. */
export async function sendTaskEnd(reply: FastifyReply, result: TaskEndResult, deps: Pick<TaskRouteDeps, 'signer' | 'issuerUrl' | 'clock'>) {
  const body = receiptBody(result);
  const receipt = await deps.signer.sign({ iss: deps.issuerUrl(), iat: epochSeconds(deps.clock.now()), jti: randomUUID(), ...body }, RECEIPT_TYP);
  reply.header('cache-control', 'no-store');
  return reply.code(result.state === 'ended' ? 200 : 202).send({ ...body, receipt });
}

/** The receipt: every credential of the task (and of its sub-agents' tasks) and its fate. */
function receiptBody(r: TaskEndResult): Record<string, unknown> {
  return {
    task_id: r.taskId,
    state: r.state,
    credentials: r.credentials.map((c) => ({ id: c.id, target: c.target, token_type: c.tokenType, fingerprint: c.fingerprint, expires_at: c.expiresAt, fate: c.fate, revoked_at: c.revokedAt })),
    ...(r.children.length ? { children: r.children.map(receiptBody) } : {}),
  };
}
