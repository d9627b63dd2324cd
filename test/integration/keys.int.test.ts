// The signing-key store against real storage (SQLite and PostgreSQL, migrated by the committed
// migrations): first-start key creation, loading by a second instance, sealing of the private key,
// and the rotation windows (publish ahead, then sign, then stay published for the longest token
// lifetime), driven by a settable clock.
import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { createKeyStore } from '../../src/keys/key-store.js';
import { Secret } from '../../src/core/secret.js';
import { unseal } from '../../src/lib/crypto.js';
import type { Clock } from '../../src/lib/clock.js';
import { createLogger } from '../../src/log/logger.js';
import { createTestPostgresDatabase, createTestSqliteUrl, useMigratedDatabase } from '../support/databases.js';

const PUBLISH_AHEAD = 600; // s
const MAX_TOKEN_LIFETIME = 3600 + 60; // s: longest token + clock tolerance
const T0 = Date.parse('2031-03-04T05:06:07.000Z');
const KID = /^\d{4}-\d{2}-\d{2}-[0-9a-f]{8}$/;

/** A clock the test moves by hand. */
function fakeClock(start: number) {
  let t = start;
  const clock: Clock = { now: () => new Date(t) };
  return {
    clock,
    set: (ms: number) => void (t = ms),
    advance: (seconds: number) => void (t += seconds * 1000),
    ms: () => t,
  };
}

const newKek = () => new Secret(randomBytes(32));
const logger = createLogger({ level: 'silent' });

interface Store {
  url: string;
  drop(): Promise<void>;
}

const stores: { name: string; create: () => Promise<Store> }[] = [
  { name: 'sqlite', create: async () => createTestSqliteUrl('agsts-keys') },
  { name: 'postgresql', create: () => createTestPostgresDatabase('agsts_keys') },
];

