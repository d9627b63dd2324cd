import { AssumeRoleCommand, STSClient, type AssumeRoleCommandInput, type Tag } from '@aws-sdk/client-sts';
import { z } from 'zod';
import { Secret } from '../../core/secret.js';
import type { BlendedIdentity } from '../../core/types.js';
import { credentialFingerprint, sha256Hex } from '../../lib/crypto.js';
import { parseDuration } from '../../lib/clock.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema, resolveSecretRef } from '../../config/secret-ref.js';
import { MalformedRequest, ScopeNotAllowed, UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { CredentialIssuer, CredentialIssuerPlugin } from '../credential-issuer.js';

/** AWS limits (STS-API AssumeRoleInput; STANDARDS §5.3). */
export const AWS_MIN_SESSION_SECONDS = 900;
export const AWS_MAX_SESSION_SECONDS = 43_200;
export const AWS_MAX_SESSION_POLICY_CHARS = 2048;
const SESSION_NAME_MAX = 64;
const TAG_KEY_MAX = 128;
const TAG_VALUE_MAX = 256;

/** Placeholders a session-policy template may use; anything else of this shape (no `:`) is a typo. */
export const SESSION_POLICY_PLACEHOLDERS = ['task_id', 'workload', 'human', 'source_identity'] as const;
type PlaceholderValues = Record<(typeof SESSION_POLICY_PLACEHOLDERS)[number], string>;
/** `${name}` without a colon: ours. IAM's own policy variables (`${aws:username}`, `${aws:PrincipalTag/x}`) have one and are left alone. */
const PLACEHOLDER = /\$\{([A-Za-z0-9_]+)\}/g;

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

/** Strings of every JSON value (and key) of a template, to check its placeholders. */
function templateStrings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(templateStrings);
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => [k, ...templateStrings(x)]);
  return [];
}

const SessionPolicySchema = z
  .record(z.string(), z.unknown())
  .refine((p) => 'Statement' in p, 'a session policy is an IAM policy document: { "Version": "2012-10-17", "Statement": [...] }')
  .superRefine((p, c) => {
    for (const s of templateStrings(p))
      for (const [, name] of s.matchAll(PLACEHOLDER))
        if (!(SESSION_POLICY_PLACEHOLDERS as readonly string[]).includes(name!))
          c.addIssue({ code: 'custom', message: `unknown placeholder \${${name}} (known: ${SESSION_POLICY_PLACEHOLDERS.map((n) => `\${${n}}`).join(', ')}; IAM variables like \${aws:username} pass through)` });
    const bare = JSON.stringify(p).replace(PLACEHOLDER, '');
    if (bare.length > AWS_MAX_SESSION_POLICY_CHARS)
      c.addIssue({ code: 'custom', message: `the session policy is ${bare.length} characters without its placeholders; AWS allows ${AWS_MAX_SESSION_POLICY_CHARS}` });
  });

const RoleSchema = z
  .object({
    roleArn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/, 'an IAM role ARN (arn:aws:iam::<account>:role/<name>)'),
    /**
     * Inline session policy (a JSON object) narrowing the role for this session. String values may
     * contain ${task_id}, ${workload}, ${human} (the human's subject, or empty), ${source_identity};
     * they are substituted into the parsed JSON strings, so a value can never break out of its string.
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
    /** Per-request timeouts of the STS call, milliseconds. */
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

/** Raised by revoke() before the session's Expiration: see the issuer's doc comment. */
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
/** AWS's tag charset `[\p{L}\p{Z}\p{N}_.:/=+\-@]`. */
const sanitizeTag = (s: string) => s.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '_');

/** Fits `s` into `max` characters; a cut string ends with a hash of the original so distinct inputs stay distinct. */
function fit(s: string, original: string, max: number): string {
  if (s.length <= max) return s;
  const h = sha256Hex(original).slice(0, 10);
  return `${s.slice(0, max - h.length - 1)}.${h}`;
}

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

function sessionTags(taskId: string, identity: BlendedIdentity): Tag[] {
  const tag = (key: string, value: string): Tag => ({ Key: sanitizeTag(key).slice(0, TAG_KEY_MAX), Value: fit(sanitizeTag(value), value, TAG_VALUE_MAX) });
  return [
    tag('agent-sts:task', taskId),
    tag('agent-sts:subject', identity.workload.subject),
    ...(identity.human ? [tag('agent-sts:human', identity.human.subject)] : []),
  ];
}

