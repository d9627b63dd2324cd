import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JWTPayload } from 'jose';
import { hs256WithPublicKey, startFakeCloudKeys, tamperedPayload, unsignedToken, type FakeCloudKeys } from '../fakes/gcp-azure-keys.js';
import { gcpPlugin, GcpConfigSchema } from '../../src/trust-providers/gcp/gcp-provider.js';
import { oidcPlugin, OidcConfigSchema } from '../../src/trust-providers/oidc/oidc-provider.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { createLogger } from '../../src/log/logger.js';
import { expectRefusal, testProviderDeps } from '../support/provider-deps.js';
import { StsError, SubjectTokenRejected, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../../src/lib/urns.js';

const AUD = 'https://sts.example.internal';
const GOOGLE = 'https://accounts.google.com';
const JWT = JWT_TOKEN_TYPES[0]!;
const ctx = () => ({ requestId: 'test', now: new Date() });
const nowS = () => Math.floor(Date.now() / 1000);

const logLines: string[] = [];
const deps = testProviderDeps({ logger: createLogger({ level: 'trace', destination: { write: (l: string) => void logLines.push(l) } }) });
/** Every token minted in this file; none may appear in a log line or an error. */
const minted: string[] = [];
const remember = (t: string) => (minted.push(t), t);

/** format=full metadata identity token payload (STANDARDS §6.1). */
const fullClaims = (): JWTPayload => ({
  iss: GOOGLE,
  aud: AUD,
  azp: '110987294251917851298',
  sub: '110987294251917851298',
  email: '123456789-compute@developer.gserviceaccount.com',
  email_verified: true,
  google: {
    compute_engine: {
      project_id: 'acme-prod',
      project_number: 123456789,
      zone: 'us-central1-a',
      instance_id: '4340508760561261530',
      instance_name: 'agent-vm-1',
      instance_creation_timestamp: 1749990000,
      license_id: ['1000010'],
    },
  },
});

describe('gcp trust provider (metadata identity tokens, local JWKS)', () => {
  let keys: FakeCloudKeys;
  const sign = async (claims: JWTPayload, opts?: { kid?: string }) => remember(await keys.sign(claims, opts));
  const make = (extra: Record<string, unknown> = {}, name = 'gcp') =>
    gcpPlugin.create(name, GcpConfigSchema.parse({ audience: AUD, jwksUri: keys.jwksUri, ...extra }), deps);

  beforeAll(async () => {
    keys = await startFakeCloudKeys('/oauth2/v3/certs');
  });
  afterAll(async () => {
    await keys.close();
    // Rejections were logged (debug), by fingerprint only.
    expect(logLines.some((l) => l.includes('gcp attestation not accepted'))).toBe(true);
    // Neither a token nor its payload or signature part appears in any log line.
    const parts = minted.flatMap((t) => [t, ...t.split('.').slice(1)]).filter((s) => s.length > 0);
    expect(logLines.filter((line) => parts.some((s) => line.includes(s)))).toEqual([]);
  });

  it('maps a format=full token to a project-scoped subject and instance attributes', async () => {
    const id = await make({ projects: ['acme-prod'] }).verify({ token: await sign(fullClaims()), tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      kind: 'workload',
      provider: 'gcp',
      providerType: 'gcp',
      subject: 'gcp://acme-prod/sa/123456789-compute@developer.gserviceaccount.com',
      attributes: {
        project_id: 'acme-prod',
        project_number: '123456789',
        zone: 'us-central1-a',
        instance_id: '4340508760561261530',
        instance_name: 'agent-vm-1',
        instance_creation_timestamp: '1749990000',
        service_account_email: '123456789-compute@developer.gserviceaccount.com',
        service_account_id: '110987294251917851298',
      },
    });
    expect(Object.values(id.kind === 'workload' ? id.attributes : {}).every((v) => typeof v === 'string')).toBe(true);
  });

  it('accepts a format=standard token only when requireComputeEngine is off, without a project in the subject', async () => {
    const token = await sign({ ...fullClaims(), google: undefined });
    await expect(make().verify({ token, tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    const id = await make({ requireComputeEngine: false }).verify({ token, tokenType: JWT }, ctx());
    expect(id).toMatchObject({ subject: 'gcp://sa/123456789-compute@developer.gserviceaccount.com', attributes: { service_account_id: '110987294251917851298' } });
    // With a project allow-list, a token that names no project cannot pass.
    await expect(make({ requireComputeEngine: false, projects: ['acme-prod'] }).verify({ token, tokenType: JWT }, ctx())).rejects.toMatchObject({
      detail: { reason: 'project not allowed' },
    });
  });

  it('accepts the legacy accounts.google.com spelling only when configured', async () => {
    const token = await sign({ ...fullClaims(), iss: 'accounts.google.com' });
    await expect(make().verify({ token, tokenType: JWT }, ctx())).rejects.toMatchObject({ detail: { claim: 'iss' } });
    const p = make({ extraIssuers: ['accounts.google.com'] });
    expect(p.issuers).toEqual([GOOGLE, 'accounts.google.com']);
    await expect(p.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'gcp://acme-prod/sa/123456789-compute@developer.gserviceaccount.com' });
  });

  it('follows a key rotation without a restart, and unknown kids do not hammer the JWKS endpoint', async () => {
    const provider = make({ jwks: { cooldown: '2s' } });
    await provider.verify({ token: await sign(fullClaims()), tokenType: JWT }, ctx());
    const before = keys.fetches();
    for (let i = 0; i < 8; i++)
      await expect(provider.verify({ token: await sign(fullClaims(), { kid: `random-${i}` }), tokenType: JWT }, ctx())).rejects.toMatchObject({
        detail: { code: 'ERR_JWKS_NO_MATCHING_KEY' },
      });
    expect(keys.fetches() - before).toBeLessThanOrEqual(1);

    const oldKidToken = await sign(fullClaims());
    await keys.rotate({ retire: true });
    const newKidToken = await sign(fullClaims());
    await new Promise((r) => setTimeout(r, 2100));
    await expect(provider.verify({ token: newKidToken, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: expect.stringMatching(/^gcp:\/\/acme-prod\//) });
    // The retired key is gone from the refetched set.
    await expect(provider.verify({ token: oldKidToken, tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    expect(keys.fetches() - before).toBeLessThanOrEqual(2);
  });

  type Case = { name: string; token: () => Promise<string>; config?: Record<string, unknown>; error: typeof StsError; detail: Record<string, unknown> };
  const cases: Case[] = [
    { name: 'wrong audience', token: () => sign({ ...fullClaims(), aud: 'https://other.example' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' } },
    { name: 'expired', token: () => sign({ ...fullClaims(), iat: nowS() - 7200, exp: nowS() - 3600 }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_EXPIRED' } },
    { name: 'foreign issuer', token: () => sign({ ...fullClaims(), iss: 'https://evil.example' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' } },
    { name: 'project not allowed', token: () => sign(fullClaims()), config: { projects: ['acme-staging'] }, error: SubjectTokenRejected, detail: { reason: 'project not allowed', project_id: 'acme-prod' } },
    { name: 'tampered signature', token: async () => tamperedPayload(await sign(fullClaims()), { ...fullClaims(), email: 'admin@acme-prod.iam.gserviceaccount.com' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' } },
    { name: 'alg none', token: async () => remember(unsignedToken(fullClaims())), error: SubjectTokenRejected, detail: { code: 'ERR_JOSE_ALG_NOT_ALLOWED' } },
    { name: 'HS256 with the public key', token: async () => remember(await hs256WithPublicKey({ ...fullClaims(), iat: nowS(), exp: nowS() + 600 }, keys.publicPem, keys.kid)), error: SubjectTokenRejected, detail: { code: 'ERR_JOSE_ALG_NOT_ALLOWED' } },
    { name: 'no compute_engine block (format=standard) while required', token: () => sign({ ...fullClaims(), google: undefined }), error: SubjectTokenRejected, detail: { reason: 'no google.compute_engine block (format=standard token)' } },
    { name: 'compute_engine block without instance_id', token: () => sign({ ...fullClaims(), google: { compute_engine: { project_id: 'acme-prod', project_number: 123456789 } } }), error: SubjectTokenRejected, detail: { missingClaim: 'google.compute_engine.instance_id' } },
    { name: 'email_verified false', token: () => sign({ ...fullClaims(), email_verified: false }), error: SubjectTokenRejected, detail: { reason: 'email_verified is not true' } },
    { name: 'email_verified missing', token: () => sign({ ...fullClaims(), email_verified: undefined }), error: SubjectTokenRejected, detail: { reason: 'email_verified is not true' } },
    { name: 'no email', token: () => sign({ ...fullClaims(), email: undefined }), error: SubjectTokenRejected, detail: { claim: 'email' } },
    { name: 'unknown signing key', token: () => sign(fullClaims(), { kid: 'not-published' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWKS_NO_MATCHING_KEY' } },
    {
      name: 'JWKS endpoint unreachable',
      token: () => sign(fullClaims()),
      config: { jwksUri: 'http://127.0.0.1:9/oauth2/v3/certs', jwks: { timeout: '1s' } },
      error: UpstreamUnavailable,
      detail: { cause: 'keys-unavailable' },
    },
  ];

  it.each(cases)('rejects: $name', async ({ token, config, error, detail }) => {
    await expectRefusal(make(config), await token(), JWT, error, detail);
  });

  it('a JWKS endpoint answering 503 is UpstreamUnavailable (keys-unavailable), never an allow', async () => {
    keys.setAvailable(false);
    try {
      const err = await make({}, 'fresh').verify({ token: await sign(fullClaims()), tokenType: JWT }, ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect((err as StsError).detail).toMatchObject({ cause: 'keys-unavailable' });
    } finally {
      keys.setAvailable(true);
    }
  });

  it('coexists on accounts.google.com with a human oidc instance: routing by audience', async () => {
    const WEB = '1234-web.apps.googleusercontent.com';
    const human = oidcPlugin.create('google-people', OidcConfigSchema.parse({ issuer: GOOGLE, audience: WEB, jwksUri: keys.jwksUri, algorithms: ['RS256'], human: true }), deps);
    const gcp = make({ extraIssuers: ['accounts.google.com'] });
    const registry = createTrustRegistry([human, gcp]);

    const workloadToken = await sign(fullClaims());
    expect(registry.resolveFor(workloadToken, JWT).name).toBe('gcp');
    await expect(registry.resolveFor(workloadToken, JWT).verify({ token: workloadToken, tokenType: JWT }, ctx())).resolves.toMatchObject({ kind: 'workload', providerType: 'gcp' });
    expect(registry.resolveFor(await sign({ ...fullClaims(), iss: 'accounts.google.com' }), JWT).name).toBe('gcp');

    const personToken = await sign({ iss: GOOGLE, aud: WEB, azp: WEB, sub: '104857600000000000001', email: 'alice@acme.example', email_verified: true });
    const p = registry.resolveFor(personToken, JWT);
    expect(p.name).toBe('google-people');
    await expect(p.verify({ token: personToken, tokenType: JWT }, ctx())).resolves.toMatchObject({ kind: 'human', subject: '104857600000000000001' });
    // The person's token is not a workload attestation: the gcp instance refuses it.
    await expect(gcp.verify({ token: personToken, tokenType: JWT }, ctx())).rejects.toMatchObject({ detail: { claim: 'aud' } });

    expect(() => registry.resolveFor(unsignedToken({ ...fullClaims(), aud: 'someone-else' }), JWT)).toThrow(/audience is not accepted/);
  });

  it('config: strict, audience required, RS256 only by construction', () => {
    expect(GcpConfigSchema.safeParse({}).success).toBe(false);
    expect(GcpConfigSchema.safeParse({ audience: AUD, projectz: ['x'] }).success).toBe(false);
    expect(GcpConfigSchema.safeParse({ audience: AUD, algorithms: ['HS256'] }).success).toBe(false);
    expect(GcpConfigSchema.parse({ audience: AUD })).toMatchObject({ issuer: GOOGLE, jwksUri: 'https://www.googleapis.com/oauth2/v3/certs', requireComputeEngine: true });
  });
});
