// Single-use claims (the replay table behind DPoP proof jti, aws-iam signatures and aws-ec2
// identity documents) on both stores: the first claim of a key wins, a live claim refuses every
// later one, an expired claim is taken over, a claim without expiry is held for good, and of a
// burst of claims for one key from two replicas exactly one wins. On SQLite the claims go through
// the writer thread's group commit (with audit batches in the same transactions), so neither their
// fsync nor a wait for the write lock is on the event loop; Prisma reads what it wrote.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, createTestSqliteUrl } from '../support/databases.js';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';
import { createReplayGuard } from '../../src/trust-providers/replay-guard.js';

for (const dialect of ['sqlite', 'postgresql'] as const) {
  describe(`replay guard (${dialect})`, { timeout: 60_000 }, () => {
    let drop: () => Promise<void>;
    const databases: Database[] = [];
    let t = Date.UTC(2026, 11, 7, 12, 0, 0);
    const clock = { now: () => new Date(t) };
    const guards = () => databases.map((d) => createReplayGuard(d.db, clock, d.batch));

    beforeAll(async () => {
      const store = dialect === 'postgresql' ? await createTestPostgresDatabase('agsts_replay') : createTestSqliteUrl('agsts-replay');
      drop = store.drop;
      await applyMigrations(store.url);
      // Two replicas on one store (SQLite: two writer threads on one file, serialised by its lock).
      databases.push(await openDatabase(store.url), await openDatabase(store.url));
    });
    afterAll(async () => {
      for (const d of databases) await d.close();
      await drop?.();
    });

    it('takes a key once while its claim lives, again once it expired, never one held for good', async () => {
      const [a, b] = guards();
      const key = `k-${randomUUID()}`;
      const until = new Date(t + 60_000);
      expect(await a!.claimOnce('#dpop', key, until)).toBe(true);
      expect(await a!.claimOnce('#dpop', key, until)).toBe(false);
      expect(await b!.claimOnce('#dpop', key, until)).toBe(false);
      expect(await a!.claimOnce('other-provider', key, until)).toBe(true); // keys are per provider
      t += 60_000; // the claim's last instant: expired
      expect(await b!.claimOnce('#dpop', key, new Date(t + 60_000))).toBe(true);
      expect(await a!.claimOnce('#dpop', key, new Date(t + 60_000))).toBe(false);
      const row = await databases[0]!.db.attestationUse.findUniqueOrThrow({ where: { provider_key: { provider: '#dpop', key } } });
      expect(row.expiresAt?.getTime()).toBe(t + 60_000);
      expect(row.createdAt.getTime()).toBe(t);

      const forever = `doc-${randomUUID()}`;
      expect(await a!.claimOnce('ec2', forever, null)).toBe(true);
      t += 10 * 365 * 86_400_000;
      expect(await b!.claimOnce('ec2', forever, null)).toBe(false);
    });

    it('of a burst for one key from two replicas, exactly one claim wins; purgeExpired removes what lapsed', async () => {
      const gs = guards();
      const key = `burst-${randomUUID()}`;
      const results = await Promise.all(gs.flatMap((g) => Array.from({ length: 20 }, () => g.claimOnce('#dpop', key, new Date(t + 1000)))));
      expect(results.filter(Boolean)).toHaveLength(1);
      // Many different keys at once: each taken exactly once.
      const keys = Array.from({ length: 50 }, () => `many-${randomUUID()}`);
      expect((await Promise.all(keys.map((k, i) => gs[i % 2]!.claimOnce('#dpop', k, new Date(t + 1000))))).every(Boolean)).toBe(true);
      t += 2000;
      expect(await gs[0]!.purgeExpired()).toBeGreaterThanOrEqual(51);
      expect(await databases[0]!.db.attestationUse.count({ where: { key } })).toBe(0);
    });
  });
}
