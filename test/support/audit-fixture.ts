// Large issuance logs written through the real write path: createAuditLog (group commit, hash
// chain, periodic signed checkpoints) on the store's own batch writer (the SQLite writer thread or
// the PostgreSQL Prisma writer). Several writers = several Database handles on one store, each with
// its own audit log, as several broker processes would be; their appends interleave.
import { randomBytes } from 'node:crypto';
import { createAuditLog, type AuditLog } from '../../src/audit/audit-log.js';
import type { AuditEventInput } from '../../src/audit/audit-event.js';
import { checkpointPolicy } from '../../src/audit/audit-checkpoint.js';
import { createKeyStore, type KeyStore } from '../../src/keys/key-store.js';
import { Secret } from '../../src/core/secret.js';
import { createLogger } from '../../src/log/logger.js';
import type { Clock } from '../../src/lib/clock.js';
import type { Database } from '../../src/storage/prisma-client.js';

export const silentLogger = createLogger({ level: 'silent' });

/** A key store over the database with a fresh key (signs checkpoints, as the broker's would). */
export async function testKeyStore(database: Database, o: { clock?: Clock; kek?: Buffer } = {}): Promise<KeyStore> {
  const clock = o.clock ?? { now: () => new Date() };
  const keys = createKeyStore({ db: database.db, kek: new Secret(o.kek ?? randomBytes(32)), clock, logger: silentLogger, publishAheadSeconds: 0, maxTokenLifetimeSeconds: 3600 });
  await keys.init();
  return keys;
}

export const WORKLOADS = 50;
export const TARGETS = ['billing-api', 'orders-db', 'github', 'vault-kv', 'mcp-tools'];
export const ISSUERS = ['tokens', 'pg', 'github-app', 'vault'];
export const POLICY_VERSIONS = ['v-aaaa', 'v-bbbb', 'v-cccc'];

/** The i-th record of writer w: deterministic, so tests can say what a filter must return. */
export function syntheticEvent(w: number, i: number): AuditEventInput {
  const n = w * 1_000_000 + i;
  const outcome = n % 10 === 0 ? 'deny' : n % 97 === 0 ? 'error' : 'allow';
  return {
    requestId: `req-${w}-${i}`,
    action: 'token.exchange',
    outcome,
    reason: outcome === 'deny' ? 'no policy rule matches' : undefined,
    providerName: 'ci',
    workloadSubject: `test://agent-${n % WORKLOADS}`,
    humanSubject: n % 3 === 0 ? `user-${n % 7}@example.com` : undefined,
    target: TARGETS[n % TARGETS.length],
    requestedScope: 'read',
    grantedScope: outcome === 'allow' ? 'read' : undefined,
    policyId: 'rules/agents',
    policyVersion: POLICY_VERSIONS[n % POLICY_VERSIONS.length],
    taskId: `t_${w}_${Math.floor(i / 20)}`,
    credentialId: outcome === 'allow' ? `c_${w}_${i}` : undefined,
    credentialFingerprint: outcome === 'allow' ? `sha256:${(BigInt(n) * 2654435761n).toString(16).padStart(64, '0')}` : undefined,
    credentialExpiresAt: outcome === 'allow' ? new Date(Date.UTC(2030, 0, 1)) : undefined,
    issuerName: outcome === 'allow' ? ISSUERS[n % ISSUERS.length] : undefined,
    clientAddress: '10.0.0.7',
  };
}

export interface FillOptions {
  /** Records per writer. */
  perWriter: number;
  /** Appends kept in flight per writer (concurrent requests of one process). */
  concurrency?: number;
  clock?: Clock;
  /** Signs periodic checkpoints (none when absent). */
  keys?: KeyStore;
  checkpointEveryRecords?: number;
  maxBatch?: number;
  onProgress?: (done: number) => void;
}

/**
 * Appends `perWriter` records through each database's own audit log, all writers at once; each
 * writer keeps `concurrency` appends in flight (so the group commit batches them). Resolves with
 * the audit logs once everything is durable and checkpointed.
 */
export async function fillAuditLog(databases: Database[], o: FillOptions): Promise<AuditLog[]> {
  const clock = o.clock ?? { now: () => new Date() };
  const logs = databases.map((d) =>
    createAuditLog({
      batch: d.batch,
      clock,
      logger: silentLogger,
      maxBatch: o.maxBatch,
      checkpoints: o.keys ? checkpointPolicy({ db: d.db, signer: o.keys.signer, everyRecords: o.checkpointEveryRecords ?? 10_000, everyMs: 60_000 }) : undefined,
    }),
  );
  let done = 0;
  await Promise.all(
    logs.map(async (log, w) => {
      let next = 0;
      const worker = async () => {
        while (next < o.perWriter) {
          const i = next++;
          await log.append({ event: syntheticEvent(w, i) });
          if (++done % 10_000 === 0) o.onProgress?.(done);
        }
      };
      await Promise.all(Array.from({ length: o.concurrency ?? 512 }, worker));
    }),
  );
  await Promise.all(logs.map((l) => l.close()));
  return logs;
}
