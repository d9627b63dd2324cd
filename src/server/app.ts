import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyRequest } from 'fastify';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../lib/clock.js';
import type { CallContext } from '../core/types.js';
import { MalformedRequest } from '../errors/sts-errors.js';
import { GRANT_TYPE_TOKEN_EXCHANGE } from '../lib/urns.js';
import { parseExchangeRequest, type FormFields } from '../exchange/parse-request.js';
import { exchangeResponse } from '../exchange/respond.js';
import type { ExchangeService } from '../exchange/exchange-service.js';
import type { AgentTokens } from '../exchange/agent-tokens.js';
import { DPOP_ALGS, type DpopVerifier } from '../exchange/dpop.js';
import type { KeyStore, TokenSigner } from '../keys/key-store.js';
import { registerTaskRoutes } from './task-routes.js';
import { registerTaskAdmin } from './admin-tasks.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ProviderSet } from '../trust-providers/provider-set.js';
import { registerProviderAdmin } from './admin-providers.js';
import { registerIssuerAdmin } from './admin-issuers.js';
import { createIssuerAdmin, type IssuerSet } from '../credential-issuers/issuer-set.js';
import { createProviderAdmin } from '../trust-providers/provider-admin.js';
import type { RoleAuth } from './role-auth.js';
import type { Db } from '../storage/prisma-client.js';
import { registerAuditRoutes } from './audit-routes.js';
import type { AuditLog } from '../audit/audit-log.js';
import { oauthError, problem, problemFor } from './http-errors.js';
import { INTROSPECTION_PATH, REVOCATION_PATH, type OAuthTokenEndpoints } from './oauth-revocation.js';
import { registerIdentityAdmin } from './admin-identities.js';
import type { KillSwitch } from '../tasks/kill-switch.js';
import type { ApprovalService } from '../approvals/approval-service.js';
import { registerApprovalAdmin } from './admin-approvals.js';
import type { PolicySet } from '../policy/policy-set.js';
import type { PolicyAdmin } from '../policy/policy-admin.js';
import { registerPolicyAdmin } from './admin-policies.js';
import { registerInventoryRoutes } from './inventory-routes.js';
import type { InventoryService } from '../inventory/inventory-service.js';
import type { AccessReviewer } from '../inventory/access-review.js';
import type { Telemetry } from '../telemetry/otel.js';
import { registerHttpTracing } from '../telemetry/http-tracing.js';

