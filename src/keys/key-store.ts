import { createPrivateKey, randomUUID, type JsonWebKey, type KeyObject } from 'node:crypto';
import { atEndOfTurn } from '../lib/end-of-turn.js';
import {
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { Db } from '../storage/prisma-client.js';
import type { Secret } from '../core/secret.js';
import { seal, unseal } from '../lib/crypto.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { SigningThread } from './signing-thread.js';
import { es256Signature } from './es256.js';

export const SIGNING_ALG = 'ES256';

interface LoadedKey {
  kid: string;
  publicJwk: JWK;
  /** node:crypto handle of the private key: signs without WebCrypto's per-call overhead (and can be handed to the signing thread). */
  privateKey: KeyObject;
  activatesAt: Date;
  retiredAt: Date | null;
  publishUntil: Date | null;
}

export interface TokenSigner {
  /** Signs with the key that is current at `now`. Header `typ` is set by the caller. */
  sign(payload: JWTPayload, typ: string): Promise<string>;
  /**
   * The same, with the JWS signing input (`header.payload`) at once and the compact token once
   * the signature is made: what a caller needs to fingerprint and record the token (lib/crypto.ts
   * `ownJwtFingerprint`) while it is being signed.
   */
  signDeferred(payload: JWTPayload, typ: string): SignedLater;
  /** Key resolver for verifying agent-sts's own tokens (published keys only). */
  verificationKeys(): JWTVerifyGetKey;
}

/** A JWS whose signing input is known and whose signature is on its way (signing-thread.ts). */
export interface SignedLater {
  signingInput: string;
  token: Promise<string>;
}

export interface KeyStoreDeps {
  db: Db;
  kek: Secret<Buffer>;
  clock: Clock;
  logger: Logger;
  /** Seconds a new key is published before it signs. */
  publishAheadSeconds: number;
  /** Longest lifetime of any token agent-sts signs, plus clock tolerance, seconds. */
  maxTokenLifetimeSeconds: number;
}

export interface RotationResult {
  newKid: string;
  activatesAt: Date;
  previousKid?: string;
  previousPublishedUntil?: Date;
}

const aadFor = (kid: string) => `signing-key:${kid}`;

const b64json = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Encoded protected headers by kid and typ: the same few on every token. */
const headers = new Map<string, string>();
function encodedHeader(kid: string, typ: string): string {
  const k = `${kid} ${typ}`;
  let h = headers.get(k);
  if (h === undefined) {
    if (headers.size > 64) headers.clear(); // rotated keys: never grows without bound
    headers.set(k, (h = b64json({ alg: SIGNING_ALG, kid, typ })));
  }
  return h;
}

/**
 * Signatures made in place wait for the end of the turn, after its hand-offs (lib/end-of-turn.ts):
 * the writer thread then commits the turn's audit records (which need only the signing input)
 * while this thread signs, instead of starting after every signature of the turn.
 */
let inPlace: { key: LoadedKey; input: string; resolve: (token: string) => void; reject: (e: unknown) => void }[] = [];
function signQueuedInPlace(): void {
  const jobs = inPlace;
  inPlace = [];
  for (const j of jobs) {
    try {
      j.resolve(`${j.input}.${es256Signature(j.key.privateKey, j.input)}`);
    } catch (e) {
      j.reject(e);
    }
  }
}

/**
 * JWS Compact Serialization (RFC 7515 §7.1) of a JWT signed with ES256, by node:crypto: ~0.02-0.03
 * ms of CPU. This is the per-request hot path; jose's SignJWT goes through WebCrypto, which costs
 * about twice the CPU per signature in Node 20 (bench/README.md). The signature is made in place
 * at the end of the turn (above), or on the signing thread while the event loop is saturated
 * (signing-thread.ts). Every token it produces is verified with jose in the tests; nothing is
 * parsed here.
 */
function signCompact(key: LoadedKey, payload: JWTPayload, typ: string, thread: SigningThread | undefined): SignedLater {
  const input = `${encodedHeader(key.kid, typ)}.${b64json(payload)}`;
  const offloaded = thread?.offer(key.kid, key.privateKey, input);
  if (offloaded) return { signingInput: input, token: offloaded.then((sig) => `${input}.${sig}`) };
  return {
    signingInput: input,
    token: new Promise<string>((resolve, reject) => {
      if (!inPlace.length) atEndOfTurn('local', signQueuedInPlace);
      inPlace.push({ key, input, resolve, reject });
    }),
  };
}

export function createKeyStore(deps: KeyStoreDeps) {
  let keys: LoadedKey[] = [];
  let jwks: JWTVerifyGetKey = createLocalJWKSet({ keys: [] });
  let thread: SigningThread | undefined;

  async function loadRow(row: { kid: string; publicJwk: string; sealedPrivateKey: string; activatesAt: Date; retiredAt: Date | null; publishUntil: Date | null }): Promise<LoadedKey> {
    const existing = keys.find((k) => k.kid === row.kid);
    const privateKey =
      existing?.privateKey ?? createPrivateKey({ key: JSON.parse(unseal(deps.kek.reveal(), row.sealedPrivateKey, aadFor(row.kid))) as JsonWebKey, format: 'jwk' });
    return { kid: row.kid, publicJwk: JSON.parse(row.publicJwk) as JWK, privateKey, activatesAt: row.activatesAt, retiredAt: row.retiredAt, publishUntil: row.publishUntil };
  }

  /** Re-reads the key table (keys rotated by the CLI or another replica show up here). */
  async function reload(): Promise<void> {
    const rows = await deps.db.signingKey.findMany({ orderBy: { activatesAt: 'asc' } });
    keys = await Promise.all(rows.map(loadRow));
    jwks = createLocalJWKSet({ keys: published().map((k) => k.publicJwk) });
  }

  function published(): LoadedKey[] {
    const now = deps.clock.now().getTime();
    return keys.filter((k) => k.publishUntil === null || k.publishUntil.getTime() > now);
  }

  function current(): LoadedKey {
    const now = deps.clock.now().getTime();
    let cur: LoadedKey | undefined;
    for (const k of keys) if (k.activatesAt.getTime() <= now && (k.retiredAt === null || k.retiredAt.getTime() > now)) cur = k;
    if (!cur) throw new Error('no signing key is active; run `agent-sts keys rotate` or restart to create one');
    return cur;
  }

  async function generateSealedKey(): Promise<{ kid: string; publicJwk: string; sealed: string }> {
    const kid = `${deps.clock.now().toISOString().slice(0, 10)}-${randomUUID().slice(0, 8)}`;
    const { publicKey, privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: 'sig' };
    return { kid, publicJwk: JSON.stringify(publicJwk), sealed: seal(deps.kek.reveal(), JSON.stringify(await exportJWK(privateKey)), aadFor(kid)) };
  }

  async function createKey(activatesAt: Date): Promise<string> {
    const { kid, publicJwk, sealed } = await generateSealedKey();
    await deps.db.signingKey.create({ data: { kid, alg: SIGNING_ALG, publicJwk, sealedPrivateKey: sealed, activatesAt } });
    return kid;
  }

  /** Loads keys, creating the first one on first start. */
  async function init(): Promise<{ created?: string }> {
    await reload();
    if (keys.length > 0) return {};
    const kid = await createKey(deps.clock.now());
    await reload();
    deps.logger.info({ kid }, 'created the first signing key');
    return { created: kid };
  }

  /**
   * Rotation without breaking verifiers: the new key is published now and signs only after
   * `publishAhead`; the old key keeps signing until then and stays published until the last
   * token it signed has expired.
   */
  async function rotate(): Promise<RotationResult> {
    await reload();
    const now = deps.clock.now();
    const prev = keys.length ? current() : undefined;
    const activatesAt = new Date(now.getTime() + deps.publishAheadSeconds * 1000);
    const previousPublishedUntil = prev ? new Date(activatesAt.getTime() + deps.maxTokenLifetimeSeconds * 1000) : undefined;
    const { publicJwk, sealed, kid } = await generateSealedKey();
    // Check-and-insert in one serializable transaction: two concurrent rotations (CLI runs or
    // replicas) cannot both leave a pending key.
    await deps.db.$transaction(
      async (tx) => {
        const pending = await tx.signingKey.findFirst({ where: { activatesAt: { gt: now } } });
        if (pending)
          throw new Error(`a rotation is already in progress: key ${pending.kid} starts signing at ${pending.activatesAt.toISOString()}`);
        await tx.signingKey.create({ data: { kid, alg: SIGNING_ALG, publicJwk, sealedPrivateKey: sealed, activatesAt } });
        if (prev) await tx.signingKey.update({ where: { kid: prev.kid }, data: { retiredAt: activatesAt, publishUntil: previousPublishedUntil } });
      },
      { isolationLevel: 'Serializable' },
    );
    await reload();
    return { newKid: kid, activatesAt, previousKid: prev?.kid, previousPublishedUntil };
  }

  const signer: TokenSigner = {
    sign: (payload, typ) => signCompact(current(), payload, typ, thread).token,
    signDeferred: (payload, typ) => signCompact(current(), payload, typ, thread),
    verificationKeys: () => (header, token) => jwks(header, token),
  };

  return {
    init,
    reload,
    rotate,
    signer,
    /** Lets the server's signatures use a signing thread (the CLI's few never do). */
    useSigningThread(t: SigningThread | undefined) {
      thread = t;
    },
    /** The public JWK Set (RFC 7517): pending, current and still-published retired keys. */
    jwks: () => ({ keys: published().map((k) => k.publicJwk) }),
    currentKid: () => current().kid,
    isReady: () => keys.length > 0 && keys.some((k) => k.activatesAt.getTime() <= deps.clock.now().getTime()),
    list: () => keys.map(({ kid, activatesAt, retiredAt, publishUntil }) => ({ kid, activatesAt, retiredAt, publishUntil })),
  };
}
export type KeyStore = ReturnType<typeof createKeyStore>;
