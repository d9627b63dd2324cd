import type { Command } from 'commander';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { parse as parseYamlText } from 'yaml';
import type { z } from 'zod';
import { loadConfigFile, type AppConfig } from '../config/load-config.js';
import { ConfigError } from '../errors/sts-errors.js';
import { parseDuration } from '../lib/clock.js';
import { readPolicyPath, type LoadedDocument } from '../policy/policy-document.js';
import { createPolicyEngine, type PolicyEngine } from '../policy/policy-engine.js';
import { caseFilesIn, EnvInputSchema, formatExplanation, IdentityInputSchema, RequestInputSchema, runPolicyCases, toEnv, toIdentity, toRequest } from '../policy/policy-cases.js';
import { diffPolicies } from '../policy/policy-diff.js';
import type { CliHelpers } from './instance-commands.js';
import { registerPolicyStoreCommands } from './policy-store-commands.js';

const DEFAULT_LIMITS = { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900 };

class UsageError extends Error {}

function limitsOf(config?: AppConfig) {
  return config ? { agentTokenMaxTtl: parseDuration(config.tokens.agentTokenMaxTtl), accessTokenMaxTtl: parseDuration(config.tokens.accessTokenMaxTtl) } : DEFAULT_LIMITS;
}

/** A config file (v1 rules and/or v2 documents), or a file / directory of v2 documents. */
function engineFor(path: string, env: NodeJS.ProcessEnv, extra: LoadedDocument[] = []): PolicyEngine {
  if (!existsSync(path)) throw new UsageError(`${path}: no such file or directory`);
  const isConfig = statSync(path).isFile() && !String(readFileSync(path, 'utf8')).match(/^apiVersion:/m);
  if (isConfig) {
    const config = loadConfigFile(path, env);
    return createPolicyEngine(config.policy, { ...limitsOf(config), documents: extra });
  }
  const r = readPolicyPath(path);
  if (r.problems.length) throw new ConfigError(r.problems);
  return createPolicyEngine({ rules: [] }, { ...DEFAULT_LIMITS, documents: [...r.documents, ...extra] });
}

/** JSON or YAML text, or a file holding it. */
function readValue<T>(what: string, text: string, schema: z.ZodType<T>): T {
  let raw: unknown;
  try {
    raw = parseYamlText(existsSync(text) ? readFileSync(text, 'utf8') : text);
  } catch (e) {
    throw new UsageError(`${what}: not JSON/YAML (${(e as Error).message.split('\n')[0]})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new UsageError(`${what}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** `agent-sts policy evaluate|test|diff` (offline, no database) and `put|rm|status` (the store). */
export function registerPolicyCommands(program: Command, h: CliHelpers) {
  const policy = program.command('policy').description('policy tools: evaluate|test|diff offline (no database); put|rm|status on the store');
  registerPolicyStoreCommands(policy, h);
  const run = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      if (e instanceof ConfigError) {
        h.say(`agent-sts: the policy is invalid (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}):`);
        for (const p of e.problems) h.say(`  - ${p}`);
        process.exitCode = 2;
      } else if (e instanceof UsageError) {
        h.say(`agent-sts: ${e.message}`);
        process.exitCode = 2;
      } else throw e;
    }
  };

  policy
    .command('evaluate')
    .description('decide one request and explain it: every rule considered, matched or not, and why')
    .addOption(h.configOption())
    .requiredOption('--identity <json|file>', 'e.g. \'{"workload":{"provider":"dev","subject":"dev://team-a/bot","attributes":{}},"human":{"issuer":"https://idp","subject":"alice","groups":["sre"]},"actors":[]}\'')
    .requiredOption('--request <json|file>', 'e.g. \'{"target":"api","scopes":["read"],"lifetime":"5m"}\' or \'{"agentToken":true}\'')
    .option('--env <json>', 'when and from where, e.g. \'{"now":"2026-03-03T10:00:00Z","clientAddress":"10.0.0.7"}\' (default: now, no address)')
    .option('--policies <path>', 'also load the v2 documents of this file or directory')
    .option('--json', 'print the explanation as JSON')
    .action((o: { config?: string; identity: string; request: string; env?: string; policies?: string; json?: boolean }) =>
      run(() => {
        const extra = o.policies ? readPolicyPath(o.policies) : { documents: [], problems: [] };
        if (extra.problems.length) throw new ConfigError(extra.problems);
        const engine = engineFor(o.config ?? h.env.AGENT_STS_CONFIG ?? 'agent-sts.yaml', h.env, extra.documents);
        const id = toIdentity(readValue('--identity', o.identity, IdentityInputSchema));
        const req = toRequest(readValue('--request', o.request, RequestInputSchema));
        const e = engine.explain(id, req, toEnv(o.env ? readValue('--env', o.env, EnvInputSchema) : undefined));
        if (o.json) console.log(JSON.stringify(e, null, 2));
        else for (const line of formatExplanation(e)) console.log(line);
        if (!e.decision.allow) process.exitCode = 1;
      }),
    );

  policy
    .command('test')
    .description('run the *.test.yaml cases of a directory against its policies (and the config\'s, with --config); exit 1 on any failure')
    .argument('<dir>')
    .option('-c, --config <file>', 'also load the policies of this configuration file')
    .action((dir: string, o: { config?: string }) =>
      run(() => {
        const docs = readPolicyPath(dir);
        if (docs.problems.length) throw new ConfigError(docs.problems);
        const engine = o.config ? engineFor(o.config, h.env, docs.documents) : createPolicyEngine({ rules: [] }, { ...DEFAULT_LIMITS, documents: docs.documents });
        const files = caseFilesIn(dir);
        if (!files.length) throw new UsageError(`${dir}: no *.test.yaml files`);
        let results;
        try {
          results = runPolicyCases(engine, files);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        for (const r of results) {
          console.log(`${r.passed ? 'PASS' : 'FAIL'} ${r.name} (${r.file})`);
          if (r.passed) continue;
          for (const f of r.failures) console.log(`     ${f}`);
          for (const line of formatExplanation(r.explanation)) console.log(`     ${line}`);
        }
        const failed = results.filter((r) => !r.passed).length;
        console.log(`${results.length - failed} passed, ${failed} failed (policy version ${engine.version})`);
        if (failed) process.exitCode = 1;
      }),
    );

  policy
    .command('diff')
    .description('list which identities gain or lose which targets, scopes and lifetimes (config files, v2 files or directories)')
    .argument('<old>')
    .argument('<new>')
    .action((before: string, after: string) =>
      run(() => {
        const lines = diffPolicies(engineFor(before, h.env).model, engineFor(after, h.env).model);
        for (const l of lines) console.log(l);
        console.log(lines.length ? `${lines.length} change(s)` : 'no change in what is granted');
      }),
    );
}
