import type { Command } from 'commander';
import { openIssuers } from '../compose.js';
import { createIssuerAdmin } from '../credential-issuers/issuer-set.js';
import { INSTANCE_NAME } from '../lib/instance-set.js';
import { seal } from '../lib/crypto.js';
import { sealedSecretAad } from '../config/secret-ref.js';
import { readInput, registerInstanceCommands, type CliHelpers } from './instance-commands.js';
import { createPolicySet } from '../policy/policy-set.js';
import { runtimeIssuerGrantProblems } from '../config/load-config.js';

/** `agent-sts issuers list|add|enable|disable|remove|seal`. */
export function registerIssuerCommands(program: Command, h: CliHelpers) {
  const issuers = program.command('issuers').description('credential issuers (config file and registered at runtime)');
  registerInstanceCommands(issuers, h, {
    kind: 'credential issuer',
    readme: 'Credential issuers',
    open: (core, config, audit) => {
      const set = openIssuers(core, config, { env: h.env }, () => config.server.issuer ?? '');
      return { set, admin: createIssuerAdmin({ issuers: set, db: core.database.db, audit, kek: () => core.kek.reveal() }) };
    },
    // The policy in force: the config file's and the documents uploaded through the admin API.
    async policyProblems(core, config) {
      const policy = createPolicySet({ config, table: core.database.db.policyDocument, logger: core.logger, clock: core.clock });
      await policy.reload(true);
      return (r) => runtimeIssuerGrantProblems(config, policy.engine().model.rules, { name: r.name, type: r.type, config: r.config });
    },
  });

  issuers
    .command('seal')
    .description('encrypt a secret (e.g. a GitHub App private key) under the key-encryption key for one issuer, and print the reference to put in the config file')
    .requiredOption('--issuer <name>', 'the issuer instance it is for (it opens for no other)')
    .argument('[file]', 'file holding the secret, or - for standard input', '-')
    .addOption(h.configOption())
    .action((file: string, o: { issuer: string; config?: string }) =>
      h.withCore(o.config, async (core) => {
        if (!INSTANCE_NAME.test(o.issuer)) {
          h.say('agent-sts: --issuer: lower-case letters, digits and -, at most 63');
          process.exitCode = 2;
          return;
        }
        const secret = readInput(file);
        if (!secret) {
          h.say(`agent-sts: ${file === '-' ? 'standard input' : file} is empty: nothing to seal`);
          process.exitCode = 2;
          return;
        }
        console.log(JSON.stringify({ sealed: seal(core.kek.reveal(), secret, sealedSecretAad(o.issuer)) }));
        h.say(`sealed for issuer "${o.issuer}" under this server's key-encryption key; use it where a secret reference goes, e.g. privateKey: <the line above>`);
      }),
    );
}
