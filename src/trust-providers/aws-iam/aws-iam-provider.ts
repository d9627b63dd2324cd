/**
 * `aws-iam` trust provider: Vault-style signed `sts:GetCallerIdentity` (STANDARDS §5.1).
 * subject_token = base64url(JSON {"method","url","body","headers"}) of a SigV4-signed request the
 * workload built but did not send (see ./attest.ts); type TOKEN_TYPE.awsSigv4Gci.
 *
 * Config: `stsEndpoint` (default https://sts.amazonaws.com) — where agent-sts sends the request;
 * `allowedStsHosts` (default ['sts.amazonaws.com']) — hosts accepted in the client's signed URL;
 * `accounts` (optional allow-list of 12-digit account ids); `maxRequestAge` (default 5m);
 * `timeout` (default 5s).
 *
 * Security choices (each check exists because without it...):
 * - The request is replayed to the *configured* endpoint, never to the client's host: otherwise
 *   agent-sts is an SSRF proxy and trusts whatever "STS" the client names. Host comes from the
 *   client URL only because it is signed; that host must be in `allowedStsHosts`. No redirects.
 * - POST only, path `/`, no query string, body exactly GetCallerIdentity: the client must not make
 *   us send another signed STS action (or a presigned GET).
 * - Authorization must be `AWS4-HMAC-SHA256` with exactly one `SignedHeaders=` listing
 *   `x-agent-sts-server-id`, whose value must equal our serverId: a request signed for another
 *   service using the same scheme (Vault, another broker) cannot be replayed to us.
 * - X-Amz-Date within `maxRequestAge` (not in the future beyond clock tolerance), and each
 *   signature is accepted once (replay guard until X-Amz-Date + 15 min, STS's own window): a
 *   captured blob cannot be used a second time. The claim happens before the STS call, so one blob
 *   cannot make us call STS repeatedly.
 * - The identity comes only from STS's answer (200, XML, exactly one GetCallerIdentityResult);
 *   an assumed role maps to its role (`aws://<acct>/role/<Role>`), never to the caller-chosen
 *   session name. STS 4xx is the caller's fault (SubjectTokenRejected, AWS error code in detail);
 *   network failure/timeout is UpstreamUnavailable 'api-unreachable'; 5xx/malformed 'api-error'.
 * - The token, its headers and STS's error messages (which echo the canonical request) never
 *   reach logs or errors; rejections are logged with a fingerprint only.
 */
