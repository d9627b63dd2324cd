import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { Command, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { createAuditLog } from '../audit/audit-log.js';
import { openTrust } from '../compose.js';
import type { AppConfig } from '../config/load-config.js';
import { StsError, UpstreamUnavailable } from '../errors/sts-errors.js';
import { TOKEN_TYPE } from '../lib/urns.js';
import { createAwsIamAttestation } from '../trust-providers/aws-iam/attest.js';
import { createProviderAdmin, ProviderChangeRefused } from '../trust-providers/provider-admin.js';
import type { WithCore } from './main.js';

const ProviderFile = z.object({ name: z.string(), type: z.string(), config: z.unknown(), enabled: z.boolean().optional() }).strict();

/** The issuer URL the server would use (the aws-iam server id), for commands that verify attestations. */
function serverIdOf(config: AppConfig): string {
  if (config.server.issuer) return config.server.issuer.replace(/\/$/, '');
  const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.server.port}`;
}

function readInput(file: string): string {
  return (file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8')).trim();
}

/** `agent-sts providers list|add|remove|enable|disable|test`. */
export function registerProviderCommands(program: Command, h: { withCore: WithCore; configOption: () => Option; say: (line: string) => void; env: NodeJS.ProcessEnv }) {
  const providers = program.command('providers').description('trust providers (config file and registered at runtime)');
  const cli = () => ({ principal: `cli:${userInfo().username}`, requestId: `cli-${randomUUID()}` });

  /** Runs a change through the same checks and audit as the admin API. */
  const change = (configOpt: string | undefined, fn: (admin: ReturnType<typeof createProviderAdmin>) => Promise<void>) =>
    h.withCore(configOpt, async (core, config) => {
      const { trust } = openTrust(core, config, { env: h.env }, () => serverIdOf(config));
      const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
      try {
        await fn(createProviderAdmin({ providers: trust, db: core.database.db, audit }));
      } catch (e) {
        if (!(e instanceof ProviderChangeRefused)) throw e;
        h.say(`agent-sts: ${e.title}: ${e.message}`);
        process.exitCode = e.status === 404 ? 1 : 2;
      } finally {
        await audit.drain();
      }
    });

  providers
    .command('list')
    .description('list every trust provider: config-file ones (read-only) and runtime ones')
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean }) =>
      h.withCore(o.config, async (core, config) => {
        const { trust } = openTrust(core, config, { env: h.env }, () => serverIdOf(config));
        await trust.reload(true);
        for (const r of trust.records()) {
          if (o.json) console.log(JSON.stringify({ name: r.name, type: r.type, source: r.source, enabled: r.enabled, updatedAt: r.updatedAt, updatedBy: r.updatedBy }));
          else console.log(`${r.name.padEnd(24)} ${r.type.padEnd(16)} ${r.source === 'config' ? 'config file (read-only)' : `runtime, ${r.enabled ? 'enabled' : 'DISABLED'}, by ${r.updatedBy} at ${r.updatedAt!.toISOString()}`}`);
        }
      }),
    );

  providers
    .command('add')
    .description('register a trust provider from a YAML/JSON file {name, type, config, enabled?} (validated and audited like the admin API)')
    .argument('<file>', 'file, or - for standard input')
    .addOption(h.configOption())
    .action((file: string, o: { config?: string }) =>
      change(o.config, async (admin) => {
        let body: z.infer<typeof ProviderFile>;
        try {
          body = ProviderFile.parse(parseYaml(readInput(file)));
        } catch (e) {
          h.say(`agent-sts: ${file}: ${e instanceof z.ZodError ? e.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') : (e as Error).message}`);
          h.say('The file holds {name, type, config, enabled?}; see README "Trust providers".');
          process.exitCode = 2;
          return;
        }
        const r = await admin.create(cli(), body);
        console.log(`registered ${r.name} (${r.type}, ${r.enabled ? 'enabled' : 'disabled'}); running servers pick it up within server.providerReloadInterval`);
      }),
    );

  for (const action of ['enable', 'disable'] as const)
    providers
      .command(action)
      .description(`${action} a runtime trust provider`)
      .argument('<name>')
      .addOption(h.configOption())
      .action((name: string, o: { config?: string }) =>
        change(o.config, async (admin) => {
          await admin.setEnabled(cli(), name, action === 'enable');
          console.log(`${name}: ${action}d`);
        }),
      );

  providers
    .command('remove')
    .description('remove a runtime trust provider (audited)')
    .argument('<name>')
    .addOption(h.configOption())
    .action((name: string, o: { config?: string }) =>
      change(o.config, async (admin) => {
        await admin.remove(cli(), name);
        console.log(`removed ${name}`);
      }),
    );

  program
    .command('attest')
    .description('produce an attestation for agent-sts from this machine\'s platform identity (printed to stdout, for subject_token)')
    .argument('<kind>', 'aws-iam: a signed sts:GetCallerIdentity request from the default AWS credential chain')
    .requiredOption('--server-id <url>', "agent-sts's issuer URL (signed into the request; the server refuses any other)")
    .option('--sts-url <url>', 'STS URL to sign for (default https://sts.amazonaws.com/; regional: https://sts.<region>.amazonaws.com/)')
    .option('--region <region>', 'signing region (default: from a regional STS URL, else us-east-1)')
    .action(async (kind: string, o: { serverId: string; stsUrl?: string; region?: string }) => {
      if (kind !== 'aws-iam') {
        h.say(`agent-sts: unknown attestation kind "${kind}" (known: aws-iam)`);
        process.exitCode = 2;
        return;
      }
      try {
        const token = await createAwsIamAttestation({ serverId: o.serverId.replace(/\/$/, ''), stsUrl: o.stsUrl, region: o.region });
        process.stdout.write(`${token}\n`);
        h.say(`send it as subject_token with subject_token_type=${TOKEN_TYPE.awsSigv4Gci}; it is valid for a few minutes and once`);
      } catch (e) {
        h.say(`agent-sts: could not sign with the AWS credential chain: ${(e as Error).message}`);
        h.say('Check AWS_PROFILE / AWS_ACCESS_KEY_ID or the instance role (`aws sts get-caller-identity` should work).');
        process.exitCode = 1;
      }
    });

  providers
    .command('test')
    .description('verify one attestation against the trusted providers and print the identity it yields, or exactly why it fails; issues nothing')
    .argument('[file]', 'file holding the attestation, or - for standard input', '-')
    .option('--token-type <urn>', `its token type (default: ${TOKEN_TYPE.jwt} for a JWT)`)
    .addOption(h.configOption())
    .action((file: string, o: { config?: string; tokenType?: string }) =>
      h.withCore(o.config, async (core, config) => {
        const token = readInput(file);
        const tokenType = o.tokenType ?? (token.split('.').length === 3 ? TOKEN_TYPE.jwt : undefined);
        if (!tokenType) {
          h.say('agent-sts: this is not a JWT: say what it is with --token-type (e.g. urn:agent-sts:token-type:aws-sigv4-gci)');
          process.exitCode = 2;
          return;
        }
        const { trust } = openTrust(core, config, { env: h.env }, () => serverIdOf(config));
        await trust.reload(true);
        let provider: string | undefined;
        try {
          const p = trust.resolveFor(token, tokenType);
          provider = p.name;
          const id = await p.verify({ token, tokenType }, { requestId: `cli-${randomUUID()}`, now: core.clock.now() });
          console.log(JSON.stringify({ provider: p.name, providerType: p.type, identity: id }, null, 2));
        } catch (e) {
          if (!(e instanceof StsError)) throw e;
          const who = provider ? `trust provider "${provider}"` : 'routing (no trust provider took it)';
          if (e instanceof UpstreamUnavailable) {
            h.say(`NOT VERIFIED by ${who}: agent-sts could not complete the check (cause: ${String(e.detail?.cause ?? 'unknown')})`);
            h.say(`  detail: ${JSON.stringify(e.detail ?? {})}`);
            h.say('  Callers see a temporary error (503 temporarily_unavailable). Fix agent-sts\'s side: network, credentials, RBAC or the key URL.');
            process.exitCode = 3;
          } else {
            h.say(`REJECTED by ${who}: ${e.publicMessage}`);
            h.say(`  reason: ${JSON.stringify(e.detail ?? {})}`);
            process.exitCode = 1;
          }
        }
      }),
    );
}
