import { sign, type KeyObject } from 'node:crypto';

/**
 * The ES256 signature of a JWS signing input, base64url: ECDSA P-256 over SHA-256 by node:crypto,
 * in the raw R||S form JWS requires (`ieee-p1363`, RFC 7518 §3.4). One definition for the event
 * loop (key-store.ts) and the signing thread (signing-worker.ts), which must give the same result.
 */
export function es256Signature(key: KeyObject, input: string): string {
  return sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
}
