// EC2 instance identity documents signed the way IMDS's /rsa2048 endpoint does: PKCS#7 SignedData,
// SHA-256 with an RSA-2048 key, the document embedded as content. A self-signed test certificate
// stands in for AWS's per-Region certificate. Exported for the benchmarks too.
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';

export interface Ec2Document {
  accountId: string;
  architecture: string;
  availabilityZone: string;
  billingProducts: null;
  devpayProductCodes: null;
  marketplaceProductCodes: null;
  imageId: string;
  instanceId: string;
  instanceType: string;
  kernelId: null;
  pendingTime: string;
  privateIp: string;
  ramdiskId: null;
  region: string;
  version: string;
}

export interface Ec2Signer {
  /** PEM of the certificate to configure for the Region. */
  certificatePem: string;
  /** Base64 PKCS#7 as IMDS returns it (64-column lines, no PEM armour). */
  sign(documentText: string, opts?: { detached?: boolean; digest?: 'sha256' | 'sha1' }): string;
}

export function createEc2Signer(commonName = 'Amazon Web Services LLC'): Ec2Signer {
  // node:crypto generates the key quickly; forge only wraps it.
  const { privateKey: pkPem } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const key = forge.pki.privateKeyFromPem(pkPem) as forge.pki.rsa.PrivateKey;
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = forge.util.bytesToHex(forge.random.getBytesSync(8)).replace(/^[89a-f]/, '1');
  cert.validity.notBefore = new Date(Date.now() - 86_400_000);
  cert.validity.notAfter = new Date(Date.now() + 10 * 365 * 86_400_000);
  const attrs = [
    { name: 'countryName', value: 'US' },
    { name: 'stateOrProvinceName', value: 'Washington State' },
    { name: 'localityName', value: 'Seattle' },
    { name: 'organizationName', value: commonName },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.sign(key, forge.md.sha256.create());
  const certificatePem = forge.pki.certificateToPem(cert);

  return {
    certificatePem,
    sign(documentText, opts = {}) {
      const p7 = forge.pkcs7.createSignedData();
      p7.content = forge.util.createBuffer(forge.util.encodeUtf8(documentText));
      p7.addSigner({
        key,
        certificate: cert,
        digestAlgorithm: opts.digest === 'sha1' ? forge.pki.oids.sha1! : forge.pki.oids.sha256!,
        authenticatedAttributes: [
          { type: forge.pki.oids.contentType!, value: forge.pki.oids.data! },
          { type: forge.pki.oids.messageDigest! },
          { type: forge.pki.oids.signingTime!, value: new Date() as unknown as string },
        ],
      });
      p7.sign({ detached: opts.detached ?? false });
      const b64 = forge.util.encode64(forge.asn1.toDer(p7.toAsn1()).getBytes());
      return b64.replace(/(.{64})/g, '$1\n').trim();
    },
  };
}

export function ec2Document(over: Partial<Ec2Document> = {}): Ec2Document {
  return {
    accountId: '111122223333',
    architecture: 'x86_64',
    availabilityZone: 'us-east-1a',
    billingProducts: null,
    devpayProductCodes: null,
    marketplaceProductCodes: null,
    imageId: 'ami-0abcdef1234567890',
    instanceId: 'i-0123456789abcdef0',
    instanceType: 't3.micro',
    kernelId: null,
    pendingTime: new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    privateIp: '10.0.1.23',
    ramdiskId: null,
    region: 'us-east-1',
    version: '2017-09-30',
    ...over,
  };
}

/** IMDS formats the document as indented JSON; agent-sts must use the exact signed text. */
export const documentText = (doc: Ec2Document | Record<string, unknown>): string => JSON.stringify(doc, null, 2);

export const ec2Token = (document: string, pkcs7: string): string => Buffer.from(JSON.stringify({ document, pkcs7 }), 'utf8').toString('base64url');
