import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JWTPayload } from 'jose';
import { hs256WithPublicKey, startFakeCloudKeys, tamperedPayload, unsignedToken, type FakeCloudKeys } from '../fakes/gcp-azure-keys.js';
import { azurePlugin, AzureConfigSchema, parseAzureResourceId } from '../../src/trust-providers/azure/azure-provider.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { createLogger } from '../../src/log/logger.js';
import { expectRefusal, testProviderDeps } from '../support/provider-deps.js';
import { StsError, SubjectTokenRejected, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../../src/lib/urns.js';

const TENANT_A = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const TENANT_B = 'b2c4e6f8-1a3b-4c5d-8e9f-0a1b2c3d4e5f';
const FOREIGN_TENANT = '0e0e0e0e-1111-4222-8333-444455556666';
const APP_ID_URI = 'api://agent-sts';
const CLIENT_ID = 'd3adb33f-0000-4000-8000-00000000a9e5';
const MI_CLIENT = '6c3a4f9e-2b1d-4e8a-9c7f-5e4d3c2b1a09';
const OID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const SUB_ID = 'A1B2C3D4-0000-4000-8000-123456789ABC';
const V1 = (t: string) => `https://sts.windows.net/${t}/`;
const V2 = (t: string) => `https://login.microsoftonline.com/${t}/v2.0`;
const JWT = JWT_TOKEN_TYPES[1]!;
const ctx = () => ({ requestId: 'test', now: new Date() });
const nowS = () => Math.floor(Date.now() / 1000);

const logLines: string[] = [];
const deps = testProviderDeps({ logger: createLogger({ level: 'trace', destination: { write: (l: string) => void logLines.push(l) } }) });
const minted: string[] = [];
const remember = (t: string) => (minted.push(t), t);

/** v1 managed-identity access token of a VM's system-assigned identity (STANDARDS §6.2). */
const v1Claims = (tenant = TENANT_A): JWTPayload => ({
  aud: APP_ID_URI,
  iss: V1(tenant),
  nbf: nowS() - 5,
  aio: 'E2ZgYJg0n3cFaHJ3yV9r6q8AAA==',
  appid: MI_CLIENT,
  appidacr: '2',
  idp: V1(tenant),
  idtyp: 'app',
  oid: OID,
  rh: '0.AXEAv4j5cvGGr0GRqy180BHbR0N2n2h5AAA.',
  sub: OID,
  tid: tenant,
  uti: 'f3lQk3Z1_0mQp2C1Zm9sAA',
  ver: '1.0',
  xms_mirid: `/subscriptions/${SUB_ID}/resourcegroups/RG-Agents/providers/Microsoft.Compute/virtualMachines/Agent-VM-1`,
  xms_tcdt: 1600000000,
});

/** v2 token (app with accessTokenAcceptedVersion 2): aud is agent-sts's client id, azp the identity. */
const v2Claims = (tenant = TENANT_A): JWTPayload => ({
  aud: CLIENT_ID,
  iss: V2(tenant),
  nbf: nowS() - 5,
  azp: MI_CLIENT,
  azpacr: '2',
  idtyp: 'app',
  oid: OID,
  sub: OID,
  tid: tenant,
  uti: 'Zm9vYmFyYmF6cXV4AAAAAA',
  ver: '2.0',
  xms_mirid: `/subscriptions/${SUB_ID}/resourceGroups/rg-agents/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-id`,
});

describe('azure trust provider (managed-identity access tokens, local JWKS)', () => {
  let keys: FakeCloudKeys;
  const sign = async (claims: JWTPayload, opts?: { kid?: string }) => remember(await keys.sign(claims, opts));
  const make = (extra: Record<string, unknown> = {}, name = 'azure') =>
    azurePlugin.create(name, AzureConfigSchema.parse({ tenants: [TENANT_A, TENANT_B], audience: APP_ID_URI, clientId: CLIENT_ID, jwksUri: keys.jwksUri, ...extra }), deps);

  beforeAll(async () => {
    keys = await startFakeCloudKeys('/common/discovery/v2.0/keys');
  });
  afterAll(async () => {
    await keys.close();
    expect(logLines.some((l) => l.includes('azure attestation not accepted'))).toBe(true);
    const parts = minted.flatMap((t) => [t, ...t.split('.').slice(1)]).filter((s) => s.length > 0);
    expect(logLines.filter((line) => parts.some((s) => line.includes(s)))).toEqual([]);
  });

  it('maps a v1 token of a system-assigned identity: subject on (tid, oid), resource id parsed case-insensitively', async () => {
    const id = await make().verify({ token: await sign(v1Claims()), tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      kind: 'workload',
      providerType: 'azure',
      subject: `azure://${TENANT_A}/${OID}`,
      attributes: {
        tenant_id: TENANT_A,
        object_id: OID,
        app_id: MI_CLIENT,
        subscription_id: SUB_ID.toLowerCase(),
        resource_group: 'rg-agents',
        resource_provider: 'microsoft.compute',
        resource_type: 'virtualmachines',
        resource_name: 'agent-vm-1',
        mi_resource_id: v1Claims().xms_mirid,
      },
    });
  });

  it('maps a v2 token (aud = client id, azp) of a user-assigned identity', async () => {
    const id = await make().verify({ token: await sign(v2Claims(TENANT_B)), tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      subject: `azure://${TENANT_B}/${OID}`,
      attributes: { tenant_id: TENANT_B, app_id: MI_CLIENT, resource_group: 'rg-agents', resource_provider: 'microsoft.managedidentity', resource_type: 'userassignedidentities', resource_name: 'agent-id' },
    });
  });

  it('accepts only the configured token versions', async () => {
    const p = make({ tokenVersions: ['v2'] });
    expect(p.issuers).toEqual([V2(TENANT_A), V2(TENANT_B)]);
    await expect(p.verify({ token: await sign(v1Claims()), tokenType: JWT }, ctx())).rejects.toMatchObject({ detail: { claim: 'iss' } });
    await expect(p.verify({ token: await sign(v2Claims()), tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: `azure://${TENANT_A}/${OID}` });
  });

  it('parses resource ids: nested types, any case; other shapes give no attributes', () => {
    expect(parseAzureResourceId('/SUBSCRIPTIONS/S1/ResourceGroups/RG/providers/Microsoft.Web/sites/App/slots/Staging')).toEqual({
      subscription_id: 's1', resource_group: 'rg', resource_provider: 'microsoft.web', resource_type: 'sites/slots', resource_name: 'app/staging',
    });
    for (const bad of ['', 'subscriptions/s/resourcegroups/r/providers/n/t/x', '/subscriptions/s/resourcegroups/r', '/subscriptions/s/resourcegroups/r/providers/n/t', '/subscriptions/s/foo/r/providers/n/t/x', '/subscriptions//resourcegroups/r/providers/n/t/x'])
      expect(parseAzureResourceId(bad)).toBeUndefined();
  });

  it('keeps an unparsable xms_mirid raw only', async () => {
    const id = await make().verify({ token: await sign({ ...v1Claims(), xms_mirid: 'not/a/resource/id' }), tokenType: JWT }, ctx());
    expect(id.kind === 'workload' && id.attributes).toEqual({ tenant_id: TENANT_A, object_id: OID, app_id: MI_CLIENT, mi_resource_id: 'not/a/resource/id' });
  });

  it('follows a key rotation without a restart, and unknown kids do not hammer the JWKS endpoint', async () => {
    const provider = make({ jwks: { cooldown: '2s' } });
    await provider.verify({ token: await sign(v1Claims()), tokenType: JWT }, ctx());
    const before = keys.fetches();
    for (let i = 0; i < 8; i++)
      await expect(provider.verify({ token: await sign(v2Claims(), { kid: `random-${i}` }), tokenType: JWT }, ctx())).rejects.toMatchObject({
        detail: { code: 'ERR_JWKS_NO_MATCHING_KEY' },
      });
    expect(keys.fetches() - before).toBeLessThanOrEqual(1);
    await keys.rotate();
    const rotated = await sign(v2Claims(TENANT_B));
    await new Promise((r) => setTimeout(r, 2100));
    await expect(provider.verify({ token: rotated, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: `azure://${TENANT_B}/${OID}` });
    expect(keys.fetches() - before).toBeLessThanOrEqual(2);
  });

  type Case = { name: string; token: () => Promise<string>; config?: Record<string, unknown>; error: typeof StsError; detail: Record<string, unknown> };
  const cases: Case[] = [
    { name: 'wrong audience', token: () => sign({ ...v1Claims(), aud: 'https://management.azure.com/' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' } },
    { name: 'expired', token: () => sign({ ...v1Claims(), nbf: nowS() - 7200, iat: nowS() - 7200, exp: nowS() - 3600 }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_EXPIRED' } },
    { name: 'foreign issuer', token: () => sign({ ...v1Claims(), iss: 'https://evil.example/' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' } },
    { name: 'foreign tenant', token: () => sign(v1Claims(FOREIGN_TENANT)), error: SubjectTokenRejected, detail: { claim: 'iss' } },
    { name: 'tid differs from the tenant in iss', token: () => sign({ ...v1Claims(TENANT_A), tid: TENANT_B }), error: SubjectTokenRejected, detail: { reason: 'tid does not match the tenant of iss', tid: TENANT_B } },
    { name: 'tid of a foreign tenant under an allowed iss', token: () => sign({ ...v2Claims(TENANT_A), tid: FOREIGN_TENANT }), error: SubjectTokenRejected, detail: { reason: 'tid does not match the tenant of iss' } },
    { name: 'tenant allowed by another instance only', token: () => sign(v1Claims(TENANT_B)), config: { tenants: [TENANT_A] }, error: SubjectTokenRejected, detail: { claim: 'iss' } },
    { name: 'tampered signature', token: async () => tamperedPayload(await sign(v1Claims()), { ...v1Claims(), oid: '00000000-0000-4000-8000-000000000000' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' } },
    { name: 'alg none', token: async () => remember(unsignedToken({ ...v1Claims(), iat: nowS(), exp: nowS() + 600 })), error: SubjectTokenRejected, detail: { code: 'ERR_JOSE_ALG_NOT_ALLOWED' } },
    { name: 'HS256 with the public key', token: async () => remember(await hs256WithPublicKey({ ...v1Claims(), iat: nowS(), exp: nowS() + 600 }, keys.publicPem, keys.kid)), error: SubjectTokenRejected, detail: { code: 'ERR_JOSE_ALG_NOT_ALLOWED' } },
    { name: 'idtyp "user" (delegated token)', token: () => sign({ ...v1Claims(), idtyp: 'user', scp: 'user_impersonation' }), error: SubjectTokenRejected, detail: { reason: 'not an app-only token', idtyp: 'user' } },
    { name: 'missing oid', token: () => sign({ ...v1Claims(), oid: undefined }), error: SubjectTokenRejected, detail: { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'oid' } },
    { name: 'missing tid', token: () => sign({ ...v2Claims(), tid: undefined }), error: SubjectTokenRejected, detail: { claim: 'tid' } },
    { name: 'ver does not match the issuer', token: () => sign({ ...v1Claims(), ver: '2.0' }), error: SubjectTokenRejected, detail: { reason: 'token version does not match its issuer' } },
    { name: 'unknown signing key', token: () => sign(v1Claims(), { kid: 'not-published' }), error: SubjectTokenRejected, detail: { code: 'ERR_JWKS_NO_MATCHING_KEY' } },
    {
      name: 'JWKS endpoint unreachable',
      token: () => sign(v1Claims()),
      config: { jwksUri: 'http://127.0.0.1:9/common/discovery/v2.0/keys', jwks: { timeout: '1s' } },
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
      const err = await make({}, 'fresh').verify({ token: await sign(v1Claims()), tokenType: JWT }, ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect((err as StsError).detail).toMatchObject({ cause: 'keys-unavailable' });
    } finally {
      keys.setAvailable(true);
    }
  });

  it('one instance with two tenants: the registry routes every tenant x version issuer to it', async () => {
    const azure = make();
    const registry = createTrustRegistry([azure]);
    expect([...azure.issuers!].sort()).toEqual([V1(TENANT_A), V1(TENANT_B), V2(TENANT_A), V2(TENANT_B)].sort());
    for (const claims of [v1Claims(TENANT_A), v2Claims(TENANT_A), v1Claims(TENANT_B), v2Claims(TENANT_B)]) {
      const token = await sign(claims);
      const p = registry.resolveFor(token, JWT);
      expect(p.name).toBe('azure');
      await expect(p.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: `azure://${claims.tid as string}/${OID}` });
    }
    expect(() => registry.resolveFor(unsignedToken(v1Claims(FOREIGN_TENANT)), JWT)).toThrow(/not trusted/);
  });

  it('config: strict, at least one tenant (GUIDs, normalised to lower case), audience required', () => {
    expect(AzureConfigSchema.safeParse({ tenants: [], audience: APP_ID_URI }).success).toBe(false);
    expect(AzureConfigSchema.safeParse({ tenants: ['contoso.onmicrosoft.com'], audience: APP_ID_URI }).success).toBe(false);
    expect(AzureConfigSchema.safeParse({ tenants: [TENANT_A] }).success).toBe(false);
    expect(AzureConfigSchema.safeParse({ tenants: [TENANT_A], audience: APP_ID_URI, tenant: TENANT_B }).success).toBe(false);
    expect(AzureConfigSchema.parse({ tenants: [TENANT_A.toUpperCase()], audience: APP_ID_URI })).toMatchObject({
      tenants: [TENANT_A],
      tokenVersions: ['v1', 'v2'],
      jwksUri: 'https://login.microsoftonline.com/common/discovery/v2.0/keys',
    });
  });
});
