import type { Secret } from '../core/secret.js';
import { OWNING_STATES, type Actor, type BlendedIdentity, type CallContext, type Credential, type Decision, type HumanContext, type VerifiedIdentity, type WorkloadIdentity } from '../core/types.js';
import { InvalidDpopProof, MalformedRequest, PolicyDenied, ScopeNotAllowed, StsError, SubjectTokenRejected, TargetNotAllowed, UpstreamUnavailable } from '../errors/sts-errors.js';
import { randomLowerId, uuidv7 } from '../lib/crypto.js';
import { ownJwtFingerprint } from '../lib/crypto.js';
import { TOKEN_TYPE } from '../lib/urns.js';
import { requireBoundProof } from './dpop.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';
import type { Db } from '../storage/prisma-client.js';
import type { AuditLog, AuditWrite } from '../audit/audit-log.js';
import type { TaskUpdate } from '../storage/batch.js';
import type { AuditEventInput } from '../audit/audit-event.js';
import type { PolicyEngine, PolicyRequest } from '../policy/policy-engine.js';
import type { TrustRegistry } from '../trust-providers/registry.js';
import type { CredentialIssuer, IssuedCredential } from '../credential-issuers/credential-issuer.js';
import { liveLimitsOf, servesAs, type LiveLimit, type TargetConfig } from '../config/config-schema.js';
import { AGENT_TOKEN_ISSUER_TYPE, sealHandle } from '../tasks/task-service.js';
import { flattenAct, type AgentTokenIdentity, type AgentTokenLimits, type AgentTokens } from './agent-tokens.js';
import type { OwnToken, OwnTokenInspector } from './own-tokens.js';
import type { ExchangeRequest } from './parse-request.js';
import type { TargetResolver } from './targets.js';
import { Secret as SecretValue } from '../core/secret.js';
import type { ChaosHook } from '../lib/chaos-hook.js';
import type { RevocationList } from '../tasks/revocation-list.js';
import { blockOn } from '../tasks/kill-switch.js';
import type { ApprovalService } from '../approvals/approval-service.js';
import type { ExchangeMonitor } from '../inventory/exchange-monitor.js';
import type { Telemetry } from '../telemetry/otel.js';
import { createExchangeTelemetry } from '../telemetry/exchange-telemetry.js';
import type { SpanHandle } from '../telemetry/spans.js';

/** Options of an explicitly opened task (POST /v1/tasks). */
export interface TaskOptions {
  purpose: string;
  /** Requested task lifetime, seconds (capped by policy and configuration, never extended). */
  ttlSeconds?: number;
  idleTimeoutSeconds?: number;
}

export interface ExchangeResult {
  credential: Credential;
  /** The task the credential belongs to (returned as the `task_id` extension member). */
  taskId: string;
  grantedScopes: string[];
  requestedScopes: string[];
}

export interface ExchangeDeps {
  issuerUrl: string;
  /** tokens.requireDpop: agent tokens (start-up and sub-agent) only for requests with a DPoP proof. */
  requireDpop?: boolean;
  trust: Pick<TrustRegistry, 'resolveFor'>;
  agentTokens: AgentTokens;
  policy: Pick<PolicyEngine, 'evaluate' | 'version'>;
  targets: TargetResolver;
  issuers: { get(name: string): CredentialIssuer | undefined };
  audit: Pick<AuditLog, 'append'>;
  db: Db;
  kek: Secret<Buffer>;
  clock: Clock;
  logger: Logger;
  limits: { agentTokenMaxTtl: number; maxTaskTtl: number; maxDelegationDepth: number };
  /** Test hook only (lib/chaos-hook.ts): crash points around the upstream call. */
  chaos?: ChaosHook;
  /**
   * agent-sts-jwt access tokens presented back as subject_token by the workload that serves their
   * target (targets[].servedBy); absent: such tokens are refused.
   */
  ownTokens?: Pick<OwnTokenInspector, 'inspect' | 'inactiveReason'>;
  /** Kill switch: identities whose exchanges are refused (refreshed each second on every replica). */
  blocks?: Pick<RevocationList, 'blockOf'>;
  /** Just-in-time approval of grants with an approval obligation; absent: such grants are refused. */
  approvals?: Pick<ApprovalService, 'gate'>;
  /** Inventory and behaviour signals (src/inventory, src/signals): in memory, never a database round trip here. */
  monitor?: ExchangeMonitor;
  /** Spans and metrics of every exchange (telemetry/exchange-telemetry.ts); absent or off: none. */
  telemetry?: Telemetry;
}

type Presented =
  | { kind: 'agent'; id: AgentTokenIdentity }
  | { kind: 'access'; token: OwnToken['claims'] }
  | { kind: 'workload'; id: WorkloadIdentity }
  | { kind: 'human'; id: HumanContext };

interface Resolved {
  identity: BlendedIdentity;
  /** Set when the caller presented an agent token: the task it belongs to and its expiry. */
  agent?: AgentTokenIdentity;
}

