import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { createAuditLog } from '../audit/audit-log.js';
import { openIssuers } from '../compose.js';
import { runDoctor } from '../tasks/doctor.js';
import { pendingRevocations } from '../tasks/task-service.js';
import type { CliHelpers } from './instance-commands.js';
import { telemetryFromEnv } from '../telemetry/otel.js';

const ago = (d: Date | null, now: number) => (d ? `${Math.round((now - d.getTime()) / 1000)}s ago` : '-');

/** `agent-sts doctor [--fix]` and `agent-sts revocations list`. */
export function registerDoctorCommands(program: Command, h: CliHelpers) {
  program
    .command('doctor')
    .description('compare agent-sts\'s credentials with the accounts at each database target: orphans (accounts no credential owns) and ghosts (active credentials whose account is gone); exit 1 if any remain')
    .option('--fix', 'remove orphans through the issuer (sessions are ended too) and mark ghosts revoked; audited')
    .addOption(h.configOption())
    .action((o: { config?: string; fix?: boolean }) =>
      h.withCore(o.config, async (core, config) => {
        const issuers = openIssuers(core, config, { env: h.env }, () => config.server.issuer ?? '');
        const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
        // OTEL_* as for `serve`: the orphans found are counted in agent_sts.doctor.orphans, exported on exit.
        const telemetry = telemetryFromEnv(h.env);
        try {
          await issuers.reload(true);
          const reports = await runDoctor(
            { db: core.database.db, clock: core.clock, kek: core.kek, audit, issuers: issuers.all(), telemetry },
            { fix: Boolean(o.fix), ctx: { requestId: `cli-doctor-${randomUUID()}`, now: core.clock.now() }, onProgress: h.say },
          );
          let remaining = 0;
          let orphans = 0;
          let ghosts = 0;
          for (const r of reports) {
            orphans += r.orphans.length;
            ghosts += r.ghosts.length;
            if (r.error) {
              console.log(`${r.issuer} (${r.type}): could not be checked: ${r.error}`);
              remaining++;
              continue;
            }
            console.log(`${r.issuer} (${r.type}): ${r.accounts} account(s) with agent-sts's prefix; ${r.orphans.length} orphan(s), ${r.ghosts.length} ghost(s)`);
            for (const x of r.orphans) {
              console.log(`  orphan ${x.name}: no issuing, active or revoking credential owns it${x.removed ? ' -> removed' : x.error ? ` -> removal failed: ${x.error}` : ''}`);
              if (!x.removed) remaining++;
            }
            for (const g of r.ghosts) {
              console.log(`  ghost credential ${g.credentialId}: its account ${g.name} is missing at the target${g.markedRevoked ? ' -> marked revoked' : ''}`);
              if (!g.markedRevoked) remaining++;
            }
          }
          console.log(`doctor: ${reports.length} issuer(s) checked; ${orphans} orphan(s), ${ghosts} ghost(s)${o.fix ? `; ${remaining} problem(s) remain` : ''}`);
          if (!reports.length) h.say('no configured issuer can list its accounts (postgres and mysql issuers can)');
          if (remaining) {
            process.exitCode = 1;
            if (!o.fix) h.say('run `agent-sts doctor --fix` to remove orphans and mark ghosts revoked');
          }
        } finally {
          await audit.drain();
          await issuers.close();
          await telemetry.shutdown();
        }
      }),
    );

  program
    .command('revocations')
    .description('the revocation queue')
    .command('list')
    .description('pending revocations (retried with backoff until the target confirms): credential, target, issuer, attempts, last error, next try')
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean }) =>
      h.withCore(o.config, async (core) => {
        const rows = await pendingRevocations(core.database.db);
        const now = core.clock.now().getTime();
        for (const r of rows) {
          if (o.json) console.log(JSON.stringify(r));
          else
            console.log(
              `${r.credentialId}  task ${r.taskId}  target ${r.target}  issuer ${r.issuerName}  attempts ${r.attempts}  pending since ~${ago(r.pendingSince, now)}  next try ${r.nextTryAt?.toISOString() ?? 'now'}  last error: ${r.lastError ?? '-'}`,
            );
        }
        h.say(`${rows.length} pending revocation(s)`);
      }),
    );
}
