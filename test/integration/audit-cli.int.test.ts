// `agent-sts audit …` as a subprocess against a temp dev config and SQLite store holding two
// chains written through the real write path (with signed checkpoints): fingerprint from standard
// input, export to a file with a final summary, archive without and with --prune, verify --json
// and verify --archive, and the CLI's own reads and prune in the log under `cli:<OS user>`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase } from '../../src/storage/prisma-client.js';
import { credentialFingerprint } from '../../src/lib/crypto.js';
import type { AuditLog } from '../../src/audit/audit-log.js';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { fillAuditLog, testKeyStore } from '../support/audit-fixture.js';

const PER_WRITER = 1500;
const kek = randomBytes(32);
const cliEnv = { AGENT_STS_KEK: kek.toString('base64') };
const me = `cli:${userInfo().username}`;

describe('agent-sts audit (CLI)', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  let url: string;
  let logs: AuditLog[];
  const base = Date.parse('2025-03-01T00:00:00.000Z');
  let t = base;
  const cli = (args: string[], input?: string) => runAgentSts(['audit', ...args, '--config', config], { cwd: dir, env: cliEnv, input });
  const withDb = async <T>(fn: (db: Awaited<ReturnType<typeof openDatabase>>['db']) => Promise<T>): Promise<T> => {
    const d = await openDatabase(url);
    try {
      return await fn(d.db);
    } finally {
      await d.close();
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-audit-cli-'));
    config = writeDevConfig(dir);
    url = `file:${join(dir, 'data', 'agent-sts.db')}`;
    await applyMigrations(url);
    const a = await openDatabase(url);
    const b = await openDatabase(url);
    try {
      // One second per batch, in the past (an archive cutoff must be).
      const clock = { now: () => new Date((t += 1000)) };
      await testKeyStore(a, { kek, clock: { now: () => new Date(base - 1000) } });
      const keys = await testKeyStore(a, { kek }); // loads the key created above
      logs = await fillAuditLog([a, b], { perWriter: PER_WRITER, concurrency: 8, keys, clock, checkpointEveryRecords: 500 });
    } finally {
      await a.close();
      await b.close();
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fingerprint: reads the token from standard input, prints what the broker stores, never the token', async () => {
    const token = `eyJhbGciOiJFUzI1NiJ9.${randomBytes(24).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    const r = await runAgentSts(['audit', 'fingerprint'], { cwd: dir, input: `${token}\n` });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toBe(`${credentialFingerprint(token)}\n`);
    expect(r.stderr).toContain(`agent-sts audit query --fingerprint ${credentialFingerprint(token)}`);
    expect(r.stdout + r.stderr).not.toContain(token.split('.')[2]);
    // A JWT with a jti (agent-sts signs its own so): `jwt:<jti>:sha256:<hex of header.payload>`, the form the broker stores for them.
    const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const jti = '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
    const own = `${b64({ alg: 'ES256', typ: 'at+jwt' })}.${b64({ jti, sub: 'test://a' })}.${randomBytes(64).toString('base64url')}`;
    const j = await runAgentSts(['audit', 'fingerprint'], { cwd: dir, input: own });
    expect(j.code, describeRun(j)).toBe(0);
    expect(j.stdout).toBe(`jwt:${jti}:${credentialFingerprint(own.slice(0, own.lastIndexOf('.')))}\n`);
    // ...and names the whole-token form: an upstream's JWT, or a record from before the signature was left out.
    expect(j.stderr).toContain(`jwt:${jti}:${credentialFingerprint(own)}`);
    expect(j.stdout + j.stderr).not.toContain(own.split('.')[2]);
    // A jwt: lookup also finds the record of a credential stored as sha256:<hex> (an upstream's JWT, or an older record).
    const stored = await withDb((db) => db.auditEvent.findFirstOrThrow({ where: { credentialFingerprint: { not: null } } }));
    const q = await cli(['query', '--fingerprint', `jwt:${jti}:${stored.credentialFingerprint!.slice('sha256:'.length).toUpperCase()}`]);
    expect(q.code, describeRun(q)).toBe(0);
    expect(q.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual([stored.id]);
    const two = await runAgentSts(['audit', 'fingerprint'], { cwd: dir, input: 'one-secret\ntwo-secret\n' });
    expect(two.code, describeRun(two)).toBe(2);
    expect(two.stdout).toBe('');
    expect(two.stderr).toContain('standard input holds more than one line');
    expect(two.stderr).not.toContain('-secret');
  });

  const jti2 = '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c';

  it('export to a file: every matching record, a final summary on stderr, an audit.read record', async () => {
    const out = join(dir, 'agent-7.jsonl');
    const r = await cli(['export', '--workload', 'test://agent-7', '--out', out]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toBe('');
    const expected = await withDb((db) => db.auditEvent.count({ where: { workloadSubject: 'test://agent-7' } }));
    expect(expected).toBeGreaterThan(10);
    const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { workloadSubject: string; time: string; task: unknown });
    expect(lines).toHaveLength(expected);
    expect(lines.every((l) => l.workloadSubject === 'test://agent-7' && 'task' in l)).toBe(true);
    expect(r.stderr).toMatch(new RegExp(`exported ${expected} record\\(s\\) to ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} in \\d+\\.\\d s`));
    expect(existsSync(`${out}.partial`)).toBe(false);
    // A raw token is not a fingerprint: refused (exit 2) without being echoed.
    const secret = randomBytes(30).toString('base64url');
    const bad = await cli(['export', '--fingerprint', secret]);
    expect(bad.code, describeRun(bad)).toBe(2);
    expect(bad.stderr).toMatch(/--fingerprint: must be sha256:<64 hex digits>/);
    expect(bad.stderr).not.toContain(secret);
    // A jwt: fingerprint with a jti that cannot stand in one, or a short digest: refused the same way.
    for (const fp of [`jwt:has space:sha256:${'a'.repeat(64)}`, `jwt:${jti2}:sha256:${'a'.repeat(63)}`, `jwt::sha256:${'a'.repeat(64)}`]) {
      const r = await cli(['query', '--fingerprint', fp]);
      expect(r.code, describeRun(r)).toBe(2);
      expect(r.stderr).toMatch(/--fingerprint: must be sha256:<64 hex digits> or jwt:<jti>:sha256:<64 hex digits>/);
    }
  });

  it('archive without --prune writes the file and deletes nothing; an existing file is never overwritten', async () => {
    const cutoff = new Date(base + 600_000).toISOString();
    const before = await withDb((db) => db.auditEvent.count());
    const older = await withDb((db) => db.auditEvent.count({ where: { time: { lt: new Date(cutoff) } } }));
    const out = join(dir, 'copy.jsonl');
    const r = await cli(['archive', '--before', cutoff, '--out', out]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(readFileSync(out, 'utf8').split('\n').filter(Boolean)).toHaveLength(older);
    expect(r.stderr).toContain(`wrote ${older} record(s) to ${out}, synced and read back`);
    expect(r.stderr).toContain('nothing was deleted (no --prune)');
    expect(await withDb((db) => db.auditEvent.count())).toBe(before + 1); // + this archive's audit.read
    const again = await cli(['archive', '--before', cutoff, '--out', out]);
    expect(again.code, describeRun(again)).toBe(1);
    expect(again.stderr).toContain('exists; archives are never overwritten');
    const future = await cli(['archive', '--before', '2999-01-01T00:00:00Z', '--out', join(dir, 'x.jsonl')]);
    expect(future.code).toBe(2);
  });

  it('archive --prune: records gone, chains start at signed archive checkpoints, verify and verify --archive OK', async () => {
    const cutoff = new Date(base + 900_000);
    const older = await withDb((db) => db.auditEvent.count({ where: { time: { lt: cutoff } } }));
    expect(older).toBeGreaterThan(100);
    const out = join(dir, 'archive-1.jsonl');
    const r = await cli(['archive', '--before', cutoff.toISOString(), '--out', out, '--prune']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stderr).toContain(`pruned ${older} record(s); 2 chain(s) now start at a signed archive checkpoint`);
    expect(await withDb((db) => db.auditEvent.count({ where: { time: { lt: cutoff } } }))).toBe(0);
    const cps = await withDb((db) => db.auditCheckpoint.findMany({ where: { kind: 'archive' } }));
    expect(new Set(cps.map((c) => c.chainId))).toEqual(new Set(logs.map((l) => l.chainId)));

    const v = await cli(['verify', '--json']);
    expect(v.code, describeRun(v)).toBe(0);
    const result = JSON.parse(v.stdout) as { ok: boolean; records: number; checkpoints: number; problems: unknown[]; chainSummaries: { chainId: string; prunedThrough: number; from: number; through: number }[] };
    expect(result).toMatchObject({ ok: true, problems: [] });
    expect(result.checkpoints).toBeGreaterThanOrEqual(2 * (PER_WRITER / 500) + 2);
    for (const l of logs) expect(result.chainSummaries.find((c) => c.chainId === l.chainId)).toMatchObject({ from: expect.any(Number), through: PER_WRITER });
    expect(result.chainSummaries.filter((c) => c.prunedThrough > 0).map((c) => c.chainId).sort()).toEqual(logs.map((l) => l.chainId).sort());
    expect(v.stderr).toContain(`audit log OK: ${result.records} records`);
    const va = await cli(['verify', '--archive', out]);
    expect(va.code, describeRun(va)).toBe(0);
    expect(va.stdout).toContain(`${out}: OK: ${older} records in 2 chain(s)`);
    expect(va.stdout.match(/start anchored, sealed by its archive checkpoint \(pruned\)/g)).toHaveLength(2);

    // The prune is an admin change in the log, by the CLI's user.
    const q = await cli(['query', '--action', 'admin.audit.prune']);
    expect(q.code, describeRun(q)).toBe(0);
    const prune = q.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { outcome: string; reason: string });
    expect(prune).toEqual([expect.objectContaining({ outcome: 'allow', reason: expect.stringMatching(new RegExp(`^by ${me}: pruned ${older} record\\(s\\) of 2 chain\\(s\\) before ${cutoff.toISOString().replace(/\./g, '\\.')} in archive-1\\.jsonl \\(sha256 [0-9a-f]{64}\\)$`)) })]);

    // An edited archive file no longer verifies.
    const lines = readFileSync(out, 'utf8').split('\n');
    lines[5] = lines[5]!.replace('"requestId":"req-', '"requestId":"REQ-');
    writeFileSync(join(dir, 'edited.jsonl'), lines.join('\n'));
    const ve = await cli(['verify', '--archive', join(dir, 'edited.jsonl')]);
    expect(ve.code, describeRun(ve)).toBe(1);
    expect(ve.stdout).toMatch(/record \d+ \(line 6\): record content does not match its hash: edited/);
  });

  it('the CLI\'s reads are in the log as audit.read by cli:<OS user>', async () => {
    const r = await cli(['query', '--action', 'audit.read', '--all']);
    expect(r.code, describeRun(r)).toBe(0);
    const reasons = r.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { reason: string }).reason);
    expect(reasons).toContain(`by ${me}: export workload=test://agent-7, oldest first to agent-7.jsonl; ~${reasons.length ? reasons.find((x) => x.includes('agent-7'))!.match(/~(\d+)/)![1] : 0} record(s)`);
    expect(reasons.some((x) => x.startsWith(`by ${me}: archive `) && x.includes('copy.jsonl'))).toBe(true);
    expect(reasons.some((x) => x.startsWith(`by ${me}: query action=admin.audit.prune; 1 record(s)`))).toBe(true);
  });
});
