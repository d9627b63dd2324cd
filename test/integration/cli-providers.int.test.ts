// `agent-sts providers list|add|disable|enable|remove|test` as a subprocess against a temp dev
// config and SQLite store: changes are validated and audited like the admin API, and `test`
// prints the identity an attestation yields or exactly why it fails (rejected vs. agent-sts's own
// side), issuing nothing.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { describeRun, runAgentSts, writeDevConfig } from '../support/cli.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';

const AWS_KEY = { accessKeyId: 'AKIACLITESTCLITEST01', secretAccessKey: 'cli/test/secret/0123456789abcdefghijklmnop' };

// Ten CLI subprocesses in one test (tsx start-up each): 5-6 s apiece on a slow host.
describe('agent-sts providers', { timeout: 180_000 }, () => {
  let dir: string;
  let config: string;
  let issuer: FakeIssuer;
  const run = (...args: string[]) => runAgentSts([...args, '--config', config], { cwd: dir });
  const file = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agsts-cli-providers-'));
    config = writeDevConfig(dir);
    issuer = await startFakeOidcIssuer();
    const m = await run('migrate');
    expect(m.code, describeRun(m)).toBe(0);
  });
  afterAll(async () => {
    await issuer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists the config-file providers as read-only', async () => {
    const r = await run('providers', 'list');
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toMatch(/^dev\s+oidc\s+config file \(read-only\)$/m);
  });

  it('adds a provider from a YAML file, audited with the OS user', async () => {
    const r = await run('providers', 'add', file('ci.yaml', `name: runtime-ci\ntype: oidc\nconfig:\n  issuer: ${issuer.issuer}\n  audience: sts\n  subjectTemplate: "rt://{sub}"\n`));
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain('registered runtime-ci (oidc, enabled)');
    const list = await run('providers', 'list', '--json');
    expect(list.stdout.trim().split('\n').map((l) => JSON.parse(l) as { name: string; source: string; updatedBy?: string })).toEqual([
      expect.objectContaining({ name: 'dev', source: 'config' }),
      expect.objectContaining({ name: 'github', source: 'config' }),
      expect.objectContaining({ name: 'runtime-ci', source: 'api', enabled: true, updatedBy: `cli:${userInfo().username}` }),
    ]);
    const audit = await run('audit', 'query', '--limit', '5');
    expect(audit.stdout).toContain('"action":"admin.trust-provider.create"');
  });

  it('refuses an invalid provider file with the path of the problem (exit 2), and a config-file provider change', async () => {
    const bad = await run('providers', 'add', file('bad.yaml', 'name: bad\ntype: oidc\nconfig:\n  issuer: not-a-url\n  audience: sts\n'));
    expect(bad.code, describeRun(bad)).toBe(2);
    expect(bad.stderr).toContain('config.issuer');
    const ro = await run('providers', 'remove', 'dev');
    expect(ro.code).toBe(2);
    expect(ro.stderr).toContain('declared in the config file');
    const missing = await run('providers', 'disable', 'nope');
    expect(missing.code).toBe(1);
  });

  it('test prints the identity a good attestation yields', async () => {
    const token = await issuer.sign({ sub: 'planner', aud: 'sts' });
    const r = await run('providers', 'test', file('good.jwt', token));
    expect(r.code, describeRun(r)).toBe(0);
    const out = JSON.parse(r.stdout) as { provider: string; identity: { subject: string; kind: string } };
    expect(out).toMatchObject({ provider: 'runtime-ci', identity: { kind: 'workload', subject: 'rt://planner' } });
    expect(r.stdout + r.stderr).not.toContain(token);
  });

  it('test says exactly why an attestation is rejected (exit 1) and never prints it', async () => {
    const wrongAud = await issuer.sign({ sub: 'planner', aud: 'someone-else' });
    const r = await run('providers', 'test', file('aud.jwt', wrongAud));
    expect(r.code, describeRun(r)).toBe(1);
    expect(r.stderr).toContain('REJECTED by trust provider "runtime-ci"');
    expect(r.stderr).toMatch(/"claim":"aud"/);
    expect(r.stdout + r.stderr).not.toContain(wrongAud);
    const untrusted = await run('providers', 'test', file('other.jwt', 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V2aWwudGVzdCIsInN1YiI6IngifQ.c2ln'));
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toContain('REJECTED by routing');
    const notJwt = await run('providers', 'test', file('blob.txt', 'not-a-jwt'));
    expect(notJwt.code).toBe(2);
    expect(notJwt.stderr).toContain('--token-type');
  });

  it("test tells agent-sts's own failures apart (exit 3, classified cause)", async () => {
    const down = await run('providers', 'add', file('down.yaml', `name: down\ntype: oidc\nconfig:\n  issuer: https://down.test\n  jwksUri: http://127.0.0.1:9/jwks\n  audience: sts\n`));
    expect(down.code, describeRun(down)).toBe(0);
    const token = await issuer.sign({ iss: 'https://down.test', sub: 'x', aud: 'sts' });
    const r = await run('providers', 'test', file('down.jwt', token));
    expect(r.code, describeRun(r)).toBe(3);
    expect(r.stderr).toContain('cause: keys-unavailable');
  });

  it('attest aws-iam signs GetCallerIdentity with the AWS credential chain; providers test verifies it through STS', async () => {
    const sts: FakeSts = await startFakeSts({ keys: [{ ...AWS_KEY, identity: { type: 'assumed-role', account: '111122223333', roleName: 'ci-runner', roleId: 'AROACLI', sessionName: 'job-1' } }] });
    try {
      const added = await run('providers', 'add', file('aws.yaml', `name: aws\ntype: aws-iam\nconfig:\n  stsEndpoint: ${sts.url}\n  accounts: ["111122223333"]\n`));
      expect(added.code, describeRun(added)).toBe(0);
      const env = { AWS_ACCESS_KEY_ID: AWS_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: AWS_KEY.secretAccessKey, AWS_PROFILE: '', AWS_CONFIG_FILE: join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none') };
      const att = await runAgentSts(['attest', 'aws-iam', '--server-id', 'http://127.0.0.1:8787'], { cwd: dir, env });
      expect(att.code, describeRun(att)).toBe(0);
      const token = att.stdout.trim();
      const blob = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { method: string; url: string; headers: Record<string, string> };
      expect(blob).toMatchObject({ method: 'POST', url: 'https://sts.amazonaws.com/' });
      expect(JSON.stringify(blob.headers)).toMatch(/AWS4-HMAC-SHA256 Credential=AKIACLITESTCLITEST01\/.*SignedHeaders=[^,]*x-agent-sts-server-id/);
      expect(att.stdout + att.stderr).not.toContain(AWS_KEY.secretAccessKey);
      const t = await run('providers', 'test', file('aws.att', token), '--token-type', 'urn:agent-sts:token-type:aws-sigv4-gci');
      expect(t.code, describeRun(t)).toBe(0);
      expect(JSON.parse(t.stdout)).toMatchObject({ provider: 'aws', identity: { subject: 'aws://111122223333/role/ci-runner', attributes: { session_name: 'job-1' } } });
      // Single use: the same attestation again is a replay.
      const again = await run('providers', 'test', file('aws.att', token), '--token-type', 'urn:agent-sts:token-type:aws-sigv4-gci');
      expect(again.code).toBe(1);
      // Signed for another server: refused.
      const other = await runAgentSts(['attest', 'aws-iam', '--server-id', 'https://other.example'], { cwd: dir, env });
      const o = await run('providers', 'test', file('other.att', other.stdout.trim()), '--token-type', 'urn:agent-sts:token-type:aws-sigv4-gci');
      expect(o.code).toBe(1);
      expect(o.stderr).toContain('REJECTED by trust provider "aws"');
      expect((await run('providers', 'remove', 'aws')).code).toBe(0);
      // Bad input: an unknown kind, a missing server id.
      const unknown = await runAgentSts(['attest', 'gcp', '--server-id', 'http://127.0.0.1:8787'], { cwd: dir, env });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain('unknown attestation kind "gcp" (known: aws-iam)');
      expect(unknown.stdout).toBe('');
      const noServer = await runAgentSts(['attest', 'aws-iam'], { cwd: dir, env });
      expect(noServer.code).not.toBe(0);
      expect(noServer.stderr).toMatch(/--server-id/);
      expect(noServer.stdout).toBe('');
    } finally {
      await sts.close();
    }
  });

  it('disable, enable and remove take effect and are audited', async () => {
    const token = file('again.jwt', await issuer.sign({ sub: 'planner', aud: 'sts' }));
    expect((await run('providers', 'disable', 'runtime-ci')).code).toBe(0);
    expect((await run('providers', 'test', token)).code).toBe(1);
    expect((await run('providers', 'enable', 'runtime-ci')).code).toBe(0);
    expect((await run('providers', 'test', token)).code).toBe(0);
    expect((await run('providers', 'remove', 'runtime-ci')).code).toBe(0);
    expect((await run('providers', 'test', token)).code).toBe(1);
    const audit = await run('audit', 'query', '--limit', '20');
    for (const a of ['disable', 'enable', 'delete']) expect(audit.stdout).toContain(`"action":"admin.trust-provider.${a}"`);
  });
});
