import { Command, Option } from 'commander';
import pino from 'pino';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { createAuditLog } from '../audit/audit-log.js';
import { ConfigError } from '../errors/sts-errors.js';
import { telemetryFromEnv } from '../telemetry/otel.js';
import { loadConfigFile, type AppConfig } from '../config/load-config.js';
import { compose, openCore } from '../compose.js';
import { applyMigrations } from '../storage/migrate.js';
import { DEV_ISSUER, signDevToken } from '../dev/dev-issuer.js';
import { registerProviderCommands } from './providers-commands.js';
import { registerIssuerCommands } from './issuers-commands.js';
import { registerDoctorCommands } from './doctor-commands.js';
import { registerKillCommands } from './kill-commands.js';
import { registerTaskCommands } from './task-commands.js';
import { registerApprovalCommands } from './approval-commands.js';
import { registerPolicyCommands } from './policy-commands.js';
import { registerInventoryCommands } from './inventory-commands.js';
import { registerAuditCommands } from './audit-commands.js';

const env = process.env;
const say = (line: string) => process.stderr.write(`${line}\n`);

function configPath(opt?: string): string {
  return opt ?? env.AGENT_STS_CONFIG ?? 'agent-sts.yaml';
}

function loadOrExit(file: string): AppConfig {
  try {
    return loadConfigFile(file, env);
  } catch (e) {
    if (e instanceof ConfigError) {
      say(`agent-sts: the configuration is invalid (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}):`);
      for (const p of e.problems) say(`  - ${p}`);
      say('Fix the file (or the overriding environment variables) and run `agent-sts config check` again.');
      process.exit(2);
    }
    throw e;
  }
}

/**
 * Opens storage and keys for a command that runs beside a live server (no migrations), logs to
 * stderr so stdout carries only the command's output, and turns failures into one clear line.
 */
export type WithCore = typeof withCore;

async function withCore(configOpt: string | undefined, fn: (core: Awaited<ReturnType<typeof openCore>>, config: AppConfig) => Promise<void>): Promise<void> {
  const config = loadOrExit(configPath(configOpt));
  let core: Awaited<ReturnType<typeof openCore>> | undefined;
  try {
    core = await openCore(config, { env, onProgress: say, migrate: false, logDestination: pino.destination(2) });
    await fn(core, config);
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    say(`agent-sts: ${msg}`);
    if (/does not exist|no such table/i.test(msg)) say('The store may not be migrated yet: run `agent-sts migrate` (or start the server once).');
    process.exitCode = 1;
  } finally {
    await core?.database.close();
  }
}

const configOption = () => new Option('-c, --config <file>', 'configuration file (env AGENT_STS_CONFIG; default ./agent-sts.yaml)');

