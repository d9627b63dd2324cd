import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { oidcPlugin, OidcConfigSchema } from '../../src/trust-providers/oidc/oidc-provider.js';
import { githubActionsPlugin, GithubActionsConfigSchema } from '../../src/trust-providers/github-actions/github-actions-provider.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { testProviderDeps } from '../support/provider-deps.js';
import { SubjectTokenRejected, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../../src/lib/urns.js';

const deps = testProviderDeps();
const ctx = () => ({ requestId: 'test', now: new Date() });
const JWT = JWT_TOKEN_TYPES[0]!;

describe('oidc trust provider against a real HTTP issuer', () => {
  let issuer: FakeIssuer;
  beforeAll(async () => {
    issuer = await startFakeOidcIssuer();
  });
  afterAll(() => issuer.close());

  const make = (extra: Record<string, unknown> = {}) =>
    oidcPlugin.create('ci', OidcConfigSchema.parse({ issuer: issuer.issuer, audience: 'sts', subjectTemplate: 'ci://{sub}', attributes: { team: 'team' }, ...extra }), deps);

  it('verifies through discovery and maps subject and attributes', async () => {
    const id = await make().verify({ token: await issuer.sign({ sub: 'job-1', aud: 'sts', team: 'red' }), tokenType: JWT }, ctx());
    expect(id).toMatchObject({ kind: 'workload', provider: 'ci', subject: 'ci://job-1', attributes: { team: 'red' } });
    expect(issuer.calls.some((c) => c.path === '/.well-known/openid-configuration')).toBe(true);
  });

  it('follows a key rotation at the issuer without a restart, and rate-limits unknown kids', async () => {
    const provider = make({ jwks: { cooldown: '2s' } });
    await provider.verify({ token: await issuer.sign({ sub: 'a', aud: 'sts' }), tokenType: JWT }, ctx());
    const fetchesBefore = issuer.calls.filter((c) => c.path === '/.well-known/jwks').length;
    // Random kids within the cooldown: no refetch storm.
    for (let i = 0; i < 5; i++)
      await expect(provider.verify({ token: await issuer.sign({ sub: 'a', aud: 'sts' }, { kid: `rnd-${i}` }), tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    expect(issuer.calls.filter((c) => c.path === '/.well-known/jwks').length - fetchesBefore).toBeLessThanOrEqual(1);
    await issuer.rotate();
    await new Promise((r) => setTimeout(r, 2100));
    const id = await provider.verify({ token: await issuer.sign({ sub: 'after-rotation', aud: 'sts' }), tokenType: JWT }, ctx());
    expect(id.subject).toBe('ci://after-rotation');
  });

  it('an admin refresh picks up a new key immediately', async () => {
    const provider = make({ jwks: { cooldown: '10m' } });
    await provider.verify({ token: await issuer.sign({ sub: 'a', aud: 'sts' }), tokenType: JWT }, ctx());
    await issuer.rotate();
    await provider.refreshKeys!();
    await expect(provider.verify({ token: await issuer.sign({ sub: 'b', aud: 'sts' }), tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'ci://b' });
  });

  it('reports an unreachable issuer as a temporary upstream failure, not a bad token', async () => {
    const provider = oidcPlugin.create('down', OidcConfigSchema.parse({ issuer: 'http://127.0.0.1:9/', audience: 'sts', jwks: { timeout: '1s' } }), deps);
    const token = await issuer.sign({ sub: 'a', aud: 'sts', iss: 'http://127.0.0.1:9/' });
    await expect(provider.verify({ token, tokenType: JWT }, ctx())).rejects.toBeInstanceOf(UpstreamUnavailable);
  });

  it('refuses a discovery document whose issuer is not the configured one', async () => {
    const provider = oidcPlugin.create('x', OidcConfigSchema.parse({ issuer: `${issuer.issuer}/`, audience: 'sts' }), deps);
    await expect(provider.verify({ token: await issuer.sign({ sub: 'a', aud: 'sts', iss: `${issuer.issuer}/` }), tokenType: JWT }, ctx())).rejects.toBeInstanceOf(UpstreamUnavailable);
  });

  it('produces a HumanContext for an issuer marked human', async () => {
    const provider = make({ human: true });
    const id = await provider.verify({ token: await issuer.sign({ sub: 'alice', aud: 'sts', email: 'alice@example.com', groups: ['sre', 'dev'] }), tokenType: JWT }, ctx());
    expect(id).toMatchObject({ kind: 'human', subject: 'alice', email: 'alice@example.com', groups: ['sre', 'dev'], issuer: issuer.issuer });
  });

  it('routes only to registered issuers', async () => {
    const registry = createTrustRegistry([make()]);
    const other = await startFakeOidcIssuer();
    try {
      expect(() => registry.resolveFor('garbage', JWT)).toThrow(SubjectTokenRejected);
      expect(() => registry.resolveFor(`${'e30'}.${Buffer.from(JSON.stringify({ iss: other.issuer })).toString('base64url')}.x`, JWT)).toThrow(/not trusted/);
    } finally {
      await other.close();
    }
  });
});

describe('github-actions trust provider', () => {
  let gh: FakeIssuer;
  beforeAll(async () => {
    gh = await startFakeOidcIssuer({ path: '/_services/token' });
  });
  afterAll(() => gh.close());
  const claims = {
    aud: 'agent-sts', sub: 'repo:acme/payments:ref:refs/heads/main', repository: 'acme/payments', repository_id: '2002',
    repository_owner: 'acme', repository_owner_id: '1001', ref: 'refs/heads/main', ref_type: 'branch', event_name: 'push',
    environment: 'prod', job_workflow_ref: 'acme/pipelines/.github/workflows/deploy.yml@refs/tags/v3', runner_environment: 'github-hosted',
  };

  it('builds the canonical subject from repository and ref, with immutable ids as attributes', async () => {
    const p = githubActionsPlugin.create('github', GithubActionsConfigSchema.parse({ issuer: gh.issuer, audience: 'agent-sts' }), deps);
    const id = await p.verify({ token: await gh.sign(claims), tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      kind: 'workload', providerType: 'github-actions', subject: 'github://acme/payments@refs/heads/main',
      attributes: { repository_id: '2002', repository_owner_id: '1001', environment: 'prod', event_name: 'push', job_workflow_ref: claims.job_workflow_ref },
    });
  });

  it('refuses a token without repository_id', async () => {
    const p = githubActionsPlugin.create('github', GithubActionsConfigSchema.parse({ issuer: gh.issuer, audience: 'agent-sts' }), deps);
    await expect(p.verify({ token: await gh.sign({ ...claims, repository_id: undefined }), tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
  });

  it("refuses GitHub's default owner-URL audience in config", () => {
    expect(GithubActionsConfigSchema.safeParse({ audience: 'https://github.com/acme' }).success).toBe(false);
  });
});
