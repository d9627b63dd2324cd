// A fake AWS STS for sts:GetCallerIdentity, as strict about SigV4 as the real one: it recomputes
// the signature of what it received (method, Host header, path, query, the headers listed in
// SignedHeaders, body) with @smithy/signature-v4 and the known secret, at the received X-Amz-Date.
// Real HTTP server on loopback port 0; exported for the benchmarks too.
// With `roles` it also answers sts:AssumeRole (Query protocol, as the SDK sends it): parameters are
// validated like AWS does (STANDARDS §5.3), the parsed request is recorded in `assumeRoleCalls`, and
// the minted session keys are accepted by this same fake afterwards (GetCallerIdentity as the role).
// The same server also speaks the IAM Query API (requests signed for service "iam", as
// @aws-sdk/client-iam sends them to an endpoint override): GetRolePolicy / PutRolePolicy /
// DeleteRolePolicy on the roles' inline policies. Those policies are enforced on the sessions this
// fake issued: an explicit Deny whose Action and Condition match (aws:userid, aws:SourceIdentity,
// aws:CurrentTime, aws:TokenIssueTime, aws:PrincipalArn; String*/Date* operators) refuses the call
// with 403 AccessDenied. Like AWS, sts:GetCallerIdentity is never refused by a policy; use
// sts:GetAccessKeyInfo (a policy-checked call that needs nothing else) to see whether a session is alive.
// Faults besides failWith/failIamWith: delayAnswers(ms) carries each request out at once (an AssumeRole
// mints its session) and holds the answer back that long, so a client that gave up meanwhile never
// gets it; answerMalformed(kind) answers 200 with a body that is not the action's XML (a proxy's page,
// or XML without the result), before anything is checked or done.
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
  /** Set on sessions minted by AssumeRole (policy condition keys). */
  sourceIdentity?: string;
  issuedAt?: Date;
}

/** One signed IAM request as the fake parsed it, and how it answered. */
export interface FakeIamCall {
  action: string;
  callerAccessKeyId: string;
  roleName?: string;
  policyName?: string;
  status: number;
  code?: string;
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
  /** Access keys allowed iam:GetRolePolicy / PutRolePolicy / DeleteRolePolicy; default: every key in `keys` (not minted sessions). */
  iamAccessKeyIds?: string[];
}

export interface FakeSts {
  /** Base URL to replay to, e.g. http://127.0.0.1:PORT */
  url: string;
  calls: FakeStsCall[];
  assumeRoleCalls: FakeAssumeRoleCall[];
  /** Force every answer to this status (e.g. 500) until reset with null. */
  failWith(status: number | null): void;
  /**
   * Every request arriving from now on is carried out at once but answered `ms` later (0: off); the
   * answer is dropped if the client hung up meanwhile. The session an AssumeRole mints meanwhile
   * exists (recorded in `assumeRoleCalls`) even though nobody receives it.
   */
  delayAnswers(ms: number): void;
  /**
   * Every request gets 200 with a body that is not the action's answer, without being checked or
   * carried out (null: off): `html` a proxy's error page labelled text/xml, `empty-result` a
   * well-formed `<AssumeRoleResponse>` whose result has no credentials.
   */
  answerMalformed(kind: 'html' | 'empty-result' | null): void;
  /** The IAM endpoint (the same server; requests are told apart by their SigV4 service). */
  iamUrl: string;
  iamCalls: FakeIamCall[];
  /** Force IAM answers only (STS keeps working) to this status until reset with null. */
  failIamWith(status: number | null): void;
  /** The inline policies of a role (by ARN): name -> policy document JSON. */
  rolePolicies(roleArn: string): Record<string, string>;
  /** Sets (or with null deletes) an inline role policy directly, bypassing IAM's API checks. */
  setRolePolicy(roleArn: string, policyName: string, document: string | null): void;
  close(): Promise<void>;
}

const NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const IAM_NS = 'https://iam.amazonaws.com/doc/2010-05-08/';
/** IAM's inline role policy quota, characters not counting whitespace. */
const IAM_ROLE_POLICY_MAX = 10_240;
const SIG_WINDOW_MS = 15 * 60 * 1000;

