import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { createAuditLog } from '../audit/audit-log.js';
import { ConfigError } from '../errors/sts-errors.js';
import { InstanceChangeRefused } from '../lib/instance-admin.js';
import { createPolicyAdmin } from '../policy/policy-admin.js';
import { parsePolicyFile } from '../policy/policy-document.js';
import { createPolicySet } from '../policy/policy-set.js';
import { readInput, type CliHelpers } from './instance-commands.js';

/**
 * `agent-sts policy put|rm|status`: uploaded policy documents, beside a live server (same checks
 * and audit as the admin API, principal `cli:<os user>`); running servers apply a change at their
 * next poll.
 */
export function registerPolicyStoreCommands(policy: Command, h: CliHelpers): void {
  const cli = () => ({ principal: `cli:${userInfo().username}`, requestId: `cli-${randomUUID()}` });

  const withPolicies = (configOpt: string | undefined, fn: (p: { set: ReturnType<typeof createPolicySet>; admin: ReturnType<typeof createPolicyAdmin> }) => Promise<void>) =>
    h.withCore(configOpt, async (core, config) => {
      const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
      const table = core.database.db.policyDocument;
      try {
        const set = createPolicySet({ config, table, logger: core.logger, clock: core.clock });
        await set.reload(true);
        await fn({ set, admin: createPolicyAdmin({ set, table, audit }) });
      } catch (e) {
        if (e instanceof InstanceChangeRefused) {
          h.say(`agent-sts: ${e.title}: ${e.message}`);
          process.exitCode = e.status === 404 ? 1 : 2;
        } else if (e instanceof ConfigError) {
          h.say(`agent-sts: the policy set is invalid: ${e.problems.join('; ')}`);
          process.exitCode = 2;
        } else throw e;
      } finally {
        await audit.drain();
      }
    });

  policy
    .command('put')
    .description('upload a policy document (kind: Policy) to the store; validated against the whole set and audited like the admin API')
    .argument('<file>', 'YAML file, or - for standard input')
    .option('--name <name>', 'document name (default: its metadata.name)')
    .addOption(h.configOption())
    .action((file: string, o: { config?: string; name?: string }) =>
      withPolicies(o.config, async ({ admin }) => {
        const content = `${readInput(file)}\n`;
        const name = o.name ?? parsePolicyFile(file, content).documents[0]?.doc.metadata.name ?? '';
        const r = await admin.put(cli(), name, content);
        h.say(`policy "${r.name}" stored (sha256 ${r.sha256}); policy set ${r.version}`);
      }),
    );

  policy
    .command('rm')
    .description('remove an uploaded policy document (refused when the rest would not compile)')
    .argument('<name>')
    .addOption(h.configOption())
    .action((name: string, o: { config?: string }) =>
      withPolicies(o.config, async ({ admin }) => {
        const r = await admin.remove(cli(), name);
        h.say(`policy "${r.deleted}" removed; policy set ${r.version}`);
      }),
    );

  policy
    .command('status')
    .description('the policy set as the store and policy.dir hold it now: version, documents, problems')
    .addOption(h.configOption())
    .action((o: { config?: string }) =>
      withPolicies(o.config, async ({ set }) => {
        console.log(`version ${set.version}`);
        for (const d of set.documents()) console.log(`${d.name.padEnd(24)} ${d.kind.padEnd(14)} ${d.source.padEnd(6)} ${d.sha256.slice(0, 16)}${d.file ? ` ${d.file}` : ''}${d.updatedBy ? ` by ${d.updatedBy}` : ''}`);
        const err = set.lastError();
        if (err) {
          for (const p of err.problems) h.say(`  - ${p}`);
          process.exitCode = 2;
        }
      }),
    );
}
