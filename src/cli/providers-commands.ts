import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { openTrust } from '../compose.js';
import type { AppConfig } from '../config/load-config.js';
import { StsError, UpstreamUnavailable } from '../errors/sts-errors.js';
import { TOKEN_TYPE } from '../lib/urns.js';
import { createAwsIamAttestation } from '../trust-providers/aws-iam/attest.js';
import { createProviderAdmin } from '../trust-providers/provider-admin.js';
import { readInput, registerInstanceCommands, type CliHelpers } from './instance-commands.js';

/** The issuer URL the server would use (the aws-iam server id), for commands that verify attestations. */
function serverIdOf(config: AppConfig): string {
  if (config.server.issuer) return config.server.issuer.replace(/\/$/, '');
  const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.server.port}`;
}

/** `agent-sts providers list|add|remove|enable|disable|test`. */
export function registerProviderCommands(program: Command, h: CliHelpers) {
  const providers = program.command('providers').description('trust providers (config file and registered at runtime)');
  registerInstanceCommands(providers, h, {
    kind: 'trust provider',
    readme: 'Trust providers',
    open: (core, config, audit) => {
      const { trust } = openTrust(core, config, { env: h.env }, () => serverIdOf(config));
      return { set: trust, admin: createProviderAdmin({ providers: trust, db: core.database.db, audit }) };
    },
  });

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
