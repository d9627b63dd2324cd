import { resolveSecretRef, secretResolverFor } from './config/secret-ref.js';
import { runtimeIssuerGrantProblems, type AppConfig } from './config/load-config.js';
import { createLogger, type Logger } from './log/logger.js';
import { parseDuration, systemClock, type Clock } from './lib/clock.js';
import { sha256Hex } from './lib/crypto.js';
import { openDatabase, type Database } from './storage/prisma-client.js';
import { applyMigrations } from './storage/migrate.js';
import { loadKek } from './keys/kek.js';
import { createKeyStore } from './keys/key-store.js';
import { es256Signature } from './keys/es256.js';
import { createSigningThread } from './keys/signing-thread.js';
import { createReplayGuard } from './trust-providers/replay-guard.js';
import { createDpopNonces, createDpopVerifier } from './exchange/dpop.js';
import { createRoleAuth } from './server/role-auth.js';
import { createProviderSet } from './trust-providers/provider-set.js';
import { createIssuerSet } from './credential-issuers/issuer-set.js';
import { checkIssuers } from './credential-issuers/health.js';
import { createPolicySet } from './policy/policy-set.js';
import { createPolicyAdmin } from './policy/policy-admin.js';
import { createAuditLog } from './audit/audit-log.js';
import { checkpointPolicy } from './audit/audit-checkpoint.js';
import { createRevocationList } from './tasks/revocation-list.js';
import { createTaskService, ISSUING_GRACE_MS } from './tasks/task-service.js';
import { createLeadership, newHolderId } from './tasks/lease.js';
import { createInstanceReaper, type InstanceReaper } from './tasks/instance-reaper.js';
import { chaosHookFrom } from './lib/chaos-hook.js';
import { createAgentTokens } from './exchange/agent-tokens.js';
import { createExchangeService } from './exchange/exchange-service.js';
import { createTargetResolver } from './exchange/targets.js';
import { createApp } from './server/app.js';
import { createBearerAuth } from './server/bearer-auth.js';
import { createOAuthTokenEndpoints } from './server/oauth-revocation.js';
import { createOwnTokenInspector } from './exchange/own-tokens.js';
import { createKillSwitch } from './tasks/kill-switch.js';
import { openApprovals } from './approvals/open-approvals.js';
import { openInventory } from './inventory/open-inventory.js';
import { ensureDevIssuerKey } from './dev/dev-issuer.js';
import type { DestinationStream } from 'pino';
import type { BearerClientConfig } from './config/config-schema.js';
import { logTelemetryDiagnostics, telemetryFromEnv, type Telemetry } from './telemetry/otel.js';
import { observeStore } from './telemetry/metrics.js';

export interface ComposeOptions {
  env: NodeJS.ProcessEnv;
  clock?: Clock;
  logger?: Logger;
  logDestination?: DestinationStream;
  /** Progress lines for a person at a terminal (migrations, key creation). */
  onProgress?: (line: string) => void;
  fetch?: typeof fetch;
  /** Apply pending migrations first (serve, migrate). Other CLI commands run beside a live server and only read the schema. */
  migrate?: boolean;
  /** Traces and metrics; default: from the OTEL_* variables of `env` (off when none is set). The caller owns a given one (close() does not shut it down). */
  telemetry?: Telemetry;
}

/** Opens storage, applies migrations and loads keys: what every command that touches data needs. */
export async function openCore(config: AppConfig, opts: ComposeOptions) {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? createLogger({ level: config.logging.level, destination: opts.logDestination });
  if (opts.migrate !== false) {
    await applyMigrations(config.storage.url, { onProgress: opts.onProgress });
  }
  const database: Database = await openDatabase(config.storage.url);
  const kekInfo = loadKek(config.keys.kek, opts.env);
  if (kekInfo.devFile)
    logger.warn({ file: kekInfo.devFile, generated: kekInfo.generated }, 'DEVELOPMENT key-encryption key in the data directory: never use this in production (set AGENT_STS_KEK)');
  const tokens = config.tokens;
  const keyStore = createKeyStore({
    db: database.db,
    kek: kekInfo.kek,
    clock,
    logger,
    publishAheadSeconds: parseDuration(config.keys.publishAhead),
    maxTokenLifetimeSeconds: Math.max(parseDuration(tokens.agentTokenMaxTtl), parseDuration(tokens.accessTokenMaxTtl)) + parseDuration(tokens.clockTolerance),
  });
  return { clock, logger, database, kek: kekInfo.kek, keyStore };
}

function hashedClients(clients: BearerClientConfig[], env: NodeJS.ProcessEnv, kind: string) {
  return clients.filter((c) => !c.disabled).map((c) => ({
    name: c.name,
    tokenSha256: c.tokenSha256 ?? sha256Hex(resolveSecretRef(c.token!, env, `auth.${kind}.${c.name}`).reveal()),
  }));
}