describe.each(stores)('signing keys on $name', ({ create }) => {
  let kek: Secret<Buffer>;
  let time: ReturnType<typeof fakeClock>;

  const keyStore = (opts: { kek?: Secret<Buffer> } = {}) =>
    createKeyStore({
      db: db().db,
      kek: opts.kek ?? kek,
      clock: time.clock,
      logger,
      publishAheadSeconds: PUBLISH_AHEAD,
      maxTokenLifetimeSeconds: MAX_TOKEN_LIFETIME,
    });
  const kidsOf = (ks: ReturnType<typeof keyStore>) => ks.jwks().keys.map((k) => k.kid).sort();
  const headerKid = (token: string) => decodeProtectedHeader(token).kid;

  const db = useMigratedDatabase(create);
  beforeEach(async () => {
    // Each test starts from an empty key table, a fresh KEK and the clock at T0.
    await db().db.signingKey.deleteMany();
    kek = newKek();
    time = fakeClock(T0);
  });

  it('creates one key on first start; a second instance loads it; the private key is sealed with the KEK', async () => {
    const first = keyStore();
    const { created } = await first.init();
    expect(created).toMatch(KID);
    expect(created!.startsWith('2031-03-04-')).toBe(true); // kid is dated by the store's clock
    expect(await db().db.signingKey.count()).toBe(1);
    expect(first.currentKid()).toBe(created);
    expect(first.isReady()).toBe(true);
    expect(kidsOf(first)).toEqual([created]);

    // A second instance (another replica, or a restart) on the same database loads the key.
    time.advance(5);
    const second = keyStore();
    expect(await second.init()).toEqual({});
    expect(await db().db.signingKey.count()).toBe(1);
    expect(second.currentKid()).toBe(created);
    // ... and really holds the same private key: its token verifies with the first instance's keys.
    const token = await second.signer.sign({ sub: 'loaded', iat: Math.floor(time.ms() / 1000) }, 'at+jwt');
    expect(headerKid(token)).toBe(created);
    const { payload, protectedHeader } = await jwtVerify(token, first.signer.verificationKeys(), { currentDate: time.clock.now() });
    expect(payload.sub).toBe('loaded');
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: created, typ: 'at+jwt' });
    // JWS compact form with a raw 64-byte R||S signature (RFC 7518 §3.4), and a verifier that knows
    // only the published JWK Set (what a resource server holds) accepts it too.
    expect(Buffer.from(token.split('.')[2]!, 'base64url')).toHaveLength(64);
    await expect(jwtVerify(token, createLocalJWKSet(second.jwks()), { currentDate: time.clock.now() })).resolves.toBeDefined();
    const tampered = `${token.split('.')[0]}.${Buffer.from(JSON.stringify({ sub: 'other' })).toString('base64url')}.${token.split('.')[2]}`;
    await expect(jwtVerify(tampered, createLocalJWKSet(second.jwks()))).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });

    // At rest: the public JWK has no private part; the private JWK is an AES-GCM envelope.
    const row = await db().db.signingKey.findUniqueOrThrow({ where: { kid: created! } });
    const publicJwk = JSON.parse(row.publicJwk) as JWK;
    expect(publicJwk).toMatchObject({ kid: created, alg: 'ES256', use: 'sig', kty: 'EC', crv: 'P-256' });
    expect(publicJwk.d).toBeUndefined();
    expect(row.sealedPrivateKey).toMatch(/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(row.sealedPrivateKey).not.toContain('"d"');
    expect(() => JSON.parse(row.sealedPrivateKey) as unknown).toThrow();
    const privateJwk = JSON.parse(unseal(kek.reveal(), row.sealedPrivateKey, `signing-key:${created}`)) as JWK;
    expect(typeof privateJwk.d).toBe('string');
    expect(row.sealedPrivateKey).not.toContain(privateJwk.d!);
    // The envelope is bound to its kid: it cannot be moved to another row.
    expect(() => unseal(kek.reveal(), row.sealedPrivateKey, 'signing-key:some-other-kid')).toThrow(/could not be decrypted/);

    // A store with a different KEK cannot load the key, says why, and does not create a new one.
    const wrong = keyStore({ kek: newKek() });
    await expect(wrong.init()).rejects.toThrow(/could not be decrypted: wrong key-encryption key/);
    expect(await db().db.signingKey.count()).toBe(1);
    expect(() => wrong.currentKid()).toThrow(/no signing key is active/);
  });

  it('rotation: publish ahead, switch signing at activation, keep the old key published for the token lifetime', async () => {
    const ks = keyStore();
    const oldKid = (await ks.init()).created!;
    // A token signed by the old key before the rotation, valid for the longest token lifetime.
    const iat = Math.floor(time.ms() / 1000);
    const oldToken = await ks.signer.sign({ sub: 'before-rotation', iat, exp: iat + 3600 }, 'at+jwt');
    expect(headerKid(oldToken)).toBe(oldKid);

    time.advance(60);
    const rotatedAt = time.ms();
    const r = await ks.rotate();
    const activation = rotatedAt + PUBLISH_AHEAD * 1000;
    const publishUntil = activation + MAX_TOKEN_LIFETIME * 1000;
    expect(r.newKid).toMatch(KID);
    expect(r.newKid).not.toBe(oldKid);
    expect(r.previousKid).toBe(oldKid);
    expect(r.activatesAt.getTime()).toBe(activation);
    expect(r.previousPublishedUntil?.getTime()).toBe(publishUntil);

    // Stored windows: the old key retires at the new key's activation and is published until publishUntil.
    const oldRow = await db().db.signingKey.findUniqueOrThrow({ where: { kid: oldKid } });
    expect(oldRow.retiredAt?.getTime()).toBe(activation);
    expect(oldRow.publishUntil?.getTime()).toBe(publishUntil);
    const newRow = await db().db.signingKey.findUniqueOrThrow({ where: { kid: r.newKid } });
    expect(newRow.activatesAt.getTime()).toBe(activation);
    expect(newRow.retiredAt).toBeNull();
    expect(newRow.publishUntil).toBeNull();

    // Published immediately, but not signing yet: verifiers get to cache it first.
    expect(kidsOf(ks)).toEqual([oldKid, r.newKid].sort());
    expect(headerKid(await ks.signer.sign({ sub: 'a' }, 'at+jwt'))).toBe(oldKid);
    expect(ks.currentKid()).toBe(oldKid);

    // Another replica that loads the table now agrees.
    const replica = keyStore();
    await replica.init();
    expect(kidsOf(replica)).toEqual([oldKid, r.newKid].sort());
    expect(headerKid(await replica.signer.sign({ sub: 'a' }, 'at+jwt'))).toBe(oldKid);

    // One millisecond before activation: still the old key.
    time.set(activation - 1);
    expect(headerKid(await ks.signer.sign({ sub: 'b' }, 'at+jwt'))).toBe(oldKid);

    // From activation on, the new key signs (no reload needed: the windows are in memory).
    time.set(activation);
    const newToken = await ks.signer.sign({ sub: 'after-activation' }, 'at+jwt');
    expect(headerKid(newToken)).toBe(r.newKid);
    expect(headerKid(await replica.signer.sign({ sub: 'c' }, 'at+jwt'))).toBe(r.newKid);
    expect((await jwtVerify(newToken, ks.signer.verificationKeys(), { currentDate: time.clock.now() })).payload.sub).toBe('after-activation');

    // The old key is still published, and a token it signed before the rotation still verifies.
    time.set(activation + 30 * 60_000);
    await ks.reload();
    expect(kidsOf(ks)).toEqual([oldKid, r.newKid].sort());
    const { payload } = await jwtVerify(oldToken, ks.signer.verificationKeys(), { currentDate: new Date(iat * 1000 + 1000) });
    expect(payload.sub).toBe('before-rotation');

    time.set(publishUntil - 1);
    await ks.reload();
    expect(kidsOf(ks)).toEqual([oldKid, r.newKid].sort());
    await expect(jwtVerify(oldToken, ks.signer.verificationKeys(), { currentDate: new Date(iat * 1000 + 1000) })).resolves.toBeDefined();

    // At publishUntil it is gone from the JWKS and the verification key set (after the reload that
    // every replica runs periodically). The check date is inside the token's validity, so the
    // only thing failing is the key lookup.
    time.set(publishUntil);
    expect(kidsOf(ks)).toEqual([r.newKid]);
    await ks.reload();
    expect(kidsOf(ks)).toEqual([r.newKid]);
    await expect(jwtVerify(oldToken, ks.signer.verificationKeys(), { currentDate: new Date(iat * 1000 + 1000) })).rejects.toMatchObject({
      code: 'ERR_JWKS_NO_MATCHING_KEY',
    });
    // The new key keeps signing and verifying; the old row stays in the table (history), unpublished.
    expect(ks.currentKid()).toBe(r.newKid);
    await expect(jwtVerify(newToken, ks.signer.verificationKeys(), { currentDate: new Date(activation) })).resolves.toBeDefined();
    expect(ks.list().map((k) => k.kid)).toEqual([oldKid, r.newKid]);
  });

  it('refuses a second rotation while one is pending, and allows it once the new key signs', async () => {
    const ks = keyStore();
    const firstKid = (await ks.init()).created!;
    const r1 = await ks.rotate();
    expect(r1.previousKid).toBe(firstKid);

    time.advance(1);
    await expect(ks.rotate()).rejects.toThrow(
      `a rotation is already in progress: key ${r1.newKid} starts signing at ${r1.activatesAt.toISOString()}`,
    );
    // Also refused from another instance, which reads the pending key from the table.
    await expect(keyStore().rotate()).rejects.toThrow(/a rotation is already in progress/);
    expect(await db().db.signingKey.count()).toBe(2);
    expect(ks.currentKid()).toBe(firstKid);

    // Once the pending key is active, the next rotation proceeds and retires it in turn.
    time.set(r1.activatesAt.getTime());
    const r2 = await ks.rotate();
    expect(r2.previousKid).toBe(r1.newKid);
    expect(await db().db.signingKey.count()).toBe(3);
    expect(kidsOf(ks)).toEqual([firstKid, r1.newKid, r2.newKid].sort());
  });
});
