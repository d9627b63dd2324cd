import { hostname } from 'node:os';
import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import { randomLowerId } from '../lib/crypto.js';

/** Name of the lease whose holder runs the sweep and start-up recovery. */
export const SWEEP_LEASE = 'sweep';
/** Prefix of the per-process liveness leases (`replica:<holder>`). */
const REPLICA_PREFIX = 'replica:';

/** A holder id that names the process and when it started: `<host>:<pid>:<start ms, base 36>:<random>`. */
export function newHolderId(clock: Clock): string {
  return `${hostname().replace(/:/g, '_').slice(0, 60)}:${process.pid}:${clock.now().getTime().toString(36)}:${randomLowerId(6)}`;
}

/** When the process behind a holder id started (undefined for ids of another shape). */
export function holderStartedAt(holder: string): Date | undefined {
  const ms = parseInt(holder.split(':').at(-2) ?? '', 36);
  return Number.isFinite(ms) ? new Date(ms) : undefined;
}

export interface LeaseDeps {
  db: Db;
  clock: Clock;
  logger: Logger;
  holder: string;
  /** How long a lease lasts without renewal; renew at least every ttlMs / 3. */
  ttlMs: number;
  /**
   * Told when this process starts or stops running the sweep (the server audits it, so auditors see
   * which replica ran recovery and revocations when). Awaited; a failure is logged, never thrown.
   */
  onLeadershipChange?(change: { leader: boolean; holder: string; at: Date; why: string }): Promise<unknown>;
}

/**
 * Leadership through the `Lease` table rather than a PostgreSQL advisory lock: the same conditional
 * update works on SQLite and PostgreSQL (also several processes on one SQLite file), needs no
 * dedicated session (advisory session locks break behind a transaction-mode pooler such as
 * PgBouncer), and the holder is visible in the table. The price: after a holder dies, another
 * takes over only once its lease expired (ttlMs), and replicas' clocks must agree to well within
 * ttlMs (they already must for token expiry).
 */
export function createLeadership(deps: LeaseDeps) {
  let heldUntil = 0;
  /** Whether this process last reported itself as the sweep leader (changes are logged and recorded once). */
  let announced = false;

  /** Acquires `name` if free or expired, renews it if ours; true when we hold it afterwards. */
  async function acquire(name: string): Promise<boolean> {
    const now = deps.clock.now();
    const expiresAt = new Date(now.getTime() + deps.ttlMs);
    // One statement, so two contenders for an expired lease cannot both win (the second one's
    // WHERE is re-checked against the first one's row).
    const r = await deps.db.lease.updateMany({ where: { name, OR: [{ holder: deps.holder }, { expiresAt: { lt: now } }] }, data: { holder: deps.holder, expiresAt } });
    if (r.count === 1) return true;
    try {
      await deps.db.lease.create({ data: { name, holder: deps.holder, expiresAt } });
      return true;
    } catch {
      return false; // someone else holds it (the row exists and is live)
    }
  }

  /**
   * One heartbeat: renews this process's liveness lease and acquires or renews the sweep lease.
   * Returns whether this process is the sweep leader now; logs changes of leadership.
   */
  async function heartbeat(): Promise<boolean> {
    const started = deps.clock.now().getTime();
    await acquire(`${REPLICA_PREFIX}${deps.holder}`);
    const ok = await acquire(SWEEP_LEASE).catch((e: unknown) => {
      deps.logger.warn({ err: { message: (e as Error).message } }, 'could not renew the sweep lease');
      return false;
    });
    // Count from before the round trip, so a slow write cannot make us believe in a lease that already lapsed.
    heldUntil = ok ? started + deps.ttlMs : 0;
    // Reported by what the store says, not by our clock: a heartbeat that came late (a busy event
    // loop) may find our lease lapsed by our clock yet renew it, nobody having taken it meanwhile.
    if (ok !== announced) {
      announced = ok;
      deps.logger.info({ holder: deps.holder }, ok ? 'this replica now runs the sweep' : 'this replica no longer runs the sweep');
      await changed(ok, ok ? `until ${new Date(heldUntil).toISOString()} unless renewed` : 'its lease could not be renewed (another replica holds it, or the store did not answer)');
    }
    return ok;
  }

  async function changed(leader: boolean, why: string): Promise<void> {
    await deps.onLeadershipChange?.({ leader, holder: deps.holder, at: deps.clock.now(), why }).catch((e: unknown) =>
      deps.logger.warn({ holder: deps.holder, leader, err: { message: (e as Error).message } }, 'could not record a change of sweep leadership'),
    );
  }

  /** Whether our lease is still valid by our own clock (checked between sweep steps). */
  function isLeader(): boolean {
    return heldUntil > deps.clock.now().getTime();
  }

  /**
   * The start time of the oldest process still alive (own included). A credential left `issuing`
   * before that instant cannot be in flight anywhere: its process died.
   */
  async function oldestLiveStart(): Promise<Date> {
    const now = deps.clock.now();
    const live = await deps.db.lease.findMany({ where: { name: { startsWith: REPLICA_PREFIX }, expiresAt: { gte: now } }, select: { holder: true } });
    let oldest = holderStartedAt(deps.holder) ?? now;
    for (const l of live) {
      const s = holderStartedAt(l.holder);
      // An id we cannot read: assume it started long ago (be conservative).
      if (!s) return new Date(0);
      if (s < oldest) oldest = s;
    }
    return oldest;
  }

  /** Forgets liveness leases of processes that died more than a day ago. */
  async function purgeDead(): Promise<number> {
    const r = await deps.db.lease.deleteMany({ where: { name: { startsWith: REPLICA_PREFIX }, expiresAt: { lt: new Date(deps.clock.now().getTime() - 86_400_000) } } });
    return r.count;
  }

  /** On orderly shutdown: hands the sweep over at once instead of after expiry. */
  async function release(): Promise<void> {
    heldUntil = 0;
    if (announced) {
      announced = false;
      await changed(false, 'released at shutdown');
    }
    const past = new Date(deps.clock.now().getTime() - 1);
    await deps.db.lease.updateMany({ where: { name: { in: [SWEEP_LEASE, `${REPLICA_PREFIX}${deps.holder}`] }, holder: deps.holder }, data: { expiresAt: past } });
  }

  return { holder: deps.holder, acquire, heartbeat, isLeader, oldestLiveStart, purgeDead, release };
}
export type Leadership = ReturnType<typeof createLeadership>;
