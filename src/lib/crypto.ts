import { createCipheriv, createDecipheriv, hash, randomBytes, randomFillSync } from 'node:crypto';
import { decodeJwt } from 'jose';

/** One-shot SHA-256 (`crypto.hash`, Node ≥ 20.12: no Hash object per call). */
export const sha256Hex = (input: string | Buffer): string => hash('sha256', input, 'hex');

/** Short, stable, non-reversible handle for a secret: safe in logs and audit records. */
export const fingerprint = (secret: string): string => sha256Hex(secret).slice(0, 16);

/** Full SHA-256 fingerprint stored with issued credentials (lookup of a leaked token). */
export const credentialFingerprint = (secret: string): string => `sha256:${sha256Hex(secret)}`;

/** A jti that can stand in a fingerprint (a regex source, for the audit filter too): agent-sts's own are UUIDv7. */
export const FINGERPRINT_JTI_PATTERN = '[A-Za-z0-9._~-]{1,128}';
const FINGERPRINT_JTI = new RegExp(`^${FINGERPRINT_JTI_PATTERN}$`);

/**
 * The JWS signing input of a compact JWS or JWT (`header.payload`, RFC 7515 §5.1): what its
 * signature covers. Given a signing input already (one dot), returns it as it is.
 */
export function jwsSigningInput(token: string): string {
  const first = token.indexOf('.');
  const second = first < 0 ? -1 : token.indexOf('.', first + 1);
  return second < 0 ? token : token.slice(0, second);
}

/**
 * Fingerprint of a JWT agent-sts signs: `jwt:<jti>:sha256:<hex>`, the SHA-256 of its signed part
 * (`header.payload`: every claim, the key id and the type). Two reasons it leaves the signature out:
 * - An ES256 signature is malleable: (r, n - s) verifies as well as (r, s), so one token has two
 *   valid forms. Whoever holds a leaked token can make the other; both lead to the same record.
 * - The fingerprint is known before the signature is made, so the audit record is written while
 *   the token is signed (exchange-service.ts), not after.
 * The jti is the credential id (not a secret: it is in the audit record and the logs too), a
 * time-ordered UUIDv7, so the audit log's fingerprint index grows at its end instead of taking one
 * random leaf page per record (bench/README.md). `token` may be the compact token or its signing
 * input. Opaque credentials keep `sha256:<hex>` of the whole value. A leaked token still leads to
 * its record in one lookup: `presentedTokenFingerprint` gives the same string, and
 * `fingerprintCandidates` matches both forms. Records written before this form hashed the whole
 * token: `legacyJwtFingerprint`.
 */
export function ownJwtFingerprint(token: string, jti: string): string {
  return jwtForm(token, jti, jwsSigningInput(token));
}

/** The fingerprint records of agent-sts's own JWTs held before `ownJwtFingerprint` left the signature out: SHA-256 of the whole token. */
export function legacyJwtFingerprint(token: string, jti: string): string {
  return jwtForm(token, jti, token);
}

/** `jwt:<jti>:sha256:<hex of hashed>`; with a jti that cannot stand in a fingerprint (never one of agent-sts's own), the opaque form of the whole token. */
function jwtForm(token: string, jti: string, hashed: string): string {
  return FINGERPRINT_JTI.test(jti) ? `jwt:${jti}:${credentialFingerprint(hashed)}` : credentialFingerprint(token);
}

/**
 * The fingerprint of a token someone presents (a leaked one, or one sent for revocation): the
 * `jwt:<jti>:` form for a JWT with a usable jti (its claims read, not verified: this only names
 * it), `sha256:<hex>` for anything else. Records of opaque credentials that happen to be JWTs
 * (a Vault secret, say) hold `sha256:<hex of the whole token>`: `audit fingerprint` prints that
 * form too.
 */
export function presentedTokenFingerprint(token: string): string {
  const jti = jtiOf(token);
  return jti !== undefined ? ownJwtFingerprint(token, jti) : credentialFingerprint(token);
}

/** The jti of a JWT (claims read, not verified), or undefined for anything else. */
export function jtiOf(token: string): string | undefined {
  try {
    const { jti } = decodeJwt(token);
    return typeof jti === 'string' ? jti : undefined;
  } catch {
    return undefined; // not a JWT: an opaque credential
  }
}

/** Stored fingerprints a lookup by `fp` matches: itself, and for `jwt:<jti>:sha256:<hex>` also `sha256:<hex>`. */
export function fingerprintCandidates(fp: string): string[] {
  const at = fp.startsWith('jwt:') ? fp.lastIndexOf(':sha256:') : -1;
  return at > 0 ? [fp, fp.slice(at + 1)] : [fp];
}

/** Random bytes from a 4 KiB pool refilled from the CSPRNG (one call per 256 ids, not per id). */
const pool = Buffer.allocUnsafe(4096);
let poolAt = pool.length;
function randomPooled(out: Buffer): Buffer {
  if (poolAt + out.length > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  pool.copy(out, 0, poolAt, poolAt + out.length);
  pool.fill(0, poolAt, poolAt + out.length); // a byte is handed out once
  poolAt += out.length;
  return out;
}

let lastMs = 0;
let counter = 0;

/**
 * UUID version 7 (RFC 9562 §5.7): 48-bit Unix milliseconds, then a 12-bit counter that keeps ids
 * of the same millisecond in order, then 62 random bits. Ids of rows written together land next to
 * each other in B-tree indexes, so a group commit dirties a few pages instead of one page per row
 * (random v4 ids cost several times the write volume). Not secret: the time is in `iat` anyway.
 */
export function uuidv7(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    counter = randomPooled(Buffer.allocUnsafe(2)).readUInt16BE(0) & 0x1ff; // random start, room to count up
  } else if (++counter > 0xfff) {
    lastMs += 1; // more than 3,584 ids in one millisecond: borrow the next one, stay ordered
    counter = 0;
  }
  const b = Buffer.allocUnsafe(16);
  randomPooled(b);
  b.writeUIntBE(lastMs, 0, 6);
  b[6] = 0x70 | (counter >> 8);
  b[7] = counter & 0xff;
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

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
