// A fake AWS STS for sts:GetCallerIdentity, as strict about SigV4 as the real one: it recomputes
// the signature of what it received (method, Host header, path, query, the headers listed in
// SignedHeaders, body) with @smithy/signature-v4 and the known secret, at the received X-Amz-Date.
// Real HTTP server on loopback port 0; exported for the benchmarks too.
// With `roles` it also answers sts:AssumeRole (Query protocol, as the SDK sends it): parameters are
// validated like AWS does (STANDARDS §5.3), the parsed request is recorded in `assumeRoleCalls`, and
// the minted session keys are accepted by this same fake afterwards (GetCallerIdentity as the role).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomUUID } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';

export type FakeStsIdentity =
  | { type: 'user'; account: string; userName: string; userId: string; path?: string }
  | { type: 'assumed-role'; account: string; roleName: string; roleId: string; sessionName: string };

export interface FakeStsKey {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  identity: FakeStsIdentity;
}

export interface FakeStsCall {
  method: string;
  path: string;
  host: string;
  accessKeyId?: string;
  status: number;
  code?: string;
}

export interface FakeStsRole {
  /** arn:aws:iam::<account>:role/<name> */
  arn: string;
  /** The role's unique id (AROA...). */
  roleId: string;
  /** MaxSessionDuration, seconds; default 3600. */
  maxSessionDuration?: number;
  /** When set, AssumeRole must present this ExternalId (trust-policy condition). */
  externalId?: string;
  /** Access key ids the trust policy admits; default: every known key. */
  trustedAccessKeyIds?: string[];
  /** Whether the trust policy grants sts:TagSession / sts:SetSourceIdentity; default true. */
  allowTagSession?: boolean;
  allowSetSourceIdentity?: boolean;
}

/** One signed AssumeRole request as the fake parsed it, and how it answered. */
export interface FakeAssumeRoleCall {
  callerAccessKeyId: string;
  RoleArn?: string;
  RoleSessionName?: string;
  DurationSeconds?: number;
  Policy?: string;
  PolicyArns: string[];
  Tags: { Key: string; Value: string }[];
  TransitiveTagKeys: string[];
  ExternalId?: string;
  SourceIdentity?: string;
  status: number;
  code?: string;
  /** The session's access key id, when one was issued. */
  issuedAccessKeyId?: string;
  expiration?: string;
}

export interface FakeStsOptions {
  keys: FakeStsKey[];
  /** Roles AssumeRole may assume; without it AssumeRole is an unknown action (as before). */
  roles?: FakeStsRole[];
  /** Stand-in for AWS's packed-size limit (plaintext policy + tag characters); default 2600. */
  packedPolicyBudget?: number;
  /** Region the endpoint is in (credential scope must match); default us-east-1. */
  region?: string;
  now?: () => Date;
}

export interface FakeSts {
  /** Base URL to replay to, e.g. http://127.0.0.1:PORT */
  url: string;
  calls: FakeStsCall[];
  assumeRoleCalls: FakeAssumeRoleCall[];
  /** Force every answer to this status (e.g. 500) until reset with null. */
  failWith(status: number | null): void;
  close(): Promise<void>;
}

const NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const SIG_WINDOW_MS = 15 * 60 * 1000;

function errorXml(type: 'Sender' | 'Receiver', code: string, message: string): string {
  return `<ErrorResponse xmlns="${NS}">\n  <Error>\n    <Type>${type}</Type>\n    <Code>${code}</Code>\n    <Message>${message}</Message>\n  </Error>\n  <RequestId>${randomUUID()}</RequestId>\n</ErrorResponse>\n`;
}

function identityXml(id: FakeStsIdentity): string {
  const [arn, userId] =
    id.type === 'user'
      ? [`arn:aws:iam::${id.account}:user/${id.path ?? ''}${id.userName}`, id.userId]
      : [`arn:aws:sts::${id.account}:assumed-role/${id.roleName}/${id.sessionName}`, `${id.roleId}:${id.sessionName}`];
  return (
    `<GetCallerIdentityResponse xmlns="${NS}">\n  <GetCallerIdentityResult>\n    <Arn>${arn}</Arn>\n    <UserId>${userId}</UserId>\n` +
    `    <Account>${id.account}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>${randomUUID()}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n`
  );
}

const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/\s,]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

