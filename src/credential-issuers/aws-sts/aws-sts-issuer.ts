import type * as ClientSts from '@aws-sdk/client-sts';
import type * as ClientIam from '@aws-sdk/client-iam';
import type { AssumeRoleCommandInput, STSClient } from '@aws-sdk/client-sts';
import type { IAMClient } from '@aws-sdk/client-iam';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { Secret } from '../../core/secret.js';
import type { BlendedIdentity } from '../../core/types.js';
import { credentialFingerprint, sha256Hex } from '../../lib/crypto.js';
import { parseDuration } from '../../lib/clock.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema } from '../../config/secret-ref.js';
import { MalformedRequest, ScopeNotAllowed, UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { CredentialIssuer, CredentialIssuerPlugin, GrantRequirements, IssuerCapabilities } from '../credential-issuer.js';
import { grantOfDecision, paramsOf, refuseGrantProblems } from '../grant-params.js';
import { HealthProblem, networkDetail, probeHealth, safeCode } from '../health.js';
import { AWS_MAX_SESSION_POLICY_CHARS, fit, roleParamProblems, sessionPolicyTemplateProblems, sessionPolicyText, sessionTagProblems, sessionTagsFor } from './aws-session.js';
import { lazyModule } from '../../lib/lazy-module.js';

// The AWS SDK clients load when an aws-sts issuer first calls AWS, not at every start-up.
const clientSts = lazyModule<typeof ClientSts>('@aws-sdk/client-sts');
const clientIam = lazyModule<typeof ClientIam>('@aws-sdk/client-iam');

export { AWS_MAX_SESSION_POLICY_CHARS, SESSION_POLICY_PLACEHOLDERS } from './aws-session.js';

/** AWS limits (STS-API AssumeRoleInput; STANDARDS §5.3). */
export const AWS_MIN_SESSION_SECONDS = 900;
export const AWS_MAX_SESSION_SECONDS = 43_200;
const SESSION_NAME_MAX = 64;
/** The inline role policy holding agent-sts's per-session deny statements (STANDARDS §5.4). */
export const REVOCATION_POLICY_NAME = 'agent-sts-revoked-sessions';
/** IAM's inline role policy quota (characters, whitespace not counted). */
export const AWS_MAX_ROLE_POLICY_CHARS = 10_240;
/** Sid prefix marking the statements agent-sts owns (and prunes) in that policy. */
export const REVOCATION_SID_PREFIX = 'AgsRevoked';
/** Read-modify-write attempts of one revocation when a concurrent writer overwrote the policy. */
const REVOKE_ATTEMPTS = 4;

const Duration = z
  .union([z.number().int(), z.string()])
  .transform((v, c) => {
    try {
      return parseDuration(v);
    } catch (e) {
      c.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  })
  .refine((s) => s >= AWS_MIN_SESSION_SECONDS && s <= AWS_MAX_SESSION_SECONDS, `between ${AWS_MIN_SESSION_SECONDS} s (15m) and ${AWS_MAX_SESSION_SECONDS} s (12h), like a role's MaxSessionDuration`);

const SessionPolicySchema = z
  .record(z.string(), z.unknown())
  .refine((p) => 'Statement' in p, 'a session policy is an IAM policy document: { "Version": "2012-10-17", "Statement": [...] }')
  .superRefine((p, c) => {
    for (const message of sessionPolicyTemplateProblems(p)) c.addIssue({ code: 'custom', message });
  });

const RoleSchema = z
  .object({
    roleArn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/, 'an IAM role ARN (arn:aws:iam::<account>:role/<name>)'),
    /**
     * Inline session policy (a JSON object) narrowing the role for this session. String values may
     * contain ${task_id}, ${workload}, ${human} (the human's subject, or empty), ${source_identity}
     * and ${param.<name>} (the granted scope's parameter <name>: one plain value, no wildcards);
     * they are substituted into the parsed JSON strings, so a value can never break out of its string.
     * Without a template, a grant's `actions` / `resources` parameters build the session policy.
     */
    sessionPolicy: SessionPolicySchema.optional(),
    /** Confused-deputy guard demanded by the role's trust policy (cross-account roles). */
    externalId: z.string().regex(/^[A-Za-z0-9_=,.@:/-]{2,1224}$/, '2–1224 characters [A-Za-z0-9_=,.@:/-]').optional(),
    /** Mark agent-sts's session tags transitive, so they survive role chaining from this session. */
    transitiveTags: z.boolean().default(false),
    /** This role's MaxSessionDuration, if it differs from the issuer-wide `maxDuration`. */
    maxDuration: Duration.optional(),
  })
  .strict();

export const AwsStsIssuerConfigSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'an AWS region such as us-east-1'),
    /** STS endpoint override (VPC endpoint, tests); default: the regional endpoint. */
    endpoint: z.url().optional(),
    /** IAM endpoint override (VPC endpoint, tests) for early revocation; default: the partition's global IAM endpoint. */
    iamEndpoint: z.url().optional(),
    /** agent-sts's own credentials; default: the SDK's provider chain (env, profile, web identity, ECS, IMDS). */
    credentials: z
      .object({ accessKeyId: z.string().regex(/^[A-Z0-9]{16,128}$/, 'an AWS access key id'), secretAccessKey: SecretRefSchema, sessionToken: SecretRefSchema.optional() })
      .strict()
      .optional(),
    /** scope -> role to assume for a credential granted that scope (exactly one scope per credential). */
    roles: z.record(z.string().min(1), RoleSchema).refine((r) => Object.keys(r).length > 0, 'map at least one scope to a role'),
    /**
     * The roles' MaxSessionDuration (1h unless changed on the role). Role chaining (agent-sts itself
     * running on role credentials, e.g. EKS/EC2) caps sessions at 1 h whatever the role says.
     */
    maxDuration: Duration.default(3600),
    /**
     * Bound of each STS / IAM request, milliseconds: to connect, and for the whole request (a late answer is
     * given up on). AssumeRole is never retried by the SDK (each call mints a session); the idempotent IAM calls are, once.
     */
    timeoutMs: z.number().int().min(100).max(60_000).default(5000),
  })
  .strict();