export interface AppDeps {
  issuerUrl: () => string;
  bodyLimitBytes: number;
  trustProxy: boolean;
  maxTokenBytes: number;
  logger: Logger;
  clock: Clock;
  db: Db;
  exchange: ExchangeService;
  agentTokens: AgentTokens;
  /** DPoP proofs (RFC 9449) on the token endpoint and the task routes. */
  dpop: DpopVerifier;
  keys: Pick<KeyStore, 'jwks' | 'isReady'>;
  /** Signs task-end receipts. */
  signer: TokenSigner;
  tasks: Pick<TaskService, 'endTask' | 'revokeOne'>;
  providers: ProviderSet;
  issuers: IssuerSet;
  /** What the policy in force asks of a runtime-registered issuer that it cannot give (admin answers' `policy_problems`). */
  issuerPolicyProblems?: (issuer: { name: string; type: string; config: unknown }) => string[];
  /** Per-issuer health for /readyz: name → 'ok' or what failed (bounded and cached by the caller). */
  issuerHealth: () => Promise<Record<string, string>>;
  /** The revocation queue for /readyz (never affects readiness: a stuck upstream is not this replica's fault). */
  revocationQueue?: () => Promise<{ pending: number; oldestPendingSince: Date | null }>;
  /** Key-encryption key: seals issuer secrets given through the admin API. */
  kek: () => Buffer;
  audit: Pick<AuditLog, 'append'>;
  roles: RoleAuth;
  /** RFC 7009 revocation and RFC 7662 introspection (`/oauth2/revoke`, `/oauth2/introspect`). */
  oauthTokens?: OAuthTokenEndpoints;
  /** The kill switch (`/v1/admin/identities`). */
  killSwitch?: KillSwitch;
  /** Just-in-time approvals (`/v1/admin/approvals`). */
  approvals?: ApprovalService;
  /** The live policy set and its admin (`/v1/admin/policies`). */
  policies?: { set: PolicySet; admin: PolicyAdmin };
  /** The identity inventory and access reviews (`/v1/inventory`). */
  inventory?: { service: InventoryService; review: AccessReviewer };
  /** W3C trace context and HTTP server spans (telemetry/http-tracing.ts); absent or off: none. */
  telemetry?: Telemetry;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function parseForm(body: string): FormFields {
  const out: FormFields = {};
  for (const [k, v] of new URLSearchParams(body)) (out[k] ??= []).push(v);
  return out;
}

const TOKEN_PATH = '/oauth2/token';
/** Routes that check DPoP proofs: the token endpoint and the task routes. */
const DPOP_ROUTE = /^\/(?:oauth2\/token$|v1\/tasks(?:\/|$))/;
const FORM = 'application/x-www-form-urlencoded';
const mediaType = (header: string | undefined) => (header ?? '').split(';')[0]!.trim().toLowerCase();

export function createApp(deps: AppDeps) {
  /** What the token endpoint does with a form body: shared by the Fastify route and the fast path. */
  async function tokenEndpoint(body: string, ctx: CallContext) {
    const parsed = parseExchangeRequest(parseForm(body), { maxTokenBytes: deps.maxTokenBytes });
    const result = await deps.exchange.exchange(parsed, ctx);
    return exchangeResponse(result, deps.clock.now());
  }

  /** Logs a refused or failed request: a 5xx with its stack (never a secret: errors carry none), the rest at debug. */
  function logFailure(err: unknown, requestId: string, status: number, body: unknown): void {
    if (status >= 500) deps.logger.error({ requestId, err: { name: (err as Error).name, message: (err as Error).message, stack: (err as Error).stack } }, 'request failed');
    else deps.logger.debug({ requestId, error: (body as { error?: string }).error, reason: (err as { detail?: unknown }).detail }, 'request refused');
  }

  function logRequest(requestId: string, method: string, path: string, status: number, ms: number): void {
    if (deps.logger.isLevelEnabled('info')) deps.logger.info({ requestId, method, path, status, ms: Math.round(ms) }, 'request');
  }

  const requestIdOf = (req: IncomingMessage) => {
    const given = req.headers['x-request-id'];
    return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
  };

  /**
   * The per-tool-call hot path without Fastify's routing, hooks and reply machinery (about 6 µs
   * of event-loop time per request, ~5 % of an exchange: bench/README.md). Only a plain request
   * takes it — POST /oauth2/token, no query string, a form body with a Content-Length within the
   * body limit — and only while no proxy is trusted and tracing is off. Everything else goes to
   * Fastify, whose token route answers exactly as this does (same code, same headers, same errors).
   */
  const fastPath = !deps.trustProxy && !deps.telemetry?.enabled;
  /** Set when the app starts closing: from then on Fastify answers (503 with `Connection: close`, so keep-alive clients let go). */
  let closing = false;
  function tokenFastPath(req: IncomingMessage, res: ServerResponse): boolean {
    if (!fastPath || closing || req.method !== 'POST' || req.url !== TOKEN_PATH || mediaType(req.headers['content-type']) !== FORM || req.headers.dpop !== undefined) return false;
    const length = Number(req.headers['content-length']);
    if (!Number.isInteger(length) || length > deps.bodyLimitBytes || req.headers['transfer-encoding'] !== undefined) return false;
    const started = performance.now();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {}); // the client went away: nothing to answer
    req.on('end', () => {
      const requestId = requestIdOf(req);
      const ctx: CallContext = { requestId, clientAddress: req.socket.remoteAddress ?? '', now: deps.clock.now() };
      const body = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      tokenEndpoint(body, ctx).then(
        (answer) => send(200, answer),
        (err: unknown) => {
          const { status, body: refusal } = oauthError(err);
          logFailure(err, requestId, status, refusal);
          send(status, refusal);
        },
      );
      function send(status: number, payload: unknown): void {
        const json = JSON.stringify(payload);
        res.writeHead(status, {
          'cache-control': 'no-store',
          pragma: 'no-cache',
          'content-type': 'application/json; charset=utf-8',
          'x-request-id': requestId,
          'content-length': Buffer.byteLength(json),
        });
        res.end(json);
        logRequest(requestId, 'POST', TOKEN_PATH, status, performance.now() - started);
      }
    });
    return true;
  }

