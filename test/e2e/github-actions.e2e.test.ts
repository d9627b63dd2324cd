import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';

/** A CI job goes straight from its GitHub Actions OIDC token to a target credential (one call). */
describe('GitHub Actions job -> target credential in one exchange', () => {
  let gh: FakeIssuer;
  let broker: TestBroker;
  let drop: () => Promise<void>;
  const claims = {
    aud: 'agent-sts-ci', sub: 'repo:acme/payments:environment:prod', repository: 'acme/payments', repository_id: '2002',
    repository_owner: 'acme', repository_owner_id: '1001', ref: 'refs/heads/main', ref_type: 'branch', environment: 'prod',
    event_name: 'push', job_workflow_ref: 'acme/pipelines/.github/workflows/deploy.yml@refs/tags/v3', runner_environment: 'github-hosted',
    run_id: '9876543210', run_attempt: '1',
  };

  beforeAll(async () => {
    gh = await startFakeOidcIssuer({ path: '/_services/token' });
    const s = await createTestSqliteUrl('agsts-gh');
    drop = s.drop;
    broker = await startBroker({
      storage: { url: s.url },
      trustProviders: [{ name: 'github', type: 'github-actions', config: { issuer: gh.issuer, jwksUri: gh.jwksUri, audience: 'agent-sts-ci' } }],
      credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
      targets: [{ name: 'deploy-api', resources: ['https://deploy.example.internal/'], issuer: 'tokens', scopes: ['deploy', 'read'] }],
      policy: {
        rules: [
          {
            id: 'payments-prod-deploy',
            workload: { provider: 'github', attributes: { repository_id: '2002', repository_owner_id: '1001', environment: 'prod', event_name: ['push', 'workflow_dispatch'] } },
            grants: [{ target: 'deploy-api', scopes: ['deploy'], maxTtl: '10m' }],
          },
        ],
      },
    });
  });
  afterAll(async () => {
    await broker?.close();
    await gh?.close();
    await drop?.();
  });

  const exchange = async (c: Record<string, unknown>) =>
    postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await gh.sign(c), subject_token_type: JWT_TYPE, resource: 'https://deploy.example.internal/', scope: 'deploy' });

  it('issues an audience-bound token for the pinned repository and environment', async () => {
    const r = await exchange(claims);
    expect(r.status, r.text).toBe(200);
    expect(r.json.expires_in).toBeLessThanOrEqual(600);
    const t = decodeJwt(r.json.access_token as string);
    expect(t).toMatchObject({ sub: 'github://acme/payments@refs/heads/main', aud: 'https://deploy.example.internal/', scope: 'deploy' });
    expect(await broker.composed.db.task.count({ where: { id: t.task_id as string, workloadSubject: 'github://acme/payments@refs/heads/main' } })).toBe(1);
  });

  it('refuses the same repository name with another repository id (renamed or recreated repo)', async () => {
    const r = await exchange({ ...claims, repository_id: '9999' });
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_request');
  });

  it('refuses a pull_request run and another environment', async () => {
    expect((await exchange({ ...claims, event_name: 'pull_request' })).json.error).toBe('invalid_request');
    expect((await exchange({ ...claims, environment: 'staging' })).json.error).toBe('invalid_request');
  });

  it('refuses a token minted for GitHub\'s default audience', async () => {
    expect((await exchange({ ...claims, aud: 'https://github.com/acme' })).json.error).toBe('invalid_request');
  });

  it('records the deny with the closest rule and the failing attribute, and tells the caller only the category', async () => {
    const r = await exchange({ ...claims, environment: 'staging' });
    expect(r.json.error_description).toMatch(/not permitted by policy \(request [^)]+; the reason is in the audit log\)/);
    expect(r.json.error_description).not.toMatch(/environment|payments-prod-deploy|prod/);
    await broker.composed.audit.drain();
    const rec = await broker.composed.db.auditEvent.findFirstOrThrow({ where: { outcome: 'deny' }, orderBy: [{ time: 'desc' }, { seq: 'desc' }] });
    expect(rec.reason).toContain('closest rule payments-prod-deploy: attribute environment does not match');
    expect(rec.workloadSubject).toBe('github://acme/payments@refs/heads/main');
    expect(rec.policyVersion).toMatch(/^sha256:/);
  });
});