export type AwsStsIssuerConfig = z.infer<typeof AwsStsIssuerConfigSchema>;

/** Stored (sealed) with the credential row; identifies the session for revocation. No secrets. */
export interface AwsStsHandle {
  roleArn: string;
  roleSessionName: string;
  sourceIdentity: string;
  /** `<RoleId>:<RoleSessionName>`, the `aws:userid` of the session. */
  assumedRoleId?: string;
  accessKeyId: string;
  /** AWS's Expiration (ISO 8601): after it nothing is left to revoke. */
  expiresAt: string;
  [key: string]: unknown;
}

/**
 * AWS refused the request for a reason that is agent-sts's configuration (session policy too large
 * or malformed, packed size over the limit, a parameter AWS rejects): retrying will not help.
 * Callers see a generic server_error; the log and audit reason carry this message.
 */
export class AwsStsRequestRejected extends Error {
  constructor(
    message: string,
    readonly detail: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'AwsStsRequestRejected';
  }
}

/**
 * revoke() could not add the session's deny statement for a reason retrying soon will not fix: the
 * role's revocation policy would exceed IAM's inline-policy size with only live statements in it,
 * or its current content is not a policy agent-sts can safely rewrite. The sweep retries (statements
 * lapse with their sessions); the message says what to do.
 */
export class AwsSessionRevocationUnavailable extends Error {
  constructor(
    message: string,
    readonly detail: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'AwsSessionRevocationUnavailable';
  }
}

/** `[A-Za-z0-9_=,.@-]` (STANDARDS §5.3 RoleSessionName / SourceIdentity), 2–64 characters. */
const sanitizeName = (s: string) => s.replace(/[^A-Za-z0-9_=,.@-]/g, '_');

export function roleSessionName(taskId: string): string {
  return fit(sanitizeName(`ags-${taskId}`), taskId, SESSION_NAME_MAX);
}

/** The human's subject if any, else the workload's: charset-safe, 2–64 characters, never `aws:`-prefixed. */
export function sourceIdentityOf(identity: BlendedIdentity): string {
  const subject = identity.human?.subject ?? identity.workload.subject;
  let s = fit(sanitizeName(subject), subject, SESSION_NAME_MAX);
  if (/^aws:/i.test(s)) s = `_${s}`.slice(0, SESSION_NAME_MAX); // unreachable after sanitising (':' is replaced); kept as a guard
  return s.length >= 2 ? s : s.padEnd(2, '_');
}

/**
 * A grant for an aws-sts target: each scope's parameters against its role (aws-session.ts:
 * template parameters, or actions / resources building the session policy) and the session
 * tags. Used at load (with file and line) and again by issue().
 */
export function checkAwsGrant(config: AwsStsIssuerConfig, grant: GrantRequirements): string[] {
  const problems: string[] = [];
  for (const [scope, params] of grant.scopes) {
    const role = Object.hasOwn(config.roles, scope) ? config.roles[scope] : undefined;
    if (role) problems.push(...roleParamProblems(scope, role.sessionPolicy, params, grant.standalone));
    else if (Object.keys(params).length) problems.push(`scope ${scope}: maps to no role of this issuer, so its parameters narrow nothing`);
  }
  problems.push(...sessionTagProblems(grant.sessionTags));
  return problems;
}

