/**
 * Workload side of the `aws-iam` trust provider: builds — but does not send — a SigV4-signed
 * `sts:GetCallerIdentity` request naming agent-sts in a signed `X-Agent-STS-Server-ID` header
 * (STANDARDS §5.1), and packs it as the `subject_token` (TOKEN_TYPE.awsSigv4Gci):
 * base64url(JSON {"method","url","body","headers"}).
 *
 * The result is a bearer credential for about 15 minutes (one use at agent-sts): hand it to
 * agent-sts only, never log it.
 */
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { randomUUID } from 'node:crypto';

export const GCI_BODY = 'Action=GetCallerIdentity&Version=2011-06-15';
export const SERVER_ID_HEADER = 'X-Agent-STS-Server-ID';
/** Signed random value: two attestations made in the same second are still distinct (single use). */
export const NONCE_HEADER = 'X-Agent-STS-Nonce';
export const DEFAULT_STS_URL = 'https://sts.amazonaws.com/';

export interface AwsStaticCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface AwsIamAttestationOptions {
  /** agent-sts's issuer URL (its `serverId`), signed into the request. */
  serverId: string;
  /** STS URL the request is signed for (its host is signed); default https://sts.amazonaws.com/. */
  stsUrl?: string;
  /** Signing region; default: from a regional `sts.<region>.amazonaws.com` URL, else us-east-1. */
  region?: string;
  /** Static credentials or a provider; default: the AWS SDK's Node.js provider chain. */
  credentials?: AwsStaticCredentials | (() => Promise<AwsStaticCredentials>);
  /** Signing time (tests); default now. */
  signingDate?: Date;
}

/** The decoded form of the subject_token. */
export interface AwsIamRequestBlob {
  method: string;
  url: string;
  body: string;
  headers: Record<string, string | string[]>;
}

export function encodeAwsIamBlob(blob: AwsIamRequestBlob): string {
  return Buffer.from(JSON.stringify(blob), 'utf8').toString('base64url');
}

function regionOf(url: URL): string {
  const m = /^sts\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(url.hostname);
  return m && m[1] !== 'amazonaws' ? m[1]! : 'us-east-1';
}

/** Signs a GetCallerIdentity request for `serverId` and returns the subject_token string. */
export async function createAwsIamAttestation(opts: AwsIamAttestationOptions): Promise<string> {
  const url = new URL(opts.stsUrl ?? DEFAULT_STS_URL);
  // Loaded only when needed: the server imports this module for its constants.
  const credentials = opts.credentials ?? (await import('@aws-sdk/credential-providers')).fromNodeProviderChain();
  const signer = new SignatureV4({
    credentials,
    region: opts.region ?? regionOf(url),
    service: 'sts',
    sha256: Sha256,
    // No x-amz-content-sha256 header: STS does not need it, and the body is fixed anyway.
    applyChecksum: false,
  });
  const signed = await signer.sign(
    {
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      path: url.pathname,
      query: {},
      // host is signed explicitly: agent-sts replays to its own endpoint with this Host value.
      headers: {
        host: url.host,
        'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
        [SERVER_ID_HEADER.toLowerCase()]: opts.serverId,
        [NONCE_HEADER.toLowerCase()]: randomUUID(),
      },
      body: GCI_BODY,
    },
    { signingDate: opts.signingDate ?? new Date() },
  );
  return encodeAwsIamBlob({ method: 'POST', url: url.toString(), body: GCI_BODY, headers: { ...signed.headers } });
}
