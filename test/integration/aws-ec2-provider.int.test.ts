import { afterAll, describe, expect, it } from 'vitest';
import { createEc2Signer, documentText, ec2Document, ec2Token, type Ec2Document } from '../fakes/aws-ec2-documents.js';
import { awsEc2Plugin, AwsEc2ConfigSchema } from '../../src/trust-providers/aws-ec2/aws-ec2-provider.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { createLogger } from '../../src/log/logger.js';
import { testProviderDeps } from '../support/provider-deps.js';
import { StsError, SubjectTokenRejected } from '../../src/errors/sts-errors.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';

const TYPE = TOKEN_TYPE.awsEc2Identity;
const ctx = () => ({ requestId: 'test', now: new Date() });

const logLines: string[] = [];
const deps = () => testProviderDeps({ logger: createLogger({ level: 'trace', destination: { write: (l: string) => void logLines.push(l) } }) });
/** Every attestation made in this file; none may appear in a log line or an error. */
const minted: string[] = [];
const remember = (t: string) => (minted.push(t), t);

const east = createEc2Signer();
const west = createEc2Signer();
const rogue = createEc2Signer();
const certificates = { 'us-east-1': east.certificatePem, 'eu-west-1': west.certificatePem };

let seq = 0;
/** A fresh instance each time (distinct document), signed by `signer` (default: the document Region's). */
function token(over: Partial<Ec2Document> = {}, opts: { signer?: typeof east; detached?: boolean; mutateText?: (t: string) => string } = {}): string {
  const doc = ec2Document({ instanceId: `i-0${(++seq).toString(16).padStart(16, '0')}`, ...over });
  const text = documentText(doc);
  const signer = opts.signer ?? (doc.region === 'eu-west-1' ? west : east);
  const pkcs7 = signer.sign(text, { detached: opts.detached });
  return remember(ec2Token(opts.mutateText ? opts.mutateText(text) : text, pkcs7));
}