type PolicyStatement = Record<string, unknown>;
interface RoleInlinePolicy {
  /** Top-level members other than Statement (Version, Id), kept as they are. */
  rest: Record<string, unknown>;
  statements: PolicyStatement[];
}

/** The role name of a role ARN (IAM's RoleName parameter: the last path segment). */
export function roleNameOf(roleArn: string): string {
  return roleArn.slice(roleArn.lastIndexOf('/') + 1);
}

/** The deny statement that ends one session: its Sid is derived from the session name (plus a hash of its `aws:userid`, so cut names stay distinct). */
export function revocationStatement(handle: Pick<AwsStsHandle, 'roleArn' | 'roleSessionName' | 'assumedRoleId' | 'expiresAt'>): PolicyStatement {
  const userid = handle.assumedRoleId ?? `*:${handle.roleSessionName}`;
  const alnum = handle.roleSessionName.replace(/[^A-Za-z0-9]/g, '').slice(0, 48);
  return {
    Sid: `${REVOCATION_SID_PREFIX}${alnum}${sha256Hex(`${handle.roleArn}\n${userid}`).slice(0, 12)}`,
    Effect: 'Deny',
    Action: '*',
    Resource: '*',
    Condition: {
      // aws:userid of an assumed-role session is `<RoleId>:<RoleSessionName>`: this session only. Without the
      // RoleId (handles from before AssumedRoleId was recorded) the session name, unique per task, on this role.
      [handle.assumedRoleId ? 'StringEquals' : 'StringLike']: { 'aws:userid': userid },
      // Both a no-op once the session lapsed and the marker the pruning reads.
      DateLessThan: { 'aws:CurrentTime': handle.expiresAt },
    },
  };
}

/** When one of agent-sts's statements stops mattering (its session's Expiration), or undefined for statements that are not ours. */
function revocationStatementExpiry(st: PolicyStatement): number | undefined {
  if (typeof st.Sid !== 'string' || !st.Sid.startsWith(REVOCATION_SID_PREFIX)) return undefined;
  const cond = st.Condition as { DateLessThan?: Record<string, unknown> } | undefined;
  const t = cond?.DateLessThan?.['aws:CurrentTime'];
  const ms = typeof t === 'string' ? Date.parse(t) : NaN;
  return Number.isNaN(ms) ? undefined : ms;
}

/** IAM's policy-size measure: characters outside whitespace (JSON.stringify output has none outside strings, so this is conservative). */
const policyChars = (text: string) => text.replace(/\s/g, '').length;

/**
 * Revocable: a deny statement for the session on the role (revoke()). AssumeRole issues 900 s at
 * least (issue() refuses shorter) and at most the role's MaxSessionDuration: the largest configured
 * (`maxDuration`, per role or issuer-wide), itself at most AWS's 43,200 s.
 */
export function awsStsCapabilities(config: AwsStsIssuerConfig): IssuerCapabilities {
  const max = Math.min(Math.max(...Object.values(config.roles).map((r) => r.maxDuration ?? config.maxDuration)), AWS_MAX_SESSION_SECONDS);
  return {
    revocable: true,
    minTtlSeconds: AWS_MIN_SESSION_SECONDS,
    maxTtlSeconds: max,
    minTtlReason: 'AssumeRole cannot issue sessions shorter than 15 minutes',
    maxTtlReason: `AssumeRole sessions last at most the role's MaxSessionDuration (maxDuration: ${max} s for the longest role here; AWS allows up to 12h)`,
  };
}

/** A failed GetCallerIdentity, in words: AWS error codes and HTTP status only (AWS's messages are not repeated). */
function healthDetail(e: unknown): string {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = err.$metadata?.httpStatusCode;
  const code = err.name && err.name !== 'Error' && /^[A-Za-z]{1,60}$/.test(err.name) ? err.name : safeCode(e);
  if (code === 'CredentialsProviderError') return 'no AWS credentials for agent-sts (default provider chain found none)';
  if (code && OWN_CREDENTIALS_REJECTED.has(code)) return `AWS STS refused agent-sts's own credentials (${code})`;
  if (status === undefined) return networkDetail(safeCode(e), 'AWS STS') ?? `AWS STS unreachable${code ? ` (${code})` : ''}`;
  return `AWS STS answered ${status}${code ? ` (${code})` : ''}`;
}