function parseAmzDate(v: string | undefined): Date | undefined {
  const m = v ? /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v) : null;
  return m ? new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!)) : undefined;
}

const xmlEscape = (v: string) => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const validation = (value: string, member: string, constraint: string) =>
  `1 validation error detected: Value '${value}' at '${member}' failed to satisfy constraint: ${constraint}`;
const SESSION_CHARS = /^[\w+=,.@-]*$/;
const TAG_CHARS = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
const EXTERNAL_ID_CHARS = /^[\w+=,.@:/-]*$/;
/** Stand-in for AWS's packed (compressed) size: plaintext policy + tags against a fixed budget. */
const PACKED_BUDGET = 2600;
const packedChars = (c: FakeAssumeRoleCall) => (c.Policy?.length ?? 0) + c.PolicyArns.join('').length + c.Tags.reduce((n, t) => n + t.Key.length + t.Value.length + 2, 0);

function parseAssumeRole(form: URLSearchParams, callerAccessKeyId: string): FakeAssumeRoleCall {
  const list = (prefix: string) => {
    const out: string[] = [];
    for (let i = 1; form.has(`${prefix}.${i}`); i++) out.push(form.get(`${prefix}.${i}`)!);
    return out;
  };
  const tags: { Key: string; Value: string }[] = [];
  for (let i = 1; form.has(`Tags.member.${i}.Key`); i++) tags.push({ Key: form.get(`Tags.member.${i}.Key`)!, Value: form.get(`Tags.member.${i}.Value`) ?? '' });
  const opt = (k: string) => form.get(k) ?? undefined;
  return {
    callerAccessKeyId,
    RoleArn: opt('RoleArn'),
    RoleSessionName: opt('RoleSessionName'),
    DurationSeconds: form.has('DurationSeconds') ? Number(form.get('DurationSeconds')) : undefined,
    Policy: opt('Policy'),
    PolicyArns: list('PolicyArns.member').length ? list('PolicyArns.member') : Array.from({ length: 10 }, (_, i) => form.get(`PolicyArns.member.${i + 1}.arn`)).filter((v): v is string => v !== null),
    Tags: tags,
    TransitiveTagKeys: list('TransitiveTagKeys.member'),
    ExternalId: opt('ExternalId'),
    SourceIdentity: opt('SourceIdentity'),
    status: 0,
  };
}