describe('aws-ec2 trust provider (RSA-2048 PKCS#7 identity documents)', () => {
  const make = (extra: Record<string, unknown> = {}, name = 'ec2', d = deps()) =>
    awsEc2Plugin.create(name, AwsEc2ConfigSchema.parse({ certificates, ...extra }), d);

  afterAll(() => {
    expect(logLines.some((l) => l.includes('aws-ec2 attestation not accepted'))).toBe(true);
    // Neither a token nor its PKCS#7 signature appears in any log line.
    const parts = minted.flatMap((t) => {
      try {
        const { pkcs7 } = JSON.parse(Buffer.from(t, 'base64url').toString('utf8')) as { pkcs7: string };
        return [t, pkcs7.replace(/\s+/g, '').slice(0, 120)];
      } catch {
        return [t];
      }
    });
    expect(logLines.filter((line) => parts.some((s) => line.includes(s)))).toEqual([]);
  });

  it('verifies an embedded-content PKCS#7 document and maps the instance', async () => {
    const t = token({ instanceId: 'i-0123456789abcdef0', availabilityZone: 'us-east-1b' });
    const id = await make().verify({ token: t, tokenType: TYPE }, ctx());
    expect(id).toMatchObject({
      kind: 'workload',
      provider: 'ec2',
      providerType: 'aws-ec2',
      subject: 'aws-ec2://111122223333/us-east-1/i-0123456789abcdef0',
      attributes: {
        account: '111122223333',
        region: 'us-east-1',
        availability_zone: 'us-east-1b',
        instance_id: 'i-0123456789abcdef0',
        image_id: 'ami-0abcdef1234567890',
        instance_type: 't3.micro',
      },
    });
    expect(id.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('verifies a detached signature over the document, and a document from another configured Region', async () => {
    await expect(make().verify({ token: token({}, { detached: true }), tokenType: TYPE }, ctx())).resolves.toMatchObject({ kind: 'workload' });
    await expect(make().verify({ token: token({ region: 'eu-west-1', availabilityZone: 'eu-west-1a' }), tokenType: TYPE }, ctx())).resolves.toMatchObject({
      subject: expect.stringMatching(/^aws-ec2:\/\/111122223333\/eu-west-1\/i-/),
    });
  });

  const pkcs7Of = (t: string) => (JSON.parse(Buffer.from(t, 'base64url').toString('utf8')) as { pkcs7: string }).pkcs7;
  type Row = [name: string, token: () => string, detail: Record<string, unknown>, extra?: Record<string, unknown>];
  const rows: Row[] = [
    ['signature made with another Region certificate', () => token({}, { signer: west }), { reason: 'pkcs7 signature does not verify with the Region certificate' }],
    ['signature made with an untrusted certificate', () => token({}, { signer: rogue }), { reason: 'pkcs7 signature does not verify with the Region certificate' }],
    ['tampered document (embedded content differs)', () => token({}, { mutateText: (t) => t.replace('t3.micro', 'm7i.48xlarge') }), { reason: 'signed content differs from the document' }],
    ['tampered document (detached signature)', () => token({}, { detached: true, mutateText: (t) => t.replace('111122223333', '999999999999') }), { reason: 'pkcs7 signature does not verify with the Region certificate' }],
    ['document from another account', () => token({ accountId: '999988887777' }), { reason: 'account not allowed', account: '999988887777' }, { accounts: ['111122223333'] }],
    ['document from a Region not allowed', () => token({ region: 'eu-west-1' }), { reason: 'region not allowed', region: 'eu-west-1' }, { regions: ['us-east-1'] }],
    ['document from a Region without a certificate', () => token({ region: 'ap-south-1' }, { signer: east }), { reason: 'no certificate configured for the document Region' }],
    ['instance too old', () => token({ pendingTime: new Date(Date.now() - 3 * 86_400_000).toISOString() }), { reason: 'instance is older than maxInstanceAge' }, { maxInstanceAge: '24h' }],
    ['pendingTime in the future', () => token({ pendingTime: new Date(Date.now() + 3_600_000).toISOString() }), { reason: 'pendingTime is in the future' }],
    ['corrupted RSA signature bytes', () => {
      const text = documentText(ec2Document({ instanceId: 'i-0bbbbbbbbbbbbbbbb' }));
      const der = Buffer.from(east.sign(text).replace(/\s+/g, ''), 'base64');
      der.writeUInt8(der.readUInt8(der.length - 1) ^ 0x01, der.length - 1); // the SignerInfo signature is the last field
      return remember(ec2Token(text, der.toString('base64')));
    }, { reason: 'pkcs7 signature does not verify with the Region certificate' }],
    ['SHA-1 PKCS#7 (legacy form)', () => token({}, { signer: { ...east, sign: (t: string) => east.sign(t, { digest: 'sha1' }) } }), { reason: 'pkcs7 is not SHA-256 with RSA' }],
    ['unsigned: pkcs7 missing', () => remember(Buffer.from(JSON.stringify({ document: documentText(ec2Document()) })).toString('base64url')), { reason: 'subject token is not a base64url JSON identity document' }],
    ['garbage pkcs7 (not base64)', () => remember(ec2Token(documentText(ec2Document()), '!!!not base64!!!')), { reason: 'pkcs7 is not base64' }],
    ['garbage pkcs7 (base64 of junk)', () => remember(ec2Token(documentText(ec2Document()), Buffer.from('hello world, no asn.1 here').toString('base64'))), { reason: 'pkcs7 is not a PKCS#7 SignedData' }],
    ['pkcs7 of a different document', () => remember(ec2Token(documentText(ec2Document({ instanceId: 'i-0aaaaaaaaaaaaaaaa' })), pkcs7Of(token()))), { reason: 'signed content differs from the document' }],
    ['garbage token', () => remember('%%%garbage'), { reason: 'subject token is not a base64url JSON identity document' }],
    ['document that is not JSON', () => remember(ec2Token('not json', east.sign('not json'))), { reason: 'subject token is not a base64url JSON identity document' }],
  ];

  it.each(rows)('rejects: %s', async (_name, mk, detail, extra) => {
    const t = mk();
    const err = await make(extra).verify({ token: t, tokenType: TYPE }, ctx()).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SubjectTokenRejected);
    expect((err as StsError).detail).toMatchObject(detail);
    expect(JSON.stringify({ m: (err as Error).message, d: (err as StsError).detail })).not.toContain(t);
  });

  it('refuses a replayed document (second use, e.g. by a second task), unless allowReuse', async () => {
    const t = token();
    const p = make();
    await expect(p.verify({ token: t, tokenType: TYPE }, ctx())).resolves.toMatchObject({ kind: 'workload' });
    const err = await p.verify({ token: t, tokenType: TYPE }, ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SubjectTokenRejected);
    expect((err as StsError).detail).toMatchObject({ reason: 'identity document was already used' });
    // The same document with a fresh signature is still the same document.
    const again = ec2Token(JSON.parse(Buffer.from(t, 'base64url').toString('utf8')).document, east.sign(JSON.parse(Buffer.from(t, 'base64url').toString('utf8')).document));
    await expect(p.verify({ token: remember(again), tokenType: TYPE }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);

    const reusable = make({ allowReuse: true });
    const u = token();
    await expect(reusable.verify({ token: u, tokenType: TYPE }, ctx())).resolves.toMatchObject({ kind: 'workload' });
    await expect(reusable.verify({ token: u, tokenType: TYPE }, ctx())).resolves.toMatchObject({ kind: 'workload' });
  });

  it('a forged document does not burn the single use of the real one', async () => {
    const p = make();
    const t = token();
    const { document } = JSON.parse(Buffer.from(t, 'base64url').toString('utf8')) as { document: string };
    await expect(p.verify({ token: remember(ec2Token(document, rogue.sign(document))), tokenType: TYPE }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    await expect(p.verify({ token: t, tokenType: TYPE }, ctx())).resolves.toMatchObject({ kind: 'workload' });
  });

  it('matches() by account and Region without verifying, and the registry routes between instances', () => {
    const prod = make({ accounts: ['111122223333'] }, 'ec2-prod');
    const dev = make({ accounts: ['444455556666'] }, 'ec2-dev');
    const t = token();
    expect(prod.matches!({ token: t, tokenType: TYPE })).toBe(true);
    expect(dev.matches!({ token: t, tokenType: TYPE })).toBe(false);
    expect(prod.matches!({ token: 'garbage', tokenType: TYPE })).toBe(false);
    expect(make({ regions: ['eu-west-1'] }).matches!({ token: t, tokenType: TYPE })).toBe(false);
    const registry = createTrustRegistry([prod, dev]);
    expect(registry.resolveFor(token({ accountId: '444455556666' }), TYPE).name).toBe('ec2-dev');
    expect(registry.resolveFor(t, TYPE).name).toBe('ec2-prod');
  });

  it('requires at least one valid Region certificate in config, and is strict', () => {
    expect(AwsEc2ConfigSchema.safeParse({ certificates: {} }).success).toBe(false);
    expect(AwsEc2ConfigSchema.safeParse({}).success).toBe(false);
    expect(AwsEc2ConfigSchema.safeParse({ certificates: { 'us-east-1': 'not a pem' } }).success).toBe(false);
    expect(AwsEc2ConfigSchema.safeParse({ certificates: { 'us-east-1': east.certificatePem }, extra: true }).success).toBe(false);
    expect(AwsEc2ConfigSchema.parse({ certificates: { 'us-east-1': east.certificatePem } }).allowReuse).toBe(false);
  });
});