/**
 * The live set of trust providers (config file + registered at runtime) with its single-use guard;
 * used by the server and by CLI commands that verify or change providers.
 */
export function openTrust(
  core: Awaited<ReturnType<typeof openCore>>,
  config: AppConfig,
  opts: Pick<ComposeOptions, 'env' | 'fetch'>,
  serverId: () => string,
  reaper?: Pick<InstanceReaper, 'onInstanceGone' | 'onInstancesListed'>,
) {
  const { clock, logger } = core;
  const replay = createReplayGuard(core.database.db, clock, core.database.batch);
  const clockTolerance = parseDuration(config.tokens.clockTolerance);
  const trust = createProviderSet({
    configured: config.trustProviders,
    db: core.database.db,
    logger,
    depsFor: (name) => ({ logger: logger.child({ provider: name }), clock, clockTolerance, fetch: opts.fetch, serverId, replay, env: opts.env, ...(reaper ? { onInstanceGone: reaper.onInstanceGone, onInstancesListed: reaper.onInstancesListed } : {}) }),
  });
  return { trust, replay };
}

/**
 * The live set of credential issuers (config file + registered at runtime); used by the server and
 * by CLI commands that change issuers.
 */
export function openIssuers(core: Awaited<ReturnType<typeof openCore>>, config: AppConfig, opts: Pick<ComposeOptions, 'env'>, issuerUrl: () => string) {
  const { clock, logger, keyStore, kek } = core;
  return createIssuerSet({
    configured: config.credentialIssuers,
    db: core.database.db,
    logger,
    depsFor: (name) => ({
      logger: logger.child({ issuer: name }),
      clock,
      signer: keyStore.signer,
      get issuerUrl() {
        return issuerUrl();
      },
      env: opts.env,
      secret: secretResolverFor(name, opts.env, () => kek.reveal()),
    }),
  });
}

/** How often each replica reads revocations, ended tasks and identity blocks from the store. */
export const REVOCATION_POLL_MS = 500;

