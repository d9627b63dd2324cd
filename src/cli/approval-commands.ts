import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { createAuditLog } from '../audit/audit-log.js';
import { ApprovalDecisionRefused, approvalJson } from '../approvals/approval-service.js';
import { openApprovals } from '../approvals/open-approvals.js';
import type { CliHelpers } from './instance-commands.js';

/**
 * `agent-sts approvals list [--json]`, `agent-sts approvals approve|deny <id> --reason …`: the
 * just-in-time approvals beside a running server (same store, same rules and audit as the admin
 * API). The decider is `cli:<OS user>`: the policy must name that principal as an approver.
 */
export function registerApprovalCommands(program: Command, h: CliHelpers) {
  const approvals = program.command('approvals').description('just-in-time approvals of grants with an approval obligation');

  approvals
    .command('list')
    .description('list approval requests, oldest first (--state to filter)')
    .option('--state <state>', 'pending | approved | denied | expired')
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean; state?: string }) =>
      h.withCore(o.config, async (core, config) => {
        if (o.state && !['pending', 'approved', 'denied', 'expired'].includes(o.state)) {
          h.say('agent-sts: --state must be pending, approved, denied or expired');
          process.exitCode = 2;
          return;
        }
        const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
        const service = openApprovals({ db: core.database.db, audit, clock: core.clock, logger: core.logger, env: h.env, issuerUrl: () => config.server.issuer ?? '' }, config);
        const rows = await service.list({ state: o.state as 'pending' | undefined });
        if (!rows.length && !o.json) h.say('no approval request');
        for (const r of rows)
          console.log(o.json ? JSON.stringify(approvalJson(r)) : `${r.id}  ${r.state}  ${r.workloadSubject}${r.humanSubject ? ` for ${r.humanSubject}` : ''} -> ${r.target} [${r.scopes}]  approvers ${(JSON.parse(r.approvers) as string[]).join(', ')}  expires ${r.expiresAt.toISOString()}`);
      }),
    );

  for (const verdict of ['approve', 'deny'] as const) {
    approvals
      .command(verdict)
      .description(`${verdict} a pending approval request (as cli:<OS user>, who must be a named approver)`)
      .argument('<id>')
      .requiredOption('--reason <text>', 'why (goes to the audit log)')
      .addOption(h.configOption())
      .action((id: string, o: { reason: string; config?: string }) =>
        h.withCore(o.config, async (core, config) => {
          if (!o.reason.trim()) {
            h.say('agent-sts: --reason must not be empty');
            process.exitCode = 2;
            return;
          }
          const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
          const service = openApprovals({ db: core.database.db, audit, clock: core.clock, logger: core.logger, env: h.env, issuerUrl: () => config.server.issuer ?? '' }, config);
          try {
            const r = await service.decide(id, verdict, o.reason.trim(), { principal: `cli:${userInfo().username}`, groups: [], requestId: `cli-${randomUUID()}`, now: core.clock.now() });
            console.log(`${r.id} is ${r.state} (by ${r.decidedBy})`);
          } catch (e) {
            if (!(e instanceof ApprovalDecisionRefused)) throw e;
            h.say(`agent-sts: ${e.message}`);
            process.exitCode = e.status === 404 ? 1 : 3;
          } finally {
            await audit.drain();
          }
        }),
      );
  }
}