/** What AWS checks before it mints a session (STS-API AssumeRoleInput; STANDARDS §5.3). Returns [status, code, message] or undefined. */
function assumeRoleProblem(c: FakeAssumeRoleCall, role: FakeStsRole | undefined, callerArn: string, budget: number): [number, string, string] | undefined {
  if (!c.RoleArn) return [400, 'ValidationError', validation('null', 'roleArn', 'Member must not be null')];
  if (!c.RoleSessionName) return [400, 'ValidationError', validation('null', 'roleSessionName', 'Member must not be null')];
  if (c.RoleSessionName.length < 2 || c.RoleSessionName.length > 64)
    return [400, 'ValidationError', validation(c.RoleSessionName, 'roleSessionName', 'Member must have length between 2 and 64')];
  if (!SESSION_CHARS.test(c.RoleSessionName))
    return [400, 'ValidationError', validation(c.RoleSessionName, 'roleSessionName', 'Member must satisfy regular expression pattern: [\\w+=,.@-]*')];
  if (c.DurationSeconds !== undefined && (!Number.isInteger(c.DurationSeconds) || c.DurationSeconds < 900 || c.DurationSeconds > 43200))
    return [400, 'ValidationError', validation(String(c.DurationSeconds), 'durationSeconds', 'Member must have value greater than or equal to 900 and less than or equal to 43200')];
  if (c.Policy !== undefined) {
    if (c.Policy.length > 2048) return [400, 'ValidationError', validation('(policy)', 'policy', 'Member must have length less than or equal to 2048')];
    if (!/^[\t\n\r\u0020-\u00FF]+$/.test(c.Policy))
      return [400, 'ValidationError', validation('(policy)', 'policy', 'Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+')];
    let doc: unknown;
    try {
      doc = JSON.parse(c.Policy);
    } catch {
      return [400, 'MalformedPolicyDocument', 'The policy is not in the valid JSON format.'];
    }
    if (!doc || typeof doc !== 'object' || !('Statement' in doc)) return [400, 'MalformedPolicyDocument', 'Syntax errors in policy.'];
  }
  if (c.PolicyArns.length > 10) return [400, 'ValidationError', validation('(policyArns)', 'policyArns', 'Member must have length less than or equal to 10')];
  if (c.Tags.length > 50) return [400, 'ValidationError', validation('(tags)', 'tags', 'Member must have length less than or equal to 50')];
  const seen = new Set<string>();
  for (const [i, t] of c.Tags.entries()) {
    if (t.Key.length < 1 || t.Key.length > 128) return [400, 'ValidationError', validation(t.Key, `tags.${i + 1}.member.key`, 'Member must have length between 1 and 128')];
    if (!TAG_CHARS.test(t.Key)) return [400, 'ValidationError', validation(t.Key, `tags.${i + 1}.member.key`, 'Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+')];
    if (t.Value.length > 256) return [400, 'ValidationError', validation(t.Value, `tags.${i + 1}.member.value`, 'Member must have length less than or equal to 256')];
    if (!TAG_CHARS.test(t.Value)) return [400, 'ValidationError', validation(t.Value, `tags.${i + 1}.member.value`, 'Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*')];
    if (/^aws:/i.test(t.Key)) return [400, 'ValidationError', 'Tag keys may not start with aws:'];
    if (seen.has(t.Key.toLowerCase())) return [400, 'ValidationError', 'Duplicate tag keys found. Please note that Tag keys are case insensitive.'];
    seen.add(t.Key.toLowerCase());
  }
  for (const k of c.TransitiveTagKeys)
    if (!seen.has(k.toLowerCase())) return [400, 'InvalidParameterValue', 'The specified transitive tag key must be included in the requested tags.'];
  if (c.SourceIdentity !== undefined) {
    if (c.SourceIdentity.length < 2 || c.SourceIdentity.length > 64)
      return [400, 'ValidationError', validation(c.SourceIdentity, 'sourceIdentity', 'Member must have length between 2 and 64')];
    if (!SESSION_CHARS.test(c.SourceIdentity))
      return [400, 'ValidationError', validation(c.SourceIdentity, 'sourceIdentity', 'Member must satisfy regular expression pattern: [\\w+=,.@-]*')];
    if (/^aws:/i.test(c.SourceIdentity)) return [400, 'ValidationError', 'SourceIdentity must not start with aws:'];
  }
  if (c.ExternalId !== undefined && (c.ExternalId.length < 2 || c.ExternalId.length > 1224 || !EXTERNAL_ID_CHARS.test(c.ExternalId)))
    return [400, 'ValidationError', validation(c.ExternalId, 'externalId', 'Member must have length between 2 and 1224 and satisfy regular expression pattern: [\\w+=,.@:/-]*')];
  const denied: [number, string, string] = [403, 'AccessDenied', `User: ${callerArn} is not authorized to perform: sts:AssumeRole on resource: ${c.RoleArn}`];
  if (!role) return denied;
  if (role.trustedAccessKeyIds && !role.trustedAccessKeyIds.includes(c.callerAccessKeyId)) return denied;
  if (role.externalId !== undefined && c.ExternalId !== role.externalId) return denied;
  if (c.Tags.length && role.allowTagSession === false) return [403, 'AccessDenied', denied[2].replace('sts:AssumeRole', 'sts:TagSession')];
  if (c.SourceIdentity !== undefined && role.allowSetSourceIdentity === false) return [403, 'AccessDenied', denied[2].replace('sts:AssumeRole', 'sts:SetSourceIdentity')];
  if ((c.DurationSeconds ?? 3600) > (role.maxSessionDuration ?? 3600))
    return [400, 'ValidationError', 'The requested DurationSeconds exceeds the MaxSessionDuration set for this role.'];
  const packed = packedChars(c);
  if (packed > budget) return [400, 'PackedPolicyTooLarge', `Packed policy consumes ${Math.ceil((packed * 100) / budget)}% of allotted space, please use smaller policy for this request.`];
  return undefined;
}

const randomUpper = (n: number) => randomUUID().replace(/-/g, '').toUpperCase().slice(0, n);

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(',') : v);