/** Codes meaning AWS refused agent-sts's own credentials or the trust relationship (not retryable by the caller). */
const OWN_CREDENTIALS_REJECTED = new Set([
  'AccessDenied', 'AccessDeniedException', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'IncompleteSignature',
  'MissingAuthenticationToken', 'UnrecognizedClientException', 'ExpiredToken', 'ExpiredTokenException', 'InvalidAccessKeyId',
  'CredentialsProviderError',
]);
const REQUEST_REJECTED = new Set([
  'MalformedPolicyDocument', 'MalformedPolicyDocumentException', 'PackedPolicyTooLarge', 'PackedPolicyTooLargeException', 'ValidationError', 'InvalidParameterValue',
  // IAM (revocation): policy over quota, service-linked role
  'LimitExceeded', 'LimitExceededException', 'UnmodifiableEntity', 'UnmodifiableEntityException', 'InvalidInput', 'InvalidInputException',
]);

/** A copy of an SDK error with only its name, message (secrets cut out) and HTTP status: never the request or response. */
function scrubbed(e: unknown, secrets: readonly string[]): Error {
  const src = e as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const clean = (s: string | undefined) => secrets.reduce((acc, x) => (x ? acc.split(x).join('[redacted]') : acc), s ?? '');
  const out = new Error(clean(src.message) || 'aws sts error') as Error & Record<string, unknown>;
  out.name = src.name ?? 'Error';
  if (src.code !== undefined) out.code = src.code;
  if (src.$metadata?.httpStatusCode !== undefined) out.httpStatusCode = src.$metadata.httpStatusCode;
  return out;
}

/**
 * AWS credentials from STS `AssumeRole` (STANDARDS §5.3): the granted scope (exactly one) selects a
 * configured role; agent-sts calls AssumeRole with its own credentials and returns the session as
 * `credentials` in the shape `credential_process` prints ({ Version: 1, AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration }); `access_token` is the SessionToken.
 *
 * Request parameters, all derived from agent-sts's own verified data, never from request input:
 * - RoleSessionName `ags-<task id>` (charset [A-Za-z0-9_=,.@-], ≤ 64; a cut name ends with a hash);
 * - SourceIdentity = the human's subject if present, else the workload's (same charset, 2–64, never
 *   `aws:`-prefixed). AWS keeps it through role chaining and the caller cannot change it, so every
 *   CloudTrail event of the session traces back. The role's trust policy must allow
 *   sts:SetSourceIdentity, and sts:TagSession for the tags;
 * - Tags `agent-sts:task`, `agent-sts:subject` (workload), `agent-sts:human` (when present), plus
 *   the grant's sessionTags obligation (values may reference the identity, see grant-params.ts),
 *   values sanitised to AWS's tag charset and ≤ 256 characters (optionally transitive);
 * - Policy: the scope's session-policy template with placeholders (also the grant's
 *   `${param.<name>}`) substituted inside the parsed JSON strings, or without a template one Allow
 *   statement from the grant's `actions` / `resources` parameters; refused before the call when
 *   over 2,048 characters. A session policy only narrows the role (AWS intersects the two);
 * - DurationSeconds = the granted lifetime, capped at the role's MaxSessionDuration (`maxDuration`).
 *   Below AWS's 900 s minimum the request is refused (MalformedRequest) rather than silently
 *   lengthened: the credential would otherwise outlive what policy granted.
 * The credential's expiry is AWS's `Expiration` (truthful, ≤ the granted lifetime).
 *
 * Errors: STS unreachable / 5xx / throttled / no answer within `timeoutMs` → UpstreamUnavailable
 * (api-unreachable / api-error), never retried by the SDK (a retried AssumeRole mints another session);
 * AccessDenied, invalid or expired own credentials → UpstreamUnavailable (own-credentials-rejected);
 * MalformedPolicyDocument, PackedPolicyTooLarge, ValidationError → AwsStsRequestRejected (a
 * configuration problem; server_error to the caller). Secret keys and session tokens are never logged.
 *
 * Revocation (STANDARDS §5.4, IAM-REVOKE): STS sessions cannot be deleted; they end at `Expiration`.
 * revoke() before the Expiration ends one session early by adding to the *role's* inline policy
 * `agent-sts-revoked-sessions` (IAM GetRolePolicy, NoSuchEntity = empty, then PutRolePolicy, with
 * `@aws-sdk/client-iam`: same region, credentials and timeouts as STS; `iamEndpoint` overrides the
 * endpoint for VPC endpoints and tests) the statement
 *   { Sid: "AgsRevoked<session name, alphanumerics><hash>", Effect: Deny, Action: *, Resource: *,
 *     Condition: { StringEquals: { aws:userid: "<RoleId>:<RoleSessionName>" },
 *                  DateLessThan: { aws:CurrentTime: "<the session's Expiration>" } } }
 * `aws:userid` of an assumed-role session names that session only (SourceIdentity would not: it is
 * the human's or workload's, shared by their other sessions). A handle without the AssumedRoleId
 * falls back to `StringLike aws:userid "*:<RoleSessionName>"` (the session name is per task). The
 * DateLessThan makes the statement a no-op once the session lapsed and is the marker the pruning
 * reads: every revoke drops agent-sts's statements (Sid prefix `AgsRevoked`) whose Expiration has
 * passed and keeps every other statement untouched. Idempotent: when the statement is already there
 * (and nothing is to prune) no write happens. After the Expiration revoke() makes no call and resolves.
 * LIMITS:
 * - IAM is eventually consistent: the deny takes effect within seconds, not at once.
 * - agent-sts needs iam:GetRolePolicy and iam:PutRolePolicy on every configured role (and the roles
 *   must not be service-linked). An own-credentials refusal (AccessDenied …) → UpstreamUnavailable
 *   (own-credentials-rejected); IAM unreachable / 5xx → UpstreamUnavailable (api-unreachable /
 *   api-error); the task end reports revocation pending and the sweep retries.
 * - Inline role policies are capped at 10,240 characters (whitespace not counted, all inline policies
 *   of the role together); a statement is ~250, so roughly 35 sessions revoked and still live per role.
 *   If only live statements would not fit, revoke() throws AwsSessionRevocationUnavailable (clear
 *   message; nothing dropped, nothing written) and the session lives to its Expiration unless the
 *   sweep's retry finds room after older statements lapse. Keep granted lifetimes short.
 * - The policy is one document per role shared by all replicas, and IAM has no conditional write:
 *   concurrent revocations on one role race (read-modify-write). After PutRolePolicy revoke() re-reads
 *   the policy and, when its statement is missing (overwritten), starts over (up to 4 attempts with
 *   jittered back-off; then UpstreamUnavailable, the sweep retries). This closes the window in
 *   practice but is not a transaction: a writer whose read predates another's verified write can still
 *   drop that statement, and an eventually consistent read may miss a just-written one.
 * No planHandle(): AssumeRole creates nothing upstream that outlives an interrupted issuance except
 * an unreturned session, which lapses by itself.
 */
