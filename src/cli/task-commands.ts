import type { Command } from 'commander';
import { OperatorReason, revokeCredentialAsOperator } from '../server/admin-tasks.js';
import type { TaskEndResult } from '../tasks/task-service.js';
import { taskView } from '../tasks/task-view.js';
import { withLifecycle } from './kill-commands.js';
import type { CliHelpers } from './instance-commands.js';

/** Every credential of an ended task and of its sub-agents' tasks, depth first. */
function* credentialsOf(r: TaskEndResult): Generator<TaskEndResult['credentials'][number]> {
  yield* r.credentials;
  for (const c of r.children) yield* credentialsOf(c);
}

/**
 * `agent-sts tasks show <id>` (read only), `agent-sts tasks end <id> --reason …` and `agent-sts credentials revoke <id> --reason …`: the
 * operator's incident response between nothing and the kill switch, beside a running server (same
 * store and audit chain as `POST /v1/admin/tasks/{id}/end` and `…/credentials/{id}/revoke`; who is
 * `cli:<OS user>`). Exit 1: no such task or credential; 2: bad arguments; 3: a revocation failed at
 * its target (the server's sweep retries it).
 */
export function registerTaskCommands(program: Command, h: CliHelpers) {
  type Core = Parameters<Parameters<CliHelpers['withCore']>[1]>[0];
  type Lifecycle = Parameters<Parameters<typeof withLifecycle>[3]>[0];
  type Who = Parameters<Parameters<typeof withLifecycle>[3]>[1];
  type Options = { reason: string; json?: boolean; config?: string };
  /** An operator command on one id: `--reason` checked (exit 2), then `work` with the lifecycle services as `cli:<OS user>`. */
  const asOperator = (work: (l: Lifecycle, who: Who, reason: string, id: string, o: Options, core: Core) => Promise<void>) => (id: string, o: Options) =>
    h.withCore(o.config, async (core, config) => {
      const reason = OperatorReason.safeParse(o.reason);
      if (!reason.success) {
        h.say('agent-sts: --reason: 1 to 1000 characters');
        process.exitCode = 2;
        return;
      }
      await withLifecycle(core, config, h, (l, who) => work(l, who, reason.data, id, o, core));
    });

  const tasksCommand = program.command('tasks').description('tasks: show one (its credentials and sub-agents), or end one (every credential in it and in its sub-agents\' tasks revoked at its target)');

  tasksCommand
    .command('show')
    .description('one task: who it is for, its state and deadline, each credential (id, target, state, expiry; fingerprints, never secrets) and its sub-agents\' tasks')
    .argument('<task-id>', 'the task id (t_…), from the audit log, `inventory show` or an agent\'s answer')
    .option('--json', 'the same JSON as GET /v1/tasks/{id}')
    .addOption(h.configOption())
    .action((taskId: string, o: { json?: boolean; config?: string }) =>
      h.withCore(o.config, async (core) => {
        const t = await taskView(core.database.db, taskId);
        if (!t) {
          h.say(`agent-sts: no task ${taskId} (see \`agent-sts audit query --task <id>\` or \`agent-sts inventory show <subject>\`)`);
          process.exitCode = 1;
          return;
        }
        if (o.json) {
          console.log(JSON.stringify(t));
          return;
        }
        console.log(`task ${t.task_id}  ${t.state}${t.end_reason ? ` (${t.end_reason})` : ''}`);
        console.log(`  workload ${t.workload_subject}${t.human_subject ? `  for ${t.human_subject}` : ''}${t.purpose ? `  purpose: ${t.purpose}` : ''}`);
        console.log(`  created ${t.created_at}  deadline ${t.deadline}${t.ended_at ? `  ended ${t.ended_at}` : ''}${t.idle_timeout_seconds ? `  idle timeout ${t.idle_timeout_seconds} s` : ''}`);
        if (t.parent_task_id) console.log(`  sub-agent of ${t.parent_task_id} (tree of ${t.root_task_id ?? t.parent_task_id})`);
        console.log(`  credentials: ${t.credentials.length}`);
        for (const c of t.credentials) console.log(`    ${c.id}  ${c.target}  ${c.issuer}  ${c.state}  expires ${c.expires_at}${c.revoked_at ? `  revoked ${c.revoked_at}` : ''}`);
        if (t.children.length) console.log(`  sub-agents' tasks: ${t.children.map((c) => `${c.task_id} (${c.state})`).join(', ')}`);
      }),
    );

  tasksCommand
    .command('end')
    .description('end a task as an operator: its credentials and its sub-agents\' tasks are revoked at their targets; prints each credential\'s fate')
    .argument('<task-id>')
    .requiredOption('--reason <text>', 'why (goes to the audit log with who)')
    .option('--json', 'the same JSON as the HTTP answer (without the signed receipt)')
    .addOption(h.configOption())
    .action(
      asOperator(async ({ tasks }, who, reason, taskId, o) => {
        h.say(`ending task ${taskId}: revoking its credentials at their targets…`);
        const r = await tasks.endTask(taskId, `ended by ${who.principal}: ${reason}`, who);
        if (!r) {
          h.say(`agent-sts: no task ${taskId} (see \`agent-sts audit query --task <id>\` or GET /v1/tasks/<id>)`);
          process.exitCode = 1;
          return;
        }
        const creds = [...credentialsOf(r)];
        if (o.json) console.log(JSON.stringify(r));
        else for (const c of creds) console.log(`${c.id}  ${c.target}  ${c.fate}${c.revokedAt ? ` at ${c.revokedAt}` : ''}`);
        const pending = creds.filter((c) => c.fate === 'revocation_pending').length;
        h.say(`task ${taskId} is ${r.state}: ${creds.length} credential(s)${pending ? `, ${pending} revocation(s) pending` : ''}`);
        if (pending) pendingExit('a revocation');
      }),
    );

  program
    .command('credentials')
    .description('credentials: revoke one at its target (its task goes on)')
    .command('revoke')
    .description('revoke one credential at its target now (the login dropped, the token deleted, the lease revoked); its task and other credentials go on')
    .argument('<credential-id>', 'the credential id (jti), from the audit log or GET /v1/tasks/<id>')
    .requiredOption('--reason <text>', 'why (goes to the audit log with who)')
    .option('--json', 'the same JSON as the HTTP answer')
    .addOption(h.configOption())
    .action(
      asOperator(async ({ tasks }, who, reason, credentialId, o) => {
        const r = await revokeCredentialAsOperator({ tasks }, credentialId, who.principal, reason, who);
        if (!r) {
          h.say(`agent-sts: no credential ${credentialId} (credential ids are in the audit log: \`agent-sts audit query --fingerprint <it>\`)`);
          process.exitCode = 1;
          return;
        }
        console.log(o.json ? JSON.stringify(r) : `${r.credential_id}  task ${r.task_id}  ${r.target}  ${r.fate} (now ${r.state}; expires ${r.expires_at})`);
        if (r.fate === 'revocation_pending') pendingExit('the revocation');
        else if (r.fate === 'expires_naturally') h.say(`its issuer cannot revoke it: it stays valid until ${r.expires_at}`);
        else if (r.offline_valid_until) h.say(`introspection and agent-sts refuse it now; resource servers that verify it offline accept it until ${r.offline_valid_until}`);
      }),
    );

  function pendingExit(what: string): void {
    h.say(`${what} failed at its target; the server's sweep retries it (see \`agent-sts revocations list\`)`);
    process.exitCode = 3;
  }
}