export async function startFakeSts(opts: FakeStsOptions): Promise<FakeSts> {
  const region = opts.region ?? 'us-east-1';
  const now = opts.now ?? (() => new Date());
  const keys = new Map(opts.keys.map((k) => [k.accessKeyId, k] as const));
  const calls: FakeStsCall[] = [];
  const assumeRoleCalls: FakeAssumeRoleCall[] = [];
  const roles = new Map((opts.roles ?? []).map((r) => [r.arn, r] as const));
  let forced: number | null = null;

  async function handle(req: IncomingMessage, body: string): Promise<{ status: number; xml: string; code?: string; accessKeyId?: string }> {
    const sender = (status: number, code: string, message: string, accessKeyId?: string) => ({ status, xml: errorXml('Sender', code, message), code, accessKeyId });
    if (forced !== null) return { status: forced, xml: errorXml('Receiver', 'InternalFailure', 'forced failure'), code: 'InternalFailure' };
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'POST' || url.pathname !== '/') return sender(400, 'InvalidAction', 'Could not find operation');

    const auth = one(req.headers.authorization);
    if (!auth) return sender(403, 'MissingAuthenticationToken', 'Request is missing Authentication Token');
    const m = AUTH.exec(auth);
    if (!m) return sender(400, 'IncompleteSignature', 'Authorization header requires well-formed Credential, SignedHeaders and Signature');
    const [, accessKeyId, scopeDate, scopeRegion, scopeService, signedHeaderList, signature] = m as unknown as string[];
    const key = keys.get(accessKeyId!);
    if (!key) return sender(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    const presentedToken = one(req.headers['x-amz-security-token']);
    if ((key.sessionToken ?? undefined) !== presentedToken) return sender(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.', accessKeyId);

    const amzDate = one(req.headers['x-amz-date']);
    const date = parseAmzDate(amzDate);
    if (!date) return sender(400, 'IncompleteSignature', 'Authorization header requires existence of either a X-Amz-Date or a Date header.', accessKeyId);
    const t = now().getTime();
    if (t - date.getTime() > SIG_WINDOW_MS)
      return sender(403, 'SignatureDoesNotMatch', `Signature expired: ${amzDate} is now earlier than ${new Date(t - SIG_WINDOW_MS).toISOString()}`, accessKeyId);
    if (date.getTime() - t > SIG_WINDOW_MS) return sender(403, 'SignatureDoesNotMatch', `Signature not yet current: ${amzDate}`, accessKeyId);
    if (scopeDate !== amzDate!.slice(0, 8) || scopeService !== 'sts' || scopeRegion !== region)
      return sender(403, 'SignatureDoesNotMatch', 'Credential should be scoped to a valid region, service and date.', accessKeyId);

    const signed = signedHeaderList!.split(';');
    if (!signed.includes('host')) return sender(403, 'SignatureDoesNotMatch', 'Host header must be signed.', accessKeyId);
    const headers: Record<string, string> = {};
    for (const h of signed) {
      const v = one(req.headers[h]);
      if (v === undefined) return sender(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.', accessKeyId);
      headers[h] = v;
    }
    const contentHash = headers['x-amz-content-sha256'];
    if (contentHash !== undefined && contentHash !== createHash('sha256').update(body).digest('hex'))
      return sender(400, 'XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match what was computed.', accessKeyId);

    const query: Record<string, string | string[]> = {};
    for (const [k, v] of url.searchParams) query[k] = k in query ? [...[query[k]!].flat(), v] : v;
    const signer = new SignatureV4({
      credentials: { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey, sessionToken: key.sessionToken },
      region,
      service: 'sts',
      sha256: Sha256,
      applyChecksum: false,
    });
    const recomputed = await signer.sign(
      { method: req.method, protocol: 'https:', hostname: headers.host!, path: url.pathname, query, headers, body },
      { signingDate: date, signableHeaders: new Set(signed) },
    );
    const expected = /SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(String(recomputed.headers.authorization));
    if (!expected || expected[1] !== signedHeaderList || expected[2] !== signature)
      return sender(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.', accessKeyId);

    const form = new URLSearchParams(body);
    if (form.get('Action') === 'AssumeRole' && opts.roles && form.get('Version') === '2011-06-15') return assumeRole(form, key);
    if (form.get('Action') !== 'GetCallerIdentity') return sender(400, 'InvalidAction', `Could not find operation ${form.get('Action') ?? ''} for version ${form.get('Version') ?? ''}`, accessKeyId);
    if (form.get('Version') !== '2011-06-15') return sender(400, 'InvalidAction', 'Unsupported version', accessKeyId);
    return { status: 200, xml: identityXml(key.identity), accessKeyId };
  }

  function callerArn(id: FakeStsIdentity): string {
    return id.type === 'user' ? `arn:aws:iam::${id.account}:user/${id.path ?? ''}${id.userName}` : `arn:aws:sts::${id.account}:assumed-role/${id.roleName}/${id.sessionName}`;
  }

  function assumeRole(form: URLSearchParams, caller: FakeStsKey): { status: number; xml: string; code?: string; accessKeyId?: string } {
    const c = parseAssumeRole(form, caller.accessKeyId);
    assumeRoleCalls.push(c);
    const problem = assumeRoleProblem(c, roles.get(c.RoleArn ?? ''), callerArn(caller.identity), opts.packedPolicyBudget ?? PACKED_BUDGET);
    if (problem) {
      [c.status, c.code] = problem;
      return { status: problem[0], xml: errorXml('Sender', problem[1], xmlEscape(problem[2])), code: problem[1], accessKeyId: caller.accessKeyId };
    }
    const role = roles.get(c.RoleArn!)!;
    const [, account, roleName] = /^arn:aws:iam::(\d{12}):role\/(?:.*\/)?([^/]+)$/.exec(role.arn) ?? [];
    const session: FakeStsKey = {
      accessKeyId: `ASIA${randomUpper(16)}`,
      secretAccessKey: randomUUID() + randomUUID(),
      sessionToken: `FQoGZXIvYXdzE${Buffer.from(randomUUID() + randomUUID()).toString('base64')}`,
      identity: { type: 'assumed-role', account: account ?? '000000000000', roleName: roleName ?? 'role', roleId: role.roleId, sessionName: c.RoleSessionName! },
    };
    keys.set(session.accessKeyId, session);
    const expiration = new Date(Math.floor(now().getTime() / 1000) * 1000 + (c.DurationSeconds ?? 3600) * 1000).toISOString().replace('.000Z', 'Z');
    Object.assign(c, { status: 200, issuedAccessKeyId: session.accessKeyId, expiration });
    const packed = Math.ceil((packedChars(c) * 100) / (opts.packedPolicyBudget ?? PACKED_BUDGET));
    const xml =
      `<AssumeRoleResponse xmlns="${NS}">\n  <AssumeRoleResult>\n` +
      (c.SourceIdentity !== undefined ? `    <SourceIdentity>${xmlEscape(c.SourceIdentity)}</SourceIdentity>\n` : '') +
      `    <AssumedRoleUser>\n      <Arn>arn:aws:sts::${account}:assumed-role/${roleName}/${xmlEscape(c.RoleSessionName!)}</Arn>\n` +
      `      <AssumedRoleId>${role.roleId}:${xmlEscape(c.RoleSessionName!)}</AssumedRoleId>\n    </AssumedRoleUser>\n` +
      `    <Credentials>\n      <AccessKeyId>${session.accessKeyId}</AccessKeyId>\n      <SecretAccessKey>${session.secretAccessKey}</SecretAccessKey>\n` +
      `      <SessionToken>${session.sessionToken}</SessionToken>\n      <Expiration>${expiration}</Expiration>\n    </Credentials>\n` +
      (c.Policy !== undefined || c.Tags.length ? `    <PackedPolicySize>${packed}</PackedPolicySize>\n` : '') +
      `  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>${randomUUID()}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n`;
    return { status: 200, xml, accessKeyId: caller.accessKeyId };
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      handle(req, body)
        .then((out) => {
          calls.push({ method: req.method ?? '', path: req.url ?? '', host: String(req.headers.host ?? ''), accessKeyId: out.accessKeyId, status: out.status, code: out.code });
          res.writeHead(out.status, { 'content-type': 'text/xml', 'x-amzn-requestid': randomUUID() }).end(out.xml);
        })
        .catch((e: unknown) => {
          res.writeHead(500, { 'content-type': 'text/xml' }).end(errorXml('Receiver', 'InternalFailure', String(e)));
        });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    calls,
    assumeRoleCalls,
    failWith: (status) => {
      forced = status;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