import { z } from 'zod';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { XMLParser } from 'fast-xml-parser';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { parseDuration } from '../../lib/clock.js';
import { sha256Hex } from '../../lib/crypto.js';
import { SubjectTokenRejected, UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import { logRefusals, type Attestation, type TrustProvider, type TrustProviderPlugin, type UpstreamCause } from '../trust-provider.js';
import { GCI_BODY, SERVER_ID_HEADER } from './attest.js';

const duration = z.union([z.number().int().positive(), z.string().regex(/^\d+\s*(s|m|h|d)?$/)]);

export const AwsIamConfigSchema = z
  .object({
    stsEndpoint: z
      .string()
      .url()
      .refine((u) => /^https?:$/.test(new URL(u).protocol), 'stsEndpoint must be an http(s) URL')
      .default('https://sts.amazonaws.com'),
    allowedStsHosts: z.array(z.string().min(1)).nonempty().default(['sts.amazonaws.com']),
    accounts: z.array(z.string().regex(/^\d{12}$/, 'an AWS account id has 12 digits')).nonempty().optional(),
    maxRequestAge: duration.default('5m'),
    timeout: duration.default('5s'),
  })
  .strict();

export type AwsIamConfig = z.infer<typeof AwsIamConfigSchema>;

const BlobSchema = z
  .object({
    method: z.string(),
    url: z.string(),
    body: z.string(),
    headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
  })
  .strict();
type Blob = z.infer<typeof BlobSchema>;

/** STS's own acceptance window for a signed request; the replay claim is held this long. */
const STS_SIGNATURE_WINDOW_MS = 15 * 60 * 1000;
const MAX_RESPONSE_BYTES = 64 * 1024;
/** Headers not forwarded: set by us (host, content-length) or hop-by-hop. */
const NOT_FORWARDED = new Set(['host', 'content-length', 'connection', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect']);

const reject = (reason: string, extra: Record<string, unknown> = {}) =>
  new SubjectTokenRejected('subject token could not be verified', { detail: { reason, ...extra } });
const upstream = (cause: UpstreamCause, extra: Record<string, unknown> = {}) =>
  new UpstreamUnavailable('AWS STS could not be reached', { detail: { cause, ...extra } });

function decodeBlob(token: string): Blob | undefined {
  try {
    if (!/^[A-Za-z0-9_-]+={0,2}$/.test(token)) return undefined;
    const r = BlobSchema.safeParse(JSON.parse(Buffer.from(token, 'base64url').toString('utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** All values of a header, whatever the case of its name(s). */
function headerValues(headers: Blob['headers'], name: string): string[] {
  const lower = name.toLowerCase();
  return Object.entries(headers).flatMap(([k, v]) => (k.toLowerCase() === lower ? (Array.isArray(v) ? v : [v]) : []));
}

function singleHeader(headers: Blob['headers'], name: string): string {
  const values = headerValues(headers, name);
  if (values.length !== 1) throw reject(values.length ? `header ${name} given more than once` : `header ${name} missing`);
  return values[0]!;
}

/** 20260101T120000Z -> Date. */
function parseAmzDate(v: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v);
  if (!m) return undefined;
  const d = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function parseClientUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}

interface StsAnswer {
  status: number;
  contentType: string;
  body: string;
}

/** POSTs to the configured endpoint with the client's signed headers and Host; no redirects. */
function postToSts(endpoint: URL, hostHeader: string, headers: Record<string, string | string[]>, timeoutMs: number): Promise<StsAnswer> {
  return new Promise((resolve, reject_) => {
    const send = endpoint.protocol === 'https:' ? httpsRequest : httpRequest;
    let req;
    try {
      req = send({
        protocol: endpoint.protocol,
        hostname: endpoint.hostname,
        port: endpoint.port || undefined,
        // TLS is checked against the configured endpoint, whatever the signed Host header says.
        servername: endpoint.hostname,
        path: '/',
        method: 'POST',
        headers: { ...headers, host: hostHeader, 'content-length': String(Buffer.byteLength(GCI_BODY)) },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      // Invalid header names/values (control characters): the caller's input, not our network.
      reject_(Object.assign(new Error('invalid header'), { invalidHeader: true, cause: e }));
      return;
    }
    req.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE_BYTES) res.destroy(new Error('STS response too large'));
        else chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject_);
    });
    req.on('error', reject_);
    req.end(GCI_BODY);
  });
}

// processEntities off: no DOCTYPE entity expansion from an upstream body; ARNs contain no '&'.
const xml = new XMLParser({ isArray: () => true, parseTagValue: false, processEntities: false, ignoreAttributes: true, trimValues: true });

type XmlNode = Record<string, unknown>;
const children = (node: unknown, name: string): unknown[] =>
  node && typeof node === 'object' && Array.isArray((node as XmlNode)[name]) ? ((node as XmlNode)[name] as unknown[]) : [];
const text = (node: unknown, name: string): string | undefined => {
  const c = children(node, name);
  return c.length === 1 && typeof c[0] === 'string' ? c[0] : undefined;
};

function parseXml(body: string): XmlNode | undefined {
  try {
    const doc: unknown = xml.parse(body);
    return doc && typeof doc === 'object' ? (doc as XmlNode) : undefined;
  } catch {
    return undefined;
  }
}

/** The AWS error code of an ErrorResponse body (never its message: it echoes the canonical request). */
function awsErrorCode(body: string): string | undefined {
  const err = children(children(parseXml(body), 'ErrorResponse')[0], 'Error')[0];
  const code = text(err, 'Code');
  return code && /^[A-Za-z0-9.]{1,64}$/.test(code) ? code : undefined;
}

interface CallerIdentity {
  arn: string;
  userId: string;
  account: string;
}

function parseCallerIdentity(body: string): CallerIdentity | undefined {
  const responses = children(parseXml(body), 'GetCallerIdentityResponse');
  if (responses.length !== 1) return undefined;
  const results = children(responses[0], 'GetCallerIdentityResult');
  if (results.length !== 1) return undefined;
  const arn = text(results[0], 'Arn');
  const userId = text(results[0], 'UserId');
  const account = text(results[0], 'Account');
  return arn && userId && account ? { arn, userId, account } : undefined;
}

const NAME = '[\\w+=,.@-]+';
const ASSUMED_ROLE = new RegExp(`^arn:(aws|aws-cn|aws-us-gov):sts::(\\d{12}):assumed-role/(${NAME})/(${NAME})$`);
const IAM_USER = new RegExp(`^arn:(aws|aws-cn|aws-us-gov):iam::(\\d{12}):user/((?:${NAME}/)*)(${NAME})$`);

function identityOf(ci: CallerIdentity): { subject: string; attributes: Record<string, string> } {
  if (!/^\d{12}$/.test(ci.account)) throw upstream('api-error', { reason: 'malformed account in STS answer' });
  const principalId = ci.userId.split(':')[0]!;
  const role = ASSUMED_ROLE.exec(ci.arn);
  if (role) {
    const [, partition, account, roleName, sessionName] = role as unknown as [string, string, string, string, string];
    if (account !== ci.account) throw upstream('api-error', { reason: 'ARN account differs from Account in STS answer' });
    return {
      subject: `aws://${account}/role/${roleName}`,
      attributes: {
        principal_type: 'role',
        account,
        role_arn: `arn:${partition}:iam::${account}:role/${roleName}`,
        role_name: roleName,
        session_name: sessionName,
        principal_id: principalId,
        arn: ci.arn,
      },
    };
  }
  const user = IAM_USER.exec(ci.arn);
  if (user) {
    const [, , account, , userName] = user as unknown as [string, string, string, string, string];
    if (account !== ci.account) throw upstream('api-error', { reason: 'ARN account differs from Account in STS answer' });
    return {
      subject: `aws://${account}/user/${userName}`,
      attributes: { principal_type: 'user', account, user_name: userName, user_arn: ci.arn, principal_id: principalId, arn: ci.arn },
    };
  }
  // Root, federated users and anything else are not workloads.
  throw reject('unsupported principal type', { account: ci.account });
}

export const awsIamPlugin: TrustProviderPlugin<AwsIamConfig> = {
  type: 'aws-iam',
  configSchema: AwsIamConfigSchema as z.ZodType<AwsIamConfig>,
  create(name, config, deps): TrustProvider {
    const endpoint = new URL(config.stsEndpoint);
    const allowedHosts = new Set(config.allowedStsHosts.map((h) => h.toLowerCase()));
    const maxAgeMs = parseDuration(config.maxRequestAge) * 1000;
    const timeoutMs = parseDuration(config.timeout) * 1000;

    /** Local checks of the signed request; returns what the replay needs. */
    function checkRequest(blob: Blob, now: Date) {
      if (blob.method !== 'POST') throw reject('method is not POST');
      const url = parseClientUrl(blob.url);
      if (!url || url.protocol !== 'https:' || url.username || url.password) throw reject('request URL is not a plain https URL');
      if (!allowedHosts.has(url.host.toLowerCase())) throw reject('STS host not allowed', { host: url.host.slice(0, 255) });
      if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || blob.url.includes('?')) throw reject('request URL must be the STS root without query');
      if (blob.body !== GCI_BODY) throw reject('body is not GetCallerIdentity');

      const hosts = headerValues(blob.headers, 'host');
      if (hosts.length > 1 || (hosts.length === 1 && hosts[0]!.toLowerCase() !== url.host.toLowerCase())) throw reject('Host header does not match the URL');

      const authorization = singleHeader(blob.headers, 'authorization');
      if (!authorization.startsWith('AWS4-HMAC-SHA256 ')) throw reject('Authorization is not AWS4-HMAC-SHA256');
      const signedHeadersParts = authorization.match(/SignedHeaders=/g) ?? [];
      if (signedHeadersParts.length !== 1) throw reject('SignedHeaders must appear exactly once');
      const signedHeaders = /SignedHeaders=([^,\s]*)/.exec(authorization)![1]!.toLowerCase().split(';');
      if (!signedHeaders.includes(SERVER_ID_HEADER.toLowerCase())) throw reject('server-id header is not signed');
      const signatures = [...authorization.matchAll(/Signature=([0-9a-fA-F]*)/g)];
      if (signatures.length !== 1 || signatures[0]![1]!.length !== 64) throw reject('Authorization has no single signature');

      if (singleHeader(blob.headers, SERVER_ID_HEADER) !== deps.serverId()) throw reject('server-id header does not name this server');

      const date = parseAmzDate(singleHeader(blob.headers, 'x-amz-date'));
      if (!date) throw reject('X-Amz-Date is malformed');
      if (now.getTime() - date.getTime() > maxAgeMs) throw reject('signed request is too old', { ageSeconds: Math.round((now.getTime() - date.getTime()) / 1000) });
      if (date.getTime() - now.getTime() > deps.clockTolerance * 1000) throw reject('signed request is dated in the future');

      const forward: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(blob.headers)) if (!NOT_FORWARDED.has(k.toLowerCase())) forward[k] = v;
      return { hostHeader: url.host, signature: signatures[0]![1]!.toLowerCase(), date, forward };
    }

    async function askSts(hostHeader: string, headers: Record<string, string | string[]>): Promise<CallerIdentity> {
      let answer: StsAnswer;
      try {
        answer = await postToSts(endpoint, hostHeader, headers, timeoutMs);
      } catch (e) {
        if ((e as { invalidHeader?: boolean }).invalidHeader) throw reject('invalid header name or value');
        throw upstream('api-unreachable', { error: (e as Error).name });
      }
      if (answer.status === 200) {
        if (!/^(text|application)\/xml\b/i.test(answer.contentType)) throw upstream('api-error', { reason: 'STS answer is not XML', status: 200 });
        const ci = parseCallerIdentity(answer.body);
        if (!ci) throw upstream('api-error', { reason: 'STS answer has no single GetCallerIdentityResult', status: 200 });
        return ci;
      }
      const awsError = awsErrorCode(answer.body);
      if (answer.status === 429 || awsError === 'Throttling') throw upstream('api-error', { status: answer.status, awsError: awsError ?? null });
      // 4xx: STS refused the caller's signature, key or token.
      if (answer.status >= 400 && answer.status < 500) throw reject('STS refused the signed request', { status: answer.status, awsError: awsError ?? null });
      // 3xx (redirects are not followed), 5xx, anything else.
      throw upstream('api-error', { status: answer.status, awsError: awsError ?? null });
    }

    async function verifyBlob(token: string, now: Date): Promise<WorkloadIdentity> {
      const blob = decodeBlob(token);
      if (!blob) throw reject('subject token is not a base64url JSON request');
      const req = checkRequest(blob, now);
      if (!(await deps.replay.claimOnce(name, sha256Hex(req.signature), new Date(req.date.getTime() + STS_SIGNATURE_WINDOW_MS))))
        throw reject('signed request was already used');
      const ci = await askSts(req.hostHeader, req.forward);
      const { subject, attributes } = identityOf(ci);
      if (config.accounts && !config.accounts.includes(attributes.account!)) throw reject('account not allowed', { account: attributes.account });
      return {
        kind: 'workload',
        provider: name,
        providerType: 'aws-iam',
        subject,
        attributes,
        claims: { arn: ci.arn, userId: ci.userId, account: ci.account },
        // The proof is as fresh as its signature: STS would refuse it after this.
        expiresAt: new Date(req.date.getTime() + STS_SIGNATURE_WINDOW_MS),
      };
    }

    return {
      type: 'aws-iam',
      name,
      acceptedTokenTypes: [TOKEN_TYPE.awsSigv4Gci],
      matches(input: Attestation): boolean {
        const blob = decodeBlob(input.token);
        const url = blob && parseClientUrl(blob.url);
        return !!url && allowedHosts.has(url.host.toLowerCase());
      },
      verify: logRefusals('aws-iam', name, deps.logger, async (input, ctx) => {
      if (input.tokenType !== TOKEN_TYPE.awsSigv4Gci) throw reject('token type is not aws-sigv4-gci');
      return await verifyBlob(input.token, ctx.now);
      }),
    };
  },
};