/** Composition root: builds every module from config with plain calls. */
export async function compose(config: AppConfig, opts: ComposeOptions) {
  // A mistake in the OTEL_* variables is a configuration error: it stops start-up before anything is opened.
  const telemetry = opts.telemetry ?? telemetryFromEnv(opts.env);
  const core = await openCore(config, opts);
  const { clock, logger, database, kek, keyStore } = core;
  const db = database.db;
  if (!opts.telemetry && telemetry.enabled) logTelemetryDiagnostics(logger);
  if (telemetry.enabled) observeStore(telemetry.meter, { db, clock, logger });
  await keyStore.init();
  const signingThread = createSigningThread({ mode: config.keys.signingThread, logger, signInPlace: es256Signature });
  keyStore.useSigningThread(signingThread);

  const issuerUrl = { value: config.server.issuer?.replace(/\/$/, '') ?? '' };
  const tokens = config.tokens;
  const clockTolerance = parseDuration(tokens.clockTolerance);

  if (config.devIssuer.enabled) {
    const { created } = await ensureDevIssuerKey(config.devIssuer.dir);
    if (created) opts.onProgress?.(`dev issuer: created a signing key in ${config.devIssuer.dir}`);
  }

  // Providers report gone instances (deleted pods) only from listen() on (trust.start()), when the reaper below exists.
  const { trust, replay } = openTrust(core, config, opts, () => issuerUrl.value, {
    onInstanceGone: (instance, reason) => reaper.onInstanceGone(instance, reason),
    onInstancesListed: (prefix, present, asOf, reason, scope) => reaper.onInstancesListed(prefix, present, asOf, reason, scope),
  });
  await trust.reload(true);
  const issuers = openIssuers(core, config, opts, () => issuerUrl.value);
  await issuers.reload(true);
  // Config file + policy.dir + uploaded documents; every replica polls dir and table (policy-set.ts).
  const policy = createPolicySet({ config, table: db.policyDocument, logger, clock });
  await policy.reload(true);
  const audit = createAuditLog({
    batch: database.batch,
    clock,
    logger,
    checkpoints: checkpointPolicy({ db, signer: keyStore.signer, everyRecords: config.audit.checkpointEvery.records, everyMs: parseDuration(config.audit.checkpointEvery.interval) * 1000 }),
  });
  const approvals = openApprovals({ db, audit, clock, logger, env: opts.env, fetch: opts.fetch, issuerUrl: () => issuerUrl.value }, config);
  const revocations = createRevocationList({ db, clock });
  await revocations.refresh();
  // Test hook only: set from the environment, never from the configuration (lib/chaos-hook.ts).
  const chaos = chaosHookFrom(opts.env.AGENT_STS_CHAOS);
  if (chaos) logger.warn({ chaos: opts.env.AGENT_STS_CHAOS }, 'AGENT_STS_CHAOS is set: this process kills itself at that point (crash test hook)');
  const taskService = createTaskService({ db, clock, logger, kek, audit, issuers, revocations, chaos, telemetry });
  const sweepEveryMs = parseDuration(config.sweep.interval) * 1000;
  const leaseTtlMs = Math.max(3 * sweepEveryMs, 3000);
  const leadership = createLeadership({
    db, clock, logger, holder: newHolderId(clock), ttlMs: leaseTtlMs,
    onLeadershipChange: ({ leader, holder, why }) =>
      audit.append({ event: { requestId: `sweep-lease-${Date.now()}`, action: leader ? 'sweep.leader.start' : 'sweep.leader.stop', outcome: 'success', reason: `replica ${holder} ${leader ? 'runs' : 'no longer runs'} the sweep and start-up recovery: ${why}` } }),
  });
  const reaper = createInstanceReaper({ db, tasks: taskService, clock, logger, isLeader: leadership.isLeader, fallbackDelayMs: leaseTtlMs + sweepEveryMs });
  const killSwitch = createKillSwitch({ db, clock, logger, audit, tasks: taskService, revocations });
  const inventory = openInventory({ db, clock, logger, env: opts.env, fetch: opts.fetch, engine: () => policy.engine(), audit, killSwitch, meter: telemetry.meter }, config);

  let agentTokens: ReturnType<typeof createAgentTokens> | undefined;
  const getAgentTokens = () =>
    (agentTokens ??= createAgentTokens({ signer: keyStore.signer, issuer: issuerUrl.value, clock, clockTolerance, isRevoked: revocations.isRevoked }));

  let exchange: ReturnType<typeof createExchangeService> | undefined;
  const getExchange = () =>
    (exchange ??= createExchangeService({
      issuerUrl: issuerUrl.value,
      requireDpop: tokens.requireDpop,
      trust,
      agentTokens: getAgentTokens(),
      policy,
      targets: createTargetResolver(config.targets),
      issuers: issuers.forIssuance,
      audit,
      db,
      kek,
      clock,
      logger,
      limits: { agentTokenMaxTtl: parseDuration(tokens.agentTokenMaxTtl), maxTaskTtl: parseDuration(tokens.maxTaskTtl), maxDelegationDepth: tokens.maxDelegationDepth },
      blocks: revocations,
      ownTokens: createOwnTokenInspector({ issuerUrl: () => issuerUrl.value, signer: keyStore.signer, clock, maxTokenBytes: tokens.maxTokenBytes, revocations }),
      approvals,
      chaos,
      monitor: inventory.monitor,
      telemetry,
    }));

  const app = createApp({
    issuerUrl: () => issuerUrl.value,
    bodyLimitBytes: config.server.bodyLimitBytes,
    trustProxy: config.server.trustProxy,
    maxTokenBytes: tokens.maxTokenBytes,
    logger,
    clock,
    db,
    exchange: { exchange: (req, ctx, opts) => getExchange().exchange(req, ctx, opts) },
    dpop: createDpopVerifier({ clock, clockTolerance, replay, ...(tokens.dpopNonce ? { nonces: createDpopNonces(kek.reveal(), clock) } : {}) }),
    agentTokens: { mint: (...a) => getAgentTokens().mint(...a), verify: (...a) => getAgentTokens().verify(...a), isCached: (t) => getAgentTokens().isCached(t) },
    keys: keyStore,
    tasks: taskService,
    providers: trust,
    signer: keyStore.signer,
    issuers,
    issuerPolicyProblems: (issuer) => runtimeIssuerGrantProblems(config, policy.engine().model.rules, issuer),
    issuerHealth: checkIssuers({ [Symbol.iterator]: () => issuers.all()[Symbol.iterator]() }),
    revocationQueue: () => taskService.revocationSummary(),
    kek: () => kek.reveal(),
    audit,
    oauthTokens: createOAuthTokenEndpoints({
      issuerUrl: () => issuerUrl.value,
      signer: keyStore.signer,
      clock,
      clockTolerance,
      maxTokenBytes: tokens.maxTokenBytes,
      revocations,
      tasks: taskService,
      db,
      audit,
      logger,
      revokeEndsTask: tokens.revokeEndsTask,
      introspectionClients: createBearerAuth(hashedClients(config.auth.introspectionClients, opts.env, 'introspectionClients')),
    }),
    killSwitch,
    approvals,
    inventory: { service: inventory.service, review: inventory.review },
    policies: { set: policy, admin: createPolicyAdmin({ set: policy, table: db.policyDocument, audit }) },
    telemetry,
    roles: createRoleAuth({
      bootstrap: {
        auditor: createBearerAuth(hashedClients(config.auth.auditors, opts.env, 'auditors')),
        admin: createBearerAuth(hashedClients(config.auth.admins, opts.env, 'admins')),
      },
      mappings: config.auth.roles,
      trust,
      logger,
    }),
  });

  const timers: NodeJS.Timeout[] = [];
  const onClose: (() => void)[] = [];
  const background = (name: string, everyMs: number, fn: () => Promise<unknown>) => {
    let running = false;
    const run = () => {
      if (running) return;
      running = true;
      fn()
        .catch((e: unknown) => logger.error({ job: name, err: { message: (e as Error).message } }, 'background job failed'))
        .finally(() => (running = false));
    };
    const t = setInterval(run, everyMs);
    t.unref();
    timers.push(t);
    return run;
  };

  /** Listens, fixes the issuer URL (default: the address served) and starts background jobs. */
  async function listen(): Promise<string> {
    const address = await app.listen({ host: config.server.host, port: config.server.port });
    if (!issuerUrl.value) {
      const a = app.server.address();
      const port = typeof a === 'object' && a ? a.port : config.server.port;
      const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host;
      issuerUrl.value = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    }
    background('key-reload', parseDuration(config.keys.reloadInterval) * 1000, () => keyStore.reload());
    // Twice a second: a revocation on any replica is in force on every other within 1 s (poll + query).
    background('revocation-refresh', REVOCATION_POLL_MS, () => revocations.refresh());
    background('trust-provider-reload', parseDuration(config.server.providerReloadInterval) * 1000, () => trust.reload());
    background('credential-issuer-reload', parseDuration(config.server.providerReloadInterval) * 1000, () => issuers.reload());
    const reloadPolicy = background('policy-reload', parseDuration(config.server.providerReloadInterval) * 1000, () => policy.reload());
    process.on('SIGHUP', reloadPolicy);
    onClose.push(() => process.off('SIGHUP', reloadPolicy));
    background('replay-purge', 60_000, () => replay.purgeExpired());
    // Inventory: load the stored history for signals (exchanges are served meanwhile), then write what was seen every flush interval.
    void inventory.view.start().catch(() => undefined);
    background('inventory-flush', inventory.flushIntervalMs, () => inventory.view.flush());
    const autoDisable = inventory.autoDisable;
    if (autoDisable) background('inventory-auto-disable', sweepEveryMs, async () => (leadership.isLeader() ? autoDisable() : undefined));
    // The sweep (and, on its first pass, start-up recovery) runs only on the sweep lease's holder.
    background('sweep-lease', Math.floor(leaseTtlMs / 3), () => leadership.heartbeat());
    let recovered = false;
    const sweepNow = background('sweep', sweepEveryMs, async () => {
      if (!leadership.isLeader() && !(await leadership.heartbeat())) return;
      // `issuing` rows from before the oldest live process started belong to a process that died.
      const issuingBefore = new Date(Math.max(clock.now().getTime() - ISSUING_GRACE_MS, (await leadership.oldestLiveStart()).getTime()));
      const r = await taskService.sweep({ requestId: `sweep-${Date.now()}`, now: clock.now() }, { issuingBefore, shouldContinue: leadership.isLeader });
      if (!recovered) logger.info({ holder: leadership.holder, ...r }, 'start-up recovery pass done');
      recovered = true;
      await leadership.purgeDead();
    });
    sweepNow();
    trust.start();
    return address;
  }

  async function close(): Promise<void> {
    timers.forEach(clearInterval);
    onClose.forEach((f) => f());
    trust.close();
    await reaper.close();
    // The sweep is handed over (and the hand-over recorded) while the server stops taking requests:
    // app.close() must start at once, so a request that arrives now is answered 503 Connection: close.
    const released = leadership.release().catch(() => {});
    await app.close();
    await released;
    // What this replica saw since its last flush (no request comes in any more).
    await inventory.view.flush().catch((e: unknown) => logger.error({ err: { message: (e as Error).message } }, 'inventory: last flush failed'));
    await inventory.webhook?.drain();
    await audit.close();
    keyStore.useSigningThread(undefined);
    await signingThread.close();
    await issuers.close();
    await database.close();
    if (!opts.telemetry) await telemetry.shutdown();
  }

  return { app, listen, close, issuerUrl: () => issuerUrl.value, db, keyStore, signingThread, taskService, issuers, audit, logger, database, leadership, telemetry, inventory };
}
export type Composed = Awaited<ReturnType<typeof compose>>;
