/**
 * `aws-ec2` trust provider: EC2 instance identity documents with their RSA-2048 PKCS#7 signature
 * (STANDARDS §5.2). subject_token = base64url(JSON {"document": "<document text>", "pkcs7":
 * "<base64 PKCS#7 from IMDS /latest/dynamic/instance-identity/rsa2048>"}); type
 * TOKEN_TYPE.awsEc2Identity. Prefer `aws-iam` (a fresh, single-use signed request) where possible.
 *
 * Config: `certificates` (Region -> PEM of AWS's RSA-2048 certificate for that Region; required,
 * none shipped in code), `accounts` / `regions` (allow-lists), `maxInstanceAge` (refuse documents
 * whose `pendingTime` is older, e.g. '24h'), `allowReuse` (default false).
 *
 * Security choices:
 * - Only the RSA-2048 / SHA-256 PKCS#7 form, verified by pkijs against the configured certificate
 *   of the document's Region only: certificates embedded in the PKCS#7 are discarded (a client
 *   could embed its own), and a document signed for another Region does not verify.
 * - The signed content must be byte-for-byte the document we parse (embedded content is compared;
 *   a detached signature is verified over the document): a valid signature cannot vouch for
 *   another document.
 * - The document is static for the instance's life and has no audience or nonce, so anyone who
 *   ever read it can replay it. Mitigations: single use (replay guard on its SHA-256, forever,
 *   unless `allowReuse`), `maxInstanceAge` on `pendingTime`, account/Region allow-lists. The claim
 *   is made only after the signature verified, so forged documents cannot burn real ones.
 * - The document and signature never reach logs or errors; rejections log a fingerprint.
 */
import { z } from 'zod';
import type * as Asn1js from 'asn1js';
import type * as Pkijs from 'pkijs';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { parseDuration } from '../../lib/clock.js';
import { sha256Hex } from '../../lib/crypto.js';
import { SubjectTokenRejected } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import { logRefusals, type Attestation, type TrustProvider, type TrustProviderPlugin } from '../trust-provider.js';
import { lazyModule } from '../../lib/lazy-module.js';

// PKCS#7 parsing loads when the first instance identity document is checked, not at every start-up.
const asn1js = lazyModule<typeof Asn1js>('asn1js');
const pkijs = lazyModule<typeof Pkijs>('pkijs');

const duration = z.union([z.number().int().positive(), z.string().regex(/^\d+\s*(s|m|h|d)?$/)]);
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
const OID_SHA256 = '2.16.840.1.101.3.4.2.1';
const OID_RSA = ['1.2.840.113549.1.1.1', '1.2.840.113549.1.1.11']; // rsaEncryption, sha256WithRSAEncryption
/** The identity stands for "this instance, now": short, like the other attestations. */
const IDENTITY_LIFETIME_MS = 15 * 60 * 1000;

function pemToDer(pem: string): ArrayBuffer | undefined {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) return undefined;
  const buf = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
  return Uint8Array.from(buf).buffer;
}

function parseCertificate(pem: string): Pkijs.Certificate | undefined {
  try {
    const der = pemToDer(pem);
    return der ? pkijs().Certificate.fromBER(der) : undefined;
  } catch {
    return undefined;
  }
}

export const AwsEc2ConfigSchema = z
  .object({
    certificates: z
      .record(z.string().regex(REGION, 'keys are AWS Region names, e.g. us-east-1'), z.string().refine((p) => !!parseCertificate(p), 'not a PEM X.509 certificate'))
      .refine((c) => Object.keys(c).length > 0, 'at least one Region certificate is required'),
    accounts: z.array(z.string().regex(/^\d{12}$/, 'an AWS account id has 12 digits')).nonempty().optional(),
    regions: z.array(z.string().regex(REGION)).nonempty().optional(),
    maxInstanceAge: duration.optional(),
    allowReuse: z.boolean().default(false),
  })
  .strict();

export type AwsEc2Config = z.infer<typeof AwsEc2ConfigSchema>;

const TokenSchema = z.union([
  z.object({ document: z.string().min(2), pkcs7: z.string().min(1) }).strict(),
  z.object({ document: z.string().min(2), rsa2048: z.string().min(1) }).strict(),
]);

const DocumentSchema = z
  .object({
    accountId: z.string().regex(/^\d{12}$/),
    region: z.string().regex(REGION),
    availabilityZone: z.string().min(1).max(64),
    instanceId: z.string().regex(/^i-[0-9a-f]{8,32}$/),
    imageId: z.string().min(1).max(64),
    instanceType: z.string().min(1).max(64),
    pendingTime: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not a time'),
  })
  .passthrough();
type Ec2Document = z.infer<typeof DocumentSchema>;

const reject = (reason: string, extra: Record<string, unknown> = {}) =>
  new SubjectTokenRejected('subject token could not be verified', { detail: { reason, ...extra } });

interface Decoded {
  documentText: string;
  pkcs7: string;
  document: Ec2Document;
}

function decode(token: string): Decoded | undefined {
  try {
    if (!/^[A-Za-z0-9_-]+={0,2}$/.test(token)) return undefined;
    const t = TokenSchema.safeParse(JSON.parse(Buffer.from(token, 'base64url').toString('utf8')));
    if (!t.success) return undefined;
    const documentText = t.data.document;
    const d = DocumentSchema.safeParse(JSON.parse(documentText));
    if (!d.success) return undefined;
    return { documentText, pkcs7: 'pkcs7' in t.data ? t.data.pkcs7 : t.data.rsa2048, document: d.data };
  } catch {
    return undefined;
  }
}

