import { compactVerify, createLocalJWKSet, type JWK } from 'jose';
import type { Db } from '../storage/prisma-client.js';
import type { TokenSigner } from '../keys/key-store.js';
import { uuidv7 } from '../lib/crypto.js';

/** JWS `typ` of a checkpoint: never accepted where a token is expected, and vice versa. */
export const CHECKPOINT_TYP = 'audit-checkpoint+jwt';

/**
 * A signed statement "record `seq` of chain `chainId` had hash `hash` at `time`". `periodic`
 * checkpoints are written by each audit log as it goes; `archive` checkpoints by a prune, where
 * `prunedThrough` (= `seq`) says up to which record the chain was removed from the store.
 */
export interface Checkpoint {
  chainId: string;
  seq: number;
  hash: string;
  time: Date;
  kind: 'periodic' | 'archive';
  prunedThrough?: number;
}

export interface CheckpointRow {
  id: string;
  chainId: string;
  seq: number;
  hash: string;
  time: Date;
  kind: string;
  jws: string;
  prunedThrough: number | null;
}

const claimsOf = (c: Checkpoint) => ({
  chainId: c.chainId,
  seq: c.seq,
  hash: c.hash,
  time: c.time.toISOString(),
  kind: c.kind,
  ...(c.prunedThrough !== undefined ? { prunedThrough: c.prunedThrough } : {}),
});

/** Signs a checkpoint with agent-sts's current signing key (ES256 JWS, `typ` audit-checkpoint+jwt). */
export async function signCheckpoint(signer: Pick<TokenSigner, 'sign'>, c: Checkpoint): Promise<CheckpointRow> {
  const jws = await signer.sign(claimsOf(c), CHECKPOINT_TYP);
  return { id: uuidv7(c.time.getTime()), chainId: c.chainId, seq: c.seq, hash: c.hash, time: c.time, kind: c.kind, jws, prunedThrough: c.prunedThrough ?? null };
}

/** Signs and stores a checkpoint; an identical one already stored (a retried write) is fine. */
export async function writeCheckpoint(db: Db, signer: Pick<TokenSigner, 'sign'>, c: Checkpoint): Promise<CheckpointRow> {
  const row = await signCheckpoint(signer, c);
  try {
    await db.auditCheckpoint.create({ data: row });
  } catch (e) {
    if ((e as { code?: string }).code !== 'P2002') throw e;
  }
  return row;
}

/**
 * Verifies checkpoint rows against agent-sts's public keys — every key in the SigningKey table,
 * retired ones included, since a checkpoint outlives the key that signed it. A row is valid only
 * if its JWS verifies, is an ES256 `audit-checkpoint+jwt`, and says exactly what the row's columns
 * say; otherwise the reason is returned.
 */
export async function checkpointVerifier(db: Db): Promise<(row: CheckpointRow) => Promise<string | undefined>> {
  const keys = (await db.signingKey.findMany({ select: { publicJwk: true } })).map((k) => JSON.parse(k.publicJwk) as JWK);
  const jwks = createLocalJWKSet({ keys });
  return async (row) => {
    let payload: Record<string, unknown>;
    try {
      const r = await compactVerify(row.jws, jwks, { algorithms: ['ES256'] });
      if (r.protectedHeader.typ !== CHECKPOINT_TYP) return `its JWS is a ${String(r.protectedHeader.typ)}, not an ${CHECKPOINT_TYP}`;
      payload = JSON.parse(new TextDecoder().decode(r.payload)) as Record<string, unknown>;
    } catch (e) {
      return `its signature does not verify against agent-sts's keys (${(e as { code?: string }).code ?? 'invalid JWS'})`;
    }
    const expected = claimsOf({ ...row, kind: row.kind as Checkpoint['kind'], prunedThrough: row.prunedThrough ?? undefined });
    const differs = (Object.keys(expected) as (keyof typeof expected)[]).filter((k) => payload[k] !== expected[k]);
    if (differs.length || Object.keys(payload).length !== Object.keys(expected).length)
      return `its columns (${differs.join(', ') || 'fields'}) differ from what was signed`;
    return undefined;
  };
}

export interface CheckpointPolicy {
  /** A checkpoint after at least this many new records... */
  everyRecords: number;
  /** ...or this long after the last one, if there are new records. */
  everyMs: number;
  /** Signs and stores one checkpoint (see {@link writeCheckpoint}). */
  write(c: Checkpoint): Promise<unknown>;
}

/** The checkpoint policy of a server's audit log: signs with the key store's signer, writes through Prisma. */
export function checkpointPolicy(o: { db: Db; signer: Pick<TokenSigner, 'sign'>; everyRecords: number; everyMs: number }): CheckpointPolicy {
  return { everyRecords: o.everyRecords, everyMs: o.everyMs, write: (c) => writeCheckpoint(o.db, o.signer, c) };
}
