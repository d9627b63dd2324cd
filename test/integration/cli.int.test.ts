// The real `agent-sts` CLI, run as a subprocess (node + tsx on src/cli/main.ts) in a temp working
// directory: config check, migrate, keys rotate/list, dev token and the audit commands against a
// SQLite database in the temp directory.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { parse as parseYamlText } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../../src/audit/audit-log.js';
import type { AuditEventInput, AuditRow } from '../../src/audit/audit-event.js';
import type { Clock } from '../../src/lib/clock.js';
import { createLogger } from '../../src/log/logger.js';
import { applyMigrations } from '../../src/storage/migrate.js';
import { DEV_CONFIG, describeRun, ROOT, runAgentSts, writeDevConfig } from '../support/cli.js';
import { openDatabase } from '../../src/storage/prisma-client.js';

const KID = '\\d{4}-\\d{2}-\\d{2}-[0-9a-f]{8}';
const ISO = '\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z';

const tempDirs: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `${prefix}-`));
  tempDirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

describe('agent-sts config check', { timeout: 60_000 }, () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('agsts-cli-config');
  });

  it('accepts the example dev config and prints a summary', async () => {
    const raw = parseYamlText(readFileSync(DEV_CONFIG, 'utf8')) as Record<string, unknown[] | { rules: unknown[] }>;
    const n = (k: string) => (raw[k] as unknown[]).length;
    const r = await runAgentSts(['config', 'check', DEV_CONFIG], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      `${DEV_CONFIG}: OK (${n('trustProviders')} trust providers, ${n('credentialIssuers')} credential issuers, ${n('targets')} targets, ${(raw.policy as { rules: unknown[] }).rules.length} policy rules)`,
      expect.stringMatching(/^telemetry: off \(set OTEL_EXPORTER_OTLP_ENDPOINT/),
    ]);
    expect(r.stderr).toBe('');
  });

  it('checks the OpenTelemetry environment as serve would: where telemetry goes, or exit 2 naming the bad variable', async () => {
    const on = await runAgentSts(['config', 'check', DEV_CONFIG], { cwd: dir, env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector.example:4318', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' } });
    expect(on.code, describeRun(on)).toBe(0);
    expect(on.stdout).toMatch(/^telemetry: traces to OTLP http:\/\/collector\.example:4318\/v1\/traces .*metrics to OTLP http:\/\/collector\.example:4318\/v1\/metrics/m);
    const bad = await runAgentSts(['config', 'check', DEV_CONFIG], { cwd: dir, env: { OTEL_TRACES_EXPORTER: 'zipkin', OTEL_METRIC_EXPORT_INTERVAL: 'soon' } });
    expect(bad.code, describeRun(bad)).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/the OpenTelemetry environment is invalid \(2 problems\)/);
    expect(bad.stderr).toMatch(/OTEL_TRACES_EXPORTER: unknown exporter "zipkin"/);
    expect(bad.stderr).toMatch(/OTEL_METRIC_EXPORT_INTERVAL: "soon"/);
  });

  // Cross-reference problems (only found after the schema itself validated).
  const semanticProblems = (file: string) => [
    `${file}: trustProviders[1] (legacy).type: unknown type "no-such-plugin" (known: `,
    `${file}: policy.rules[0] (x).workload.attributes: a github-actions rule must pin repository_id or repository_owner_id (names can be recycled)`,
    `${file}: policy.rules[0] (x).grants[0].target: no target named "payments-api"`,
    `${file}: policy.rules[1] (y).grants[1].target: no target named "nope"`,
  ];
  const badConfig = (extraTopLevel: string) => `${extraTopLevel}keys:
  kek: { insecureValue: "${randomBytes(32).toString('base64')}" }
trustProviders:
  - name: gh
    type: github-actions
    config: { audience: sts }
  - name: legacy
    type: no-such-plugin
credentialIssuers:
  - name: internal
    type: agent-sts-jwt
targets:
  - name: api
    audiences: [api]
    issuer: internal
policy:
  rules:
    - id: x
      workload: { provider: gh, attributes: { repository: org/repo } }
      grants:
        - target: payments-api
    - id: y
      workload: { subject: "dev://y" }
      grants:
        - target: api
        - target: nope
`;

  it('reports every cross-reference problem with its path and exits 2', async () => {
    const file = join(dir, 'semantic.yaml');
    writeFileSync(file, badConfig(''));
    const r = await runAgentSts(['config', 'check', file], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('the configuration is invalid (4 problems):');
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('  - ')).map((l) => l.slice(4));
    expect(lines).toHaveLength(4);
    for (const p of semanticProblems(file)) expect(lines.some((l) => l.startsWith(p)), `missing: ${p}\n${r.stderr}`).toBe(true);
    expect(r.stderr).toContain('oidc');
  });

  it('reports a misspelled top-level key with its path and exits 2', async () => {
    const file = join(dir, 'misspelled.yaml');
    writeFileSync(file, badConfig('loging:\n  level: debug\n'));
    const r = await runAgentSts(['config', 'check', file], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stderr).toContain(`  - ${file}: (root): Unrecognized key: "loging"`);
  });

  it('reports a misspelled top-level key AND every other problem of the same file in one run', async () => {
    const file = join(dir, 'misspelled-and-more.yaml');
    writeFileSync(file, badConfig('loging:\n  level: debug\n'));
    const r = await runAgentSts(['config', 'check', file], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stderr).toContain(`  - ${file}: (root): Unrecognized key: "loging"`);
    for (const p of semanticProblems(file)) expect(r.stderr, `missing: ${p}`).toContain(p);
  });

  it('reports a YAML syntax error with file:line:col and exits 2', async () => {
    const file = join(dir, 'syntax.yaml');
    writeFileSync(file, 'keys:\n  kek: { insecureValue: "x" }\nserver:\n  host: 127.0.0.1\n  port: 8787\n  bad key: : x\n');
    const r = await runAgentSts(['config', 'check', file], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^  - ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6:12: \\S.*$`, 'm'));
  });
});

// The tests of this block run in order on one database: migrate, then rotate, then list.
describe('agent-sts migrate, keys and dev token on a temp config', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let firstKid: string;
  let newKid: string;
  let activation: string;
  let publishedUntil: string;

  beforeAll(() => {
    dir = tempDir('agsts-cli-keys');
    config = writeDevConfig(dir);
  });

  it('migrate applies every migration, then says the storage is up to date', async () => {
    const migrations = readdirSync(join(ROOT, 'prisma', 'migrations', 'sqlite'), { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
    expect(migrations.length).toBeGreaterThan(0);
    const first = await runAgentSts(['migrate', '--config', config], { cwd: dir });
    expect(first.code, describeRun(first)).toBe(0);
    expect(first.stderr).toContain(`applied: ${migrations.join(', ')}`);
    expect(first.stderr).not.toContain('storage is up to date');

    const second = await runAgentSts(['migrate', '--config', config], { cwd: dir });
    expect(second.code, describeRun(second)).toBe(0);
    expect(second.stderr).toContain('storage is up to date');
    expect(second.stderr).not.toContain('applied:');
  });

  it('keys rotate creates the first key, publishes a new one and prints its kid and activation time', async () => {
    const before = Date.now();
    const r = await runAgentSts(['keys', 'rotate', '-c', config], { cwd: dir });
    const after = Date.now();
    expect(r.code, describeRun(r)).toBe(0);
    const m = new RegExp(`^new key (${KID}) is published now and starts signing at (${ISO})$`, 'm').exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    newKid = m![1]!;
    activation = m![2]!;
    // keys.publishAhead is 10m in the dev config.
    const at = Date.parse(activation);
    expect(at).toBeGreaterThanOrEqual(before + 600_000);
    expect(at).toBeLessThanOrEqual(after + 600_000);
    const prev = new RegExp(`^key (${KID}) signs until then and stays published until (${ISO})$`, 'm').exec(r.stdout);
    expect(prev, r.stdout).not.toBeNull();
    firstKid = prev![1]!;
    publishedUntil = prev![2]!;
    expect(firstKid).not.toBe(newKid);
    // max(agentTokenMaxTtl 1h, accessTokenMaxTtl 15m) + clockTolerance 60s after activation.
    expect(Date.parse(publishedUntil) - at).toBe((3600 + 60) * 1000);
  });

  it('keys list shows both keys with their windows; a second rotate is refused while one is pending', async () => {
    expect(newKid).toBeDefined();
    const r = await runAgentSts(['keys', 'list', '-c', config], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(0);
    const keyLines = r.stdout.split('\n').filter((l) => new RegExp(`^${KID}  signs from `).test(l));
    expect(keyLines).toHaveLength(2);
    expect(keyLines[0]).toMatch(new RegExp(`^${firstKid}  signs from ${ISO} until ${activation}, published until ${publishedUntil}$`));
    expect(keyLines[1]).toBe(`${newKid}  signs from ${activation}`);

    const again = await runAgentSts(['keys', 'rotate', '-c', config], { cwd: dir });
    expect(again.code, describeRun(again)).toBe(1);
    expect(again.stderr).toContain(`a rotation is already in progress: key ${newKid} starts signing at ${activation}`);
    const list2 = await runAgentSts(['keys', 'list', '-c', config], { cwd: dir });
    expect(list2.stdout.split('\n').filter((l) => new RegExp(`^${KID}  signs from `).test(l))).toHaveLength(2);
  });

  it('dev token prints a JWT from the development issuer for the dev audience', async () => {
    const r = await runAgentSts(['dev', 'token', '--config', config, '--sub', 'x', '--claims', '{"team":"payments"}'], { cwd: dir });
    expect(r.code, describeRun(r)).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const jwks = JSON.parse(readFileSync(join(dir, 'data', 'dev-issuer', 'jwks.json'), 'utf8')) as JSONWebKeySet;
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
      issuer: 'https://dev-issuer.agent-sts.invalid',
      audience: 'agent-sts-dev',
    });
    expect(payload.sub).toBe('x');
    expect(payload.team).toBe('payments');
    expect(payload.exp! - payload.iat!).toBe(600);
    expect(protectedHeader.kid).toBe(jwks.keys[0]!.kid);
    expect(decodeProtectedHeader(token).alg).toBe('ES256');
  });

  it('dev token refuses --claims that are not a JSON object, with exit 2 and a hint', async () => {
    for (const claims of ['[1]', '{not json', 'null']) {
      const r = await runAgentSts(['dev', 'token', '-c', config, '--sub', 'x', '--claims', claims], { cwd: dir });
      expect(r.code, describeRun(r)).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`--claims must be a JSON object, e.g. '{"team":"payments"}'`);
    }
  });
});

describe('agent-sts audit verify and query', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let dbPath: string;
  const cliEnv = { AGENT_STS_KEK: randomBytes(32).toString('base64') };
  const chainA: AuditRow[] = [];
  const chainB: AuditRow[] = [];
  let chainIdA: string;
  let chainIdB: string;

  const audit = (args: string[]) => runAgentSts(['audit', ...args, '--config', config], { cwd: dir, env: cliEnv });
  const withSqlite = <T>(fn: (db: Database.Database) => T): T => {
    const db = new Database(dbPath);
    try {
      return fn(db);
    } finally {
      db.close();
    }
  };
  const expectOk = async () => {
    const r = await audit(['verify']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim()).toBe('audit log OK: 7 records in 2 chain(s), every link verified');
  };

  beforeAll(async () => {
    dir = tempDir('agsts-cli-audit');
    config = writeDevConfig(dir);
    dbPath = join(dir, 'data', 'agent-sts.db');
    const url = `file:${dbPath}`;
    await applyMigrations(url);
    const database = await openDatabase(url);
    try {
      let t = Date.parse('2030-06-01T12:00:00.000Z');
      const clock: Clock = { now: () => new Date(t) };
      const logger = createLogger({ level: 'silent' });
      const ev = (outcome: AuditEventInput['outcome'], extra: Partial<AuditEventInput> = {}): AuditEventInput => ({
        requestId: `req-${randomBytes(4).toString('hex')}`,
        action: 'token.exchange',
        outcome,
        providerName: 'dev',
        workloadSubject: 'dev://agent-1',
        target: 'billing-api',
        ...extra,
      });
      // Two chains (two writer processes), one record per second, written one at a time.
      const a = createAuditLog({ batch: database.batch, clock, logger });
      for (const e of [ev('allow'), ev('deny', { reason: 'no policy rule matches' }), ev('allow'), ev('success', { action: 'task.end' })]) {
        t += 1000;
        chainA.push(await a.append({ event: e }));
      }
      await a.drain();
      const b = createAuditLog({ batch: database.batch, clock, logger });
      for (const e of [ev('allow', { workloadSubject: 'dev://agent-2' }), ev('error', { reason: 'upstream down' }), ev('allow', { workloadSubject: 'dev://agent-2' })]) {
        t += 1000;
        chainB.push(await b.append({ event: e }));
      }
      await b.drain();
      chainIdA = a.chainId;
      chainIdB = b.chainId;
    } finally {
      await database.close();
    }
    expect(chainIdA).not.toBe(chainIdB);
    expect(chainA.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  it('audit verify accepts an untouched log', async () => {
    await expectOk();
  });

  it('audit verify finds an edited record: exit 1, naming the chain, the record number and "edited"', async () => {
    const target = chainA[1]!;
    expect(target.outcome).toBe('deny');
    withSqlite((db) => db.prepare('UPDATE "AuditEvent" SET "outcome" = ? WHERE "id" = ?').run('allow', target.id));
    try {
      const r = await audit(['verify']);
      expect(r.code, describeRun(r)).toBe(1);
      expect(r.stdout).toContain('audit log BROKEN: 1 problem(s) in 7 records');
      expect(r.stdout).toContain(`chain ${chainIdA} record 2 (id ${target.id}): record content does not match its hash: edited`);
      expect(r.stdout).not.toContain(chainIdB);
    } finally {
      withSqlite((db) => db.prepare('UPDATE "AuditEvent" SET "outcome" = ? WHERE "id" = ?').run('deny', target.id));
    }
    await expectOk();
  });

  it('audit verify notices a deleted last record (the chain head disagrees)', async () => {
    const last = chainA[3]!;
    const saved = withSqlite((db) => db.prepare('SELECT * FROM "AuditEvent" WHERE "id" = ?').get(last.id) as Record<string, unknown>);
    expect(saved).toBeDefined();
    withSqlite((db) => db.prepare('DELETE FROM "AuditEvent" WHERE "id" = ?').run(last.id));
    try {
      const r = await audit(['verify']);
      expect(r.code, describeRun(r)).toBe(1);
      expect(r.stdout).toContain('audit log BROKEN: 1 problem(s) in 6 records');
      expect(r.stdout).toContain(`chain ${chainIdA} record 4: chain ends at record 3 but its head says 4: records were deleted from the end`);
      expect(r.stdout).not.toContain(chainIdB);
    } finally {
      withSqlite((db) => {
        const cols = Object.keys(saved);
        db.prepare(`INSERT INTO "AuditEvent" (${cols.map((c) => `"${c}"`).join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`).run(saved);
      });
    }
    await expectOk();
  });

  it('audit query --outcome allow --limit 2 prints the two newest matching records as JSON lines', async () => {
    const allows = [...chainA, ...chainB].filter((r) => r.outcome === 'allow').sort((x, y) => y.time.getTime() - x.time.getTime());
    expect(allows).toHaveLength(4);
    const r = await audit(['query', '--outcome', 'allow', '--limit', '2']);
    expect(r.code, describeRun(r)).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(2);
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((x) => x.id)).toEqual(allows.slice(0, 2).map((x) => x.id));
    for (const x of records) expect(x).toMatchObject({ outcome: 'allow', action: 'token.exchange', chainId: chainIdB });
    expect(records[0]).toMatchObject({ time: allows[0]!.time.toISOString(), hash: allows[0]!.hash, workloadSubject: 'dev://agent-2' });

    // --all follows the cursor through every page.
    const all = await audit(['query', '--outcome', 'allow', '--limit', '2', '--all']);
    expect(all.code, describeRun(all)).toBe(0);
    expect(all.stdout.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(allows.map((x) => x.id));
  });

  it('audit query rejects an unknown outcome with exit 2', async () => {
    const r = await audit(['query', '--outcome', 'maybe']);
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--outcome: /);
  });
});
