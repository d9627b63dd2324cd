import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { z } from 'zod';
import type { openCore } from '../compose.js';
import type { AppConfig } from '../config/load-config.js';
import { reviewCsv, reviewJson, ReviewQuerySchema, reviewSummary, UnknownIdentity, type AccessReview } from '../inventory/access-review.js';
import { ListQuerySchema } from '../inventory/inventory-service.js';
import { openInventoryReader } from '../inventory/open-inventory.js';
import { createPolicySet } from '../policy/policy-set.js';
import type { CliHelpers } from './instance-commands.js';

type Core = Awaited<ReturnType<typeof openCore>>;

/** The inventory over the store and the policy in force (config file, policy.dir, uploaded documents). */
async function openReader(core: Core, config: AppConfig) {
  const set = createPolicySet({ config, table: core.database.db.policyDocument, logger: core.logger, clock: core.clock });
  await set.reload(true);
  return openInventoryReader({ db: core.database.db, clock: core.clock, engine: () => set.engine() }, config);
}

/** Columns padded to their widest cell (the last one is not). */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

const day = (iso: string | null | undefined) => (iso ? iso.slice(0, 16).replace('T', ' ') : '-');

function usage(h: CliHelpers, message: string): void {
  h.say(`agent-sts: ${message}`);
  process.exitCode = 2;
}

const notFound = (kind: string, subject: string) =>
  `the inventory has no ${kind} ${subject}: an identity appears after its first exchange, and a server writes what it saw every inventory.flushInterval (see \`agent-sts inventory list\`)`;

/**
 * `agent-sts inventory list|show` and `agent-sts review`: the identity inventory and access
 * reviews straight from the store, beside a running server (what a server saw in its last flush
 * interval is not written yet). Tables by default, `--json` / `--format` for machines.
 */
