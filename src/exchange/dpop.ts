import { calculateJwkThumbprint, decodeProtectedHeader, EmbeddedJWK, jwtVerify, type JWK } from 'jose';
import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../lib/clock.js';
import { InvalidDpopProof, UseDpopNonce } from '../errors/sts-errors.js';
import type { ReplayGuard } from '../trust-providers/trust-provider.js';

/**
 * DPoP (RFC 9449): sender-constrained agent tokens. A client that sends a `DPoP` proof with the
 * start-up exchange gets an agent token bound to the proof's key (`cnf.jkt`, `token_type: DPoP`);
 * from then on that token is accepted only with a fresh proof signed by the same key, for that very
 * token (`ath`) and that very request (`htm`, `htu`), once (`jti`, in the shared replay store so no
 * replica takes it twice). A stolen agent token alone is then useless. Targets with `dpop` set get
 * access tokens bound the same way (exchange-service.ts), for resource servers that check proofs.
 */

/** Asymmetric algorithms accepted for proofs (`dpop_signing_alg_values_supported`). */
export const DPOP_ALGS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA'];
/** How old a proof may be (its `iat`), seconds, before the clock tolerance. */
export const DPOP_MAX_AGE_SECONDS = 60;
const MAX_PROOF_BYTES = 8192;
const MAX_JTI_CHARS = 256;

/** What a verified proof says: the key's RFC 7638 thumbprint and the access-token hash it carries, if any. */
export interface DpopProof {
  jkt: string;
  ath?: string;
}

/** `ath` of a token (RFC 9449 §4.2): base64url SHA-256 of its ASCII form. */
export const accessTokenHash = (token: string) => createHash('sha256').update(token, 'ascii').digest('base64url');

/** The URL a proof's `htu` must name: scheme, host and path, no query or fragment (RFC 9449 §4.3). */
function comparableUrl(u: string): string | undefined {
  try {
    const url = new URL(u);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return undefined;
  }
}

/** How long one nonce window lasts, seconds; a nonce is accepted in its window and the next. */
export const DPOP_NONCE_WINDOW_SECONDS = 60;
const NONCE_MAC_BYTES = 16;

/**
 * Server-provided DPoP nonces (RFC 9449 §8) without shared state: a nonce is its time window and an
 * HMAC of it under a key derived from the key-encryption key, so every replica makes and accepts the
 * same nonces and a nonce cannot be made by anyone else. Accepted in its window and the next (60-120 s).
 */
export function createDpopNonces(kek: Buffer, clock: Clock) {
  const key = Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), 'agent-sts dpop-nonce v1', 32));
  const windowOf = () => Math.floor(clock.now().getTime() / 1000 / DPOP_NONCE_WINDOW_SECONDS);
  // Made once per window (each window's MAC is asked for on every proof and every answer), the last few kept.
  const macs = new Map<number, Buffer>();
  const mac = (w: number) => {
    let m = macs.get(w);
    if (!m) {
      m = createHmac('sha256', key).update(`dpop-nonce:${w}`).digest().subarray(0, NONCE_MAC_BYTES);
      if (macs.size >= 4) macs.delete(macs.keys().next().value!);
      macs.set(w, m);
    }
    return m;
  };
  const encode = (w: number) => `${w.toString(36)}.${mac(w).toString('base64url')}`;
  return {
    /** The nonce to hand out now (the `DPoP-Nonce` header). */
    current: () => encode(windowOf()),
    /** Whether `nonce` is one of ours from this window or the one before. */
    valid(nonce: unknown): boolean {
      if (typeof nonce !== 'string' || nonce.length > 64) return false;
      const parts = nonce.split('.');
      const [w36, given] = parts;
      if (parts.length !== 2 || !w36 || !given || !/^[0-9a-z]{1,12}$/.test(w36)) return false;
      const w = parseInt(w36, 36);
      const now = windowOf();
      if (w !== now && w !== now - 1) return false;
      const got = Buffer.from(given, 'base64url');
      return got.length === NONCE_MAC_BYTES && timingSafeEqual(got, mac(w));
    },
  };
}
export type DpopNonces = ReturnType<typeof createDpopNonces>;

