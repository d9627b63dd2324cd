import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { InventoryStore } from './inventory-store.js';
import { createInventoryView, type ExchangeSeen } from './inventory-view.js';

const logger = pino({ level: 'silent' });
const clock = { now: () => new Date('2026-11-25T12:00:00Z') };

/** A store in memory: history per subject, and a switch to make it fail. */
function fakeStore(history: Record<string, { networks: string[]; targets: string[] }> = {}) {
  const s = { down: false, historyCalls: [] as string[], written: 0 };
  const check = () => {
    if (s.down) throw new Error('store unreachable');
  };
  const store: InventoryStore = {
    writeIdentities: async (d) => (check(), (s.written += d.length), new Set()),
    writeUses: async () => (check(), new Set()),
    historyPage: async (after) => {
      check();
      if (after) return { identities: [], uses: [] };
      const ids = Object.entries(history).map(([subject, h]) => ({ kind: 'workload', subject, networks: h.networks }));
      return { identities: ids, uses: Object.entries(history).flatMap(([subject, h]) => h.targets.map((target) => ({ subject, target }))) };
    },
    historyOf: async (_kind, subject) => (check(), s.historyCalls.push(subject), history[subject] ?? { networks: [], targets: [] }),
    changesSince: async () => (check(), { identities: [], uses: [], complete: true }),
  };
  return { store, state: s };
}

const seen = (subject: string, o: Partial<ExchangeSeen> = {}): ExchangeSeen => ({
  workload: { kind: 'workload', subject, provider: 'ci', details: {} },
  at: clock.now(),
  outcome: 'allow',
  ...o,
});

const view = (store: InventoryStore, maxIdentities = 1000) =>
  createInventoryView({ store, clock, logger, maxIdentities, flushIntervalMs: 5000, signals: { denialBurst: { threshold: 5, windowMs: 60_000 } } });

describe('inventory view', () => {
  it('retries a start that failed at the next flush; history signals stay off until then', async () => {
    const { store, state } = fakeStore({ 'test://bot': { networks: ['10.0.0.0/24'], targets: ['api'] } });
    state.down = true;
    const v = view(store);
    await expect(v.start()).rejects.toThrow('store unreachable');
    expect(v.observe(seen('test://bot', { target: 'other', clientAddress: '192.168.0.1' }))).toEqual([]);
    state.down = false;
    await v.flush();
    await expect.poll(() => v.stats().warmed).toBe(true);
    expect(v.observe(seen('test://bot', { target: 'api', clientAddress: '10.0.0.5' }))).toEqual([]);
    expect(v.observe(seen('test://bot', { target: 'third', clientAddress: '172.16.0.1' }))).toEqual(['first_use_of_target', 'new_network']);
  });

  it('keeps what it saw while the store is down and writes it once the store is back', async () => {
    const { store, state } = fakeStore();
    const v = view(store);
    await v.start();
    v.observe(seen('test://a'));
    state.down = true;
    await expect(v.flush()).rejects.toThrow('store unreachable');
    expect(v.stats().pendingIdentities).toBe(1);
    state.down = false;
    await v.flush();
    expect(state.written).toBe(1);
    expect(v.stats().pendingIdentities).toBe(0);
  });

  it('evicts the least recently seen identities beyond its bound, then loads an evicted one\'s history when it comes back', async () => {
    const { store, state } = fakeStore({ 'test://0': { networks: ['10.0.0.0/24'], targets: ['api'] } });
    const v = view(store, 3);
    await v.start();
    expect(v.stats()).toMatchObject({ complete: true });
    for (let i = 1; i <= 4; i++) v.observe(seen(`test://${i}`));
    await v.flush();
    v.observe(seen('test://5'));
    expect(v.stats()).toMatchObject({ identities: 3, complete: false });
    // test://0 was evicted: its stored history is loaded in the background, and no false first use meanwhile.
    expect(v.observe(seen('test://0', { target: 'api' }))).toEqual([]);
    expect(state.historyCalls).toContain('test://0');
    await new Promise((r) => setTimeout(r, 10));
    expect(v.observe(seen('test://0', { target: 'api' }))).toEqual([]);
    expect(v.observe(seen('test://0', { target: 'new-one' }))).toEqual(['first_use_of_target']);
  });
});
