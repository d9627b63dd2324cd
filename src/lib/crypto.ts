import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

export const sha256Hex = (input: string | Buffer): string => createHash('sha256').update(input).digest('hex');

/** Short, stable, non-reversible handle for a secret: safe in logs and audit records. */
export const fingerprint = (secret: string): string => sha256Hex(secret).slice(0, 16);

/** Full SHA-256 fingerprint stored with issued credentials (lookup of a leaked token). */
export const credentialFingerprint = (secret: string): string => `sha256:${sha256Hex(secret)}`;

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Uniformly random string over [A-Za-z0-9] (rejection sampling, no modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

/** Lower-case id over [a-z0-9], safe as part of SQL identifiers without escaping edge cases. */
export function randomLowerId(length: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 252 && out.length < length) out += alphabet[byte % 36];
    }
  }
  return out;
}

/**
 * AES-256-GCM envelope with the key-encryption key. Output: `v1.<iv>.<tag>.<ciphertext>` (base64url).
 * `aad` binds the ciphertext to its row (e.g. the key id) so sealed values cannot be swapped.
 */
export function seal(kek: Buffer, plaintext: string, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return ['v1', iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), ct.toString('base64url')].join('.');
}

export function unseal(kek: Buffer, sealed: string, aad: string): string {
  const [v, iv, tag, ct] = sealed.split('.');
  if (v !== 'v1' || !iv || !tag || ct === undefined) throw new Error('sealed value has an unknown format');
  const decipher = createDecipheriv('aes-256-gcm', kek, Buffer.from(iv, 'base64url'));
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(Buffer.from(tag, 'base64url'));
  try {
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    throw new Error('sealed value could not be decrypted: wrong key-encryption key or tampered data');
  }
}