export async function runCli(argv: string[]): Promise<void> {
  const program = new Command().name('agent-sts').description('Secretless credential broker (RFC 8693 token exchange)').showHelpAfterError();

  program
    .command('serve')
    .description('start the broker')
    .addOption(configOption())
    .action(async (o: { config?: string }) => {
      const file = configPath(o.config);
      const config = loadOrExit(file);
      const c = await compose(config, { env, onProgress: say }).catch((e: unknown) => {
        // e.g. a bad OTEL_* variable: the same clear exit as a bad configuration file.
        if (!(e instanceof ConfigError)) throw e;
        for (const p of e.problems) say(`agent-sts: ${p}`);
        return process.exit(2);
      });
      const address = await c.listen();
      const iss = c.issuerUrl();
      say(`agent-sts listening on ${address} (issuer ${iss}, store ${c.database.provider}, config ${file})`);
      say(`telemetry: ${c.telemetry.description}`);
      if (config.devIssuer.enabled)
        say(`try it: npx agent-sts dev token --config ${file} --sub my-agent   then POST it to ${iss}/oauth2/token (see README "5-minute walkthrough")`);
      const stop = async (sig: string) => {
        say(`agent-sts: ${sig}, shutting down`);
        await c.close();
        process.exit(0);
      };
      process.once('SIGINT', () => void stop('SIGINT'));
      process.once('SIGTERM', () => void stop('SIGTERM'));
    });

  const cfg = program.command('config').description('configuration tools');
  cfg
    .command('check')
    .description('validate a configuration file without starting anything')
    .argument('[file]')
    .addOption(configOption())
    .action(async (file: string | undefined, o: { config?: string }) => {
      const path = file ?? configPath(o.config);
      const config = loadOrExit(path);
      // The OpenTelemetry environment is configuration too: `serve` refuses bad values, so say so here.
      let telemetry: string;
      try {
        const t = telemetryFromEnv(env);
        telemetry = t.description;
        await t.shutdown();
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        say(`agent-sts: the OpenTelemetry environment is invalid (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}):`);
        for (const p of e.problems) say(`  - ${p}`);
        process.exit(2);
      }
      console.log(
        `${path}: OK (${config.trustProviders.length} trust providers, ${config.credentialIssuers.length} credential issuers, ${config.targets.length} targets, ${config.policy.rules.length} policy rules${config.policy.documents?.length ? `, ${config.policy.documents.length} policy documents` : ''})`,
      );
      console.log(`telemetry: ${telemetry}`);
    });

  program
    .command('migrate')
    .description('apply storage migrations (also done at start-up)')
    .addOption(configOption())
    .action(async (o: { config?: string }) => {
      const config = loadOrExit(configPath(o.config));
      const r = await applyMigrations(config.storage.url, { onProgress: say });
      say(r.applied.length ? `applied: ${r.applied.join(', ')}` : 'storage is up to date');
    });

  const keys = program.command('keys').description('signing keys');
  keys
    .command('rotate')
    .description('publish a new signing key now; it signs after keys.publishAhead; the old key stays published until its tokens expired')
    .addOption(configOption())
    .action((o: { config?: string }) =>
      withCore(o.config, async (core) => {
        await core.keyStore.init();
        const r = await core.keyStore.rotate();
        const log = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
        await log.append({
          event: { requestId: `cli-${randomUUID()}`, action: 'admin.keys.rotate', outcome: 'success', reason: `new key ${r.newKid} signs from ${r.activatesAt.toISOString()}${r.previousKid ? `; ${r.previousKid} retires` : ''} (by ${userInfo().username} via CLI)` },
        });
        console.log(`new key ${r.newKid} is published now and starts signing at ${r.activatesAt.toISOString()}`);
        if (r.previousKid) console.log(`key ${r.previousKid} signs until then and stays published until ${r.previousPublishedUntil!.toISOString()}`);
      }),
    );
  keys
    .command('list')
    .description('list signing keys and their publication windows')
    .addOption(configOption())
    .action((o: { config?: string }) =>
      withCore(o.config, async (core) => {
        await core.keyStore.reload();
        for (const k of core.keyStore.list())
          console.log(`${k.kid}  signs from ${k.activatesAt.toISOString()}${k.retiredAt ? ` until ${k.retiredAt.toISOString()}` : ''}${k.publishUntil ? `, published until ${k.publishUntil.toISOString()}` : ''}`);
      }),
    );

  const dev = program.command('dev').description('development helpers (only the dev config trusts them)');
  dev
    .command('token')
    .description(`sign a workload token with the local development issuer (${DEV_ISSUER})`)
    .addOption(configOption())
    .requiredOption('--sub <subject>', 'the token subject, e.g. my-agent')
    .option('--aud <audience>', 'audience (default: the dev provider\'s configured audience)')
    .option('--claims <json>', 'extra claims as a JSON object, e.g. \'{"team":"payments"}\'', '{}')
    .option('--ttl <seconds>', 'lifetime in seconds', '600')
    .action(async (o: { config?: string; sub: string; aud?: string; claims: string; ttl: string }) => {
      const config = loadOrExit(configPath(o.config));
      if (!config.devIssuer.enabled) {
        say('agent-sts: the development issuer is disabled in this configuration (devIssuer.enabled: false); use a dev config such as examples/agent-sts.dev.yaml');
        process.exit(2);
      }
      let claims: Record<string, unknown>;
      try {
        claims = JSON.parse(o.claims) as Record<string, unknown>;
        if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw new Error('not an object');
      } catch {
        say('agent-sts: --claims must be a JSON object, e.g. \'{"team":"payments"}\'');
        process.exit(2);
      }
      const devProvider = config.trustProviders.find((p) => (p.config as { issuer?: string }).issuer === DEV_ISSUER);
      const audience = o.aud ?? [(devProvider?.config as { audience?: string | string[] } | undefined)?.audience].flat()[0];
      if (!audience) {
        say(`agent-sts: no trust provider in this config trusts ${DEV_ISSUER}; pass --aud or add one (see examples/agent-sts.dev.yaml)`);
        process.exit(2);
      }
      if (!existsSync(config.devIssuer.dir)) say(`dev issuer: creating a signing key in ${config.devIssuer.dir}`);
      console.log(await signDevToken(config.devIssuer.dir, { sub: o.sub, audience, claims, ttlSeconds: Number(o.ttl) }));
    });

  registerProviderCommands(program, { withCore, configOption, say, env });
  registerIssuerCommands(program, { withCore, configOption, say, env });
  registerDoctorCommands(program, { withCore, configOption, say, env });
  registerKillCommands(program, { withCore, configOption, say, env });
  registerTaskCommands(program, { withCore, configOption, say, env });
  registerApprovalCommands(program, { withCore, configOption, say, env });
  registerPolicyCommands(program, { withCore, configOption, say, env });
  registerInventoryCommands(program, { withCore, configOption, say, env });
  registerAuditCommands(program, { withCore, configOption, say, env });
  await program.parseAsync(argv);
}
