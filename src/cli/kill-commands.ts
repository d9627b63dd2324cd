import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { openIssuers } from '../compose.js';
import { createAuditLog } from '../audit/audit-log.js';
import { createRevocationList } from '../tasks/revocation-list.js';
import { createTaskService } from '../tasks/task-service.js';
import { createKillSwitch, IdentityNotBlocked, validateKill } from '../tasks/kill-switch.js';
import type { CliHelpers } from './instance-commands.js';

/**
 * `agent-sts kill <subject> --reason … [--human]`, `agent-sts restore <subject>` and
 * `agent-sts blocked`: the kill switch beside a running server (same store, same audit as the
 * admin API, by `cli:<OS user>`). Every replica picks the block up within 1 s (it polls twice a second).
 */
/** Who acts from the CLI (`cli:<OS user>`) and a request id for its records. */
export const cliActor = () => ({ principal: `cli:${userInfo().username}`, requestId: `cli-${randomUUID()}` });

type Core = Parameters<Parameters<CliHelpers['withCore']>[1]>[0];
type Config = Parameters<Parameters<CliHelpers['withCore']>[1]>[1];

/** The task service, kill switch and what they need, beside a running server (same store and audit chain). */
export function openLifecycle(core: Core, config: Config, h: Pick<CliHelpers, 'env' | 'say'>) {
  const db = core.database.db;
  const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
  const issuers = openIssuers(core, config, { env: h.env }, () => config.server.issuer ?? '');
  const revocations = createRevocationList({ db, clock: core.clock });
  const tasks = createTaskService({ db, clock: core.clock, logger: core.logger, kek: core.kek, audit, issuers, revocations });
  const killSwitch = createKillSwitch({ db, clock: core.clock, logger: core.logger, audit, tasks, revocations, onProgress: h.say });
  return { audit, issuers, tasks, killSwitch };
}

type Lifecycle = ReturnType<typeof openLifecycle>;

/**
 * Runs `work` with the lifecycle services open (the issuers loaded when `loadIssuers`: revocations
 * need them), as `cli:<OS user>` with its own request id; then the audit log is drained and the
 * issuers closed, whatever happened.
 */
export async function withLifecycle(
  core: Core,
  config: Config,
  h: Pick<CliHelpers, 'env' | 'say'>,
  work: (l: Lifecycle, who: ReturnType<typeof cliActor> & { now: Date }) => Promise<void>,
  opts: { loadIssuers: boolean } = { loadIssuers: true },
): Promise<void> {
  const l = openLifecycle(core, config, h);
  try {
    if (opts.loadIssuers) await l.issuers.reload(true);
    await work(l, { ...cliActor(), now: core.clock.now() });
  } finally {
    await l.audit.drain();
    await l.issuers.close();
  }
}

export function registerKillCommands(program: Command, h: CliHelpers) {

  program
    .command('kill')
    .description('kill switch: refuse every exchange of this subject on every replica and end all its open tasks (credentials revoked at their targets) until `restore`')
    .argument('<subject>', 'the workload subject (e.g. spiffe://…/sa/agent), or the person with --human')
    .requiredOption('--reason <text>', 'why (goes to the audit log)')
    .option('--human', 'the subject is a person (human subject), not a workload')
    .addOption(h.configOption())
    .action((subject: string, o: { reason: string; human?: boolean; config?: string }) =>
      h.withCore(o.config, async (core, config) => {
        const problem = validateKill(subject, o.reason);
        if (problem) {
          h.say(`agent-sts: ${problem}`);
          process.exitCode = 2;
          return;
        }
        await withLifecycle(core, config, h, async ({ killSwitch }, who) => {
          const s = await killSwitch.kill(subject, { reason: o.reason, kind: o.human ? 'human' : 'workload' }, who);
          const pending = s.credentials.pending;
          console.log(
            `${s.subject} (${s.kind}) is blocked${s.newlyBlocked ? '' : ' (already was)'}: ${s.tasksEnded} task(s) ended` +
              `${s.tasksEnding ? `, ${s.tasksEnding} still ending` : ''}; credentials: ${s.credentials.revoked} revoked, ${pending} revocation pending, ${s.credentials.expiresNaturally} expire naturally`,
          );
          if (pending) {
            h.say(`${pending} revocation(s) failed at their target; the server's sweep retries them (see \`agent-sts audit query --workload ${subject}\`)`);
            process.exitCode = 3;
          }
        });
      }),
    );

  program
    .command('restore')
    .description('lift the kill switch on a subject: its exchanges are accepted again (ended tasks stay ended)')
    .argument('<subject>')
    .addOption(h.configOption())
    .action((subject: string, o: { config?: string }) =>
      h.withCore(o.config, async (core, config) => {
        await withLifecycle(
          core,
          config,
          h,
          async ({ killSwitch }, who) => {
            try {
              const r = await killSwitch.restore(subject, who);
              console.log(`${r.subject} (${r.kind}) is no longer blocked`);
            } catch (e) {
              if (!(e instanceof IdentityNotBlocked)) throw e;
              h.say(`agent-sts: ${subject} is not blocked`);
              process.exitCode = 1;
            }
          },
          { loadIssuers: false },
        );
      }),
    );

  program
    .command('blocked')
    .description('list the subjects the kill switch blocks')
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean }) =>
      h.withCore(o.config, async (core) => {
        const rows = await core.database.db.identityBlock.findMany({ orderBy: { createdAt: 'asc' } });
        if (!rows.length && !o.json) h.say('no subject is blocked');
        for (const r of rows)
          console.log(o.json ? JSON.stringify({ subject: r.subject, kind: r.kind, reason: r.reason, blocked_by: r.blockedBy, created_at: r.createdAt.toISOString() }) : `${r.subject}  ${r.kind}  by ${r.blockedBy} at ${r.createdAt.toISOString()}: ${r.reason}`);
      }),
    );
}
