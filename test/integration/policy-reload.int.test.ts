// Hot reload of policy.dir on a running broker: a valid change to a file takes effect without a
// restart (a decision flips, new audit records carry the new version); an invalid one (YAML syntax,
// a CEL condition that does not parse) is refused with file, line and reason while the previous set
// still decides.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { JWT_TYPE, postToken, startBroker, TEST_ADMIN_TOKEN, TEST_AUDITOR_TOKEN, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const policyFile = (targets: string[], when?: string) =>
  [
    'apiVersion: agent-sts.dev/v2',
    'kind: Policy',
    'metadata: { name: team, owners: [team@example.com] }',
    'spec:',
    '  rules:',
    '    - name: agents',
    "      workloads: [{ provider: ci, subject: 'test://agent' }]",
    ...(when ? [`      when: '${when}'`] : []),
    '      grants:',
    ...targets.map((t) => `        - { target: ${t}, scopes: [read] }`),
    '',
  ].join('\n');

describe('policy.dir hot reload', { timeout: 60_000 }, () => {
  let issuer: FakeIssuer;
  let broker: TestBroker;
  let dir: string;
  let dropStore: () => Promise<void>;
  const file = () => join(dir, 'team.yaml');

  beforeAll(async () => {
    issuer = await startFakeOidcIssuer();
    dir = mkdtempSync(join(tmpdir(), 'agsts-policy-dir-'));
    writeFileSync(file(), policyFile(['api']));
    const s = createTestSqliteUrl('agsts-policy-reload');
    dropStore = s.drop;
    broker = await startBroker({
      server: { host: '127.0.0.1', port: 0, providerReloadInterval: '1s' },
      storage: { url: s.url },
      trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'sts', algorithms: ['RS256'], subjectTemplate: 'test://{sub}' } }],
      credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
      targets: [
        { name: 'api', audiences: ['api'], issuer: 'tokens', scopes: ['read'] },
        { name: 'other', audiences: ['other'], issuer: 'tokens', scopes: ['read'] },
      ],
      policy: { dir },
    });
  });
  afterAll(async () => {
    await broker?.close();
    await issuer?.close();
    await dropStore?.();
    rmSync(dir, { recursive: true, force: true });
  });

  const exchange = async (audience: string) =>
    postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await issuer.sign({ sub: 'agent', aud: 'sts' }), subject_token_type: JWT_TYPE, audience, scope: 'read' });
  const status = async () => {
    const r = await fetch(`${broker.url}/v1/admin/policies`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(r.status).toBe(200);
    return (await r.json()) as { version: string; documents: { name: string; source: string; file?: string }[]; last_error: { problems: string[] } | null };
  };
  const until = async (what: string, ok: () => Promise<boolean>) => {
    const start = Date.now();
    while (Date.now() - start < 8000) {
      if (await ok()) return;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const exchangeVersions = async () => {
    await broker.composed.audit.drain();
    const r = await fetch(`${broker.url}/v1/audit?action=token.exchange&limit=200`, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } });
    const body = (await r.json()) as { records: { action: string; policyVersion: string | null }[] };
    return new Set(body.records.filter((x) => x.action === 'token.exchange').map((x) => x.policyVersion));
  };

  it('applies a valid change to a file without a restart, and new decisions record the new version', async () => {
    expect((await exchange('api')).status).toBe(200);
    expect((await exchange('other')).status).toBe(400);
    const before = await status();
    expect(before.documents).toEqual([expect.objectContaining({ name: 'team', source: 'file', file: file() })]);

    writeFileSync(file(), policyFile(['api', 'other']));
    await until('the change to be in force', async () => (await exchange('other')).status === 200);
    const after = await status();
    expect(after.version).not.toBe(before.version);
    expect(after.last_error).toBeNull();
    expect(await exchangeVersions()).toEqual(new Set([before.version, after.version]));
  });

  it('refuses a YAML syntax error with file and line; the previous set still decides', async () => {
    const inForce = (await status()).version;
    writeFileSync(file(), `${policyFile(['api', 'other'])}    - { name: broken\n`);
    await until('the error to be reported', async () => (await status()).last_error !== null);
    const s = await status();
    expect(s.version).toBe(inForce);
    expect(s.last_error!.problems.join('\n')).toMatch(new RegExp(`${file().replace(/[.\\/]/g, '\\$&')}:1[0-9]: `));
    expect((await exchange('other')).status).toBe(200);
    const forced = await fetch(`${broker.url}/v1/admin/policies/reload`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(forced.status).toBe(400);
    expect(((await forced.json()) as { detail: string }).detail).toContain(`stays in force`);
  });

  it('refuses a CEL condition that does not parse with file, line and reason; the previous set still decides', async () => {
    const inForce = (await status()).version;
    writeFileSync(file(), policyFile(['api'], 'request.lifetime >'));
    await until('the CEL error to be reported', async () => /condition does not parse/.test((await status()).last_error?.problems.join('\n') ?? ''));
    const s = await status();
    expect(s.version).toBe(inForce);
    expect(s.last_error!.problems).toContain(`${file()}:8: spec.rules[0].when: condition does not parse: Unexpected token: EOF`);
    // Still the old set: 'other' stays granted although the broken file drops it.
    expect((await exchange('other')).status).toBe(200);

    // Fixed: the new set is in force and the error is cleared.
    writeFileSync(file(), policyFile(['api']));
    await until('the fix to be in force', async () => (await exchange('other')).status === 400);
    expect((await status()).last_error).toBeNull();
  });
});