export function createExchangeService(deps: ExchangeDeps) {
  const tel = createExchangeTelemetry(deps.telemetry);

  /** Stage `provider.verify` (one span per presented token). */
  function verifyPresented(token: Secret<string>, tokenType: string, ctx: CallContext, tokenRole: 'subject' | 'actor'): Promise<Presented> {
    return tel.stage('provider.verify', { tokenRole }, (s) => verifyOnce(token, tokenType, ctx, s, tokenRole));
  }

  async function verifyOnce(token: Secret<string>, tokenType: string, ctx: CallContext, s: SpanHandle, tokenRole: 'subject' | 'actor'): Promise<Presented> {
    const raw = token.reveal();
    // A cached agent token is ours without parsing it (the per-tool-call path); otherwise look at its issuer.
    const own = deps.agentTokens.isCached(raw) ? 'agent' : ownTokenKind(raw);
    if (own === 'access') {
      s.set({ provider: 'agent-sts', providerType: 'access-token' });
      return { kind: 'access', token: await verifyAccessToken(raw, tokenType, tokenRole) };
    }
    if (own === 'agent') {
      s.set({ provider: 'agent-sts', providerType: 'agent-token' });
      if (tokenType !== TOKEN_TYPE.accessToken && tokenType !== TOKEN_TYPE.jwt)
        throw new SubjectTokenRejected('token type does not match the token');
      const id = await deps.agentTokens.verify(raw);
      // A DPoP-bound agent token counts only with a proof by its key, for this token.
      requireBoundProof(id.jkt, raw, ctx.dpop);
      return { kind: 'agent', id };
    }
    const provider = deps.trust.resolveFor(raw, tokenType);
    s.set({ provider: provider.name, providerType: provider.type });
    const id: VerifiedIdentity = await provider.verify({ token: raw, tokenType }, ctx);
    return id.kind === 'human' ? { kind: 'human', id } : { kind: 'workload', id };
  }

  /** `agent` or `access` for a token that names agent-sts as its issuer (not verified yet), else undefined. */
  function ownTokenKind(raw: string): 'agent' | 'access' | undefined {
    const dot = raw.indexOf('.');
    if (dot <= 0) return undefined;
    const end = raw.indexOf('.', dot + 1);
    if (end < 0) return undefined;
    try {
      const payload = JSON.parse(Buffer.from(raw.slice(dot + 1, end), 'base64url').toString('utf8')) as { iss?: unknown; aud?: unknown };
      if (payload.iss !== deps.issuerUrl) return undefined;
      return payload.aud === deps.issuerUrl ? 'agent' : 'access';
    } catch {
      return undefined;
    }
  }

  /**
   * An agent-sts-jwt access token presented back: only as subject_token, verified as ours and still
   * active (not revoked, its task open, nobody in it blocked). Whether the caller may present it is
   * for blend() to decide: the actor must serve its audience.
   */
  async function verifyAccessToken(raw: string, tokenType: string, tokenRole: 'subject' | 'actor'): Promise<OwnToken['claims']> {
    if (tokenType !== TOKEN_TYPE.accessToken && tokenType !== TOKEN_TYPE.jwt) throw new SubjectTokenRejected('token type does not match the token');
    if (tokenRole !== 'subject' || !deps.ownTokens)
      throw new SubjectTokenRejected('an agent-sts access token is exchanged only as subject_token, by the workload that serves its audience');
    const r = await deps.ownTokens.inspect(raw, 0);
    if (!r.ok || r.token.kind !== 'access') throw new SubjectTokenRejected('subject_token is not a valid agent-sts access token', { detail: { reason: r.ok ? 'an agent token' : r.reason } });
    const inactive = deps.ownTokens.inactiveReason(r.token);
    if (inactive) throw new SubjectTokenRejected('subject_token is no longer valid', { detail: { reason: inactive } });
    return r.token.claims;
  }

  /**
   * The workload serving a target exchanges an access token issued for that target (RFC 8693
   * delegation, STANDARDS §10): it becomes the current actor, the token's agent (and the agents
   * before it) the prior actors, its person the human, and its task the task of what is issued.
   * Only a workload listed in the target's `servedBy`. The person is known by subject only (an
   * access token carries no groups or roles), so policies that need their groups do not match.
   */
  function chained(claims: OwnToken['claims'], server: WorkloadIdentity): Resolved {
    const target = typeof claims.aud === 'string' ? deps.targets.ofAudience(claims.aud) : undefined;
    if (!target?.servedBy?.some((w) => servesAs(w, server)))
      throw new PolicyDenied('the actor does not serve the audience of subject_token', {
        detail: { reasons: [`${server.provider} ${server.subject} is not in servedBy of target ${target?.name ?? `(none for aud ${String(claims.aud)})`}`] },
      });
    const agentSubject = claims.client_id ?? claims.sub;
    const personal = claims.sub !== agentSubject;
    const before = flattenAct(claims.act);
    // The token's own act: with a person, its outermost link is the agent itself.
    const priorActors: Actor[] = [{ sub: agentSubject }, ...(personal ? before.slice(1) : before)];
    const expiresAt = new Date(claims.exp * 1000);
    const human: HumanContext | undefined = personal
      ? { kind: 'human', provider: 'agent-sts', issuer: deps.issuerUrl, subject: claims.sub, groups: [], roles: [], expiresAt }
      : undefined;
    const identity: BlendedIdentity = { workload: server, ...(human ? { human } : {}), priorActors, taskId: claims.task_id };
    // What is issued stays within the presented token's task and lifetime.
    return { identity, agent: { ...identity, taskId: claims.task_id, tokenId: claims.jti, expiresAt } };
  }

  /** Blends subject and actor into one identity (RFC 8693 §1.1 delegation semantics). */
  function blend(subject: Presented, actor: Presented | undefined): Resolved {
    if (subject.kind === 'access') {
      if (actor?.kind !== 'workload')
        throw new MalformedRequest("an agent-sts access token is exchanged by the workload that serves its audience: send that workload's own attestation as actor_token");
      return chained(subject.token, actor.id);
    }
    if (!actor) {
      if (subject.kind === 'agent') return { identity: subject.id, agent: subject.id };
      if (subject.kind === 'workload') return { identity: { workload: subject.id, priorActors: [] } };
      throw new PolicyDenied('a human token alone does not yield credentials; present it with an agent (actor_token)');
    }
    if (subject.kind !== 'human')
      throw new MalformedRequest('with an actor_token, the subject_token must identify the person the agent acts for');
    if (actor.kind === 'human') throw new MalformedRequest('actor_token must identify a workload or agent, not a person');
    if (actor.kind === 'workload') return { identity: { workload: actor.id, human: subject.id, priorActors: [] } };
    if (actor.kind !== 'agent') throw new MalformedRequest('actor_token cannot be an agent-sts access token');
    const a = actor.id;
    if (a.human && (a.human.subject !== subject.id.subject || a.human.issuer !== subject.id.issuer))
      throw new PolicyDenied('the agent token was issued for a different person');
    return { identity: { workload: a.workload, human: subject.id, priorActors: a.priorActors, taskId: a.taskId }, agent: a };
  }

  function denialError(d: Decision, ctx: CallContext): StsError {
    const see = `(request ${ctx.requestId}; the reason is in the audit log)`;
    const detail = { reasons: d.reasons, policyId: d.policyId };
    if (d.denial === 'target') return new TargetNotAllowed(`target not permitted for this identity ${see}`, { detail });
    if (d.denial === 'scope') return new ScopeNotAllowed(`scope not permitted for this identity ${see}`, { detail });
    return new PolicyDenied(`not permitted by policy ${see}`, { detail });
  }

  /** One exchange, in span `agent_sts.exchange` and counted in `agent_sts.exchanges`. */
  function exchange(req: ExchangeRequest, ctx: CallContext, opts: { task?: TaskOptions } = {}): Promise<ExchangeResult> {
    const event: AuditEventInput = {
      requestId: ctx.requestId,
      action: 'token.exchange',
      outcome: 'error',
      clientAddress: ctx.clientAddress,
      requestedScope: req.scopes.join(' ') || undefined,
      target: req.resource ?? req.audience,
      policyVersion: deps.policy.version,
    };
    return tel.exchange(event, () => exchangeOnce(req, ctx, opts, event));
  }

  async function exchangeOnce(req: ExchangeRequest, ctx: CallContext, opts: { task?: TaskOptions }, event: AuditEventInput): Promise<ExchangeResult> {
    let committed = false;
    let verified: BlendedIdentity | undefined;
    try {
      const subject = await verifyPresented(req.subjectToken, req.subjectTokenType, ctx, 'subject');
      const actor = req.actorToken ? await verifyPresented(req.actorToken, req.actorTokenType!, ctx, 'actor') : undefined;
      const { identity, agent } = blend(subject, actor);
      verified = identity;
      Object.assign(event, {
        providerName: identity.workload.provider,
        workloadSubject: identity.workload.subject,
        humanSubject: identity.human?.subject,
        delegationChain: identity.priorActors.map((a) => a.sub),
        taskId: agent?.taskId,
      });
      if (identity.priorActors.length + 1 > deps.limits.maxDelegationDepth)
        throw new MalformedRequest('delegation chain is too deep');
      // Kill switch: refused like a policy denial; who blocked it and why goes to the audit record only.
      const block = deps.blocks && blockOn(deps.blocks, identity);
      if (block)
        throw new PolicyDenied(`not permitted by policy (request ${ctx.requestId}; the reason is in the audit log)`, { detail: { reasons: [`kill switch: ${block.kind} ${block.subject} blocked by ${block.blockedBy}: ${block.reason}`] } });

      if (req.requestedTokenType === TOKEN_TYPE.subAgentToken) {
        if (!agent || req.actorToken) throw new MalformedRequest('a sub-agent token is derived from an agent token: send the parent agent token as subject_token, without actor_token');
        return await subAgentExchange(identity, agent, req, ctx, event, () => (committed = true));
      }
      const requested = req.resource ?? req.audience;
      const wantsAgentToken = requested === undefined || requested === deps.issuerUrl;
      if (wantsAgentToken) {
        if (req.requestedTokenType && req.requestedTokenType !== TOKEN_TYPE.accessToken && req.requestedTokenType !== TOKEN_TYPE.jwt)
          throw new MalformedRequest('an agent token is an access_token; requested_token_type does not match');
        if (agent)
          throw new MalformedRequest(`an agent token cannot be exchanged for another agent token; name a target with resource or audience, or ask for a sub-agent token (requested_token_type ${TOKEN_TYPE.subAgentToken})`);
        return await startupExchange(identity, req, ctx, event, () => (committed = true), opts.task);
      }

      const target = deps.targets.resolve(req);
      if (!target) throw new TargetNotAllowed('unknown target');
      event.target = target.name;
      const issuer = deps.issuers.get(target.issuer);
      // A runtime issuer that is disabled, removed or not yet registered: out of service, not a bad request.
      if (!issuer) throw new UpstreamUnavailable('this target is out of service; try again later', { detail: { cause: 'issuer-unavailable', issuer: target.issuer } });
      tel.note(event, { issuer: issuer.name, issuerType: issuer.type });
      if (req.requestedTokenType && !issuer.issuedTokenTypes.includes(req.requestedTokenType))
        throw new MalformedRequest('requested_token_type cannot be issued for this target');
      if (target.scopes) {
        const unknown = req.scopes.filter((s) => !target.scopes!.includes(s));
        if (unknown.length) throw new ScopeNotAllowed('scope does not exist at this target');
      }
      checkTargetDpop(target, issuer, ctx);
      return await credentialExchange(identity, agent, target, issuer, requested!, req, ctx, event, () => (committed = true));
    } catch (e) {
      if (!committed) {
        const err = e instanceof StsError ? e : undefined;
        event.outcome = err && err.status < 500 ? 'deny' : 'error';
        event.reason = reasonFor(e);
        // Denials of a verified identity count for the inventory and its signals (denial_burst).
        if (verified) observe(verified, event, ctx);
        await tel.stage('audit.write', {}, () => deps.audit.append({ event })).catch((auditErr: unknown) => {
          deps.logger.error({ requestId: ctx.requestId, err: { message: (auditErr as Error).message } }, 'could not audit a refused exchange');
        });
      }
      throw e;
    }
  }

  /**
   * A target with `dpop: required` takes only requests with a proof; a target with `dpop` set whose
   * issuer (registered at runtime, so config check could not see it) cannot bind is out of service.
   */
  function checkTargetDpop(target: TargetConfig, issuer: CredentialIssuer, ctx: CallContext): void {
    if (target.dpop === 'off') return;
    if (!issuer.capabilities.ownJwts)
      throw new UpstreamUnavailable('this target is out of service; try again later', {
        detail: { reasons: [`target ${target.name} sets dpop: ${target.dpop}, which issuer ${issuer.name} (${issuer.type}) cannot honour; nothing was issued`] },
      });
    if (target.dpop === 'required' && !ctx.dpop)
      throw new InvalidDpopProof('this target takes only DPoP-bound tokens: send a DPoP proof (RFC 9449) with the request', { detail: { reason: `target ${target.name}: dpop required` } });
  }

  /** Stage `policy.decide`: the decision and, for grants that need one, the approval gate. */
  function decide(identity: BlendedIdentity, request: PolicyRequest, event: AuditEventInput, ctx: CallContext, target: string): Promise<Decision> {
    return tel.stage('policy.decide', {}, (s) =>
      decideOnce(identity, request, event, ctx, target).finally(() => s.set({ policyId: event.policyId, policyVersion: event.policyVersion })),
    );
  }

  async function decideOnce(identity: BlendedIdentity, request: PolicyRequest, event: AuditEventInput, ctx: CallContext, target: string): Promise<Decision> {
    const d = deps.policy.evaluate(identity, request, { now: ctx.now, clientAddress: ctx.clientAddress });
    Object.assign(event, { policyId: d.policyId, policyVersion: d.policyVersion });
    if (!d.allow) throw denialError(d, ctx);
    const approval = d.obligations?.approval;
    if (!approval) return d;
    // Never issue what policy says needs an approver without an approved, unexpired approval.
    if (!deps.approvals)
      throw new MalformedRequest('this grant requires approval, which this server is not set up for', { detail: { reasons: [...d.reasons, 'approval obligation: no approval service'], policyId: d.policyId } });
    const rules = d.decidingRules ? [d.decidingRules.agent, d.decidingRules.human].filter(Boolean).join('+') : (d.policyId ?? '');
    // Throws AuthorizationPending (pending/new) or PolicyDenied (denied); the refusal is audited by exchange().
    const approvalId = await deps.approvals.gate({ identity, target, grantedScopes: d.grantedScopes, policyId: rules, approval }, ctx);
    return { ...d, reasons: [...d.reasons, `approval ${approvalId} approved`] };
  }

  async function startupExchange(identity: BlendedIdentity, req: ExchangeRequest, ctx: CallContext, event: AuditEventInput, markCommitted: () => void, task?: TaskOptions): Promise<ExchangeResult> {
    event.target = deps.issuerUrl;
    const d = await decide(identity, { kind: 'agent-token', lifetime: req.requestedLifetime }, event, ctx, deps.issuerUrl);
    const ttl = Math.min(d.ttlCapSeconds, deps.limits.maxTaskTtl, deps.limits.agentTokenMaxTtl, req.requestedLifetime ?? Infinity, task?.ttlSeconds ?? Infinity);
    return openTask(identity, { ttl, task, reason: d.reasons.join('; '), scopes: [] }, req, ctx, event, markCommitted);
  }

  /** Mints an agent token for a new task (start-up, explicit task, or a sub-agent's child task). */
  async function openTask(
    identity: BlendedIdentity,
    o: { ttl: number; task?: TaskOptions; reason: string; scopes: string[]; parentTaskId?: string; rootTaskId?: string; limits?: AgentTokenLimits },
    req: ExchangeRequest,
    ctx: CallContext,
    event: AuditEventInput,
    markCommitted: () => void,
  ): Promise<ExchangeResult> {
    if (deps.requireDpop && !ctx.dpop)
      throw new InvalidDpopProof('this broker issues only DPoP-bound agent tokens: send a DPoP proof (RFC 9449) with the request', { detail: { reason: 'tokens.requireDpop' } });
    const taskId = newTaskId();
    const tokenId = uuidv7();
    const expiresAt = new Date(ctx.now.getTime() + o.ttl * 1000);
    // A request with a DPoP proof gets a token bound to the proof's key (RFC 9449 §5).
    const jkt = ctx.dpop?.jkt;
    const limits: AgentTokenLimits = { ...o.limits, ...(o.task?.idleTimeoutSeconds ? { idleTimeoutSeconds: o.task.idleTimeoutSeconds } : {}) };
    // iat and exp from the same instant: exp - iat is exactly the granted lifetime.
    const token = await tel.stage('issuer.issue', { issuer: 'agent-sts', issuerType: AGENT_TOKEN_ISSUER_TYPE }, () => deps.agentTokens.mint({ ...identity, taskId }, tokenId, expiresAt, limits, ctx.now, jkt));
    const fingerprint = ownJwtFingerprint(token, tokenId);
    Object.assign(event, { outcome: 'allow', reason: jkt ? `${o.reason}; bound to DPoP key ${jkt}` : o.reason, issuerName: 'agent-sts', taskId, credentialId: tokenId, credentialFingerprint: fingerprint, credentialExpiresAt: expiresAt, grantedScope: o.scopes.join(' ') || undefined });
    await commitOrFail(
      {
        event,
        tasks: [{
          id: taskId, state: 'open', providerName: identity.workload.provider, workloadSubject: identity.workload.subject, humanSubject: identity.human?.subject ?? null,
          parentTaskId: o.parentTaskId ?? null, rootTaskId: o.rootTaskId ?? taskId, deadline: expiresAt, purpose: o.task?.purpose ?? null,
          idleTimeoutSeconds: limits.idleTimeoutSeconds ?? null, lastActivityAt: limits.idleTimeoutSeconds ? ctx.now : null,
          instance: identity.workload.instance ?? null,
        }],
        credentials: [{ id: tokenId, taskId, issuerName: 'agent-sts', issuerType: AGENT_TOKEN_ISSUER_TYPE, tokenType: TOKEN_TYPE.accessToken, target: deps.issuerUrl, state: 'active', fingerprint, expiresAt }],
      },
      markCommitted,
      identity,
      ctx,
    );
    return {
      credential: { id: tokenId, issuedTokenType: TOKEN_TYPE.accessToken, tokenType: jkt ? 'DPoP' : 'Bearer', expiresAt, fingerprint, accessToken: new SecretValue(token), revocationHandle: null },
      taskId,
      grantedScopes: o.scopes,
      requestedScopes: req.scopes,
    };
  }

  /**
   * A sub-agent's agent token: a child task of the parent's task (ending the parent ends it),
   * strictly within the parent: scopes (required) and targets inside the parent's ceilings,
   * lifetime within what the parent has left — a request for more is refused, never trimmed.
   * The parent task joins the delegation chain (nested `act`).
   */
  async function subAgentExchange(identity: BlendedIdentity, agent: AgentTokenIdentity, req: ExchangeRequest, ctx: CallContext, event: AuditEventInput, markCommitted: () => void): Promise<ExchangeResult> {
    event.target = deps.issuerUrl;
    if (identity.priorActors.length + 2 > deps.limits.maxDelegationDepth) throw new MalformedRequest('delegation chain is too deep');
    if (!req.scopes.length) throw new ScopeNotAllowed("a sub-agent token needs scope: the scopes it may obtain, within the parent's");
    if (agent.scopeCeiling && req.scopes.some((sc) => !agent.scopeCeiling!.includes(sc))) throw new ScopeNotAllowed("scope is wider than the parent agent token's");
    const names: string[] = [];
    for (const t of req.subAgentTargets ?? []) {
      const target = deps.targets.resolve({ ...req, resource: t.resource, audience: t.audience });
      if (!target) throw new TargetNotAllowed('unknown target');
      if (!names.includes(target.name)) names.push(target.name);
    }
    if (agent.targetCeiling && names.some((n) => !agent.targetCeiling!.includes(n))) throw new TargetNotAllowed("audience is wider than the parent agent token's");
    const remaining = Math.floor((agent.expiresAt.getTime() - ctx.now.getTime()) / 1000);
    if (req.requestedLifetime !== undefined && req.requestedLifetime > remaining)
      throw new MalformedRequest('requested_lifetime is longer than the parent agent token has left');
    const d = await decide(identity, { kind: 'agent-token' }, event, ctx, deps.issuerUrl);
    const ttl = Math.min(remaining, d.ttlCapSeconds, req.requestedLifetime ?? Infinity);
    if (ttl < 1) throw new SubjectTokenRejected('the task of this agent token has no time left');
    // Agent tokens do not carry the instance: the child task inherits it from the parent's row, so it ends with the pod too.
    const parent = await deps.db.task.findUnique({ where: { id: agent.taskId }, select: { instance: true, rootTaskId: true } });
    const child: BlendedIdentity = {
      ...identity,
      workload: { ...identity.workload, instance: parent?.instance ?? undefined },
      priorActors: [{ sub: `agent-sts:task:${agent.taskId}`, iss: deps.issuerUrl }, ...identity.priorActors],
    };
    const targetCeiling = names.length ? names : agent.targetCeiling;
    return openTask(
      child,
      {
        ttl,
        reason: `sub-agent of task ${agent.taskId}; scopes ${req.scopes.join(' ')}${targetCeiling ? `; targets ${targetCeiling.join(' ')}` : ''}; ${d.reasons.join('; ')}`,
        scopes: req.scopes,
        parentTaskId: agent.taskId,
        // A parent from before roots were recorded is taken as the root.
        rootTaskId: parent?.rootTaskId ?? agent.taskId,
        limits: { scopeCeiling: req.scopes, ...(targetCeiling ? { targetCeiling } : {}) },
      },
      req,
      ctx,
      { ...event, delegationChain: child.priorActors.map((a) => a.sub) },
      markCommitted,
    );
  }

  async function credentialExchange(
    identity: BlendedIdentity,
    agent: AgentTokenIdentity | undefined,
    target: TargetConfig,
    issuer: CredentialIssuer,
    requested: string,
    req: ExchangeRequest,
    ctx: CallContext,
    event: AuditEventInput,
    markCommitted: () => void,
  ): Promise<ExchangeResult> {
    if (agent?.targetCeiling && !agent.targetCeiling.includes(target.name)) throw new TargetNotAllowed("target is outside this sub-agent token's audience");
    if (agent?.scopeCeiling && req.scopes.some((sc) => !agent.scopeCeiling!.includes(sc))) throw new ScopeNotAllowed("scope is wider than this sub-agent token's");
    let d = await decide(identity, { kind: 'credential', target: target.name, scopes: req.scopes, lifetime: req.requestedLifetime }, event, ctx, target.name);
    if (agent?.scopeCeiling) {
      // Without an explicit scope the grant's scopes apply: a sub-agent gets only those within its ceiling.
      const within = d.grantedScopes.filter((sc) => agent.scopeCeiling!.includes(sc));
      if (!within.length) throw new ScopeNotAllowed("no scope of this grant is within this sub-agent token's");
      d = { ...d, grantedScopes: within };
    }
    // A credential never outlives its task: with an agent token the task ends no later than the token.
    const taskLimit = agent ? (agent.expiresAt.getTime() - ctx.now.getTime()) / 1000 : deps.limits.maxTaskTtl;
    const ttl = Math.floor(Math.min(d.ttlCapSeconds, taskLimit, req.requestedLifetime ?? Infinity));
    if (ttl < 1) throw new SubjectTokenRejected('the task of this agent token has no time left');
    const taskId = agent?.taskId ?? newTaskId();
    const credentialId = uuidv7();
    const newTask = agent
      ? []
      : [{
          id: taskId, state: 'open', providerName: identity.workload.provider, workloadSubject: identity.workload.subject, humanSubject: identity.human?.subject ?? null,
          rootTaskId: taskId, deadline: new Date(ctx.now.getTime() + ttl * 1000), instance: identity.workload.instance ?? null,
        }];
    Object.assign(event, { taskId, credentialId, grantedScope: d.grantedScopes.join(' ') || undefined });

    // RFC 9449 §5: bound to the proof's key where the target takes DPoP-bound tokens.
    const dpopJkt = target.dpop !== 'off' ? ctx.dpop?.jkt : undefined;
    const plannedHandle = issuer.planHandle?.({ taskId, credentialId });
    // A live-credential limit is counted against stored rows: only an issuer that stores its row
    // first can be held to it. Config check refuses the others; one registered at runtime is out of service.
    const liveLimits = liveLimitsOf(target);
    if (liveLimits.length && !plannedHandle)
      throw new UpstreamUnavailable('this target is out of service; try again later', {
        detail: { reasons: [`target ${target.name} limits live credentials (${liveLimits.map((l) => l.key).join(', ')}), which issuer ${issuer.name} (${issuer.type}) cannot be held to; nothing was issued`] },
      });
    if (plannedHandle) {
      // Crash safety: the row (with its revocation handle) exists before anything exists upstream.
      if (newTask.length) await deps.db.task.create({ data: newTask[0]! });
      await deps.db.credential.create({
        data: {
          id: credentialId, taskId, issuerName: issuer.name, issuerType: issuer.type, tokenType: issuer.issuedTokenTypes[0]!, target: target.name,
          state: 'issuing', fingerprint: 'pending', expiresAt: new Date(ctx.now.getTime() + ttl * 1000), sealedRevocationHandle: sealHandle(deps.kek, credentialId, plannedHandle),
        },
      });
      for (const limit of liveLimits) await holdWithinLiveLimit(target.name, limit, taskId, agent ? undefined : taskId, credentialId, ctx);
    }
    if (plannedHandle) deps.chaos?.('before-upstream');
    let credential: IssuedCredential;
    try {
      credential = await tel.stage('issuer.issue', { issuer: issuer.name, issuerType: issuer.type }, () =>
        issuer.issue({ decision: d, identity: { ...identity, taskId }, taskId, credentialId, requestedTarget: requested, ttlSeconds: ttl, plannedHandle, ...(dpopJkt ? { dpopJkt } : {}) }, ctx),
      );
    } catch (e) {
      // Issuance is atomic upstream (or nothing was created); the planned row is closed as failed.
      if (plannedHandle) await closeFailed(credentialId, (e as Error).message);
      throw e;
    }
    if (plannedHandle) deps.chaos?.('after-upstream');
    if (credential.expiresAt.getTime() <= ctx.now.getTime() || credential.expiresAt.getTime() > ctx.now.getTime() + ttl * 1000 + 1000)
      throw new Error(`issuer ${issuer.name} returned a credential whose expiry is outside the granted lifetime`);
    Object.assign(event, { outcome: 'allow', reason: `${d.reasons.join('; ')}${dpopJkt ? `; bound to DPoP key ${dpopJkt}` : ''}`, issuerName: issuer.name, credentialFingerprint: credential.fingerprint, credentialExpiresAt: credential.expiresAt });
    // Something now exists upstream (a login, a token, a lease): it becomes a live credential only of
    // a task that is still open. A task ended meanwhile (DELETE, kill switch, deadline) has already
    // revoked what it knew of; this commit then fails whole (compare-and-set) and the credential is
    // revoked here. Own tokens (nothing upstream) skip the check and the write.
    const upstream = plannedHandle !== undefined || credential.revocationHandle != null;
    // The kill switch may have blocked this identity while the upstream call ran (a new task is not
    // in the store yet for its passes to find): looked up again, in memory, before anything is recorded.
    const blocked = upstream && deps.blocks ? blockOn(deps.blocks, identity) : undefined;
    if (blocked) {
      const revokeError = await undoUpstream(issuer, credential, credentialId, !!plannedHandle, ctx);
      if (plannedHandle) await settlePlanned(credentialId, 'kill switch during issuance', revokeError);
      throw new PolicyDenied(`not permitted by policy (request ${ctx.requestId}; the reason is in the audit log)`, {
        detail: { reasons: [`kill switch during issuance: ${blocked.kind} ${blocked.subject} blocked by ${blocked.blockedBy}: ${blocked.reason}; ${revokeError === undefined ? 'revoked at the target' : `revocation at the target failed: ${revokeError}`}`] },
      });
    }
    // An exchange is activity: a task with an idle timeout stays alive (same transaction, no extra write).
    const taskUpdates: TaskUpdate[] | undefined = agent?.idleTimeoutSeconds
      ? [{ id: taskId, ...(upstream ? { from: 'open' } : {}), data: { lastActivityAt: ctx.now } }]
      : upstream
        ? [{ id: taskId, from: 'open', data: { state: 'open' } }]
        : undefined;
    const write: AuditWrite = plannedHandle
      ? { event, taskUpdates, credentialUpdates: [{ id: credentialId, from: 'issuing', data: { state: 'active', fingerprint: credential.fingerprint, expiresAt: credential.expiresAt } }] }
      : {
          event,
          taskUpdates,
          tasks: newTask,
          credentials: [{
            id: credentialId, taskId, issuerName: issuer.name, issuerType: issuer.type, tokenType: credential.issuedTokenType, target: target.name,
            state: 'active', fingerprint: credential.fingerprint, expiresAt: credential.expiresAt, sealedRevocationHandle: sealHandle(deps.kek, credentialId, credential.revocationHandle),
          }],
        };
    // The record is written while a token still being signed (agent-sts-jwt) gets its signature:
    // its fingerprint covers the signed part only (lib/crypto.ts ownJwtFingerprint).
    const [committed, signed] = await Promise.allSettled([commitOrFail(write, markCommitted, identity, ctx), credential.accessToken]);
    if (committed.status === 'rejected') {
      // Fail closed: no audit record, no credential. Undo what exists upstream.
      const revokeError = await undoUpstream(issuer, credential, credentialId, !!plannedHandle, ctx);
      if (upstream) await taskEndedDuringIssuance(taskId, credentialId, !!plannedHandle, revokeError);
      throw committed.reason;
    }
    if (signed.status === 'rejected') {
      // Recorded as allowed, but no token exists: the log says so after the allow record (the same
      // request id), and the row is closed as failed in the same transaction. Nothing was handed
      // out, nothing to revoke.
      const why = `not signed: ${(signed.reason as Error).message}`;
      await deps.audit
        .append({
          event: {
            requestId: ctx.requestId, action: 'credential.fail', outcome: 'failure', reason: `${why}; nothing was handed out`,
            providerName: event.providerName, workloadSubject: event.workloadSubject, humanSubject: event.humanSubject, delegationChain: event.delegationChain,
            target: event.target, issuerName: issuer.name, taskId, credentialId, credentialFingerprint: credential.fingerprint, credentialExpiresAt: credential.expiresAt,
          },
          credentialUpdates: [{ id: credentialId, data: { state: 'failed', lastError: why.slice(0, 500) } }],
        })
        .catch((ae: unknown) => {
          deps.logger.error({ requestId: ctx.requestId, credentialId, err: { message: (ae as Error).message } }, 'could not audit a credential that was not signed');
          return closeFailed(credentialId, why);
        });
      throw signed.reason;
    }
    return { credential: { ...credential, accessToken: signed.value }, taskId, grantedScopes: d.grantedScopes, requestedScopes: req.scopes };
  }

  /** Revokes a credential that exists upstream but will not be handed out; the error message when that fails (logged). */
  async function undoUpstream(issuer: CredentialIssuer, credential: IssuedCredential, credentialId: string, planned: boolean, ctx: CallContext): Promise<string | undefined> {
    if (!credential.revocationHandle) return undefined;
    try {
      await issuer.revoke(credential.revocationHandle, ctx);
      return undefined;
    } catch (re) {
      const message = (re as Error).message;
      deps.logger.error(
        { requestId: ctx.requestId, credentialId, err: { message } },
        planned ? 'could not revoke an unaudited credential; the sweep retries' : 'could not revoke an unaudited credential; it lapses at its expiry',
      );
      return message;
    }
  }

  /**
   * The planned row of a credential that will not be handed out. Revoked at the target: `failed`,
   * unless the task's end already closed it. Not revoked: back to the revocation queue (`revoking`,
   * due now) whatever closed it meanwhile, since the account may have been created after the task's
   * end looked for it.
   */
  async function settlePlanned(credentialId: string, why: string, revokeError: string | undefined): Promise<void> {
    const where = revokeError === undefined ? { id: credentialId, state: 'issuing' } : { id: credentialId, state: { in: ['issuing', 'revoked', 'expired', 'failed'] } };
    const data = revokeError === undefined ? { state: 'failed', lastError: `${why}; revoked at the target` } : { state: 'revoking', nextRevokeAt: null, lastError: `${why}; revocation failed: ${revokeError}`.slice(0, 500) };
    await deps.db.credential.updateMany({ where, data }).catch(() => {});
  }

  /**
   * After a failed commit of a credential with upstream state: if its task is no longer open, the
   * task ended while the upstream call ran (the compare-and-set refused the commit). That is the
   * caller's answer, not a server error. A planned row the task's end already closed is handed back
   * to the revocation queue when this revocation failed (the target may have created the account
   * after the task's end looked for it).
   */
  async function taskEndedDuringIssuance(taskId: string, credentialId: string, planned: boolean, revokeError: string | undefined): Promise<void> {
    const task = await deps.db.task.findUnique({ where: { id: taskId }, select: { state: true } }).catch(() => null);
    if (!task || task.state === 'open') return;
    if (planned) await settlePlanned(credentialId, 'task ended during issuance', revokeError);
    throw new SubjectTokenRejected('the task ended while this credential was being issued; it was not handed out', {
      detail: { reasons: [`task ${taskId} was ${task.state} when the credential was to be recorded; ${revokeError === undefined ? 'revoked at the target' : `revocation at the target failed: ${revokeError}`}`] },
    });
  }

  /**
   * targets[].maxLivePerTask / maxLivePerTree, counted after this request's own `issuing` row is
   * stored: rows stored by requests racing this one are either counted here or count this one, so
   * the limit is never exceeded (two racing for the last place may both be refused; a retry gets
   * it). Expired rows the sweep has not closed yet do not count: their logins no longer work.
   * `knownRoot`: the task's root when the task is new (its own id); otherwise read from its row.
   */
  async function holdWithinLiveLimit(target: string, limit: LiveLimit, taskId: string, knownRoot: string | undefined, credentialId: string, ctx: CallContext): Promise<void> {
    const live = { target, state: { in: OWNING_STATES }, expiresAt: { gt: ctx.now } };
    const tree = limit.key === 'maxLivePerTree';
    // A task from before roots were recorded is the root of its own tree.
    const root = !tree ? taskId : (knownRoot ?? (await deps.db.task.findUnique({ where: { id: taskId }, select: { rootTaskId: true } }))?.rootTaskId ?? taskId);
    const count = await deps.db.credential.count({ where: tree ? { ...live, task: { OR: [{ id: root }, { rootTaskId: root }] } } : { ...live, taskId } });
    if (count <= limit.max) return;
    const n = `${limit.max} live credential${limit.max > 1 ? 's' : ''}`;
    await closeFailed(credentialId, `over ${limit.key} (${limit.max}) for target ${target}; nothing was issued`);
    throw new PolicyDenied(
      `${tree ? "this task's delegation tree (the agent that started it and its sub-agents) already holds" : 'this task already holds'} ${n} for this target, its limit; revoke one (POST /oauth2/revoke), end a task or wait for one to expire`,
      { detail: { reasons: [`${tree ? `the delegation tree of task ${root}` : `task ${taskId}`} holds ${count - 1} live credential(s) for target ${target}; ${limit.key} is ${limit.max}`] } },
    );
  }

  /** Closes a credential row that never became a usable credential (best effort: the sweep ends what is left). */
  async function closeFailed(credentialId: string, why: string): Promise<void> {
    await deps.db.credential.update({ where: { id: credentialId }, data: { state: 'failed', lastError: why.slice(0, 500) } }).catch(() => {});
  }

  /** Records the inventory has seen (a failed commit is audited again as an error: seen once). */
  const observed = new WeakSet<AuditEventInput>();

  /** The inventory sees the exchange; its signals become the record's flags (before the record is written). */
  function observe(identity: BlendedIdentity, event: AuditEventInput, ctx: CallContext) {
    if (!deps.monitor || observed.has(event)) return undefined;
    observed.add(event);
    const seen = deps.monitor.observe(identity, event, { now: ctx.now, targetCredential: event.target !== deps.issuerUrl });
    if (seen?.flags.length) event.flags = seen.flags;
    return seen;
  }

  async function commitOrFail(write: AuditWrite, markCommitted: () => void, identity: BlendedIdentity, ctx: CallContext): Promise<void> {
    const seen = observe(identity, write.event, ctx);
    await tel.stage('audit.write', {}, () => deps.audit.append(write));
    markCommitted();
    seen?.committed();
  }

  return { exchange };
}

function newTaskId(): string {
  return `t_${randomLowerId(20)}`;
}

/** Audit reason: the class and the detail's reason/code; never token content. */
function reasonFor(e: unknown): string {
  if (e instanceof StsError) {
    const d = e.detail ?? {};
    const extra = (d.reasons as string[] | undefined)?.join('; ') ?? [d.code, d.claim, d.reason, d.error].filter(Boolean).join(' ');
    return `${e.name}: ${e.publicMessage}${extra ? ` [${extra}]` : ''}`;
  }
  return `internal error: ${(e as Error)?.name ?? 'unknown'}`;
}
export type ExchangeService = ReturnType<typeof createExchangeService>;
