/**
 * The signing thread (see signing-thread.ts): ECDSA P-256 signatures over SHA-256 in the raw
 * R||S form JWS needs (RFC 7518 §3.4), made by node:crypto with the private keys the event loop
 * hands over once per key id. One message in, one message out per batch, in order.
 */
import { parentPort } from 'node:worker_threads';
import { sign, type KeyObject } from 'node:crypto';

export interface SignRequest {
  /** Keys not sent before: [kid, private key]. */
  keys?: [string, KeyObject][];
  /** [job id, kid, signing input]. */
  jobs: [number, string, string][];
}
/** [job id, base64url signature] or [job id, null, error message]. */
export type SignResult = [number, string] | [number, null, string];

const keys = new Map<string, KeyObject>();
parentPort!.on('message', (m: SignRequest) => {
  if (m.keys) for (const [kid, key] of m.keys) keys.set(kid, key);
  const out: SignResult[] = [];
  for (const [id, kid, input] of m.jobs) {
    const key = keys.get(kid);
    if (!key) {
      out.push([id, null, `no key ${kid} on the signing thread`]);
      continue;
    }
    try {
      out.push([id, sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')]);
    } catch (e) {
      out.push([id, null, (e as Error).message]);
    }
  }
  parentPort!.postMessage(out);
});
