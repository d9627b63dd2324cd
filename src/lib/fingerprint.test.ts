import { describe, expect, it } from 'vitest';
import { credentialFingerprint, fingerprintCandidates, ownJwtFingerprint, presentedTokenFingerprint, sha256Hex, uuidv7 } from './crypto.js';

const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
const jwt = (claims: object) => `${b64({ alg: 'ES256', typ: 'at+jwt' })}.${b64(claims)}.c2ln`;

describe('credential fingerprints', () => {
  it("agent-sts's own JWTs: jti first, then the SHA-256 of the whole token", () => {
    const jti = uuidv7();
    const token = jwt({ jti, sub: 'x' });
    expect(ownJwtFingerprint(token, jti)).toBe(`jwt:${jti}:sha256:${sha256Hex(token)}`);
    // What a leaked copy of it gives, without knowing whose it is:
    expect(presentedTokenFingerprint(token)).toBe(ownJwtFingerprint(token, jti));
  });

  it('time-ordered: fingerprints of later tokens sort after earlier ones (the index grows at its end)', () => {
    const fps = [1, 2, 3, 4].map((i) => ownJwtFingerprint(`token-${5 - i}`, uuidv7(Date.UTC(2026, 10, 25, 12, 0, i))));
    expect([...fps].sort()).toEqual(fps);
  });

  it('opaque credentials and JWTs without a usable jti: sha256:<hex>', () => {
    for (const secret of ['p4ssw0rd', '{"accessKeyId":"ASIA…"}', jwt({ sub: 'no-jti' }), jwt({ jti: 42 }), jwt({ jti: 'has a space' }), 'a.b.c'])
      expect(presentedTokenFingerprint(secret)).toBe(credentialFingerprint(secret));
    expect(ownJwtFingerprint('t', 'bad:jti')).toBe(credentialFingerprint('t'));
  });

  it('a jwt: lookup also matches the sha256: form (an upstream JWT stored as opaque, or a record from before); sha256: matches itself only', () => {
    const hex = 'ab'.repeat(32);
    expect(fingerprintCandidates(`jwt:abc-1:sha256:${hex}`)).toEqual([`jwt:abc-1:sha256:${hex}`, `sha256:${hex}`]);
    expect(fingerprintCandidates(`sha256:${hex}`)).toEqual([`sha256:${hex}`]);
  });
});
