import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { seal } from '../lib/crypto.js';
import { SecretRefSchema, resolveSecretRef, sealedSecretAad, secretResolverFor } from './secret-ref.js';

const kek = randomBytes(32);
const SECRET = '-----BEGIN PRIVATE KEY-----\nnot-a-real-key-but-secret\n-----END PRIVATE KEY-----';

describe('sealed issuer secrets', () => {
  const sealed = { sealed: seal(kek, SECRET, sealedSecretAad('github-prod')) };

  it('opens for the issuer it was sealed for, under the same key-encryption key', () => {
    expect(SecretRefSchema.parse(sealed)).toEqual(sealed);
    expect(secretResolverFor('github-prod', {}, () => kek)(sealed, 'credentialIssuers.github-prod.privateKey').reveal()).toBe(SECRET);
  });

  it('does not open for another issuer or under another key, and never says the secret', () => {
    const other = () => secretResolverFor('github-staging', {}, () => kek)(sealed, 'credentialIssuers.github-staging.privateKey');
    expect(other).toThrow(/credentialIssuers\.github-staging\.privateKey: sealed value could not be decrypted/);
    const wrongKek = () => secretResolverFor('github-prod', {}, () => randomBytes(32))(sealed, 'x');
    expect(wrongKek).toThrow(/could not be decrypted/);
    for (const f of [other, wrongKek]) {
      try {
        f();
      } catch (e) {
        expect((e as Error).message).not.toContain('not-a-real-key');
      }
    }
  });

  it('is refused where no issuer owns it, and malformed envelopes fail validation', () => {
    expect(() => resolveSecretRef(sealed, {}, 'auth.admins.ops.token')).toThrow(/only be used by a credential issuer/);
    expect(SecretRefSchema.safeParse({ sealed: 'plain text' }).success).toBe(false);
  });

  it('still resolves environment and file references', () => {
    expect(secretResolverFor('x', { S: 'v' }, () => kek)({ fromEnv: 'S' }, 'w').reveal()).toBe('v');
    expect(() => secretResolverFor('x', {}, () => kek)({ fromEnv: 'MISSING' }, 'w')).toThrow(/w: environment variable MISSING is not set/);
  });
});