function renderPolicy(template: unknown, values: PlaceholderValues): unknown {
  if (typeof template === 'string') return template.replace(PLACEHOLDER, (m, name: string) => (name in values ? values[name as keyof PlaceholderValues] : m));
  if (Array.isArray(template)) return template.map((v) => renderPolicy(v, values));
  if (template && typeof template === 'object')
    return Object.fromEntries(Object.entries(template).map(([k, v]) => [renderPolicy(k, values) as string, renderPolicy(v, values)]));
  return template;
}

/** Codes meaning AWS refused agent-sts's own credentials or the trust relationship (not retryable by the caller). */
const OWN_CREDENTIALS_REJECTED = new Set([
  'AccessDenied', 'AccessDeniedException', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'IncompleteSignature',
  'MissingAuthenticationToken', 'UnrecognizedClientException', 'ExpiredToken', 'ExpiredTokenException', 'InvalidAccessKeyId',
  'CredentialsProviderError',
]);
const REQUEST_REJECTED = new Set(['MalformedPolicyDocument', 'MalformedPolicyDocumentException', 'PackedPolicyTooLarge', 'PackedPolicyTooLargeException', 'ValidationError', 'InvalidParameterValue']);

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
 * - Tags `agent-sts:task`, `agent-sts:subject` (workload), `agent-sts:human` (when present), values
 *   sanitised to AWS's tag charset and ≤ 256 characters (optionally transitive);
 * - Policy: the scope's session-policy template with placeholders substituted inside the parsed
 *   JSON strings, refused before the call when over 2,048 characters;
 * - DurationSeconds = the granted lifetime, capped at the role's MaxSessionDuration (`maxDuration`).
 *   Below AWS's 900 s minimum the request is refused (MalformedRequest) rather than silently
 *   lengthened: the credential would otherwise outlive what policy granted.
 * The credential's expiry is AWS's `Expiration` (truthful, ≤ the granted lifetime).
 *
 * Errors: STS unreachable / 5xx / throttled → UpstreamUnavailable (api-unreachable / api-error);
 * AccessDenied, invalid or expired own credentials → UpstreamUnavailable (own-credentials-rejected);
 * MalformedPolicyDocument, PackedPolicyTooLarge, ValidationError → AwsStsRequestRejected (a
 * configuration problem; server_error to the caller). Secret keys and session tokens are never logged.
 *
 * Revocation — LIMITS: STS sessions cannot be deleted; they end at `Expiration`. Ending one early
 * (STANDARDS §5.4, IAM-REVOKE) means adding an inline deny policy to the *role* (iam:PutRolePolicy)
 * conditioned on `aws:SourceIdentity` or on `aws:userid` = `<RoleId>:<RoleSessionName>` (or, coarser,
 * `aws:TokenIssueTime` like the console's "Revoke active sessions"), and removing that statement after
 * the Expiration passed. That needs `@aws-sdk/client-iam`, which is not a dependency of agent-sts, so
 * it is NOT BUILT: revoke() before the Expiration throws AwsSessionRevocationUnavailable (the task end
 * reports the credential as revocation pending; the sweep retries and settles it once the session
 * has lapsed). After the Expiration revoke() resolves: nothing upstream is left. Keep granted
 * lifetimes short accordingly. No planHandle(): AssumeRole creates nothing upstream that outlives an
 * interrupted issuance except an unreturned session, which lapses by itself.
 */
export const awsStsIssuerPlugin: CredentialIssuerPlugin<AwsStsIssuerConfig> = {
  type: 'aws-sts',
  configSchema: AwsStsIssuerConfigSchema as unknown as z.ZodType<AwsStsIssuerConfig>,
  create(name, config, deps): CredentialIssuer {
    let client: STSClient | undefined;
    /** Values that must never appear in an error message or log line. */
    let ownSecrets: string[] = [];
    const where = `credentialIssuers.${name}.credentials`;
    /** Resolves agent-sts's own credentials on first use (a missing secret is a configuration error, thrown as such). */
    function getClient(): STSClient {
      if (client) return client;
      const own = config.credentials;
      const credentials = own
        ? {
            accessKeyId: own.accessKeyId,
            secretAccessKey: resolveSecretRef(own.secretAccessKey, deps.env, `${where}.secretAccessKey`).reveal(),
            ...(own.sessionToken ? { sessionToken: resolveSecretRef(own.sessionToken, deps.env, `${where}.sessionToken`).reveal() } : {}),
          }
        : undefined;
      ownSecrets = credentials ? [credentials.secretAccessKey, credentials.sessionToken ?? ''].filter(Boolean) : [];
      client = new STSClient({
        region: config.region,
        ...(config.endpoint ? { endpoint: config.endpoint } : {}),
        ...(credentials ? { credentials } : {}), // else the SDK's default provider chain
        requestHandler: { connectionTimeout: config.timeoutMs, requestTimeout: config.timeoutMs },
        maxAttempts: 2,
      });
      return client;
    }

    function classify(e: unknown, secrets: readonly string[], fields: Record<string, unknown>): Error {
      const err = e as { name?: string; code?: string; $fault?: string; $metadata?: { httpStatusCode?: number } };
      const code = err.name === 'Error' || !err.name ? err.code : err.name;
      const status = err.$metadata?.httpStatusCode;
      const cause = scrubbed(e, secrets);
      const detail = { issuer: name, code, httpStatus: status, ...fields };
      if (code && REQUEST_REJECTED.has(code)) {
        deps.logger.error({ ...detail, err: { message: cause.message } }, 'AWS STS rejected the AssumeRole request of this configuration');
        return new AwsStsRequestRejected(`aws-sts issuer ${name}: AWS STS rejected AssumeRole (${code}): ${cause.message}`, detail);
      }
      if ((code && OWN_CREDENTIALS_REJECTED.has(code)) || status === 401 || status === 403) {
        deps.logger.error({ ...detail, cause: 'own-credentials-rejected', err: { message: cause.message } }, 'AWS STS refused agent-sts credentials or the role trust policy');
        return new UpstreamUnavailable('AWS refused agent-sts; try again later', { cause, detail: { ...detail, cause: 'own-credentials-rejected' } });
      }
      const why = status === undefined ? 'api-unreachable' : 'api-error';
      deps.logger.warn({ ...detail, cause: why, err: { message: cause.message } }, 'AWS STS unavailable');
      return new UpstreamUnavailable('AWS STS is unavailable; try again later', { cause, detail: { ...detail, cause: why } });
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
      async issue(req, ctx) {
        const scopes = req.decision.grantedScopes;
        if (scopes.length !== 1)
          throw new ScopeNotAllowed('an AWS credential is issued for exactly one scope (one role); ask for one scope per credential', {
            detail: { issuer: name, grantedScopes: scopes },
          });
        const scope = scopes[0]!;
        const role = config.roles[scope];
        if (!role) throw new ScopeNotAllowed(`scope ${scope} maps to no AWS role here`, { detail: { issuer: name, scope } });
        if (req.ttlSeconds < AWS_MIN_SESSION_SECONDS)
          throw new MalformedRequest(
            `AWS sessions last at least ${AWS_MIN_SESSION_SECONDS} s; ask for requested_lifetime >= ${AWS_MIN_SESSION_SECONDS} or change the policy`,
            { detail: { issuer: name, scope, ttlSeconds: req.ttlSeconds } },
          );
        const durationSeconds = Math.min(req.ttlSeconds, role.maxDuration ?? config.maxDuration);
        const sessionName = roleSessionName(req.taskId);
        const sourceIdentity = sourceIdentityOf(req.identity);
        const tags = sessionTags(req.taskId, req.identity);
        let policy: string | undefined;
        if (role.sessionPolicy) {
          policy = JSON.stringify(
            renderPolicy(role.sessionPolicy, { task_id: req.taskId, workload: req.identity.workload.subject, human: req.identity.human?.subject ?? '', source_identity: sourceIdentity }),
          );
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
          out = await sts.send(new AssumeRoleCommand(input));
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
      async revoke(h, ctx) {
        const handle = checkHandle(h);
        if (ctx.now.getTime() >= Date.parse(handle.expiresAt)) return; // the session has lapsed: nothing upstream is left
        throw new AwsSessionRevocationUnavailable(
          `aws-sts issuer ${name}: AWS sessions cannot be ended before their Expiration without an inline deny policy on the role (iam:PutRolePolicy via @aws-sdk/client-iam), which agent-sts does not implement yet; session ${handle.roleSessionName} of ${handle.roleArn} stays valid until ${handle.expiresAt}`,
          { issuer: name, roleArn: handle.roleArn, roleSessionName: handle.roleSessionName, expiresAt: handle.expiresAt },
        );
      },
      async close() {
        client?.destroy();
        client = undefined;
      },
    };
  },
};
