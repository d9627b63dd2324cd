// Just-in-time approval requests are race-free across replicas: two approval services (two Prisma
// clients, as two broker replicas) on one PostgreSQL database, hit at once with the same request,
// create exactly one pending PolicyApproval row, one `approval.request` audit record and one
// webhook; every caller gets that row's approval id. Once it is over (expired), the next burst
// again creates exactly one new request. The same holds on SQLite within one process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPostgresDatabase, createTestSqliteUrl } from '../support/databases.js';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';
import { createApprovalService, type ApprovalGateInput } from '../../src/approvals/approval-service.js';
import { AuthorizationPending } from '../../src/errors/sts-errors.js';
import type { AuditWrite } from '../../src/audit/audit-log.js';
import type { Logger } from '../../src/log/logger.js';
import type { BlendedIdentity } from '../../src/core/types.js';

const identity: BlendedIdentity = {
  workload: { kind: 'workload', provider: 'ci', providerType: 'oidc', subject: 'test://payout-bot', attributes: {}, claims: {}, expiresAt: new Date(8.64e15) },
  priorActors: [],
};
const input: ApprovalGateInput = { identity, target: 'payouts', grantedScopes: ['pay'], policyId: 'team/agents', approval: { approvers: ['bootstrap:ops'], windowSeconds: 60 } };

function replica(database: Database, audits: AuditWrite[], notices: string[]) {
  return createApprovalService({
    db: database.db,
    audit: { append: async (w) => (audits.push(w), {} as never) },
    clock: { now: () => new Date() },
    logger: {} as Logger,
    notify: async (n) => void notices.push(n.approval_id),
    issuerUrl: () => 'https://sts.test',
  });
}

/** Fires `n` gate calls on each service at once; returns the approval id each refusal named. */
async function burst(services: ReturnType<typeof replica>[], n: number, now: Date): Promise<string[]> {
  const calls = services.flatMap((s, k) => Array.from({ length: n }, (_, i) => s.gate(input, { requestId: `r-${k}-${i}`, now })));
  const results = await Promise.allSettled(calls);
  return results.map((r) => {
    if (r.status === 'fulfilled') throw new Error(`gate allowed without approval: ${r.value}`);
    expect(r.reason).toBeInstanceOf(AuthorizationPending);
    return (r.reason as AuthorizationPending).approvalId;
  });
}

for (const dialect of ['postgresql', 'sqlite'] as const) {
  describe(`approval requests under concurrency (${dialect})`, { timeout: 60_000 }, () => {
    let drop: () => Promise<void>;
    const databases: Database[] = [];

    beforeAll(async () => {
      const store = dialect === 'postgresql' ? await createTestPostgresDatabase('agsts_approval_race') : createTestSqliteUrl('agsts-approval-race');
      drop = store.drop;
      await applyMigrations(store.url);
      // PostgreSQL: two clients, as two replicas; SQLite: one process, one client.
      databases.push(await openDatabase(store.url));
      if (dialect === 'postgresql') databases.push(await openDatabase(store.url));
    });
    afterAll(async () => {
      for (const d of databases) await d.close();
      await drop?.();
    });

    it('creates one pending request for a burst of identical requests, and one more after it expired', async () => {
      const audits: AuditWrite[] = [];
      const notices: string[] = [];
      const services = databases.map((d) => replica(d, audits, notices));
      const t0 = new Date();
      const ids = await burst(services, 12, t0);
      const rows = await databases[0]!.db.policyApproval.findMany({ where: { target: 'payouts' } });
      expect(rows).toHaveLength(1);
      expect(rows[0]!.state).toBe('pending');
      expect(new Set(ids)).toEqual(new Set([rows[0]!.id]));
      expect(audits.filter((w) => w.event.action === 'approval.request')).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 50)); // notify is not awaited by gate()
      expect(notices).toEqual([rows[0]!.id]);

      // After the window: the first request is marked expired and exactly one new one is created.
      const later = new Date(t0.getTime() + 61_000);
      const next = await burst(services, 12, later);
      const after = await databases[0]!.db.policyApproval.findMany({ where: { target: 'payouts' }, orderBy: { createdAt: 'asc' } });
      expect(after.map((r) => r.state)).toEqual(['expired', 'pending']);
      expect(new Set(next)).toEqual(new Set([after[1]!.id]));
      expect(after[1]!.id).not.toBe(after[0]!.id);
      expect(audits.filter((w) => w.event.action === 'approval.request')).toHaveLength(2);
    });
  });
}