  const app = Fastify({
    loggerInstance: deps.logger,
    // Fastify's own per-request lines are off: one line per request is written in onResponse.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimitBytes,
    // Subjects appear in paths (`/v1/admin/identities/{subject}/kill`) and can be long (a GitHub
    // Actions subject with its ref, a SPIFFE id): Fastify's default of 100 characters answered 414.
    routerOptions: { maxParamLength: 2048 },
    trustProxy: deps.trustProxy,
    genReqId: requestIdOf,
    // Node's HTTP server with the token fast path in front of Fastify's handler; the timeouts
    // Fastify would set on a server of its own are set here (its defaults).
    serverFactory: (handler, opts) => {
      const server = createServer((req, res) => {
        if (!tokenFastPath(req, res)) handler(req, res);
      });
      server.keepAliveTimeout = opts.keepAliveTimeout as number;
      server.requestTimeout = opts.requestTimeout as number;
      server.setTimeout(opts.connectionTimeout as number);
      return server;
    },
  });

  // Bodies of any type are read as text (bounded by bodyLimit); handlers decide what they accept.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  // Before the hooks below: the `request` log line is written inside the request's span.
  if (deps.telemetry?.enabled) registerHttpTracing(app, deps.telemetry);

  const ctxOf = (req: FastifyRequest): CallContext => ({ requestId: req.id, clientAddress: req.ip, now: deps.clock.now() });

  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  // Callback-style hooks: no promise per request on the hot path.
  app.addHook('onSend', (req, reply, payload, done) => {
    reply.header('x-request-id', req.id);
    // RFC 9449 §8, §9: with tokens.dpopNonce, where proofs are checked, every answer gives the nonce to use next.
    const nonce = deps.dpop.nonce();
    if (nonce !== undefined && DPOP_ROUTE.test(req.routeOptions.url ?? '')) reply.header('dpop-nonce', nonce);
    done(null, payload);
  });
  app.addHook('onResponse', (req, reply, done) => {
    logRequest(req.id, req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime);
    done();
  });

  app.setErrorHandler((err, req, reply) => {
    const isToken = req.routeOptions.url?.startsWith('/oauth2/') ?? false;
    const { status, body } = isToken ? oauthError(err) : problemFor(err);
    logFailure(err, req.id, status, body);
    reply.code(status).header('cache-control', 'no-store').header('pragma', 'no-cache');
    if (isToken) reply.type('application/json');
    else reply.type('application/problem+json');
    return reply.send(body);
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).type('application/problem+json').send(problem(404, 'not found')));

  // RFC 8414: only what is really supported.
  app.get('/.well-known/oauth-authorization-server', async () => {
    const iss = deps.issuerUrl();
    return {
      issuer: iss,
      token_endpoint: `${iss}/oauth2/token`,
      jwks_uri: `${iss}/.well-known/jwks.json`,
      grant_types_supported: [GRANT_TYPE_TOKEN_EXCHANGE],
      token_endpoint_auth_methods_supported: ['none'],
      dpop_signing_alg_values_supported: DPOP_ALGS,
      ...(deps.oauthTokens
        ? {
            revocation_endpoint: `${iss}${REVOCATION_PATH}`,
            revocation_endpoint_auth_methods_supported: ['none'],
            introspection_endpoint: `${iss}${INTROSPECTION_PATH}`,
            introspection_endpoint_auth_methods_supported: ['client_secret_basic'],
          }
        : {}),
      response_types_supported: [],
    };
  });

  app.get('/.well-known/jwks.json', async (_req, reply) => {
    reply.header('cache-control', 'public, max-age=300').type('application/jwk-set+json');
    return deps.keys.jwks();
  });

