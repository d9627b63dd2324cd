// The `aws-sts` credential issuer against a fake STS that recomputes SigV4 and validates AssumeRole
// parameters like AWS: the exact RoleArn / RoleSessionName / SourceIdentity / tags / session policy /
// DurationSeconds sent, credentials in `credential_process` shape with AWS's own Expiration (and
// usable: the fake accepts them for GetCallerIdentity), refusals before any call (lifetime < 900 s,
// rendered policy too large, several scopes), own-credentials-rejected for bad signing keys or trust,
// UpstreamUnavailable when STS is down, early revocation through an inline deny statement on the role
// (the fake's IAM stores it and enforces it on the sessions it issued), and no secret in logs or errors.
import { inspect } from 'node:util';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { GetAccessKeyInfoCommand, GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import {
  awsStsIssuerPlugin,
  AwsStsIssuerConfigSchema,
  AwsSessionRevocationUnavailable,
  AwsStsRequestRejected,
  REVOCATION_POLICY_NAME,
  revocationStatement,
  type AwsStsHandle,
} from '../../src/credential-issuers/aws-sts/aws-sts-issuer.js';
import { completed, type CredentialIssuer, type IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { credentialIssuerCatalog } from '../../src/credential-issuers/catalog.js';
import type { BlendedIdentity, CallContext, Credential } from '../../src/core/types.js';
import { MalformedRequest, ScopeNotAllowed, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { credentialFingerprint } from '../../src/lib/crypto.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';
import { createLogger } from '../../src/log/logger.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

const REGION = 'eu-west-1';
const AGENT_KEY = { accessKeyId: 'AKIAAGENTSTS00000001', secretAccessKey: 'agent-sts-own-secret/abcdefghijklmnopqrstuv' };
const UNTRUSTED_KEY = { accessKeyId: 'AKIAUNTRUSTED0000001', secretAccessKey: 'untrusted-secret/abcdefghijklmnopqrstuvw' };
const DEPLOY_ARN = 'arn:aws:iam::111122223333:role/agents/deploy';
const READ_ARN = 'arn:aws:iam::111122223333:role/reader';
const LONG_ARN = 'arn:aws:iam::111122223333:role/long';
const XACCT_ARN = 'arn:aws:iam::444455556666:role/partner';

const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });
const ctx = (now = new Date()): CallContext => ({ requestId: 'test', now });
const env = { AGS_AWS_SECRET: AGENT_KEY.secretAccessKey, AGS_WRONG_SECRET: 'not-the-right-secret/abcdefghijklmnopq', AGS_UNTRUSTED_SECRET: UNTRUSTED_KEY.secretAccessKey };
const deps: IssuerDeps = testIssuerDeps(logger, env);

/** Every secret that passed through this file; none may appear in a log line or an error. */
const secrets: string[] = [AGENT_KEY.secretAccessKey, UNTRUSTED_KEY.secretAccessKey, env.AGS_WRONG_SECRET];
const errors: unknown[] = [];

const workload = (subject = 'github://acme/payments@refs/heads/main'): BlendedIdentity['workload'] => ({
  kind: 'workload', provider: 'gha', providerType: 'github-actions', subject, attributes: {}, claims: {}, expiresAt: new Date(Date.now() + 3600_000),
});
const human = (subject = 'alice@example.com'): NonNullable<BlendedIdentity['human']> => ({
  kind: 'human', provider: 'okta', issuer: 'https://idp.example.com', subject, groups: [], roles: [], expiresAt: new Date(Date.now() + 3600_000),
});

const SESSION_POLICY = {
  Version: '2012-10-17',
  Statement: [
    { Effect: 'Allow', Action: ['s3:GetObject', 's3:PutObject'], Resource: 'arn:aws:s3:::deploy-artifacts/${task_id}/*' },
    { Effect: 'Allow', Action: 's3:ListBucket', Resource: 'arn:aws:s3:::deploy-artifacts', Condition: { StringLike: { 's3:prefix': ['${task_id}/*', '${aws:PrincipalTag/agent-sts:task}/*'] } } },
    { Sid: 'Who', Effect: 'Deny', Action: 'iam:*', Resource: '*', Condition: { StringNotEquals: { 'aws:SourceIdentity': '${source_identity}' } } },
  ],
};

describe('aws-sts credential issuer (AssumeRole against a SigV4-checking fake STS)', () => {
  let sts: FakeSts;
  const make = (extra: Record<string, unknown> = {}, name = 'aws'): CredentialIssuer =>
    awsStsIssuerPlugin.create(
      name,
      AwsStsIssuerConfigSchema.parse({
        region: REGION,
        endpoint: sts.url,
        iamEndpoint: sts.iamUrl,
        credentials: { accessKeyId: AGENT_KEY.accessKeyId, secretAccessKey: { fromEnv: 'AGS_AWS_SECRET' } },
        roles: {
          'aws:deploy': { roleArn: DEPLOY_ARN, sessionPolicy: SESSION_POLICY, transitiveTags: true },
          'aws:read': { roleArn: READ_ARN },
          'aws:long': { roleArn: LONG_ARN, maxDuration: '2h' },
          'aws:partner': { roleArn: XACCT_ARN, externalId: 'partner-ext-id-42' },
          'aws:big': { roleArn: READ_ARN, sessionPolicy: { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: `arn:aws:s3:::b/${'${workload}/'.repeat(60)}*` }] } },
        },
        ...extra,
      }),
      deps,
    );

  async function issue(issuer: CredentialIssuer, scopes: string[], over: { ttl?: number; taskId?: string; identity?: Partial<BlendedIdentity> } = {}): Promise<Credential> {
    const taskId = over.taskId ?? 't_abcdefghij0123456789';
    const cred = await completed(issuer.issue(
      {
        decision: { allow: true, policyVersion: 'v1', grantedScopes: scopes, ttlCapSeconds: over.ttl ?? 1800, reasons: [] },
        identity: { workload: workload(), human: human(), priorActors: [], ...over.identity },
        taskId,
        credentialId: 'cred-1',
        requestedTarget: 'aws',
        ttlSeconds: over.ttl ?? 1800,
      },
      ctx(),
    ));
    const s = cred.structured!.reveal();
    secrets.push(String(s.SecretAccessKey), String(s.SessionToken));
    return cred;
  }
  async function failure(p: Promise<unknown>): Promise<Error> {
    const e = await p.then(
      () => {
        throw new Error('expected a failure');
      },
      (x: unknown) => x as Error,
    );
    errors.push(e);
    return e;
  }
  const last = () => sts.assumeRoleCalls.at(-1)!;

  beforeAll(async () => {
    sts = await startFakeSts({
      region: REGION,
      iamAccessKeyIds: [AGENT_KEY.accessKeyId], // the untrusted key signs fine but may not touch IAM
      keys: [
        { ...AGENT_KEY, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAAGENTSTS' } },
        { ...UNTRUSTED_KEY, identity: { type: 'user', account: '999988887777', userName: 'intruder', userId: 'AIDAINTRUDER' } },
      ],
      roles: [
        { arn: DEPLOY_ARN, roleId: 'AROADEPLOYROLE0000001', trustedAccessKeyIds: [AGENT_KEY.accessKeyId] },
        { arn: READ_ARN, roleId: 'AROAREADROLE00000001' },
        { arn: LONG_ARN, roleId: 'AROALONGROLE00000001', maxSessionDuration: 7200 },
        { arn: XACCT_ARN, roleId: 'AROAPARTNER000000001', externalId: 'partner-ext-id-42' },
      ],
    });
  });
  afterAll(async () => {
    await sts.close();
    // No secret key, session token or own secret in any log line or error.
    expect(secrets.length).toBeGreaterThan(6);
    const leaks = logLines.filter((l) => secrets.some((s) => l.includes(s)));
    expect(leaks).toEqual([]);
    for (const e of errors) {
      const text = `${(e as Error).message}\n${(e as Error).stack}\n${inspect(e, { depth: 10 })}\n${JSON.stringify(e)}`;
      for (const s of secrets) expect(text).not.toContain(s);
    }
  });

  it('is registered in the catalog as aws-sts', () => {
    expect(credentialIssuerCatalog.get('aws-sts')).toBe(awsStsIssuerPlugin);
    expect(make().issuedTokenTypes).toEqual([TOKEN_TYPE.awsCredentials]);
    expect(TOKEN_TYPE.awsCredentials).toBe('urn:agent-sts:token-type:aws-credentials');
  });

  it('assumes the scope\'s role with the exact agent-sts parameters and returns credential_process credentials', async () => {
    const before = Date.now();
    const cred = await issue(make(), ['aws:deploy']);
    const call = last();
    expect(call).toMatchObject({
      status: 200,
      callerAccessKeyId: AGENT_KEY.accessKeyId,
      RoleArn: DEPLOY_ARN,
      RoleSessionName: 'ags-t_abcdefghij0123456789',
      SourceIdentity: 'alice@example.com', // the human, when present
      DurationSeconds: 1800,
      ExternalId: undefined,
    });
    expect(call.Tags).toEqual([
      { Key: 'agent-sts:task', Value: 't_abcdefghij0123456789' },
      { Key: 'agent-sts:subject', Value: 'github://acme/payments@refs/heads/main' },
      { Key: 'agent-sts:human', Value: 'alice@example.com' },
    ]);
    expect(call.TransitiveTagKeys).toEqual(['agent-sts:task', 'agent-sts:subject', 'agent-sts:human']);
    // Placeholders substituted inside the JSON strings; IAM's own ${aws:...} variables untouched.
    expect(JSON.parse(call.Policy!)).toEqual({
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Action: ['s3:GetObject', 's3:PutObject'], Resource: 'arn:aws:s3:::deploy-artifacts/t_abcdefghij0123456789/*' },
        { Effect: 'Allow', Action: 's3:ListBucket', Resource: 'arn:aws:s3:::deploy-artifacts', Condition: { StringLike: { 's3:prefix': ['t_abcdefghij0123456789/*', '${aws:PrincipalTag/agent-sts:task}/*'] } } },
        { Sid: 'Who', Effect: 'Deny', Action: 'iam:*', Resource: '*', Condition: { StringNotEquals: { 'aws:SourceIdentity': 'alice@example.com' } } },
      ],
    });

    const s = cred.structured!.reveal();
    expect(Object.keys(s)).toEqual(['Version', 'AccessKeyId', 'SecretAccessKey', 'SessionToken', 'Expiration']);
    expect(s).toMatchObject({ Version: 1, AccessKeyId: call.issuedAccessKeyId, Expiration: new Date(call.expiration!).toISOString() });
    expect(cred).toMatchObject({ id: 'cred-1', issuedTokenType: TOKEN_TYPE.awsCredentials, tokenType: 'N_A' });
    expect(cred.accessToken.reveal()).toBe(s.SessionToken);
    expect(cred.fingerprint).toBe(credentialFingerprint(String(s.SessionToken)));
    // Truthful expiry: AWS's Expiration, which is the granted 1800 s.
    expect(cred.expiresAt.toISOString()).toBe(new Date(call.expiration!).toISOString());
    expect(cred.expiresAt.getTime()).toBeGreaterThan(before + 1790_000);
    expect(cred.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 1800_000);
    expect(cred.revocationHandle).toEqual({
      roleArn: DEPLOY_ARN,
      roleSessionName: 'ags-t_abcdefghij0123456789',
      sourceIdentity: 'alice@example.com',
      assumedRoleId: 'AROADEPLOYROLE0000001:ags-t_abcdefghij0123456789',
      accessKeyId: s.AccessKeyId,
      expiresAt: cred.expiresAt.toISOString(),
    });

    // The credentials work: the same (SigV4-checking) STS knows the caller as the assumed role.
    const asRole = new STSClient({ region: REGION, endpoint: sts.url, credentials: { accessKeyId: String(s.AccessKeyId), secretAccessKey: String(s.SecretAccessKey), sessionToken: String(s.SessionToken) } });
    const who = await asRole.send(new GetCallerIdentityCommand({}));
    expect(who.Arn).toBe('arn:aws:sts::111122223333:assumed-role/deploy/ags-t_abcdefghij0123456789');
    asRole.destroy();
  });

  it('uses the workload as SourceIdentity without a human, sanitises it, and caps the duration at the role maximum', async () => {
    const issuer = make();
    const cred = await issue(issuer, ['aws:read'], { ttl: 7200, identity: { human: undefined } });
    expect(last()).toMatchObject({
      status: 200,
      RoleArn: READ_ARN,
      SourceIdentity: 'github___acme_payments@refs_heads_main',
      DurationSeconds: 3600, // maxDuration default 1h, not the 7200 s asked for
      Policy: undefined,
      TransitiveTagKeys: [],
    });
    expect(last().Tags.map((t) => t.Key)).toEqual(['agent-sts:task', 'agent-sts:subject']);
    expect(cred.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(3600_000);
    expect(cred.expiresAt.getTime() - Date.now()).toBeGreaterThan(3590_000);

    await issue(issuer, ['aws:long'], { ttl: 7200, identity: { human: undefined } });
    expect(last()).toMatchObject({ status: 200, RoleArn: LONG_ARN, DurationSeconds: 7200 });
    await issue(issuer, ['aws:partner'], { identity: { human: undefined } });
    expect(last()).toMatchObject({ status: 200, RoleArn: XACCT_ARN, ExternalId: 'partner-ext-id-42' });
  });

  it('keeps long or odd subjects and task ids within AWS limits (the fake enforces them)', async () => {
    const longSubject = `spiffe://cluster.local/ns/${'very-long-namespace-'.repeat(8)}/sa/ünïcödé agent#1`;
    const longHuman = `aws:${'x'.repeat(300)}`;
    await issue(make(), ['aws:deploy'], { taskId: `t_${'z'.repeat(80)}`, identity: { workload: workload(longSubject), human: human(longHuman) } });
    const c = last();
    expect(c.status).toBe(200);
    expect(c.RoleSessionName!.length).toBeLessThanOrEqual(64);
    expect(c.RoleSessionName).toMatch(/^ags-t_z+\.[0-9a-f]{10}$/);
    expect(c.SourceIdentity!.length).toBeLessThanOrEqual(64);
    expect(c.SourceIdentity).toMatch(/^[A-Za-z0-9_=,.@-]{2,64}$/);
    expect(c.SourceIdentity!.toLowerCase().startsWith('aws:')).toBe(false);
    for (const t of c.Tags) expect(t.Value.length).toBeLessThanOrEqual(256);
    expect(c.Tags.find((t) => t.Key === 'agent-sts:subject')!.Value).toContain('ünïcödé agent_1'); // letters and spaces are AWS tag characters, '#' is not

    await issue(make(), ['aws:read'], { identity: { human: human('a') } });
    expect(last()).toMatchObject({ status: 200, SourceIdentity: 'a_' });
  });

  it('refuses a lifetime under 900 s before calling AWS', async () => {
    const n = sts.assumeRoleCalls.length;
    const e = await failure(issue(make(), ['aws:read'], { ttl: 899 }));
    expect(e).toBeInstanceOf(MalformedRequest);
    expect((e as MalformedRequest).publicMessage).toBe('AWS sessions last at least 900 s; ask for requested_lifetime >= 900 or change the policy');
    expect(sts.assumeRoleCalls.length).toBe(n);
  });

  it('refuses a session policy that renders over 2048 characters before calling AWS', async () => {
    const n = sts.assumeRoleCalls.length;
    const e = await failure(issue(make(), ['aws:big']));
    expect(e).toBeInstanceOf(AwsStsRequestRejected);
    expect(e.message).toMatch(/session policy of scope aws:big renders to \d+ characters; AWS allows 2048/);
    expect(sts.assumeRoleCalls.length).toBe(n);
  });

  it('refuses several scopes, no scope, or an unmapped scope', async () => {
    const n = sts.assumeRoleCalls.length;
    for (const scopes of [['aws:read', 'aws:deploy'], [], ['aws:unknown']]) {
      const e = await failure(issue(make(), scopes));
      expect(e).toBeInstanceOf(ScopeNotAllowed);
    }
    expect(sts.assumeRoleCalls.length).toBe(n);
  });

  it('rejects bad configuration at load time', () => {
    const base = { region: REGION, roles: { s: { roleArn: READ_ARN } } };
    expect(AwsStsIssuerConfigSchema.safeParse(base).success).toBe(true);
    expect(AwsStsIssuerConfigSchema.parse(base).maxDuration).toBe(3600);
    const bad = (over: Record<string, unknown>) => AwsStsIssuerConfigSchema.safeParse({ ...base, ...over }).success;
    expect(bad({ extra: 1 })).toBe(false);
    expect(bad({ roles: {} })).toBe(false);
    expect(bad({ roles: { s: { roleArn: 'arn:aws:iam::1:user/x' } } })).toBe(false);
    expect(bad({ roles: { s: { roleArn: READ_ARN, sessionPolicy: { Version: '2012-10-17', Statement: [{ Resource: '${taskid}' }] } } } })).toBe(false); // typo'd placeholder
    expect(bad({ roles: { s: { roleArn: READ_ARN, sessionPolicy: { Version: '2012-10-17', Statement: [{ Resource: 'x'.repeat(2100) }] } } } })).toBe(false);
    expect(bad({ maxDuration: '10m' })).toBe(false);
    expect(bad({ maxDuration: '13h' })).toBe(false);
    expect(bad({ credentials: { accessKeyId: AGENT_KEY.accessKeyId, secretAccessKey: 'inline-secret' } })).toBe(false);
  });

  it('maps wrong signing keys, untrusted callers and AccessDenied to own-credentials-rejected', async () => {
    for (const credentials of [
      { accessKeyId: AGENT_KEY.accessKeyId, secretAccessKey: { fromEnv: 'AGS_WRONG_SECRET' } }, // SignatureDoesNotMatch
      { accessKeyId: 'AKIANOBODY0000000001', secretAccessKey: { fromEnv: 'AGS_AWS_SECRET' } }, // InvalidClientTokenId
      { accessKeyId: UNTRUSTED_KEY.accessKeyId, secretAccessKey: { fromEnv: 'AGS_UNTRUSTED_SECRET' } }, // AccessDenied (trust policy)
    ]) {
      const e = await failure(issue(make({ credentials }), ['aws:deploy']));
      expect(e).toBeInstanceOf(UpstreamUnavailable);
      expect((e as UpstreamUnavailable).detail).toMatchObject({ cause: 'own-credentials-rejected', issuer: 'aws', roleArn: DEPLOY_ARN });
    }
    expect(sts.calls.slice(-3).map((c) => c.code)).toEqual(['SignatureDoesNotMatch', 'InvalidClientTokenId', 'AccessDenied']);
    expect(logLines.some((l) => l.includes('AWS STS refused agent-sts credentials'))).toBe(true);
  });

  it('reports AWS refusing the packed policy as a clear configuration error', async () => {
    const small = await startFakeSts({ region: REGION, keys: [{ ...AGENT_KEY, identity: { type: 'user', account: '111122223333', userName: 'a', userId: 'AIDAX' } }], roles: [{ arn: DEPLOY_ARN, roleId: 'AROAX' }], packedPolicyBudget: 300 });
    try {
      const e = await failure(issue(make({ endpoint: small.url }), ['aws:deploy']));
      expect(e).toBeInstanceOf(AwsStsRequestRejected);
      expect(e.message).toMatch(/AWS STS rejected AssumeRole \(PackedPolicyTooLarge(Exception)?\): Packed policy consumes/);
      expect(small.assumeRoleCalls.at(-1)).toMatchObject({ status: 400, code: 'PackedPolicyTooLarge' });
    } finally {
      await small.close();
    }
  });

  it('maps STS down or failing to UpstreamUnavailable', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const down = await failure(issue(make({ endpoint: `http://127.0.0.1:${port}` }), ['aws:read']));
    expect(down).toBeInstanceOf(UpstreamUnavailable);
    expect((down as UpstreamUnavailable).detail).toMatchObject({ cause: 'api-unreachable' });

    sts.failWith(500);
    try {
      const e = await failure(issue(make(), ['aws:read']));
      expect(e).toBeInstanceOf(UpstreamUnavailable);
      expect((e as UpstreamUnavailable).detail).toMatchObject({ cause: 'api-error', httpStatus: 500 });
    } finally {
      sts.failWith(null);
    }
  });

  describe('revoke (inline deny statement on the role, enforced by the fake)', () => {
    const sessionClient = (cred: Credential) => {
      const s = cred.structured!.reveal();
      return new STSClient({ region: REGION, endpoint: sts.url, credentials: { accessKeyId: String(s.AccessKeyId), secretAccessKey: String(s.SecretAccessKey), sessionToken: String(s.SessionToken) } });
    };
    /** Whether AWS (the fake) still lets the session do anything: GetAccessKeyInfo is policy-checked, GetCallerIdentity never is. */
    async function alive(cred: Credential): Promise<boolean> {
      const c = sessionClient(cred);
      try {
        await c.send(new GetAccessKeyInfoCommand({ AccessKeyId: String(cred.structured!.reveal().AccessKeyId) }));
        return true;
      } catch (e) {
        if ((e as { name?: string }).name === 'AccessDenied' && (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 403) return false;
        throw e;
      } finally {
        c.destroy();
      }
    }
    const revocationPolicy = (arn: string) => {
      const doc = sts.rolePolicies(arn)[REVOCATION_POLICY_NAME];
      return doc === undefined ? undefined : (JSON.parse(doc) as { Version: string; Statement: Record<string, unknown>[] });
    };

    it('ends exactly that session (aws:userid deny), leaves other sessions of the role working, and is idempotent', async () => {
      const issuer = make();
      expect(issuer.needsActiveRevocation).toBe(true);
      const a = await issue(issuer, ['aws:read'], { taskId: 't_revokeA' });
      const b = await issue(issuer, ['aws:read'], { taskId: 't_revokeB' }); // same role, same SourceIdentity (alice)
      const ha = a.revocationHandle as AwsStsHandle;
      expect(ha.assumedRoleId).toBe('AROAREADROLE00000001:ags-t_revokeA');

      // The session works at the fake: it is the assumed role, and policy-checked calls pass.
      const ca = sessionClient(a);
      expect((await ca.send(new GetCallerIdentityCommand({}))).Arn).toBe('arn:aws:sts::111122223333:assumed-role/reader/ags-t_revokeA');
      expect(await alive(a)).toBe(true);
      expect(await alive(b)).toBe(true);

      const iamBefore = sts.iamCalls.length;
      await expect(issuer.revoke(ha, ctx())).resolves.toBeUndefined();
      expect(sts.iamCalls.slice(iamBefore).map((c) => [c.action, c.roleName, c.policyName, c.status])).toEqual([
        ['GetRolePolicy', 'reader', REVOCATION_POLICY_NAME, 404], // no policy yet: empty
        ['PutRolePolicy', 'reader', REVOCATION_POLICY_NAME, 200],
        ['GetRolePolicy', 'reader', REVOCATION_POLICY_NAME, 200], // verified after the write
      ]);
      expect(revocationPolicy(READ_ARN)).toEqual({ Version: '2012-10-17', Statement: [revocationStatement(ha)] });
      expect(revocationStatement(ha)).toEqual({
        Sid: expect.stringMatching(/^AgsRevokedagstrevokeA[0-9a-f]{12}$/),
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { 'aws:userid': 'AROAREADROLE00000001:ags-t_revokeA' }, DateLessThan: { 'aws:CurrentTime': ha.expiresAt } },
      });

      // Dead after revocation; the other session of the same role (and the same human) keeps working.
      expect(await alive(a)).toBe(false);
      expect(sts.calls.at(-1)).toMatchObject({ status: 403, code: 'AccessDenied', accessKeyId: ha.accessKeyId });
      expect(await alive(b)).toBe(true);
      // Like AWS, GetCallerIdentity is never refused by a policy (it grants nothing).
      expect((await ca.send(new GetCallerIdentityCommand({}))).Arn).toContain('ags-t_revokeA');
      ca.destroy();

      // Twice: fine, and no write.
      const n = sts.iamCalls.length;
      await expect(issuer.revoke(ha, ctx())).resolves.toBeUndefined();
      expect(sts.iamCalls.slice(n).map((c) => c.action)).toEqual(['GetRolePolicy']);
      expect(revocationPolicy(READ_ARN)!.Statement).toHaveLength(1);

      // After the Expiration: no IAM call at all.
      const m = sts.iamCalls.length;
      await expect(issuer.revoke(b.revocationHandle!, ctx(new Date(b.expiresAt.getTime() + 1000)))).resolves.toBeUndefined();
      expect(sts.iamCalls.length).toBe(m);
      expect(await alive(b)).toBe(true);
      await expect(issuer.revoke({ user: 'x' }, ctx())).rejects.toThrow(/not an AWS session handle/);
      expect(logLines.some((l) => l.includes('aws session revoked'))).toBe(true);
      await issuer.close?.();
      sts.setRolePolicy(READ_ARN, REVOCATION_POLICY_NAME, null);
    });

    it('prunes statements of lapsed sessions on the next revoke and keeps foreign and live statements', async () => {
      const issuer = make();
      const foreign = { Sid: 'HandWritten', Effect: 'Deny', Action: 's3:DeleteBucket', Resource: '*' };
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, JSON.stringify({ Version: '2012-10-17', Id: 'kept', Statement: foreign }));
      const short = await issue(issuer, ['aws:long'], { taskId: 't_prune_short', ttl: 900 });
      const long = await issue(issuer, ['aws:long'], { taskId: 't_prune_long', ttl: 7200 });
      const hs = short.revocationHandle as AwsStsHandle;
      const hl = long.revocationHandle as AwsStsHandle;
      await issuer.revoke(hs, ctx());
      expect(revocationPolicy(LONG_ARN)!.Statement).toEqual([foreign, revocationStatement(hs)]);
      // Later, once the short session has lapsed, the next revocation drops its statement.
      await issuer.revoke(hl, ctx(new Date(Date.parse(hs.expiresAt) + 1000)));
      expect(revocationPolicy(LONG_ARN)).toEqual({ Version: '2012-10-17', Id: 'kept', Statement: [foreign, revocationStatement(hl)] });
      expect(await alive(long)).toBe(false); // still live at AWS's clock, so still denied
      await issuer.close?.();
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, null);
    });

    it('fails clearly rather than dropping live statements when the policy would exceed IAM\'s quota', async () => {
      const issuer = make();
      const big = JSON.stringify({ Version: '2012-10-17', Statement: [{ Sid: 'Big', Effect: 'Deny', Action: 's3:*', Resource: Array.from({ length: 370 }, (_, i) => `arn:aws:s3:::bucket-${String(i).padStart(4, '0')}`) }] });
      expect(big.length).toBeGreaterThan(10_000); // valid on its own (≤ 10,240), too big with one more statement
      expect(big.length).toBeLessThanOrEqual(10_240);
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, big);
      const cred = await issue(issuer, ['aws:long'], { taskId: 't_full' });
      const e = await failure(issuer.revoke(cred.revocationHandle!, ctx()));
      expect(e).toBeInstanceOf(AwsSessionRevocationUnavailable);
      expect(e.message).toMatch(/inline policy agent-sts-revoked-sessions would be \d+ characters with only live deny statements \(IAM allows 10240\)/);
      expect(sts.rolePolicies(LONG_ARN)[REVOCATION_POLICY_NAME]).toBe(big); // untouched
      expect(await alive(cred)).toBe(true);
      await issuer.close?.();
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, null);
    });

    it('lands every statement when replicas revoke sessions of one role concurrently', async () => {
      const replicas = [make(), make(), make(), make()];
      const creds: Credential[] = [];
      for (const [i] of replicas.entries()) creds.push(await issue(replicas[0]!, ['aws:long'], { taskId: `t_race${i}` }));
      // Typically all read the (absent) policy before any writes, so later writes overwrite earlier ones; the re-read after each write makes the losers retry.
      await Promise.all(replicas.map((r, i) => r.revoke(creds[i]!.revocationHandle!, ctx())));
      const statements = revocationPolicy(LONG_ARN)!.Statement;
      expect(statements).toHaveLength(4);
      for (const c of creds) {
        expect(statements).toContainEqual(revocationStatement(c.revocationHandle as AwsStsHandle));
        expect(await alive(c)).toBe(false);
      }
      for (const r of replicas) await r.close?.();
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, null);
    });

    it('denies by session name on the role for a handle without the assumed-role id', async () => {
      const issuer = make();
      const cred = await issue(issuer, ['aws:long'], { taskId: 't_noid' });
      const { assumedRoleId: _id, ...handle } = cred.revocationHandle as AwsStsHandle;
      await issuer.revoke(handle, ctx());
      expect(revocationPolicy(LONG_ARN)!.Statement[0]!.Condition).toEqual({ StringLike: { 'aws:userid': '*:ags-t_noid' }, DateLessThan: { 'aws:CurrentTime': handle.expiresAt } });
      expect(await alive(cred)).toBe(false);
      await issuer.close?.();
      sts.setRolePolicy(LONG_ARN, REVOCATION_POLICY_NAME, null);
    });

    it('maps IAM down or failing to UpstreamUnavailable and IAM AccessDenied to own-credentials-rejected', async () => {
      const cred = await issue(make(), ['aws:read'], { taskId: 't_iamdown' });
      const port = await new Promise<number>((resolve) => {
        const s = createServer().listen(0, '127.0.0.1', () => {
          const p = (s.address() as AddressInfo).port;
          s.close(() => resolve(p));
        });
      });
      const down = await failure(make({ iamEndpoint: `http://127.0.0.1:${port}` }).revoke(cred.revocationHandle!, ctx()));
      expect(down).toBeInstanceOf(UpstreamUnavailable);
      expect((down as UpstreamUnavailable).detail).toMatchObject({ cause: 'api-unreachable', issuer: 'aws', roleArn: READ_ARN });

      sts.failIamWith(500);
      try {
        const e = await failure(make().revoke(cred.revocationHandle!, ctx()));
        expect(e).toBeInstanceOf(UpstreamUnavailable);
        expect((e as UpstreamUnavailable).detail).toMatchObject({ cause: 'api-error', httpStatus: 500 });
      } finally {
        sts.failIamWith(null);
      }

      const denied = await failure(make({ credentials: { accessKeyId: UNTRUSTED_KEY.accessKeyId, secretAccessKey: { fromEnv: 'AGS_UNTRUSTED_SECRET' } } }).revoke(cred.revocationHandle!, ctx()));
      expect(denied).toBeInstanceOf(UpstreamUnavailable);
      expect((denied as UpstreamUnavailable).detail).toMatchObject({ cause: 'own-credentials-rejected', code: 'AccessDenied', httpStatus: 403 });
      expect(sts.iamCalls.at(-1)).toMatchObject({ action: 'GetRolePolicy', callerAccessKeyId: UNTRUSTED_KEY.accessKeyId, status: 403, code: 'AccessDenied' });
      expect(logLines.some((l) => l.includes('AWS IAM refused agent-sts credentials'))).toBe(true);

      expect(await alive(cred)).toBe(true); // nothing was written
      expect(revocationPolicy(READ_ARN)).toBeUndefined();
    });
  });
});
