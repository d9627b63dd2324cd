/**
 * The signing thread (see signing-thread.ts): ES256 signatures (es256.ts, as on the event loop)
 * with the private keys the event loop hands over once per key id. One message in, one message
 * out per batch, in order.
 */
import { parentPort } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import { es256Signature } from './es256.js';
import { nameThisThread } from '../lib/worker-thread.js';

nameThisThread('ags-signer');

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
      out.push([id, es256Signature(key, input)]);
    } catch (e) {
      out.push([id, null, (e as Error).message]);
    }
  }
  parentPort!.postMessage(out);
});