  // The same endpoint for every request the fast path above leaves to Fastify.
  app.post(TOKEN_PATH, async (req, reply) => {
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
    if (mediaType(req.headers['content-type']) !== FORM) throw new MalformedRequest(`content type must be ${FORM}`);
    if (Object.keys(req.query as object).length) throw new MalformedRequest('parameters must be sent in the request body, not the URL');
    const ctx = ctxOf(req);
    // A DPoP proof (RFC 9449) for this endpoint: binds a new agent token, or proves a bound one.
    const proof = await deps.dpop.verify(req.headers.dpop, 'POST', `${deps.issuerUrl()}${TOKEN_PATH}`);
    const answer = await tokenEndpoint(typeof req.body === 'string' ? req.body : '', proof ? { ...ctx, dpop: proof } : ctx);
    return reply.type('application/json').send(answer);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  /**
   * Ready = the database answers and a signing key is loaded (503 otherwise: take this replica out
   * of the load balancer). Issuers are checked too (bounded, cached), but one failing upstream does
   * not make the broker unready — the other targets still work — so it answers 200 "degraded" and
   * names the issuer and what failed.
   */
  app.get('/readyz', async (_req, reply) => {
    const checks: Record<string, string> = {};
    try {
      await deps.db.$queryRawUnsafe('SELECT 1');
      checks.database = 'ok';
    } catch {
      checks.database = 'unreachable';
    }
    checks.signingKeys = deps.keys.isReady() ? 'ok' : 'not loaded';
    const ready = Object.values(checks).every((v) => v === 'ok');
    const issuers = await deps.issuerHealth();
    const degraded = Object.values(issuers).some((v) => v !== 'ok');
    const queue = checks.database === 'ok' ? await deps.revocationQueue?.().catch(() => undefined) : undefined;
    const revocations = queue ? { pending: queue.pending, oldestPendingSince: queue.oldestPendingSince?.toISOString() ?? null } : undefined;
    return reply.code(ready ? 200 : 503).send({ status: !ready ? 'not ready' : degraded ? 'degraded' : 'ready', checks, issuers, ...(revocations ? { revocations } : {}) });
  });

  registerTaskRoutes(app, {
    db: deps.db, clock: deps.clock, issuerUrl: deps.issuerUrl, maxTokenBytes: deps.maxTokenBytes, agentTokens: deps.agentTokens,
    exchange: deps.exchange, tasks: deps.tasks, signer: deps.signer, roles: deps.roles, ctxOf, dpop: deps.dpop,
  });

  registerTaskAdmin(app, { roles: deps.roles, ctxOf, signer: deps.signer, issuerUrl: deps.issuerUrl, clock: deps.clock, db: deps.db, tasks: deps.tasks });

  registerAuditRoutes(app, { db: deps.db, roles: deps.roles, audit: deps.audit, clock: deps.clock, logger: deps.logger, ctxOf });

  registerProviderAdmin(app, { roles: deps.roles, providers: deps.providers, admin: createProviderAdmin({ providers: deps.providers, db: deps.db, audit: deps.audit }), audit: deps.audit, ctxOf });
  registerIssuerAdmin(app, { roles: deps.roles, issuers: deps.issuers, admin: createIssuerAdmin({ issuers: deps.issuers, db: deps.db, audit: deps.audit, kek: deps.kek }), ctxOf, policyProblems: deps.issuerPolicyProblems });
  deps.oauthTokens?.register(app, ctxOf);
  if (deps.killSwitch) registerIdentityAdmin(app, { roles: deps.roles, killSwitch: deps.killSwitch, ctxOf });
  if (deps.approvals) registerApprovalAdmin(app, { roles: deps.roles, approvals: deps.approvals, ctxOf });
  if (deps.policies) registerPolicyAdmin(app, { roles: deps.roles, ctxOf, ...deps.policies });
  if (deps.inventory) registerInventoryRoutes(app, { roles: deps.roles, ctxOf, audit: deps.audit, ...deps.inventory });

  return app;
}
export type App = ReturnType<typeof createApp>;