/** Base64 as IMDS returns it (line breaks), optionally PEM-armoured; undefined if not base64. */
function pkcs7Der(b64: string): ArrayBuffer | undefined {
  const body = b64.replace(/-----(BEGIN|END) PKCS7-----/g, '').replace(/\s+/g, '');
  if (!body || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return undefined;
  return Uint8Array.from(Buffer.from(body, 'base64')).buffer;
}

/** Verifies the PKCS#7 SignedData over `documentText` with `cert` only; throws SubjectTokenRejected. */
async function verifyPkcs7(documentText: string, pkcs7: string, cert: Pkijs.Certificate): Promise<void> {
  const der = pkcs7Der(pkcs7);
  if (!der) throw reject('pkcs7 is not base64');
  let sd: Pkijs.SignedData;
  try {
    const asn1 = asn1js().fromBER(der);
    if (asn1.offset === -1) throw new Error('BER');
    const ci = new (pkijs().ContentInfo)({ schema: asn1.result });
    if (ci.contentType !== pkijs().ContentInfo.SIGNED_DATA) throw new Error('not SignedData');
    sd = new (pkijs().SignedData)({ schema: ci.content });
  } catch {
    throw reject('pkcs7 is not a PKCS#7 SignedData');
  }
  if (sd.signerInfos.length !== 1) throw reject('pkcs7 must have exactly one signer');
  const signer = sd.signerInfos[0]!;
  // RSA-2048 / SHA-256 only (the IMDS rsa2048 form); no SHA-1/DSA.
  if (signer.digestAlgorithm.algorithmId !== OID_SHA256 || !OID_RSA.includes(signer.signatureAlgorithm.algorithmId))
    throw reject('pkcs7 is not SHA-256 with RSA');

  const doc = Buffer.from(documentText, 'utf8');
  const eContent = sd.encapContentInfo.eContent;
  let detached: ArrayBuffer | undefined;
  if (eContent) {
    if (!(eContent instanceof asn1js().OctetString)) throw reject('pkcs7 content is not an OCTET STRING');
    if (!Buffer.from(eContent.getValue()).equals(doc)) throw reject('signed content differs from the document');
  } else {
    detached = Uint8Array.from(doc).buffer;
  }
  // Only the configured certificate can be the signer: embedded certificates are not trusted.
  sd.certificates = [cert];
  let ok = false;
  try {
    ok = await sd.verify({ signer: 0, trustedCerts: [cert], checkChain: false, ...(detached ? { data: detached } : {}) });
  } catch {
    ok = false;
  }
  if (!ok) throw reject('pkcs7 signature does not verify with the Region certificate');
}

export const awsEc2Plugin: TrustProviderPlugin<AwsEc2Config> = {
  type: 'aws-ec2',
  configSchema: AwsEc2ConfigSchema as z.ZodType<AwsEc2Config>,
  create(name, config, deps): TrustProvider {
    const certs = new Map<string, Pkijs.Certificate>();
    for (const [region, pem] of Object.entries(config.certificates)) {
      const cert = parseCertificate(pem);
      if (!cert) throw new Error(`aws-ec2 provider "${name}": certificate for ${region} is not a PEM X.509 certificate`);
      certs.set(region, cert);
    }
    const maxAgeMs = config.maxInstanceAge !== undefined ? parseDuration(config.maxInstanceAge) * 1000 : undefined;
    const accountAllowed = (a: string) => !config.accounts || config.accounts.includes(a);
    const regionAllowed = (r: string) => certs.has(r) && (!config.regions || config.regions.includes(r));

    async function verifyToken(token: string, now: Date): Promise<WorkloadIdentity> {
      const decoded = decode(token);
      if (!decoded) throw reject('subject token is not a base64url JSON identity document');
      const { document: doc, documentText } = decoded;
      const cert = certs.get(doc.region);
      if (!cert) throw reject('no certificate configured for the document Region', { region: doc.region });
      await verifyPkcs7(documentText, decoded.pkcs7, cert);

      if (!accountAllowed(doc.accountId)) throw reject('account not allowed', { account: doc.accountId });
      if (!regionAllowed(doc.region)) throw reject('region not allowed', { region: doc.region });
      const pending = new Date(doc.pendingTime);
      if (pending.getTime() - now.getTime() > deps.clockTolerance * 1000) throw reject('pendingTime is in the future');
      if (maxAgeMs !== undefined && now.getTime() - pending.getTime() > maxAgeMs)
        throw reject('instance is older than maxInstanceAge', { pendingTime: doc.pendingTime });
      if (!config.allowReuse && !(await deps.replay.claimOnce(name, sha256Hex(documentText), null)))
        throw reject('identity document was already used');

      const attributes: Record<string, string> = {
        account: doc.accountId,
        region: doc.region,
        availability_zone: doc.availabilityZone,
        instance_id: doc.instanceId,
        image_id: doc.imageId,
        instance_type: doc.instanceType,
        pending_time: doc.pendingTime,
      };
      return {
        kind: 'workload',
        provider: name,
        providerType: 'aws-ec2',
        subject: `aws-ec2://${doc.accountId}/${doc.region}/${doc.instanceId}`,
        attributes,
        claims: { ...doc },
        expiresAt: new Date(now.getTime() + IDENTITY_LIFETIME_MS),
      };
    }

    return {
      type: 'aws-ec2',
      name,
      acceptedTokenTypes: [TOKEN_TYPE.awsEc2Identity],
      matches(input: Attestation): boolean {
        const d = decode(input.token);
        return !!d && accountAllowed(d.document.accountId) && regionAllowed(d.document.region);
      },
      verify: logRefusals('aws-ec2', name, deps.logger, async (input, ctx) => {
      if (input.tokenType !== TOKEN_TYPE.awsEc2Identity) throw reject('token type is not aws-ec2-identity');
      return await verifyToken(input.token, ctx.now);
      }),
    };
  },
};