function errorXml(type: 'Sender' | 'Receiver', code: string, message: string, ns = NS): string {
  return `<ErrorResponse xmlns="${ns}">\n  <Error>\n    <Type>${type}</Type>\n    <Code>${code}</Code>\n    <Message>${message}</Message>\n  </Error>\n  <RequestId>${randomUUID()}</RequestId>\n</ErrorResponse>\n`;
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

/** `*` / `?` glob of IAM action names and String*Like values. */
function glob(pattern: string, value: string, caseInsensitive: boolean): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, caseInsensitive ? 'i' : '');
  return re.test(value);
}
const asList = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : v === undefined ? [] : [String(v)]);

/** One condition operator block against the request context (AWS semantics for the operators the fake knows; unknown ones never match). */
function conditionHolds(op: string, block: Record<string, unknown>, context: Record<string, string | undefined>): boolean {
  const base = op.replace(/IfExists$/, '');
  const ifExists = base !== op;
  return Object.entries(block).every(([key, expected]) => {
    const actual = Object.entries(context).find(([k]) => k.toLowerCase() === key.toLowerCase())?.[1];
    const values = asList(expected);
    if (actual === undefined) return ifExists || base.startsWith('StringNot');
    switch (base) {
      case 'StringEquals': return values.includes(actual);
      case 'StringNotEquals': return !values.includes(actual);
      case 'StringEqualsIgnoreCase': return values.some((v) => v.toLowerCase() === actual.toLowerCase());
      case 'StringLike': return values.some((v) => glob(v, actual, false));
      case 'StringNotLike': return !values.some((v) => glob(v, actual, false));
      case 'DateLessThan': return values.some((v) => Date.parse(actual) < Date.parse(v));
      case 'DateGreaterThan': return values.some((v) => Date.parse(actual) > Date.parse(v));
      default: return false;
    }
  });
}

