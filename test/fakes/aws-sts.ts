// A fake AWS STS for sts:GetCallerIdentity, as strict about SigV4 as the real one: it recomputes
// the signature of what it received (method, Host header, path, query, the headers listed in
// SignedHeaders, body) with @smithy/signature-v4 and the known secret, at the received X-Amz-Date.
// Real HTTP server on loopback port 0; exported for the benchmarks too.
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

export interface FakeStsOptions {
  keys: FakeStsKey[];
  /** Region the endpoint is in (credential scope must match); default us-east-1. */
  region?: string;
  now?: () => Date;
}

export interface FakeSts {
  /** Base URL to replay to, e.g. http://127.0.0.1:PORT */
  url: string;
  calls: FakeStsCall[];
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

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(',') : v);

export async function startFakeSts(opts: FakeStsOptions): Promise<FakeSts> {
  const region = opts.region ?? 'us-east-1';
  const now = opts.now ?? (() => new Date());
  const keys = new Map(opts.keys.map((k) => [k.accessKeyId, k] as const));
  const calls: FakeStsCall[] = [];
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
    if (form.get('Action') !== 'GetCallerIdentity') return sender(400, 'InvalidAction', `Could not find operation ${form.get('Action') ?? ''} for version ${form.get('Version') ?? ''}`, accessKeyId);
    if (form.get('Version') !== '2011-06-15') return sender(400, 'InvalidAction', 'Unsupported version', accessKeyId);
    return { status: 200, xml: identityXml(key.identity), accessKeyId };
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