export const awsStsIssuerPlugin: CredentialIssuerPlugin<AwsStsIssuerConfig> = {
  type: 'aws-sts',
  configSchema: AwsStsIssuerConfigSchema as unknown as z.ZodType<AwsStsIssuerConfig>,
  capabilities: awsStsCapabilities,
  checkGrant: checkAwsGrant,
  create(name, config, deps): CredentialIssuer {
    let client: STSClient | undefined;
    let iamClient: IAMClient | undefined;
    /** Values that must never appear in an error message or log line. */
    let ownSecrets: string[] = [];
    const where = `credentialIssuers.${name}.credentials`;
    let resolved: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined | null = null;
    /** Resolves agent-sts's own credentials on first use (a missing secret is a configuration error, thrown as such). */
    function ownCredentials() {
      if (resolved !== null) return resolved;
      const own = config.credentials;
      resolved = own
        ? {
            accessKeyId: own.accessKeyId,
            secretAccessKey: deps.secret(own.secretAccessKey, `${where}.secretAccessKey`).reveal(),
            ...(own.sessionToken ? { sessionToken: deps.secret(own.sessionToken, `${where}.sessionToken`).reveal() } : {}),
          }
        : undefined;
      ownSecrets = resolved ? [resolved.secretAccessKey, resolved.sessionToken ?? ''].filter(Boolean) : [];
      return resolved;
    }
    function getClient(): STSClient {
      if (client) return client;
      const credentials = ownCredentials();
      client = new (clientSts().STSClient)({
        region: config.region,
        ...(config.endpoint ? { endpoint: config.endpoint } : {}),
        ...(credentials ? { credentials } : {}), // else the SDK's default provider chain
        // Without throwOnRequestTimeout the SDK only logs a warning when requestTimeout passes and keeps waiting.
        requestHandler: { connectionTimeout: config.timeoutMs, requestTimeout: config.timeoutMs, throwOnRequestTimeout: true },
        // No automatic retry: AssumeRole is not idempotent (a retry after a lost or late answer mints a second
        // session nobody receives). The client sees temporarily_unavailable and asks again, audited.
        maxAttempts: 1,
      });
      return client;
    }
    /** IAM, for early revocation: same credentials and timeouts; the SDK signs for the partition's IAM region. */
    function getIamClient(): IAMClient {
      if (iamClient) return iamClient;
      const credentials = ownCredentials();
      iamClient = new (clientIam().IAMClient)({
        region: config.region,
        ...(config.iamEndpoint ? { endpoint: config.iamEndpoint } : {}),
        ...(credentials ? { credentials } : {}),
        requestHandler: { connectionTimeout: config.timeoutMs, requestTimeout: config.timeoutMs, throwOnRequestTimeout: true },
        // One retry: GetRolePolicy reads, and PutRolePolicy writes the same whole document again (idempotent).
        maxAttempts: 2,
      });
      return iamClient;
    }

    function classify(e: unknown, secrets: readonly string[], fields: Record<string, unknown>, api = 'AWS STS', action = 'AssumeRole'): Error {
      const err = e as { name?: string; code?: string; $fault?: string; $metadata?: { httpStatusCode?: number } };
      const code = err.name === 'Error' || !err.name ? err.code : err.name;
      const status = err.$metadata?.httpStatusCode;
      const cause = scrubbed(e, secrets);
      const detail = { issuer: name, code, httpStatus: status, ...fields };
      if (code && REQUEST_REJECTED.has(code)) {
        deps.logger.error({ ...detail, err: { message: cause.message } }, `${api} rejected the ${action} request of this configuration`);
        return new AwsStsRequestRejected(`aws-sts issuer ${name}: ${api} rejected ${action} (${code}): ${cause.message}`, detail);
      }
      if ((code && OWN_CREDENTIALS_REJECTED.has(code)) || status === 401 || status === 403) {
        deps.logger.error({ ...detail, cause: 'own-credentials-rejected', err: { message: cause.message } }, `${api} refused agent-sts credentials or the role trust policy`);
        return new UpstreamUnavailable('AWS refused agent-sts; try again later', { cause, detail: { ...detail, cause: 'own-credentials-rejected' } });
      }
      const why = status === undefined ? 'api-unreachable' : 'api-error';
      deps.logger.warn({ ...detail, cause: why, err: { message: cause.message } }, `${api} unavailable`);
      return new UpstreamUnavailable(`${api} is unavailable; try again later`, { cause, detail: { ...detail, cause: why } });
    }

    const isNoSuchEntity = (e: unknown) => ['NoSuchEntity', 'NoSuchEntityException'].includes((e as { name?: string }).name ?? '') || (e as { Code?: string }).Code === 'NoSuchEntity';

    /** The role's revocation policy (empty when it does not exist). */
    async function readRevocationPolicy(roleName: string, fields: Record<string, unknown>): Promise<RoleInlinePolicy> {
      let doc: string | undefined;
      try {
        const out = await getIamClient().send(new (clientIam().GetRolePolicyCommand)({ RoleName: roleName, PolicyName: REVOCATION_POLICY_NAME }));
        doc = out.PolicyDocument;
      } catch (e) {
        if (isNoSuchEntity(e)) return { rest: { Version: '2012-10-17' }, statements: [] };
        throw classify(e, ownSecrets, fields, 'AWS IAM', 'GetRolePolicy');
      }
      let parsed: unknown;
      try {
        // IAM returns the document URL-encoded (RFC 3986).
        const text = doc === undefined ? '' : doc.trimStart().startsWith('{') ? doc : decodeURIComponent(doc);
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const p = parsed as { Statement?: unknown } | undefined;
      const st = p && typeof p === 'object' ? p.Statement : undefined;
      const statements = Array.isArray(st) ? st : st && typeof st === 'object' ? [st] : undefined;
      if (!statements || !statements.every((x) => x && typeof x === 'object' && !Array.isArray(x)))
        throw new AwsSessionRevocationUnavailable(
          `aws-sts issuer ${name}: the inline policy ${REVOCATION_POLICY_NAME} of role ${roleName} is not a policy document agent-sts can extend; fix or delete it (agent-sts recreates it)`,
          { ...fields, issuer: name, policyName: REVOCATION_POLICY_NAME },
        );
      const { Statement: _dropped, ...rest } = p as Record<string, unknown>;
      return { rest, statements: statements as PolicyStatement[] };
    }

    function checkHandle(h: unknown): AwsStsHandle {
      const handle = h as AwsStsHandle;
      if (typeof handle.roleArn !== 'string' || typeof handle.roleSessionName !== 'string' || typeof handle.expiresAt !== 'string' || Number.isNaN(Date.parse(handle.expiresAt)))
        throw new Error(`aws-sts issuer ${name}: the revocation handle is not an AWS session handle`);
      return handle;
    }

    return {
      type: 'aws-sts',
      name,
      issuedTokenTypes: [TOKEN_TYPE.awsCredentials],
      needsActiveRevocation: true,
      capabilities: awsStsCapabilities(config),
      async issue(req, ctx) {
        const scopes = req.decision.grantedScopes;
        if (scopes.length !== 1)
          throw new ScopeNotAllowed('an AWS credential is issued for exactly one scope (one role); ask for one scope per credential', {
            detail: { issuer: name, grantedScopes: scopes },
          });
        const scope = scopes[0]!;
        const role = Object.hasOwn(config.roles, scope) ? config.roles[scope] : undefined;
        if (!role) throw new ScopeNotAllowed(`scope ${scope} maps to no AWS role here`, { detail: { issuer: name, scope } });
        refuseGrantProblems(name, checkAwsGrant(config, grantOfDecision(req.decision)));
        if (req.ttlSeconds < AWS_MIN_SESSION_SECONDS)
          throw new MalformedRequest(
            `AWS sessions last at least ${AWS_MIN_SESSION_SECONDS} s; ask for requested_lifetime >= ${AWS_MIN_SESSION_SECONDS} or change the policy`,
            { detail: { issuer: name, scope, ttlSeconds: req.ttlSeconds } },
          );
        const durationSeconds = Math.min(req.ttlSeconds, role.maxDuration ?? config.maxDuration);
        const sessionName = roleSessionName(req.taskId);
        const sourceIdentity = sourceIdentityOf(req.identity);
        const tags = sessionTagsFor(req.taskId, req.identity, req.decision.obligations?.sessionTags);
        const policy = sessionPolicyText(role.sessionPolicy, paramsOf(req.decision, scope), {
          task_id: req.taskId, workload: req.identity.workload.subject, human: req.identity.human?.subject ?? '', source_identity: sourceIdentity,
        });
        if (policy !== undefined) {
          if (policy.length > AWS_MAX_SESSION_POLICY_CHARS)
            throw new AwsStsRequestRejected(
              `aws-sts issuer ${name}: the session policy of scope ${scope} renders to ${policy.length} characters; AWS allows ${AWS_MAX_SESSION_POLICY_CHARS} (shorten the template)`,
              { issuer: name, scope, policyChars: policy.length },
            );
          if (!/^[\t\n\r\u0020-\u00FF]*$/.test(policy))
            throw new AwsStsRequestRejected(`aws-sts issuer ${name}: the session policy of scope ${scope} contains characters AWS does not accept (only U+0020–U+00FF, tab, LF, CR)`, { issuer: name, scope });
        }
        const input: AssumeRoleCommandInput = {
          RoleArn: role.roleArn,
          RoleSessionName: sessionName,
          DurationSeconds: durationSeconds,
          SourceIdentity: sourceIdentity,
          Tags: tags,
          ...(role.transitiveTags ? { TransitiveTagKeys: tags.map((t) => t.Key!) } : {}),
          ...(policy !== undefined ? { Policy: policy } : {}),
          ...(role.externalId ? { ExternalId: role.externalId } : {}),
        };
        const fields = { scope, roleArn: role.roleArn, roleSessionName: sessionName, sourceIdentity, durationSeconds, requestId: ctx.requestId };
        const sts = getClient();
        let out;
        try {
          out = await sts.send(new (clientSts().AssumeRoleCommand)(input));
        } catch (e) {
          throw classify(e, ownSecrets, fields);
        }
        const c = out.Credentials;
        if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !(c.Expiration instanceof Date) || Number.isNaN(c.Expiration.getTime())) {
          deps.logger.error({ issuer: name, ...fields, cause: 'api-error' }, 'AWS STS AssumeRole answered without complete credentials');
          throw new UpstreamUnavailable('AWS STS answered unusably; try again later', { detail: { issuer: name, cause: 'api-error', ...fields } });
        }
        const expiresAt = c.Expiration;
        const handle: AwsStsHandle = {
          roleArn: role.roleArn,
          roleSessionName: sessionName,
          sourceIdentity: out.SourceIdentity ?? sourceIdentity,
          ...(out.AssumedRoleUser?.AssumedRoleId ? { assumedRoleId: out.AssumedRoleUser.AssumedRoleId } : {}),
          accessKeyId: c.AccessKeyId,
          expiresAt: expiresAt.toISOString(),
        };
        deps.logger.debug(
          { issuer: name, ...fields, accessKeyId: c.AccessKeyId, assumedRoleArn: out.AssumedRoleUser?.Arn, packedPolicySize: out.PackedPolicySize, expiresAt: handle.expiresAt },
          'aws session issued',
        );
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.awsCredentials,
          tokenType: 'N_A',
          expiresAt,
          fingerprint: credentialFingerprint(c.SessionToken),
          accessToken: new Secret(c.SessionToken),
          structured: new Secret({ Version: 1, AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Expiration: handle.expiresAt }),
          revocationHandle: handle,
        };
      },
      /** `GetCallerIdentity` with agent-sts's own credentials (AWS never refuses it by policy): STS reachable, credentials valid. */
      async health() {
        return probeHealth(async (signal) => {
          let sts: STSClient;
          try {
            sts = getClient();
          } catch {
            throw new HealthProblem("agent-sts's AWS credentials could not be read (secret reference does not resolve)");
          }
          await sts.send(new (clientSts().GetCallerIdentityCommand)({}), { abortSignal: signal });
        }, healthDetail);
      },
      async revoke(h, ctx) {
        const handle = checkHandle(h);
        const now = ctx.now.getTime();
        if (now >= Date.parse(handle.expiresAt)) return; // the session has lapsed: nothing upstream is left
        const roleName = roleNameOf(handle.roleArn);
        const statement = revocationStatement(handle);
        const fields = {
          roleArn: handle.roleArn, roleSessionName: handle.roleSessionName, assumedRoleId: handle.assumedRoleId, policyName: REVOCATION_POLICY_NAME,
          sid: statement.Sid, expiresAt: handle.expiresAt, requestId: ctx.requestId,
        };
        const ours = (x: PolicyStatement) => isDeepStrictEqual(x, statement);
        for (let attempt = 1; attempt <= REVOKE_ATTEMPTS; attempt++) {
          const current = await readRevocationPolicy(roleName, fields);
          // Prune agent-sts's statements whose session has lapsed; keep everything else (live ones, foreign ones).
          const kept = current.statements.filter((x) => {
            const until = revocationStatementExpiry(x);
            return until === undefined || until > now;
          });
          const pruned = current.statements.length - kept.length;
          const present = kept.some(ours);
          if (present && pruned === 0) {
            deps.logger.info({ issuer: name, ...fields, attempt }, 'aws session already revoked (deny statement present)');
            return;
          }
          // A statement with our Sid but other content (edited by hand) is replaced, never duplicated.
          const next = present ? kept : [...kept.filter((x) => x.Sid !== statement.Sid), statement];
          const text = JSON.stringify({ Version: '2012-10-17', ...current.rest, Statement: next });
          const size = policyChars(text);
          if (size > AWS_MAX_ROLE_POLICY_CHARS)
            throw new AwsSessionRevocationUnavailable(
              `aws-sts issuer ${name}: cannot revoke session ${handle.roleSessionName} of ${handle.roleArn} yet: the role's inline policy ${REVOCATION_POLICY_NAME} would be ${size} characters with only live deny statements (IAM allows ${AWS_MAX_ROLE_POLICY_CHARS}); ` +
                `the session stays valid until ${handle.expiresAt} unless older revoked sessions lapse first (the sweep retries) — shorten granted lifetimes or split the scope over several roles`,
              { issuer: name, ...fields, policyChars: size, statements: next.length },
            );
          try {
            await getIamClient().send(new (clientIam().PutRolePolicyCommand)({ RoleName: roleName, PolicyName: REVOCATION_POLICY_NAME, PolicyDocument: text }));
          } catch (e) {
            if (isNoSuchEntity(e)) {
              // The role itself is gone: its sessions have no permissions left to use.
              deps.logger.warn({ issuer: name, ...fields }, 'aws role no longer exists; its sessions have no permissions left');
              return;
            }
            throw classify(e, ownSecrets, fields, 'AWS IAM', 'PutRolePolicy');
          }
          // IAM has no conditional write: another replica revoking on this role at the same time may have
          // overwritten us (or we it; it checks too). Re-read and retry until our statement is there.
          const after = await readRevocationPolicy(roleName, fields);
          if (after.statements.some(ours)) {
            deps.logger.info({ issuer: name, ...fields, attempt, pruned, statements: next.length, policyChars: size }, 'aws session revoked (deny statement added to the role)');
            return;
          }
          deps.logger.warn({ issuer: name, ...fields, attempt }, 'aws revocation policy changed concurrently; retrying');
          await new Promise((r) => setTimeout(r, 50 * attempt + Math.floor(Math.random() * 100)));
        }
        throw new UpstreamUnavailable('AWS IAM revocation policy is being changed concurrently; try again later', {
          detail: { issuer: name, ...fields, cause: 'api-error', reason: 'concurrent-policy-update' },
        });
      },
      async close() {
        client?.destroy();
        client = undefined;
        iamClient?.destroy();
        iamClient = undefined;
      },
    };
  },
};
