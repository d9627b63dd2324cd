// The inventory view and store against real SQLite and PostgreSQL: replicas flushing the same rows
// at once merge (uses added, earliest first-seen, latest last-seen), writes follow identities and
// not requests, and a restarted or second replica knows the stored history for its signals.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { createInventoryStore, type InventoryStore } from '../../src/inventory/inventory-store.js';
import { createInventoryView, type ExchangeSeen } from '../../src/inventory/inventory-view.js';
import { systemClock } from '../../src/lib/clock.js';
import type { Db } from '../../src/storage/prisma-client.js';
import { createTestPostgresDatabase, createTestSqliteUrl, useMigratedDatabase } from '../support/databases.js';

const logger = pino({ level: 'silent' });

function countingStore(db: Db) {
  const store = createInventoryStore(db);
  const calls = { identityRows: 0, useRows: 0, flushes: 0 };
  const counted: InventoryStore = {
    ...store,
    writeIdentities: (d) => ((calls.identityRows += d.length), calls.flushes++, store.writeIdentities(d)),
    writeUses: (d) => ((calls.useRows += d.length), store.writeUses(d)),
  };
  return { store: counted, calls };
}

function replica(db: Db) {
  const { store, calls } = countingStore(db);
  const view = createInventoryView({ store, clock: systemClock, logger, maxIdentities: 1000, flushIntervalMs: 1000, signals: { denialBurst: { threshold: 5, windowMs: 60_000 } } });
  return { view, calls };
}

const seen = (subject: string, at: Date, o: Partial<ExchangeSeen> = {}): ExchangeSeen => ({
  workload: { kind: 'workload', subject, provider: 'ci', details: { providerType: 'oidc', attributes: {} } },
  at,
  outcome: 'allow',
  ...o,
});

describe.each([
  ['sqlite', () => createTestSqliteUrl('agsts-inventory')],
  ['postgresql', () => createTestPostgresDatabase('agsts_inventory')],
] as const)('inventory store on %s', (_name, create) => {
  const database = useMigratedDatabase(create);
  const now = Date.now();
  const at = (s: number) => new Date(now + s * 1000);

  it('merges two replicas flushing the same identity and target at once', async () => {
    const db = database().db;
    const a = replica(db);
    const b = replica(db);
    await Promise.all([a.view.start(), b.view.start()]);
    a.view.observe(seen('test://bot', at(-10), { clientAddress: '10.0.1.5', target: 'api' }));
    for (let i = 0; i < 3; i++) a.view.recordUse('test://bot', 'api', ['read'], at(-10 + i));
    b.view.observe(seen('test://bot', at(-30), { clientAddress: '10.0.2.5', target: 'api' }));
    b.view.observe(seen('test://bot', at(-5), { clientAddress: '10.0.2.6', human: { kind: 'human', subject: 'alice', provider: 'idp', details: { groups: ['sre'] } } }));
    for (let i = 0; i < 2; i++) b.view.recordUse('test://bot', 'api', ['write'], at(-20 + i));
    await Promise.all([a.view.flush(), b.view.flush()]);

    const row = await db.identity.findUnique({ where: { kind_subject: { kind: 'workload', subject: 'test://bot' } } });
    expect(row).toMatchObject({ firstSeenAt: at(-30), lastSeenAt: at(-5), providerName: 'ci' });
    expect(JSON.parse(row!.networks).sort()).toEqual(['10.0.1.0/24', '10.0.2.0/24']);
    const use = await db.identityTargetUse.findUnique({ where: { subject_target: { subject: 'test://bot', target: 'api' } } });
    expect(use).toMatchObject({ uses: 5, firstUsedAt: at(-20), lastUsedAt: at(-8) });
    expect(JSON.parse(use!.scopes)).toEqual([{ scope: 'read', lastUsedAt: at(-8).toISOString() }, { scope: 'write', lastUsedAt: at(-19).toISOString() }]);
    expect(await db.identity.findUnique({ where: { kind_subject: { kind: 'human', subject: 'alice' } } })).toMatchObject({ providerName: 'idp', attributes: '{"groups":["sre"]}' });

    // A second round adds to what is stored, it does not overwrite it.
    a.view.recordUse('test://bot', 'api', ['read'], at(-1));
    await a.view.flush();
    expect((await db.identityTargetUse.findUnique({ where: { subject_target: { subject: 'test://bot', target: 'api' } } }))!.uses).toBe(6);
  });

  it('writes one row per identity and target per flush, whatever the number of exchanges', async () => {
    const db = database().db;
    const r = replica(db);
    await r.view.start();
    for (let i = 0; i < 2000; i++) {
      const subject = `test://busy-${i % 3}`;
      r.view.observe(seen(subject, at(-100 + i / 100), { target: 'api' }));
      r.view.recordUse(subject, 'api', ['read'], at(-100 + i / 100));
    }
    await r.view.flush();
    expect(r.calls).toMatchObject({ identityRows: 3, useRows: 3 });
    const uses = await db.identityTargetUse.findMany({ where: { subject: { startsWith: 'test://busy-' } } });
    expect(uses.reduce((n, u) => n + u.uses, 0)).toBe(2000);
    // Nothing new: the next flush writes nothing.
    await r.view.flush();
    expect(r.calls).toMatchObject({ identityRows: 3, useRows: 3 });
  });

  it('a restarted replica knows the stored history: no first use of a target used before, a new network is new', async () => {
    const db = database().db;
    const c = replica(db);
    await c.view.start();
    expect(c.view.observe(seen('test://bot', at(0), { target: 'api', clientAddress: '10.0.1.77' }))).toEqual([]);
    expect(c.view.observe(seen('test://bot', at(1), { target: 'other' }))).toEqual(['first_use_of_target']);
    expect(c.view.observe(seen('test://bot', at(2), { clientAddress: '192.168.7.1' }))).toEqual(['new_network']);
  });

  it('raises no history signal before the stored history is loaded, and knows it once loaded', async () => {
    const db = database().db;
    const d = replica(db);
    // Not started: the history of test://bot is unknown here.
    expect(d.view.observe(seen('test://bot', at(0), { target: 'never-used', clientAddress: '172.16.0.1' }))).toEqual([]);
    await d.view.start();
    expect(d.view.observe(seen('test://bot', at(1), { target: 'other-new' }))).toEqual(['first_use_of_target']);
  });

  it('learns at its next flush what another replica wrote since', async () => {
    const db = database().db;
    const a = replica(db);
    const b = replica(db);
    await Promise.all([a.view.start(), b.view.start()]);
    expect(a.view.observe(seen('test://roamer', at(0), { target: 'shared', clientAddress: '10.5.5.5' }))).toEqual(['first_use_of_target']);
    a.view.recordUse('test://roamer', 'shared', [], at(0));
    await a.view.flush();
    await b.view.flush();
    expect(b.view.observe(seen('test://roamer', at(1), { target: 'shared', clientAddress: '10.5.5.6' }))).toEqual([]);
    expect(b.view.observe(seen('test://roamer', at(2), { clientAddress: '10.6.6.6' }))).toEqual(['new_network']);
  });
});
