import { describe, expect, it } from 'vitest';
import { generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { credentialFingerprint, fingerprintCandidates, jwsSigningInput, legacyJwtFingerprint, ownJwtFingerprint, presentedTokenFingerprint, sha256Hex, uuidv7 } from './crypto.js';

const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
const jwt = (claims: object) => `${b64({ alg: 'ES256', typ: 'at+jwt' })}.${b64(claims)}.c2ln`;

describe('credential fingerprints', () => {
  it("agent-sts's own JWTs: jti first, then the SHA-256 of the signed part (header.payload)", () => {
    const jti = uuidv7();
    const token = jwt({ jti, sub: 'x' });
    const signed = token.slice(0, token.lastIndexOf('.'));
    expect(jwsSigningInput(token)).toBe(signed);
    expect(jwsSigningInput(signed)).toBe(signed);
    expect(ownJwtFingerprint(token, jti)).toBe(`jwt:${jti}:sha256:${sha256Hex(signed)}`);
    // Known before the signature is made (the exchange records the token while it is signed):
    expect(ownJwtFingerprint(signed, jti)).toBe(ownJwtFingerprint(token, jti));
    // What a leaked copy of it gives, without knowing whose it is:
    expect(presentedTokenFingerprint(token)).toBe(ownJwtFingerprint(token, jti));
    // The form records held before: the whole token.
    expect(legacyJwtFingerprint(token, jti)).toBe(`jwt:${jti}:sha256:${sha256Hex(token)}`);
  });

  it('a leaked ES256 token whose signature was malleated (s -> n - s) still verifies, and still leads to its record', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jti = uuidv7();
    const token = await new SignJWT({ jti, sub: 'x' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' }).sign(privateKey);
    const [h, p, sig] = token.split('.') as [string, string, string];
    const raw = Buffer.from(sig, 'base64url');
    const n = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551'); // order of P-256
    const s = BigInt(`0x${raw.subarray(32).toString('hex')}`);
    const twin = `${h}.${p}.${Buffer.concat([raw.subarray(0, 32), Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex')]).toString('base64url')}`;
    expect(twin).not.toBe(token);
    expect((await jwtVerify(twin, publicKey)).payload.jti).toBe(jti); // a second valid form of the same token
    expect(presentedTokenFingerprint(twin)).toBe(ownJwtFingerprint(token, jti));
    expect(legacyJwtFingerprint(twin, jti)).not.toBe(legacyJwtFingerprint(token, jti)); // what the old form missed
  });

  it('time-ordered: fingerprints of later tokens sort after earlier ones (the index grows at its end)', () => {
    const fps = [1, 2, 3, 4].map((i) => ownJwtFingerprint(`token-${5 - i}`, uuidv7(Date.UTC(2026, 10, 25, 12, 0, i))));
    expect([...fps].sort()).toEqual(fps);
  });

  it('opaque credentials and JWTs without a usable jti: sha256:<hex>', () => {
    for (const secret of ['p4ssw0rd', '{"accessKeyId":"ASIA…"}', jwt({ sub: 'no-jti' }), jwt({ jti: 42 }), jwt({ jti: 'has a space' }), 'a.b.c'])
      expect(presentedTokenFingerprint(secret)).toBe(credentialFingerprint(secret));
    expect(ownJwtFingerprint('t', 'bad:jti')).toBe(credentialFingerprint('t'));
    expect(ownJwtFingerprint('a.b.c', 'bad:jti')).toBe(credentialFingerprint('a.b.c'));
  });

  it('a jwt: lookup also matches the sha256: form (an upstream JWT stored as opaque, or a record from before); sha256: matches itself only', () => {
    const hex = 'ab'.repeat(32);
    expect(fingerprintCandidates(`jwt:abc-1:sha256:${hex}`)).toEqual([`jwt:abc-1:sha256:${hex}`, `sha256:${hex}`]);
    expect(fingerprintCandidates(`sha256:${hex}`)).toEqual([`sha256:${hex}`]);
  });
});
