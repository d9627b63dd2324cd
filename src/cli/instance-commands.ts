import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { Command, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { createAuditLog } from '../audit/audit-log.js';
import type { openCore } from '../compose.js';
import type { AppConfig } from '../config/load-config.js';
import { InstanceChangeRefused, type InstanceAdmin } from '../lib/instance-admin.js';
import type { InstanceRecord } from '../lib/instance-set.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { WithCore } from './main.js';

const InstanceFile = z.object({ name: z.string(), type: z.string(), config: z.unknown(), enabled: z.boolean().optional() }).strict();

export function readInput(file: string): string {
  return (file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8')).trim();
}

export interface CliHelpers {
  withCore: WithCore;
  configOption: () => Option;
  say: (line: string) => void;
  env: NodeJS.ProcessEnv;
}

export interface InstanceKind {
  /** "trust provider", "credential issuer". */
  kind: string;
  /** README section that documents the file format. */
  readme: string;
  /** Opens the live set and its admin over the store. */
  open(core: Awaited<ReturnType<typeof openCore>>, config: AppConfig, audit: Pick<AuditLog, 'append'>): { set: { reload(force?: boolean): Promise<void>; records(): InstanceRecord[] }; admin: InstanceAdmin };
  /** What the policy in force asks of a runtime instance that it would refuse (shown by `list` and `add`). */
  policyProblems?(core: Awaited<ReturnType<typeof openCore>>, config: AppConfig): Promise<(r: InstanceRecord) => string[]>;
}

/** `list|add|enable|disable|remove` for one kind of runtime instance: the same checks and audit as the admin API. */
export function registerInstanceCommands(group: Command, h: CliHelpers, k: InstanceKind): void {
  const cli = () => ({ principal: `cli:${userInfo().username}`, requestId: `cli-${randomUUID()}` });

  const change = (configOpt: string | undefined, fn: (admin: InstanceAdmin, core: Awaited<ReturnType<typeof openCore>>, config: AppConfig) => Promise<void>) =>
    h.withCore(configOpt, async (core, config) => {
      const audit = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
      try {
        await fn(k.open(core, config, audit).admin, core, config);
      } catch (e) {
        if (!(e instanceof InstanceChangeRefused)) throw e;
        h.say(`agent-sts: ${e.title}: ${e.message}`);
        process.exitCode = e.status === 404 ? 1 : 2;
      } finally {
        await audit.drain();
      }
    });

  group
    .command('list')
    .description(`list every ${k.kind}: config-file ones (read-only) and runtime ones`)
    .option('--json', 'one JSON object per line')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean }) =>
      h.withCore(o.config, async (core, config) => {
        const { set } = k.open(core, config, { append: () => Promise.reject(new Error('listing writes nothing')) });
        await set.reload(true);
        const problemsOf = await k.policyProblems?.(core, config);
        for (const r of set.records()) {
          const problems = r.source === 'api' ? problemsOf?.(r) : undefined;
          if (o.json) console.log(JSON.stringify({ name: r.name, type: r.type, source: r.source, enabled: r.enabled, updatedAt: r.updatedAt, updatedBy: r.updatedBy, ...(problems ? { policyProblems: problems } : {}) }));
          else {
            console.log(`${r.name.padEnd(24)} ${r.type.padEnd(16)} ${r.source === 'config' ? 'config file (read-only)' : `runtime, ${r.enabled ? 'enabled' : 'DISABLED'}, by ${r.updatedBy} at ${r.updatedAt!.toISOString()}`}`);
            for (const p of problems ?? []) console.log(`  policy problem: ${p}`);
          }
        }
      }),
    );

  group
    .command('add')
    .description(`register a ${k.kind} from a YAML/JSON file {name, type, config, enabled?} (validated and audited like the admin API)`)
    .argument('<file>', 'file, or - for standard input')
    .addOption(h.configOption())
    .action((file: string, o: { config?: string }) =>
      change(o.config, async (admin, core, config) => {
        let body: z.infer<typeof InstanceFile>;
        try {
          body = InstanceFile.parse(parseYaml(readInput(file)));
        } catch (e) {
          h.say(`agent-sts: ${file}: ${e instanceof z.ZodError ? e.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') : (e as Error).message}`);
          h.say(`The file holds {name, type, config, enabled?}; see README "${k.readme}".`);
          process.exitCode = 2;
          return;
        }
        const r = await admin.create(cli(), body);
        console.log(`registered ${r.name} (${r.type}, ${r.enabled ? 'enabled' : 'disabled'}); running servers pick it up within server.providerReloadInterval`);
        const problems = (await k.policyProblems?.(core, config))?.(r) ?? [];
        if (problems.length) {
          h.say(`${problems.length} grant${problems.length > 1 ? 's' : ''} of the policy in force ask${problems.length > 1 ? '' : 's'} ${r.name} for what it refuses (those requests will fail; change the policy or the issuer's config):`);
          for (const p of problems) h.say(`  ${p}`);
        }
      }),
    );

  for (const action of ['enable', 'disable'] as const)
    group
      .command(action)
      .description(`${action} a runtime ${k.kind}`)
      .argument('<name>')
      .addOption(h.configOption())
      .action((name: string, o: { config?: string }) =>
        change(o.config, async (admin) => {
          await admin.setEnabled(cli(), name, action === 'enable');
          console.log(`${name}: ${action}d`);
        }),
      );

  group
    .command('remove')
    .description(`remove a runtime ${k.kind} (audited)`)
    .argument('<name>')
    .addOption(h.configOption())
    .action((name: string, o: { config?: string }) =>
      change(o.config, async (admin) => {
        await admin.remove(cli(), name);
        console.log(`removed ${name}`);
      }),
    );
}