/** Whether an explicit Deny of these policy documents matches the action in this context (Resource is not evaluated: every call here is on "*"). */
function explicitlyDenied(documents: string[], action: string, context: Record<string, string | undefined>): boolean {
  for (const doc of documents) {
    let parsed: { Statement?: unknown };
    try {
      parsed = JSON.parse(doc) as { Statement?: unknown };
    } catch {
      continue;
    }
    const statements = (Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement]) as Record<string, unknown>[];
    for (const st of statements) {
      if (!st || st.Effect !== 'Deny') continue;
      const actionMatches = st.Action !== undefined ? asList(st.Action).some((a) => glob(a, action, true)) : !asList(st.NotAction).some((a) => glob(a, action, true));
      if (!actionMatches) continue;
      const cond = (st.Condition ?? {}) as Record<string, Record<string, unknown>>;
      if (Object.entries(cond).every(([op, block]) => conditionHolds(op, block, context))) return true;
    }
  }
  return false;
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
  let forcedIam: number | null = null;
  let delayMs = 0;
  let malformed: 'html' | 'empty-result' | null = null;
  const iamCalls: FakeIamCall[] = [];
  const iamAdmins = new Set(opts.iamAccessKeyIds ?? opts.keys.map((k) => k.accessKeyId));
  /** role ARN -> policy name -> document */
  const policies = new Map<string, Map<string, string>>();
  const roleByName = (roleName: string) => [...roles.values()].find((r) => r.arn.slice(r.arn.lastIndexOf('/') + 1) === roleName);

  /** For a session this fake minted: whether its role's inline policies explicitly deny `action` now. */
  function sessionDenied(key: FakeStsKey, action: string): boolean {
    if (key.identity.type !== 'assumed-role' || !key.issuedAt) return false;
    const id = key.identity;
    const role = [...roles.values()].find((r) => r.roleId === id.roleId);
    if (!role) return false;
    const docs = [...(policies.get(role.arn)?.values() ?? [])];
    return explicitlyDenied(docs, action, {
      'aws:userid': `${id.roleId}:${id.sessionName}`,
      'aws:SourceIdentity': key.sourceIdentity,
      'aws:CurrentTime': now().toISOString(),
      'aws:TokenIssueTime': key.issuedAt.toISOString(),
      'aws:PrincipalArn': role.arn,
    });
  }

  async function handle(req: IncomingMessage, body: string): Promise<{ status: number; xml: string; code?: string; accessKeyId?: string }> {
    const sender = (status: number, code: string, message: string, accessKeyId?: string) => ({ status, xml: errorXml('Sender', code, message), code, accessKeyId });
    if (forced !== null) return { status: forced, xml: errorXml('Receiver', 'InternalFailure', 'forced failure'), code: 'InternalFailure' };
    if (forcedIam !== null && /\/iam\/aws4_request/.test(one(req.headers.authorization) ?? ''))
      return { status: forcedIam, xml: errorXml('Receiver', 'ServiceFailure', 'forced failure', IAM_NS), code: 'ServiceFailure' };
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
    // IAM is global: AWS signs it for us-east-1; the SDK signs an endpoint override with the client's region.
    const regionOk = scopeRegion === region || (scopeService === 'iam' && scopeRegion === 'us-east-1');
    if (scopeDate !== amzDate!.slice(0, 8) || (scopeService !== 'sts' && scopeService !== 'iam') || !regionOk)
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
      region: scopeRegion!,
      service: scopeService!,
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
    if (scopeService === 'iam') return iamAction(form, key);
    const action = form.get('Action') ?? '';
    if (action !== 'GetCallerIdentity' && sessionDenied(key, `sts:${action}`)) // AWS never refuses GetCallerIdentity by policy
      return sender(403, 'AccessDenied', `User: ${callerArn(key.identity)} is not authorized to perform: sts:${action} with an explicit deny in an identity-based policy`, accessKeyId);
    if (action === 'GetAccessKeyInfo' && form.get('Version') === '2011-06-15')
      return {
        status: 200,
        xml: `<GetAccessKeyInfoResponse xmlns="${NS}">\n  <GetAccessKeyInfoResult>\n    <Account>${key.identity.account}</Account>\n  </GetAccessKeyInfoResult>\n  <ResponseMetadata>\n    <RequestId>${randomUUID()}</RequestId>\n  </ResponseMetadata>\n</GetAccessKeyInfoResponse>\n`,
        accessKeyId,
      };
    if (form.get('Action') === 'AssumeRole' && opts.roles && form.get('Version') === '2011-06-15') return assumeRole(form, key);
    if (form.get('Action') !== 'GetCallerIdentity') return sender(400, 'InvalidAction', `Could not find operation ${form.get('Action') ?? ''} for version ${form.get('Version') ?? ''}`, accessKeyId);
    if (form.get('Version') !== '2011-06-15') return sender(400, 'InvalidAction', 'Unsupported version', accessKeyId);
    return { status: 200, xml: identityXml(key.identity), accessKeyId };
  }

  function callerArn(id: FakeStsIdentity): string {
    return id.type === 'user' ? `arn:aws:iam::${id.account}:user/${id.path ?? ''}${id.userName}` : `arn:aws:sts::${id.account}:assumed-role/${id.roleName}/${id.sessionName}`;
  }

  /** IAM Query API (Version 2010-05-08): inline role policies. */
  function iamAction(form: URLSearchParams, caller: FakeStsKey): { status: number; xml: string; code?: string; accessKeyId?: string } {
    const action = form.get('Action') ?? '';
    const roleName = form.get('RoleName') ?? undefined;
    const policyName = form.get('PolicyName') ?? undefined;
    const call: FakeIamCall = { action, callerAccessKeyId: caller.accessKeyId, roleName, policyName, status: 0 };
    iamCalls.push(call);
    const answer = (status: number, xml: string, code?: string) => {
      Object.assign(call, { status, code });
      return { status, xml, code, accessKeyId: caller.accessKeyId };
    };
    const fail = (status: number, code: string, message: string) => answer(status, errorXml(status >= 500 ? 'Receiver' : 'Sender', code, xmlEscape(message), IAM_NS), code);
    const ok = (inner: string) =>
      answer(200, `<${action}Response xmlns="${IAM_NS}">\n${inner}  <ResponseMetadata>\n    <RequestId>${randomUUID()}</RequestId>\n  </ResponseMetadata>\n</${action}Response>\n`);
    if (form.get('Version') !== '2010-05-08' || !['GetRolePolicy', 'PutRolePolicy', 'DeleteRolePolicy'].includes(action))
      return fail(400, 'InvalidAction', `Could not find operation ${action} for version ${form.get('Version') ?? ''}`);
    const role = roleName ? roleByName(roleName) : undefined;
    const account = role ? /^arn:aws:iam::(\d{12}):/.exec(role.arn)?.[1] ?? '000000000000' : '000000000000';
    const resource = `arn:aws:iam::${account}:role/${roleName ?? ''}`;
    if (!iamAdmins.has(caller.accessKeyId) || sessionDenied(caller, `iam:${action}`))
      return fail(403, 'AccessDenied', `User: ${callerArn(caller.identity)} is not authorized to perform: iam:${action} on resource: ${resource} because no identity-based policy allows the iam:${action} action`);
    if (!roleName) return fail(400, 'ValidationError', validation('null', 'roleName', 'Member must not be null'));
    if (!policyName || !/^[\w+=,.@-]{1,128}$/.test(policyName)) return fail(400, 'ValidationError', validation(policyName ?? 'null', 'policyName', 'Member must satisfy regular expression pattern: [\\w+=,.@-]+'));
    if (!role) return fail(404, 'NoSuchEntity', `The role with name ${roleName} cannot be found.`);
    const inline = policies.get(role.arn) ?? new Map<string, string>();
    policies.set(role.arn, inline);
    if (action === 'GetRolePolicy') {
      const doc = inline.get(policyName);
      if (doc === undefined) return fail(404, 'NoSuchEntity', `The role policy with name ${policyName} cannot be found.`);
      return ok(
        `  <GetRolePolicyResult>\n    <PolicyName>${xmlEscape(policyName)}</PolicyName>\n    <RoleName>${xmlEscape(roleName)}</RoleName>\n` +
          `    <PolicyDocument>${xmlEscape(encodeURIComponent(doc))}</PolicyDocument>\n  </GetRolePolicyResult>\n`,
      );
    }
    if (action === 'DeleteRolePolicy') {
      if (!inline.delete(policyName)) return fail(404, 'NoSuchEntity', `The role policy with name ${policyName} cannot be found.`);
      return ok('');
    }
    const doc = form.get('PolicyDocument');
    if (!doc) return fail(400, 'ValidationError', validation('null', 'policyDocument', 'Member must not be null'));
    let parsed: unknown;
    try {
      parsed = JSON.parse(doc);
    } catch {
      return fail(400, 'MalformedPolicyDocument', 'This policy contains invalid Json');
    }
    if (!parsed || typeof parsed !== 'object' || !('Statement' in parsed)) return fail(400, 'MalformedPolicyDocument', 'Syntax errors in policy.');
    const others = [...inline.entries()].filter(([n]) => n !== policyName).reduce((n, [, d]) => n + d.replace(/\s/g, '').length, 0);
    if (others + doc.replace(/\s/g, '').length > IAM_ROLE_POLICY_MAX) return fail(409, 'LimitExceeded', `Maximum policy size of ${IAM_ROLE_POLICY_MAX} bytes exceeded for role ${roleName}`);
    inline.set(policyName, doc);
    return ok('');
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
      ...(c.SourceIdentity !== undefined ? { sourceIdentity: c.SourceIdentity } : {}),
      issuedAt: now(),
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
      const heldMs = delayMs;
      if (malformed) {
        calls.push({ method: req.method ?? '', path: req.url ?? '', host: String(req.headers.host ?? ''), status: 200, code: `malformed-${malformed}` });
        const xml =
          malformed === 'html'
            ? '<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>upstream proxy: STS-FAKE-MALFORMED</p></body></html>'
            : `<AssumeRoleResponse xmlns="${NS}">\n  <AssumeRoleResult>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>${randomUUID()}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n`;
        res.writeHead(200, { 'content-type': 'text/xml', 'x-amzn-requestid': randomUUID() }).end(xml);
        return;
      }
      handle(req, body)
        .then(async (out) => {
          calls.push({ method: req.method ?? '', path: req.url ?? '', host: String(req.headers.host ?? ''), accessKeyId: out.accessKeyId, status: out.status, code: out.code });
          if (heldMs > 0) {
            await new Promise((r) => setTimeout(r, heldMs));
            if (res.destroyed || req.socket.destroyed) return;
          }
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
    delayAnswers: (ms) => {
      delayMs = ms;
    },
    answerMalformed: (kind) => {
      malformed = kind;
    },
    iamUrl: url,
    iamCalls,
    failIamWith: (status) => {
      forcedIam = status;
    },
    rolePolicies: (roleArn) => Object.fromEntries(policies.get(roleArn) ?? []),
    setRolePolicy: (roleArn, policyName, document) => {
      const inline = policies.get(roleArn) ?? new Map<string, string>();
      policies.set(roleArn, inline);
      if (document === null) inline.delete(policyName);
      else inline.set(policyName, document);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