export function createDpopVerifier(deps: { clock: Clock; clockTolerance: number; replay: ReplayGuard; nonces?: DpopNonces }) {
  /**
   * Verifies the `DPoP` header of a request to `htu` with method `htm`. Undefined when the request
   * has none; InvalidDpopProof (never a 500) when it is anything but one valid, fresh, unused proof.
   */
  async function verify(header: string | string[] | undefined, htm: string, htu: string): Promise<DpopProof | undefined> {
    if (header === undefined) return undefined;
    if (Array.isArray(header)) throw new InvalidDpopProof('send one DPoP header');
    const bad: (why: string, detail?: Record<string, unknown>) => never = (why, detail = {}) => {
      throw new InvalidDpopProof(`DPoP proof rejected: ${why}`, { detail: { reason: why, ...detail } });
    };
    if (header.length > MAX_PROOF_BYTES) bad('too large');
    let jwk: JWK | undefined;
    try {
      const h = decodeProtectedHeader(header);
      if (h.typ !== 'dpop+jwt') bad('typ must be dpop+jwt');
      if (!h.alg || !DPOP_ALGS.includes(h.alg)) bad('alg must be an asymmetric algorithm', { alg: h.alg });
      jwk = h.jwk;
    } catch (e) {
      if (e instanceof InvalidDpopProof) throw e;
      bad('not a JWT');
    }
    if (!jwk || typeof jwk !== 'object') bad('no jwk in its header');
    if ('d' in jwk || 'p' in jwk || 'k' in jwk) bad('its jwk must be a public key');
    let payload;
    try {
      ({ payload } = await jwtVerify(header, EmbeddedJWK, {
        typ: 'dpop+jwt',
        algorithms: DPOP_ALGS,
        maxTokenAge: DPOP_MAX_AGE_SECONDS,
        clockTolerance: deps.clockTolerance,
        currentDate: deps.clock.now(),
        requiredClaims: ['jti', 'htm', 'htu', 'iat'],
      }));
    } catch (e) {
      return bad('it could not be verified', { code: (e as { code?: string }).code, claim: (e as { claim?: string }).claim });
    }
    if (payload.htm !== htm) bad('htm does not match the request method', { htm: payload.htm });
    if (typeof payload.htu !== 'string' || comparableUrl(payload.htu) !== comparableUrl(htu)) bad('htu does not match the request URL', { expected: htu });
    if (typeof payload.jti !== 'string' || payload.jti.length === 0 || payload.jti.length > MAX_JTI_CHARS) bad('jti must be a string of 1 to 256 characters');
    if (payload.ath !== undefined && typeof payload.ath !== 'string') bad('ath must be a string');
    // RFC 9449 §8: a proof without a nonce of ours is answered with one to retry with (before its jti is spent).
    if (deps.nonces && !deps.nonces.valid(payload.nonce))
      throw new UseDpopNonce('send a DPoP proof with the nonce from the DPoP-Nonce header of this answer', { detail: { reason: payload.nonce === undefined ? 'no nonce' : 'unknown or expired nonce' } });
    const jkt = await calculateJwkThumbprint(jwk, 'sha256');
    // Single use on every replica while it could still be accepted.
    const until = new Date((payload.iat! + DPOP_MAX_AGE_SECONDS + 2 * deps.clockTolerance) * 1000);
    if (!(await deps.replay.claimOnce('#dpop', `${jkt}:${payload.jti}`, until))) bad('replayed (its jti was used before)');
    return { jkt, ...(typeof payload.ath === 'string' ? { ath: payload.ath } : {}) };
  }

  return {
    verify,
    /** The nonce answers carry in `DPoP-Nonce` (tokens.dpopNonce), or undefined when nonces are off. */
    nonce: (): string | undefined => deps.nonces?.current(),
  };
}
export type DpopVerifier = ReturnType<typeof createDpopVerifier>;

/**
 * A token bound to `jkt` is presented: the request's proof must be signed by that key and carry the
 * token's hash. Unbound tokens pass (with or without a proof).
 */
export function requireBoundProof(jkt: string | undefined, token: string, proof: DpopProof | undefined): void {
  if (!jkt) return;
  if (!proof) throw new InvalidDpopProof('this agent token is bound to a key (DPoP): send a DPoP proof signed with it', { detail: { reason: 'no proof for a bound token' } });
  if (proof.jkt !== jkt) throw new InvalidDpopProof('DPoP proof rejected: signed with another key than the token is bound to', { detail: { reason: 'key mismatch' } });
  if (proof.ath !== accessTokenHash(token)) throw new InvalidDpopProof('DPoP proof rejected: its ath is not the hash of this token', { detail: { reason: 'ath mismatch' } });
}