export function registerInventoryCommands(program: Command, h: CliHelpers) {
  const inventory = program.command('inventory').description('identity inventory: who was seen, what each used, what each could obtain under the policy in force');

  inventory
    .command('list')
    .description('list identities with their flags (stale, unowned, over_granted)')
    .option('--kind <kind>', 'workload | human')
    .option('--provider <name>', 'only identities of this trust provider')
    .option('--stale', 'only identities not seen for inventory.staleAfterDays')
    .option('--unowned', 'only workloads without an owner')
    .option('--over-granted', 'only identities holding grants they have not used for inventory.unusedGrantAfterDays')
    .option('--limit <n>', 'at most this many', '1000')
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { kind?: string; provider?: string; stale?: boolean; unowned?: boolean; overGranted?: boolean; limit: string; json?: boolean; config?: string }) => {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit < 1) return usage(h, '--limit must be a positive whole number');
      const q = ListQuerySchema.safeParse({
        kind: o.kind, provider: o.provider, stale: o.stale ? 'true' : undefined, unowned: o.unowned ? 'true' : undefined, overGranted: o.overGranted ? 'true' : undefined, limit: Math.min(limit, 1000),
      });
      if (!q.success) return usage(h, q.error.issues.map((i) => `--${String(i.path[0])}: ${i.message}`).join('; '));
      return h.withCore(o.config, async (core, config) => {
        const { service } = await openReader(core, config);
        const found: Awaited<ReturnType<typeof service.list>>['identities'] = [];
        let cursor: string | undefined;
        do {
          const page = await service.list({ ...q.data, cursor, limit: Math.min(1000, limit - found.length) });
          found.push(...page.identities);
          cursor = page.next_cursor ?? undefined;
          if (process.stderr.isTTY && cursor) process.stderr.write(`\r${found.length} identities…`);
        } while (cursor && found.length < limit);
        if (process.stderr.isTTY) process.stderr.write('\r');
        if (o.json) for (const i of found) console.log(JSON.stringify(i));
        else if (found.length)
          for (const line of table(['KIND', 'SUBJECT', 'PROVIDER', 'LAST SEEN', 'OWNER', 'FLAGS'], found.map((i) => [i.kind, i.subject, i.provider, day(i.last_seen_at), i.owner ?? '-', i.flags.join(',') || '-'])))
            console.log(line);
        h.say(`${found.length} identit${found.length === 1 ? 'y' : 'ies'}${cursor ? ` (more: raise --limit)` : ''}`);
      });
    });

  inventory
    .command('show')
    .description('one identity: provider, first/last seen, owner, open tasks, live credentials, grants, blast radius, unused grants')
    .argument('<subject>', 'the workload subject, or the person with --human')
    .option('--human', 'the subject is a person')
    .option('--json', 'print JSON')
    .addOption(h.configOption())
    .action((subject: string, o: { human?: boolean; json?: boolean; config?: string }) =>
      h.withCore(o.config, async (core, config) => {
        const kind = o.human ? 'human' : 'workload';
        const { service } = await openReader(core, config);
        const d = await service.show(kind, subject);
        if (!d) {
          h.say(`agent-sts: ${notFound(kind, subject)}`);
          process.exitCode = 1;
          return;
        }
        if (o.json) return void console.log(JSON.stringify(d, null, 2));
        const out = [
          `${d.kind} ${d.subject}`,
          `  provider:    ${d.provider}`,
          `  first seen:  ${d.first_seen_at}`,
          `  last seen:   ${d.last_seen_at}`,
          `  owner:       ${d.owner ?? '(none)'}${d.owner_source === 'policy' ? ' (from the policy that grants it)' : ''}`,
          `  flags:       ${d.flags.join(', ') || '(none)'}`,
          ...(d.blocked ? [`  BLOCKED by ${d.blocked.blocked_by} at ${d.blocked.at}: ${d.blocked.reason}`] : []),
          `  open tasks:  ${d.open_tasks.count}${d.open_tasks.tasks.map((t) => `\n    ${t.id}  ${t.state}  until ${t.deadline}${t.purpose ? `  ${t.purpose}` : ''}`).join('')}`,
          `  live credentials: ${d.live_credentials.count}${d.live_credentials.credentials.map((c) => `\n    ${c.id}  ${c.target}  expires ${c.expires_at}`).join('')}`,
          '  used:',
          ...(d.used.length ? d.used.map((u) => `    ${u.target}  ${u.uses}x, last ${u.last_used_at}${u.scopes.length ? `  scopes ${u.scopes.map((s) => s.scope).join(' ')}` : ''}`) : ['    (nothing)']),
          `  blast radius (policy ${d.blast_radius.policy_version}):`,
          ...(d.blast_radius.pairs.length
            ? d.blast_radius.pairs.map((p) => `    ${p.target} ${p.scope ?? '(no scope)'}  by ${p.rules.join(', ')}${p.requires ? `  [only ${p.requires === 'person' ? 'for a person' : 'under a condition'}]` : ''}${p.approval ? '  [approval]' : ''}`)
            : ['    (nothing)']),
          '  recommendations:',
          ...(d.recommendations.length ? d.recommendations.map((r) => `    ${r.text} (last used ${r.last_used_at ?? 'never'})`) : ['    (none)']),
        ];
        for (const line of out) console.log(line);
      }),
    );

  program
    .command('review')
    .description('access review: what the policy allows, what was used in the window, what to remove (JSON or CSV for reviewers)')
    .option('--identity <subject>', 'review one identity (a workload, or a person with --human)')
    .option('--human', 'the --identity is a person')
    .option('--target <name>', 'review one target: every known identity the policy allows it to')
    .option('--window <duration>', 'how far back use counts (e.g. 90d, 30d, 12h)', '90d')
    .option('--format <format>', 'table | json | csv', 'table')
    .option('--out <file>', 'write the review to this file instead of stdout')
    .addOption(h.configOption())
    .action((o: { identity?: string; human?: boolean; target?: string; window: string; format: string; out?: string; config?: string }) => {
      const format = z.enum(['table', 'json', 'csv']).safeParse(o.format);
      if (!format.success) return usage(h, '--format must be table, json or csv');
      const q = ReviewQuerySchema.safeParse({ identity: o.identity, kind: o.human ? 'human' : 'workload', target: o.target, window: o.window });
      if (!q.success) return usage(h, q.error.issues.map((i) => (i.path.length ? `--${String(i.path[0])}: ${i.message}` : `${i.message} (--identity or --target)`)).join('; '));
      return h.withCore(o.config, async (core, config) => {
        const { review } = await openReader(core, config);
        let r: AccessReview;
        try {
          r = await review.review(q.data, (n) => process.stderr.isTTY && process.stderr.write(`\rreviewed ${n} identities…`));
        } catch (e) {
          if (!(e instanceof UnknownIdentity)) throw e;
          h.say(`agent-sts: ${notFound(q.data.kind, q.data.identity!)}`);
          process.exitCode = 1;
          return;
        }
        if (process.stderr.isTTY && !q.data.identity) process.stderr.write('\n');
        const text = format.data === 'csv' ? reviewCsv(r) : format.data === 'json' ? `${JSON.stringify(reviewJson(r), null, 2)}\n` : `${reviewTable(r).join('\n')}\n`;
        if (o.out) writeFileSync(o.out, text);
        else process.stdout.write(text);
        const s = reviewSummary(r);
        h.say(
          `access review of ${r.identity ? `${r.identity.kind} ${r.identity.subject}` : `target ${r.target}`} since ${r.since.toISOString()}: ${s.rows} row(s): ${s.keep} keep, ${s.remove} remove, ${s.review} to review, ${s.not_granted} no longer granted (policy ${r.policyVersion})${o.out ? `; written to ${o.out}` : ''}`,
        );
      });
    });
}

function reviewTable(r: AccessReview): string[] {
  const byTarget = !r.identity;
  return table(
    [...(byTarget ? ['IDENTITY'] : []), 'TARGET', 'SCOPE', 'DECISION', 'USES', 'LAST USED', 'ALLOWED BY', 'NOTE'],
    r.rows.map((x) => [
      ...(byTarget ? [`${x.kind === 'human' ? 'human ' : ''}${x.subject}`] : []),
      x.target, x.scope ?? '(none)', x.decision, String(x.usesInWindow), day(x.lastUsedAt?.toISOString()), x.allowedBy.join(',') || '-', x.note,
    ]),
  );
}
