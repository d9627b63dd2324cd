import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { awsIamPlugin, AwsIamConfigSchema } from '../../src/trust-providers/aws-iam/aws-iam-provider.js';
import { createAwsIamAttestation, encodeAwsIamBlob, type AwsIamRequestBlob, type AwsStaticCredentials } from '../../src/trust-providers/aws-iam/attest.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { createLogger } from '../../src/log/logger.js';
import { testProviderDeps } from '../support/provider-deps.js';
import { StsError, SubjectTokenRejected, UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';

const SERVER_ID = 'https://sts.test.invalid';
const TYPE = TOKEN_TYPE.awsSigv4Gci;
const ctx = () => ({ requestId: 'test', now: new Date() });

const logLines: string[] = [];
const deps = testProviderDeps({ serverId: () => SERVER_ID, logger: createLogger({ level: 'trace', destination: { write: (l: string) => void logLines.push(l) } }) });
/** Every attestation made in this file; none may appear in a log line or an error. */
const minted: string[] = [];
const remember = (t: string) => (minted.push(t), t);

const ROLE_KEY: AwsStaticCredentials = { accessKeyId: 'ASIAFAKEROLE0000001', secretAccessKey: 'role-secret-key/abcdefghijklmnopqrstuv', sessionToken: 'FwoGZXIvYXdzEFAKESESSIONTOKEN' };
const USER_KEY: AwsStaticCredentials = { accessKeyId: 'AKIAFAKEUSER0000001', secretAccessKey: 'user-secret-key/abcdefghijklmnopqrstuv' };
const UNKNOWN_KEY: AwsStaticCredentials = { accessKeyId: 'AKIAUNKNOWN00000001', secretAccessKey: 'nobody-knows-this-secret' };

const decode = (t: string) => JSON.parse(Buffer.from(t, 'base64url').toString('utf8')) as AwsIamRequestBlob;
const attest = async (over: Partial<Parameters<typeof createAwsIamAttestation>[0]> = {}) =>
  remember(await createAwsIamAttestation({ serverId: SERVER_ID, credentials: ROLE_KEY, ...over }));
const mutate = async (fn: (b: AwsIamRequestBlob) => void, over: Partial<Parameters<typeof createAwsIamAttestation>[0]> = {}) => {
  const blob = decode(await attest(over));
  fn(blob);
  return remember(encodeAwsIamBlob(blob));
};
const setAuth = (b: AwsIamRequestBlob, f: (a: string) => string) => {
  b.headers.authorization = f(String(b.headers.authorization));
};

describe('aws-iam trust provider (signed GetCallerIdentity, fake STS that checks SigV4)', () => {
  let sts: FakeSts;
  const make = (extra: Record<string, unknown> = {}, name = 'aws') =>
    awsIamPlugin.create(name, AwsIamConfigSchema.parse({ stsEndpoint: sts.url, ...extra }), deps);

  beforeAll(async () => {
    sts = await startFakeSts({
      keys: [
        { ...ROLE_KEY, identity: { type: 'assumed-role', account: '111122223333', roleName: 'ci-runner', roleId: 'AROAEXAMPLEROLEID', sessionName: 'i-0abc123' } },
        { ...USER_KEY, identity: { type: 'user', account: '444455556666', userName: 'deploy-bot', userId: 'AIDAEXAMPLEUSERID', path: 'automation/' } },
      ],
    });
  });
  afterAll(async () => {
    await sts.close();
    expect(logLines.some((l) => l.includes('aws-iam attestation not accepted'))).toBe(true);
    // Neither an attestation nor its signature or session token appears in any log line.
    const parts = minted.flatMap((t) => {
      const sig = /Signature=([0-9a-f]{64})/.exec(Buffer.from(t, 'base64url').toString('utf8'))?.[1];
      return [t, ...(sig ? [sig] : [])];
    });
    expect(logLines.filter((line) => parts.some((s) => line.includes(s)) || line.includes(ROLE_KEY.sessionToken!))).toEqual([]);
  });

  it('verifies a real SigV4-signed request of an assumed role and maps it to the role', async () => {
    const token = await attest();
    const id = await make().verify({ token, tokenType: TYPE }, ctx());
    expect(id).toMatchObject({
      kind: 'workload',
      provider: 'aws',
      providerType: 'aws-iam',
      subject: 'aws://111122223333/role/ci-runner',
      attributes: {
        principal_type: 'role',
        account: '111122223333',
        role_arn: 'arn:aws:iam::111122223333:role/ci-runner',
        role_name: 'ci-runner',
        session_name: 'i-0abc123',
        principal_id: 'AROAEXAMPLEROLEID',
        arn: 'arn:aws:sts::111122223333:assumed-role/ci-runner/i-0abc123',
      },
    });
    expect(id.expiresAt.getTime()).toBeGreaterThan(Date.now());
    // Replayed to the configured endpoint with the signed Host value; the fake recomputed the signature over it.
    expect(sts.calls.at(-1)).toMatchObject({ method: 'POST', path: '/', host: 'sts.amazonaws.com', accessKeyId: ROLE_KEY.accessKeyId, status: 200 });
  });

  it('maps an IAM user (with a path) to aws://<account>/user/<name>', async () => {
    const id = await make().verify({ token: await attest({ credentials: USER_KEY }), tokenType: TYPE }, ctx());
    expect(id).toMatchObject({
      subject: 'aws://444455556666/user/deploy-bot',
      attributes: { principal_type: 'user', account: '444455556666', user_name: 'deploy-bot', principal_id: 'AIDAEXAMPLEUSERID', arn: 'arn:aws:iam::444455556666:user/automation/deploy-bot' },
    });
  });

  it('accepts a credentials provider function and a regional STS host when allowed', async () => {
    const regional = await startFakeSts({ region: 'eu-west-1', keys: [{ ...USER_KEY, identity: { type: 'user', account: '444455556666', userName: 'deploy-bot', userId: 'AIDAX' } }] });
    try {
      const token = await attest({ credentials: async () => USER_KEY, stsUrl: 'https://sts.eu-west-1.amazonaws.com/' });
      const p = awsIamPlugin.create('eu', AwsIamConfigSchema.parse({ stsEndpoint: regional.url, allowedStsHosts: ['sts.eu-west-1.amazonaws.com'] }), deps);
      await expect(p.verify({ token, tokenType: TYPE }, ctx())).resolves.toMatchObject({ subject: 'aws://444455556666/user/deploy-bot' });
      expect(regional.calls.at(-1)).toMatchObject({ host: 'sts.eu-west-1.amazonaws.com', status: 200 });
    } finally {
      await regional.close();
    }
  });

  it('signs with the AWS SDK default credential chain when no credentials are given (env)', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY, token: process.env.AWS_SESSION_TOKEN };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: USER_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: USER_KEY.secretAccessKey });
    delete process.env.AWS_SESSION_TOKEN;
    try {
      const token = remember(await createAwsIamAttestation({ serverId: SERVER_ID }));
      await expect(make().verify({ token, tokenType: TYPE }, ctx())).resolves.toMatchObject({ subject: 'aws://444455556666/user/deploy-bot' });
    } finally {
      for (const [k, v] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret], ['AWS_SESSION_TOKEN', saved.token]] as const)
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
  });

  type Row = [name: string, token: () => Promise<string>, errorClass: typeof StsError, detail: Record<string, unknown>, extra?: Record<string, unknown>];
  const rows: Row[] = [
    ['wrong server-id value', () => attest({ serverId: 'https://other-broker.example' }), SubjectTokenRejected, { reason: 'server-id header does not name this server' }],
    ['server-id header not signed', () => mutate((b) => setAuth(b, (a) => a.replace(';x-agent-sts-server-id', ''))), SubjectTokenRejected, { reason: 'server-id header is not signed' }],
    ['SignedHeaders twice', () => mutate((b) => setAuth(b, (a) => `${a}, SignedHeaders=host;x-agent-sts-server-id`)), SubjectTokenRejected, { reason: 'SignedHeaders must appear exactly once' }],
    ['GET method', () => mutate((b) => (b.method = 'GET')), SubjectTokenRejected, { reason: 'method is not POST' }],
    ['other Action in body', () => mutate((b) => (b.body = 'Action=AssumeRole&Version=2011-06-15')), SubjectTokenRejected, { reason: 'body is not GetCallerIdentity' }],
    ['query string in URL', () => mutate((b) => (b.url = 'https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15')), SubjectTokenRejected, { reason: 'request URL must be the STS root without query' }],
    ['disallowed STS host', () => attest({ stsUrl: 'https://sts.attacker.example/' }), SubjectTokenRejected, { reason: 'STS host not allowed' }],
    ['Host header differing from the URL', () => mutate((b) => (b.headers.host = 'sts.attacker.example')), SubjectTokenRejected, { reason: 'Host header does not match the URL' }],
    ['presigned / non-SigV4 Authorization', () => mutate((b) => setAuth(b, (a) => a.replace('AWS4-HMAC-SHA256', 'AWS4-ECDSA-P256-SHA256'))), SubjectTokenRejected, { reason: 'Authorization is not AWS4-HMAC-SHA256' }],
    ['stale X-Amz-Date', () => attest({ signingDate: new Date(Date.now() - 10 * 60_000) }), SubjectTokenRejected, { reason: 'signed request is too old' }],
    ['signature older than STS accepts (STS: Signature expired)', () => attest({ signingDate: new Date(Date.now() - 20 * 60_000) }), SubjectTokenRejected, { awsError: 'SignatureDoesNotMatch', status: 403 }, { maxRequestAge: '30m' }],
    ['X-Amz-Date in the future', () => attest({ signingDate: new Date(Date.now() + 10 * 60_000) }), SubjectTokenRejected, { reason: 'signed request is dated in the future' }],
    ['missing X-Amz-Date', () => mutate((b) => delete b.headers['x-amz-date']), SubjectTokenRejected, { reason: 'header x-amz-date missing' }],
    ['tampered signature (STS: SignatureDoesNotMatch)', () => mutate((b) => setAuth(b, (a) => a.replace(/Signature=(.)/, (_m, c: string) => `Signature=${c === '0' ? '1' : '0'}`))), SubjectTokenRejected, { reason: 'STS refused the signed request', awsError: 'SignatureDoesNotMatch', status: 403 }],
    ['signed header value changed after signing (STS: SignatureDoesNotMatch)', () => mutate((b) => (b.headers['content-type'] = 'text/plain')), SubjectTokenRejected, { awsError: 'SignatureDoesNotMatch' }],
    ['unknown access key (STS: InvalidClientTokenId)', () => attest({ credentials: UNKNOWN_KEY }), SubjectTokenRejected, { awsError: 'InvalidClientTokenId', status: 403 }],
    ['wrong secret for a known key', () => attest({ credentials: { ...USER_KEY, secretAccessKey: 'guessed' } }), SubjectTokenRejected, { awsError: 'SignatureDoesNotMatch' }],
    ['account not allowed', () => attest(), SubjectTokenRejected, { reason: 'account not allowed', account: '111122223333' }, { accounts: ['444455556666'] }],
    ['garbage token', async () => remember('not a token!!'), SubjectTokenRejected, { reason: 'subject token is not a base64url JSON request' }],
    ['JSON of the wrong shape', async () => remember(Buffer.from('{"method":"POST"}').toString('base64url')), SubjectTokenRejected, { reason: 'subject token is not a base64url JSON request' }],
  ];

  it.each(rows)('rejects: %s', async (_name, token, errorClass, detail, extra) => {
    const t = await token();
    const err = await make(extra).verify({ token: t, tokenType: TYPE }, ctx()).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(errorClass);
    expect((err as StsError).detail).toMatchObject(detail);
    expect(JSON.stringify({ m: (err as Error).message, d: (err as StsError).detail })).not.toContain(t);
  });

  it('refuses a replayed request (second use of the same signature)', async () => {
    const p = make();
    const token = await attest();
    await expect(p.verify({ token, tokenType: TYPE }, ctx())).resolves.toMatchObject({ subject: 'aws://111122223333/role/ci-runner' });
    const callsBefore = sts.calls.length;
    const err = await p.verify({ token, tokenType: TYPE }, ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SubjectTokenRejected);
    expect((err as StsError).detail).toMatchObject({ reason: 'signed request was already used' });
    // Refused before calling STS again.
    expect(sts.calls.length).toBe(callsBefore);
  });

  it('never authorizes on the session name: two sessions of one role are one subject', async () => {
    const other = await startFakeSts({ keys: [{ ...USER_KEY, identity: { type: 'assumed-role', account: '111122223333', roleName: 'ci-runner', roleId: 'AROAEXAMPLEROLEID', sessionName: 'admin' } }] });
    try {
      const p = awsIamPlugin.create('aws', AwsIamConfigSchema.parse({ stsEndpoint: other.url }), deps);
      const id = await p.verify({ token: await attest({ credentials: USER_KEY }), tokenType: TYPE }, ctx());
      expect(id).toMatchObject({ subject: 'aws://111122223333/role/ci-runner', attributes: { session_name: 'admin', role_name: 'ci-runner' } });
    } finally {
      await other.close();
    }
  });

  it('reports an unreachable STS as UpstreamUnavailable api-unreachable, never an allow', async () => {
    const p = awsIamPlugin.create('down', AwsIamConfigSchema.parse({ stsEndpoint: 'http://127.0.0.1:9', timeout: '2s' }), deps);
    const err = await p.verify({ token: await attest(), tokenType: TYPE }, ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamUnavailable);
    expect((err as StsError).detail).toMatchObject({ cause: 'api-unreachable' });
  });

  it('reports an STS that does not answer within the timeout as api-unreachable', async () => {
    const sockets: import('node:net').Socket[] = [];
    const silent: Server = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const p = awsIamPlugin.create('slow', AwsIamConfigSchema.parse({ stsEndpoint: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, timeout: '1s' }), deps);
      const err = await p.verify({ token: await attest(), tokenType: TYPE }, ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect((err as StsError).detail).toMatchObject({ cause: 'api-unreachable' });
    } finally {
      sockets.forEach((s) => s.destroy());
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('reports STS 500 as UpstreamUnavailable api-error', async () => {
    sts.failWith(500);
    try {
      const err = await make().verify({ token: await attest(), tokenType: TYPE }, ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect((err as StsError).detail).toMatchObject({ cause: 'api-error', status: 500 });
    } finally {
      sts.failWith(null);
    }
  });

  const RESULT = '<GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/x</Arn><UserId>AIDAX</UserId><Account>111122223333</Account></GetCallerIdentityResult>';
  it.each([
    ['a 200 that is not XML', 200, 'application/json', '{"Arn":"arn:aws:iam::111122223333:user/x"}', { cause: 'api-error', reason: 'STS answer is not XML' }],
    ['two GetCallerIdentityResult elements', 200, 'text/xml', `<GetCallerIdentityResponse>${RESULT}${RESULT}</GetCallerIdentityResponse>`, { cause: 'api-error', reason: 'STS answer has no single GetCallerIdentityResult' }],
    ['a 200 without a result', 200, 'text/xml', '<GetCallerIdentityResponse></GetCallerIdentityResponse>', { cause: 'api-error' }],
    ['a redirect (not followed)', 307, 'text/plain', '', { cause: 'api-error', status: 307 }],
    ['throttling', 400, 'text/xml', '<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>', { cause: 'api-error', awsError: 'Throttling' }],
  ] as const)('reports an STS answering %s as UpstreamUnavailable', async (_n, status, type, body, detail) => {
    const hits: string[] = [];
    const odd = createHttpServer((req, res) => {
      hits.push(String(req.headers.host));
      res.writeHead(status, { 'content-type': type, ...(status === 307 ? { location: 'http://127.0.0.1:9/' } : {}) }).end(body);
    });
    await new Promise<void>((r) => odd.listen(0, '127.0.0.1', r));
    try {
      const p = awsIamPlugin.create('odd', AwsIamConfigSchema.parse({ stsEndpoint: `http://127.0.0.1:${(odd.address() as AddressInfo).port}` }), deps);
      const err = await p.verify({ token: await attest(), tokenType: TYPE }, ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect((err as StsError).detail).toMatchObject(detail);
      expect(hits).toEqual(['sts.amazonaws.com']);
    } finally {
      await new Promise<void>((r) => odd.close(() => r()));
    }
  });

  it('matches() only attestations signed for an allowed STS host, without I/O', async () => {
    const p = make();
    expect(p.matches!({ token: await attest(), tokenType: TYPE })).toBe(true);
    expect(p.matches!({ token: await attest({ stsUrl: 'https://sts.eu-west-1.amazonaws.com/' }), tokenType: TYPE })).toBe(false);
    expect(p.matches!({ token: 'garbage', tokenType: TYPE })).toBe(false);
    expect(p.matches!({ token: Buffer.from('[1,2]').toString('base64url'), tokenType: TYPE })).toBe(false);
  });

  it('is routed by token type, and by signed STS host between instances', async () => {
    const global = make({}, 'aws-global');
    const eu = make({ allowedStsHosts: ['sts.eu-west-1.amazonaws.com'] }, 'aws-eu');
    const registry = createTrustRegistry([global, eu]);
    expect(registry.resolveFor(await attest(), TYPE).name).toBe('aws-global');
    expect(registry.resolveFor(await attest({ stsUrl: 'https://sts.eu-west-1.amazonaws.com/' }), TYPE).name).toBe('aws-eu');
    expect(() => registry.resolveFor(remember('garbage'), TYPE)).toThrow(SubjectTokenRejected);
  });

  it('validates its configuration strictly', () => {
    expect(AwsIamConfigSchema.safeParse({ stsEndpoint: 'https://sts.amazonaws.com', typo: 1 }).success).toBe(false);
    expect(AwsIamConfigSchema.safeParse({ accounts: ['12345'] }).success).toBe(false);
    expect(AwsIamConfigSchema.parse({})).toMatchObject({ stsEndpoint: 'https://sts.amazonaws.com', allowedStsHosts: ['sts.amazonaws.com'], maxRequestAge: '5m' });
  });
});
