import { randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { userInfo } from 'node:os';
import { basename } from 'node:path';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { z } from 'zod';
import type { openCore } from '../compose.js';
import { createAuditLog } from '../audit/audit-log.js';
import { verifyAuditLog, type VerifyResult } from '../audit/audit-verify.js';
import { ArchiveRefused, planArchive, pruneArchived, verifyArchiveFile, writeArchive } from '../audit/audit-archive.js';
import { auditPages, AuditExportSchema, AuditQuerySchema, countAudit, describeFilters, queryAudit, withLinks } from '../audit/audit-query.js';
import { jtiOf, legacyJwtFingerprint, presentedTokenFingerprint } from '../lib/crypto.js';
import { auditedWrite } from '../lib/instance-admin.js';
import type { CliHelpers } from './instance-commands.js';

type Core = Awaited<ReturnType<typeof openCore>>;
type Opts = Record<string, string | boolean | undefined>;

const cliPrincipal = () => `cli:${userInfo().username}`;

/** Progress on stderr while it is a terminal (at most 5 updates a second); `end()` finishes the line. */
function progress(label: string) {
  const tty = Boolean(process.stderr.isTTY);
  let last = 0;
  let shown = false;
  return {
    update(done: number, total: number) {
      if (!tty || Date.now() - last < 200) return;
      last = Date.now();
      shown = true;
      process.stderr.write(`\r${label} ${done.toLocaleString('en')}/${total.toLocaleString('en')} records`);
    },
    end() {
      if (shown) process.stderr.write('\n');
    },
  };
}

const filterOptions = (c: Command) =>
  c
    .option('--workload <subject>', 'workload subject')
    .option('--human <subject>', 'human subject')
    .option('--target <name>', 'target')
    .option('--issuer <name>', 'credential issuer instance')
    .option('--outcome <outcome>', 'allow | deny | error | success | failure')
    .option('--action <action>', 'e.g. token.exchange, task.end, admin.policy.put, audit.read')
    .option('--policy-version <version>', 'policy set version that decided')
    .option('--task <id>', 'task id')
    .option('--fingerprint <fp>', 'credential fingerprint (sha256:… or jwt:<jti>:sha256:…; see `agent-sts audit fingerprint`)')
    .option('--since <time>', 'from this time (inclusive, ISO 8601)')
    .option('--until <time>', 'before this time (exclusive)');

/** Parses CLI filters with the HTTP API's schema; exits 2 naming the option. */
function parseOrExit<T>(schema: z.ZodType<T>, o: Opts, h: CliHelpers): T | undefined {
  const { config: _c, all: _a, out: _o, json: _j, ...rest } = o;
  const q = schema.safeParse(Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)));
  if (q.success) return q.data;
  h.say(`agent-sts: ${q.error.issues.map((i) => `--${String(i.path[0] ?? '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${i.message}`).join('; ')}`);
  process.exitCode = 2;
  return undefined;
}

/** An `audit.read` record for a read made through the CLI (principal `cli:<OS user>`), like the HTTP API's. */
async function recordRead(core: Core, what: string): Promise<void> {
  const log = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
  await log.append({ event: { requestId: `cli-${randomUUID()}`, action: 'audit.read', outcome: 'success', reason: `by ${cliPrincipal()}: ${what}` } });
  await log.close();
}

function printVerify(r: VerifyResult, json: boolean, say: (l: string) => void): void {
  if (json) console.log(JSON.stringify(r));
  else if (r.ok)
    console.log(`audit log OK: ${r.records} records in ${r.chains} chain(s), every link verified${r.checkpoints ? `, ${r.checkpoints} signed checkpoint(s) match` : ''}`);
  else {
    console.log(`audit log BROKEN: ${r.problems.length} problem(s) in ${r.records} records`);
    for (const p of r.problems) console.log(`  chain ${p.chainId}${p.seq !== undefined ? ` record ${p.seq}` : ''}${p.id ? ` (id ${p.id})` : ''}: ${p.problem}`);
  }
  if (!r.ok) say('Each chain shows its first broken link. Restore the records from a backup or an archive; `agent-sts audit query` shows the records around it.');
  else if (json) say(`audit log OK: ${r.records} records in ${r.chains} chain(s)`);
}

/** Writes to a file (`<file>.partial` first, renamed when complete) or to stdout. */
function outputTo(file: string | undefined): { out: Writable; done(): Promise<void>; abort(): void } {
  if (!file) return { out: process.stdout, done: async () => {}, abort: () => {} };
  const partial = `${file}.partial`;
  const out = createWriteStream(partial, { flags: 'w' });
  return {
    out,
    async done() {
      out.end();
      await once(out, 'finish');
      renameSync(partial, file);
    },
    abort() {
      out.destroy();
      rmSync(partial, { force: true });
    },
  };
}

/**
 * `agent-sts audit verify|query|export|archive|fingerprint`: the issuance log from the command line,
 * beside a running server (same store). Reads are audited (`audit.read`, principal `cli:<OS user>`)
 * like the HTTP API's; a prune is an admin change (`admin.audit.prune`).
 */
export function registerAuditCommands(program: Command, h: CliHelpers): void {
  const audit = program.command('audit').description('issuance log: verify, query, export, archive');

  audit
    .command('verify')
    .description('check the hash chains and signed checkpoints of the issuance log (exit 1 if broken), or an archive file with --archive')
    .option('--json', 'the result as one JSON object')
    .option('--chain <id>', 'only this chain')
    .option('--archive <file>', 'verify an archive file (agent-sts audit archive) against the signed checkpoints instead')
    .addOption(h.configOption())
    .action((o: { config?: string; json?: boolean; chain?: string; archive?: string }) =>
      h.withCore(o.config, async (core) => {
        if (o.archive) {
          if (!existsSync(o.archive)) {
            h.say(`agent-sts: ${o.archive}: no such file (give the file \`agent-sts audit archive --out\` wrote)`);
            process.exitCode = 2;
            return;
          }
          const r = await verifyArchiveFile(core.database.db, o.archive);
          if (o.json) console.log(JSON.stringify(r));
          else {
            console.log(`${o.archive}: ${r.ok ? 'OK' : 'BROKEN'}: ${r.records} records in ${r.chains.length} chain(s)`);
            for (const c of r.chains)
              console.log(`  chain ${c.chainId} records ${c.from}..${c.through}: ${c.startAnchored ? 'start anchored' : 'start NOT anchored'}, ${c.sealed ? 'sealed by its archive checkpoint (pruned)' : 'no archive checkpoint (not pruned)'}, ${c.checkpointsMatched} checkpoint(s) matched`);
            for (const p of r.problems) console.log(`  ${p}`);
          }
          if (!r.ok) process.exitCode = 1;
          return;
        }
        const bar = progress('verifying');
        const started = Date.now();
        const r = await verifyAuditLog(core.database.db, { chainId: o.chain, onProgress: bar.update });
        bar.end();
        printVerify(r, Boolean(o.json), h.say);
        if (!process.stderr.isTTY && r.records > 10_000) h.say(`verified ${r.records} records in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        if (!r.ok) process.exitCode = 1;
      }),
    );

  filterOptions(audit.command('query').description('query the issuance log (JSON lines, newest first; each record with its task and credential as they are now)'))
    .option('--limit <n>', 'records per page', '100')
    .option('--all', 'follow the cursor to the end')
    .addOption(h.configOption())
    .action((o: Opts) => {
      const q = parseOrExit(AuditQuerySchema, o, h);
      if (!q) return;
      return h.withCore(o.config as string | undefined, async (core) => {
        const db = core.database.db;
        // Recorded before anything is printed, as the HTTP API does before it answers.
        let page = await queryAudit(db, q);
        await recordRead(core, o.all ? `query ${describeFilters(q)}, every page` : `query ${describeFilters(q)}; ${page.records.length} record(s)`);
        for (;;) {
          for (const r of await withLinks(db, page.records, core.clock.now())) console.log(JSON.stringify(r));
          if (!o.all || !page.nextCursor) break;
          page = await queryAudit(db, { ...q, cursor: page.nextCursor });
        }
      });
    });

  filterOptions(audit.command('export').description('export matching records as JSON lines (oldest first), streamed page by page'))
    .option('--order <order>', 'asc (oldest first) or desc', 'asc')
    .option('--out <file>', 'write to this file (default: standard output)')
    .addOption(h.configOption())
    .action((o: Opts) => {
      const q = parseOrExit(AuditExportSchema, o, h);
      if (!q) return;
      return h.withCore(o.config as string | undefined, async (core) => {
        const { order, ...filter } = q;
        const db = core.database.db;
        const started = Date.now();
        const total = await countAudit(db, filter);
        await recordRead(core, `export ${describeFilters(filter)}, ${order === 'asc' ? 'oldest' : 'newest'} first${o.out ? ` to ${basename(String(o.out))}` : ''}; ~${total} record(s)`);
        const target = outputTo(o.out as string | undefined);
        const bar = progress('exported');
        let done = 0;
        try {
          for await (const rows of auditPages(db, filter, { order })) {
            const chunk = (await withLinks(db, rows, core.clock.now())).map((r) => `${JSON.stringify(r)}\n`).join('');
            if (!target.out.write(chunk)) await once(target.out, 'drain');
            done += rows.length;
            bar.update(done, Math.max(total, done));
          }
          await target.done();
        } catch (e) {
          target.abort();
          throw e;
        } finally {
          bar.end();
        }
        h.say(`exported ${done} record(s)${o.out ? ` to ${String(o.out)}` : ''} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      });
    });

  audit
    .command('archive')
    .description('export records older than --before to a JSON-lines file (per chain, up to a record boundary); with --prune delete them afterwards, under signed archive checkpoints')
    .requiredOption('--before <time>', 'cutoff (ISO 8601); records at or after it stay')
    .requiredOption('--out <file>', 'archive file (never overwritten)')
    .option('--prune', 'delete the archived records once the file is written, synced and read back')
    .addOption(h.configOption())
    .action((o: { before: string; out: string; prune?: boolean; config?: string }) => {
      const before = z.coerce.date().safeParse(o.before);
      if (!before.success || before.data.getTime() > Date.now()) {
        h.say('agent-sts: --before must be a time in the past (ISO 8601, e.g. 2026-01-01T00:00:00Z)');
        process.exitCode = 2;
        return;
      }
      return h.withCore(o.config, async (core) => {
        const db = core.database.db;
        if (o.prune) {
          await core.keyStore.reload();
          if (!core.keyStore.isReady()) throw new Error('no signing key is active to sign the archive checkpoints; start the server once (it creates one) or run `agent-sts keys rotate`');
        }
        const plan = await planArchive(db, before.data);
        if (!plan.records) {
          h.say(`nothing to archive: no record older than ${before.data.toISOString()}`);
          return;
        }
        h.say(`archiving ${plan.records} record(s) of ${plan.chains.length} chain(s) older than ${before.data.toISOString()} to ${o.out}`);
        const log = createAuditLog({ batch: core.database.batch, clock: core.clock, logger: core.logger });
        const requestId = `cli-${randomUUID()}`;
        const cutoff = before.data.toISOString();
        try {
          if (!o.prune)
            await log.append({ event: { requestId, action: 'audit.read', outcome: 'success', reason: `by ${cliPrincipal()}: archive ${plan.records} record(s) of ${plan.chains.length} chain(s) before ${cutoff} to ${basename(o.out)}` } });
          const bar = progress('archived');
          let written;
          try {
            written = await writeArchive(db, plan, o.out, bar.update);
          } finally {
            bar.end();
          }
          const summary = `${written.records} record(s) of ${written.chains.length} chain(s) before ${cutoff} in ${basename(o.out)} (sha256 ${written.sha256})`;
          h.say(`wrote ${written.records} record(s) to ${o.out}, synced and read back (sha256 ${written.sha256})`);
          if (!o.prune) {
            h.say('nothing was deleted (no --prune)');
            return;
          }
          const pruneBar = progress('pruned');
          let pruned: Awaited<ReturnType<typeof pruneArchived>> | undefined;
          try {
            await auditedWrite(log, { requestId, action: 'admin.audit.prune' }, cliPrincipal(), `: pruned ${summary}`, async () => {
              pruned = await pruneArchived(db, written, { signer: core.keyStore.signer, clock: core.clock, onProgress: pruneBar.update });
            });
          } finally {
            pruneBar.end();
          }
          h.say(`pruned ${pruned!.deleted} record(s); ${written.chains.length} chain(s) now start at a signed archive checkpoint. Keep ${o.out}: \`agent-sts audit verify --archive ${o.out}\` checks it`);
        } catch (e) {
          if (!(e instanceof ArchiveRefused)) throw e;
          h.say(`agent-sts: ${e.message}`);
          process.exitCode = 1;
        } finally {
          await log.close();
        }
      });
    });

  audit
    .command('fingerprint')
    .description('print the fingerprint the broker stores for a credential, reading the token (the `access_token` value) from standard input; the token is never printed')
    .action(() => {
      if (process.stdin.isTTY) h.say('paste the token, then press Enter and Ctrl-D');
      const token = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      if (!token || /[\r\n]/.test(token)) {
        h.say(`agent-sts: ${token ? 'standard input holds more than one line: give one token' : 'no token on standard input'}, e.g. \`pbpaste | agent-sts audit fingerprint\``);
        process.exitCode = 2;
        return;
      }
      const fp = presentedTokenFingerprint(token);
      console.log(fp);
      h.say(`look it up: agent-sts audit query --fingerprint ${fp}   (or GET /v1/audit?fingerprint=${fp})`);
      const jti = jtiOf(token);
      // A JWT from elsewhere (an opaque credential to agent-sts), or one of agent-sts's own from before its fingerprint left the signature out.
      if (jti !== undefined) h.say(`nothing found? records of a JWT another issuer minted, and of agent-sts's own JWTs written before this version, hold ${legacyJwtFingerprint(token, jti)}`);
    });
}
