// `agent-sts issuers seal|add|list|disable|remove` as a subprocess against a temp dev config and
// SQLite store: a secret sealed by the CLI opens for its issuer only; an issuer file with
// {seal: …} is stored sealed; changes are audited with the OS user and never print the secret;
// grants of the policy the registered issuer would refuse are shown at add and in list.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { PG_ADMIN_URL } from '../support/databases.js';
import { secretResolverFor } from '../../src/config/secret-ref.js';

describe('agent-sts issuers', { timeout: 60_000 }, () => {
  let dir: string;
  let config: string;
  const run = (args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });
  const file = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };
  // The dev config generates its key-encryption key into the data directory.
  const kek = () => {
    const raw = readFileSync(join(dir, 'data', 'dev-kek'), 'utf8').trim();
    return Buffer.from(raw, 'base64');
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-issuers-'));
    // A target served by an issuer registered later, and a grant asking it for a role.
    config = writeDevConfig(dir, (doc) => {
      doc.addIn(['targets'], { name: 'ledger', audiences: ['ledger'], issuer: 'pg-ledger', issuerRegisteredAtRuntime: true, scopes: ['write'] });
      doc.setIn(['policy', 'documents'], [
        {
          apiVersion: 'agent-sts.dev/v2',
          kind: 'Policy',
          metadata: { name: 'ledger', owners: ['team@example.com'] },
          spec: { rules: [{ name: 'bookkeeper', workloads: [{ provider: 'dev', subject: 'dev://bookkeeper' }], grants: [{ target: 'ledger', scopes: [{ name: 'write', params: { role: 'ledger_writer' } }], maxTtl: '5m' }] }] },
        },
      ]);
    });
    const m = await run(['migrate']);
    expect(m.code, describeRun(m)).toBe(0);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('seals a secret for one issuer: it opens for that issuer under this KEK, for no other, and is never printed', async () => {
    const secret = file('admin-url.txt', `${PG_ADMIN_URL}\n`);
    const r = await run(['issuers', 'seal', '--issuer', 'pg-prod', secret]);
    expect(r.code, describeRun(r)).toBe(0);
    const ref = JSON.parse(r.stdout) as { sealed: string };
    expect(ref.sealed).toMatch(/^v1\./);
    expect(r.stdout + r.stderr).not.toContain(PG_ADMIN_URL);
    expect(secretResolverFor('pg-prod', {}, kek)(ref, 'x').reveal()).toBe(PG_ADMIN_URL);
    expect(() => secretResolverFor('pg-other', {}, kek)(ref, 'x')).toThrow(/could not be decrypted/);

    const bad = await run(['issuers', 'seal', '--issuer', 'Not A Name', secret]);
    expect(bad.code).toBe(2);
    const empty = await run(['issuers', 'seal', '--issuer', 'pg-prod', file('empty.txt', '')]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/is empty: nothing to seal/);
  });

  it('adds an issuer whose file gives the secret as {seal}: stored sealed, listed, audited, removed', async () => {
    const add = await run(['issuers', 'add', file('pg.yaml', `name: pg-runtime\ntype: postgres\nconfig:\n  adminUrl: { seal: "${PG_ADMIN_URL}" }\n  roles: { read: pg_read_all_data }\n`)]);
    expect(add.code, describeRun(add)).toBe(0);
    expect(add.stdout).toContain('registered pg-runtime (postgres, enabled)');
    expect(add.stdout + add.stderr).not.toContain(PG_ADMIN_URL);

    const db = new Database(join(dir, 'data', 'agent-sts.db'), { readonly: true });
    try {
      const row = db.prepare('SELECT config FROM CredentialIssuerInstance WHERE name = ?').get('pg-runtime') as { config: string };
      expect(row.config).not.toContain('postgres://');
      expect(secretResolverFor('pg-runtime', {}, kek)((JSON.parse(row.config) as { adminUrl: { sealed: string } }).adminUrl, 'x').reveal()).toBe(PG_ADMIN_URL);
    } finally {
      db.close();
    }

    const list = await run(['issuers', 'list', '--json']);
    expect(list.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'pg-runtime', source: 'api', enabled: true, updatedBy: `cli:${userInfo().username}` })]),
    );
    expect((await run(['issuers', 'disable', 'pg-runtime'])).stdout).toContain('pg-runtime: disabled');
    const rm = await run(['issuers', 'remove', 'pg-runtime']);
    expect(rm.code, describeRun(rm)).toBe(0);
    const missing = await run(['issuers', 'remove', 'pg-runtime']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/credential issuer not found/);

    const audit = await run(['audit', 'query', '--limit', '10']);
    expect(audit.stdout).toContain('"action":"admin.credential-issuer.create"');
    expect(audit.stdout).toContain('"action":"admin.credential-issuer.delete"');
    expect(audit.stdout).not.toContain(PG_ADMIN_URL);
  });

  it('says which grants of the policy in force a registered issuer would refuse, at add and in list', async () => {
    const spec = (roles: string) => `name: pg-ledger\ntype: postgres\nconfig:\n  adminUrl: { seal: "${PG_ADMIN_URL}" }\n  roles: { write: pg_write_all_data }\n${roles}`;
    const add = await run(['issuers', 'add', file('ledger.yaml', spec(''))]);
    expect(add.code, describeRun(add)).toBe(0);
    expect(add.stderr).toMatch(/1 grant of the policy in force asks pg-ledger for what it refuses/);
    expect(add.stderr).toMatch(/policy\.documents\[0\]\.spec\.rules\[0\]\.grants\[0\]: target ledger \(issuer pg-ledger, postgres\): scope write: role "ledger_writer" is not allowed/);
    const list = await run(['issuers', 'list']);
    expect(list.stdout).toMatch(/pg-ledger .*\n {2}policy problem: policy\.documents\[0\].*ledger_writer/);
    const json = (await run(['issuers', 'list', '--json'])).stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json.find((i) => i.name === 'pg-ledger')?.policyProblems).toHaveLength(1);
    expect(json.find((i) => i.name === 'internal-tokens')).not.toHaveProperty('policyProblems');
    expect((await run(['issuers', 'remove', 'pg-ledger'])).code).toBe(0);

    const fixed = await run(['issuers', 'add', file('ledger-fixed.yaml', spec('  grantableRoles: { write: [ledger_writer] }\n'))]);
    expect(fixed.code, describeRun(fixed)).toBe(0);
    expect(fixed.stderr).not.toMatch(/policy in force/);
    expect(fixed.stdout + fixed.stderr).not.toContain(PG_ADMIN_URL);
    expect((await run(['issuers', 'remove', 'pg-ledger'])).code).toBe(0);
  });

  it('refuses an inline secret (exit 2) without echoing it', async () => {
    const r = await run(['issuers', 'add', file('inline.yaml', `name: pg-inline\ntype: postgres\nconfig:\n  adminUrl: { insecureValue: "${PG_ADMIN_URL}" }\n  roles: { read: pg_read_all_data }\n`)]);
    expect(r.code, describeRun(r)).toBe(2);
    expect(r.stderr).toMatch(/config\.adminUrl\.insecureValue/);
    expect(r.stdout + r.stderr).not.toContain(PG_ADMIN_URL);
  });
});
