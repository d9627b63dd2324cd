import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { ReplayGuard } from './trust-provider.js';
import type { BatchWriter } from '../storage/batch.js';

/**
 * Single-use claims in the shared database, so every replica refuses the second use. The primary
 * key (provider, key) makes the first insert win; an expired claim is replaced by a conditional
 * update, which only one of two racing callers can win either.
 */
export function createReplayGuard(db: Db, clock: Clock, writer?: Pick<BatchWriter, 'claimOnce'>): ReplayGuard & { purgeExpired(): Promise<number> } {
  return {
    async claimOnce(provider, key, until) {
      const now = clock.now();
      // SQLite: on the writer thread, in its group commit (no fsync, and no wait for the write lock, on the event loop).
      if (writer?.claimOnce) return writer.claimOnce({ provider, key, createdAt: now, expiresAt: until });
      try {
        await db.attestationUse.create({ data: { provider, key, createdAt: now, expiresAt: until } });
        return true;
      } catch (e) {
        if ((e as { code?: string }).code !== 'P2002') throw e; // not "already exists": let it surface
      }
      const taken = await db.attestationUse.updateMany({
        where: { provider, key, expiresAt: { not: null, lte: now } },
        data: { createdAt: now, expiresAt: until },
      });
      return taken.count === 1;
    },
    async purgeExpired() {
      const r = await db.attestationUse.deleteMany({ where: { expiresAt: { not: null, lte: clock.now() } } });
      return r.count;
    },
  };
}
