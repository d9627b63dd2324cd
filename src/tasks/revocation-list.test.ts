import { describe, expect, it } from 'vitest';
import type { Db } from '../storage/prisma-client.js';
import { createRevocationList } from './revocation-list.js';

/** A store with identity blocks only; `hold` keeps the next block read pending until released. */
function fakeDb(rows: { subject: string; kind: string; reason: string; blockedBy: string }[]) {
  let gate: Promise<void> | undefined;
  let release = () => {};
  const db = {
    credential: { findMany: async () => [] },
    task: { findMany: async () => [] },
    identityBlock: {
      findMany: async () => {
        const snapshot = rows.map((r) => ({ ...r }));
        if (gate) await gate;
        return snapshot;
      },
    },
  } as unknown as Db;
  return {
    db,
    rows,
    hold() {
      gate = new Promise((r) => (release = r));
    },
    release: () => {
      gate = undefined;
      release();
    },
  };
}

const clock = { now: () => new Date() };

describe('revocation list: identity blocks', () => {
  it('loads blocks from the store and matches subject and kind', async () => {
    const f = fakeDb([{ subject: 'test://rogue', kind: 'workload', reason: 'r', blockedBy: 'admin' }]);
    const list = createRevocationList({ db: f.db, clock });
    expect(list.blockOf('workload', 'test://rogue')).toBeUndefined();
    await list.refresh();
    expect(list.blockOf('workload', 'test://rogue')).toMatchObject({ reason: 'r', blockedBy: 'admin' });
    expect(list.blockOf('human', 'test://rogue')).toBeUndefined();
    expect(list.blockOf('workload', 'test://other')).toBeUndefined();
  });

  it('a block lifted in the store (another replica restored it) is lifted at the next poll', async () => {
    const f = fakeDb([{ subject: 's', kind: 'human', reason: 'r', blockedBy: 'a' }]);
    const list = createRevocationList({ db: f.db, clock });
    await list.refresh();
    expect(list.blockOf('human', 's')).toBeDefined();
    f.rows.length = 0;
    await list.refresh();
    expect(list.blockOf('human', 's')).toBeUndefined();
  });

  it('a poll that read the store before a local kill does not undo it', async () => {
    const f = fakeDb([]);
    const list = createRevocationList({ db: f.db, clock });
    f.hold();
    const polling = list.refresh();
    list.block({ subject: 'x', kind: 'workload', reason: 'r', blockedBy: 'a' });
    f.rows.push({ subject: 'x', kind: 'workload', reason: 'r', blockedBy: 'a' });
    f.release();
    await polling;
    expect(list.blockOf('workload', 'x')).toBeDefined();
    list.unblock('workload', 'x');
    expect(list.blockOf('workload', 'x')).toBeUndefined();
  });
});
