import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import { detectSignals, newSignalState, type SignalSettings, type SignalState } from '../signals/signal-detector.js';
import type { Signal } from '../signals/signal-metrics.js';
import { networkOf } from '../signals/network-prefix.js';
import { identityKey, MAX_NETWORKS, mergeNetworks, useKey, type IdentityDelta, type InventoryStore, type UseDelta } from './inventory-store.js';

export type IdentityKind = 'workload' | 'human';

/** An identity as an exchange verified it. */
export interface SeenIdentity {
  kind: IdentityKind;
  subject: string;
  provider: string;
  /** Stored as JSON at the next flush: workloads `{providerType, attributes}`, people `{issuer, email, groups, roles}`. Never a token. */
  details: Readonly<Record<string, unknown>>;
  owner?: string;
}

/** One exchange whose presented identity was verified (allowed, denied or failed). */
export interface ExchangeSeen {
  workload: SeenIdentity;
  human?: SeenIdentity;
  at: Date;
  clientAddress?: string;
  outcome: 'allow' | 'deny' | 'error';
  /** The target of an allowed target credential (not an agent token). */
  target?: string;
}

interface Entry {
  key: string;
  kind: IdentityKind;
  subject: string;
  /** What this replica saw and has not written yet (undefined: nothing). */
  seen?: { identity: SeenIdentity; first: number; last: number };
  /** Bumped on every observation: a flush clears `seen` only when nothing came in meanwhile. */
  version: number;
  signals: SignalState;
  loading?: boolean;
}

interface UseEntry {
  subject: string;
  target: string;
  first: number;
  last: number;
  uses: number;
  scopes: Map<string, Date>;
  version: number;
}

export interface InventoryViewDeps {
  store: InventoryStore;
  clock: Clock;
  logger: Logger;
  signals: SignalSettings;
  maxIdentities: number;
  /** How often flush() runs (for how far back other replicas' writes are read). */
  flushIntervalMs: number;
}

const PAGE = 1000;

/**
 * One replica's in-memory inventory: what it saw since its last flush (written as coalesced,
 * merging upserts every flush interval and at shutdown, so the number of writes follows the
 * number of distinct identities, not the request rate) and the per-identity history the signals
 * need (networks, targets used, recent denials). The hot path (`observe`, `recordUse`) never
 * touches the database.
 *
 * History: `start()` loads every stored identity in the background (up to `maxIdentities`);
 * identities not loaded yet, or evicted later, load on their first exchange, in the background.
 * Until an identity's history is known its history signals (`first_use_of_target`,
 * `new_network`) stay quiet: the first exchanges after a start may miss one, never raise a false
 * one. Each flush also reads what other replicas wrote (identities and target uses since shortly
 * before the previous flush), so a target first used on another replica is known here within
 * about two flush intervals.
 */
export function createInventoryView(deps: InventoryViewDeps) {
  const entries = new Map<string, Entry>();
  const dirty = new Set<string>();
  const uses = new Map<string, UseEntry>();
  /** True when every stored identity is in `entries`: an unknown identity is then a new one. */
  let complete = false;
  let warmed = false;
  let lastPull: number | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let evicted = 0;

  function entryOf(kind: IdentityKind, subject: string): Entry {
    const key = identityKey(kind, subject);
    let e = entries.get(key);
    if (e) {
      // Most recently seen last: eviction takes the front.
      entries.delete(key);
      entries.set(key, e);
      return e;
    }
    e = { key, kind, subject, version: 0, signals: newSignalState(warmed && complete) };
    entries.set(key, e);
    if (!e.signals.historyKnown && warmed) loadHistory(e);
    evict();
    return e;
  }

  function evict(): void {
    if (entries.size <= deps.maxIdentities) return;
    for (const [key, e] of entries) {
      if (entries.size <= deps.maxIdentities) break;
      if (e.seen) continue;
      entries.delete(key);
      complete = false;
      evicted++;
    }
  }

  function loadHistory(e: Entry): void {
    if (e.loading) return;
    e.loading = true;
    deps.store
      .historyOf(e.kind, e.subject)
      .then((h) => absorb(e, h.networks, h.targets))
      .catch((err: unknown) => deps.logger.warn({ subject: e.subject, err: { message: (err as Error).message } }, 'inventory: could not load an identity history; its history signals stay off until it loads'))
      .finally(() => (e.loading = false));
  }

  function absorb(e: Entry, networks: readonly string[], targets: readonly string[]): void {
    const s = e.signals;
    s.networks = mergeNetworks(networks, s.networks).slice(-MAX_NETWORKS);
    for (const t of targets) s.targets.add(t);
    s.historyKnown = true;
  }

  function note(e: Entry, identity: SeenIdentity, at: number): void {
    e.version++;
    // A denied exchange names no owner: the owner an earlier one named stays.
    const latest = identity.owner === undefined && e.seen?.identity.owner !== undefined ? { ...identity, owner: e.seen.identity.owner } : identity;
    e.seen = e.seen ? { identity: latest, first: Math.min(e.seen.first, at), last: Math.max(e.seen.last, at) } : { identity, first: at, last: at };
    dirty.add(e.key);
  }

  /** Records an exchange and returns the signals it raises (synchronous). */
  function observe(x: ExchangeSeen): Signal[] {
    const at = x.at.getTime();
    const w = entryOf('workload', x.workload.subject);
    note(w, x.workload, at);
    if (x.human) note(entryOf('human', x.human.subject), x.human, at);
    return detectSignals(w.signals, { at, network: networkOf(x.clientAddress), outcome: x.outcome, target: x.target }, deps.signals, MAX_NETWORKS);
  }

  /** Counts an issued credential (call once its audit record is written). */
  function recordUse(subject: string, target: string, scopes: readonly string[], atDate: Date): void {
    const at = atDate.getTime();
    const key = useKey(subject, target);
    let u = uses.get(key);
    if (!u) uses.set(key, (u = { subject, target, first: at, last: at, uses: 0, scopes: new Map(), version: 0 }));
    u.version++;
    u.uses++;
    u.first = Math.min(u.first, at);
    u.last = Math.max(u.last, at);
    for (const s of scopes) if ((u.scopes.get(s)?.getTime() ?? -Infinity) < at) u.scopes.set(s, atDate);
  }

  async function doFlush(): Promise<{ identities: number; uses: number; failed: number }> {
    const idSnap = [...dirty].flatMap((key) => {
      const e = entries.get(key);
      if (!e?.seen) return (dirty.delete(key), []);
      const d: IdentityDelta = {
        kind: e.kind, subject: e.subject, providerName: e.seen.identity.provider, attributes: JSON.stringify(e.seen.identity.details), owner: e.seen.identity.owner,
        firstSeenAt: new Date(e.seen.first), lastSeenAt: new Date(e.seen.last), networks: e.signals.networks,
      };
      return [{ key, e, version: e.version, d }];
    });
    const useSnap = [...uses.entries()].map(([key, u]) => ({
      key, u, version: u.version, count: u.uses,
      d: { subject: u.subject, target: u.target, firstUsedAt: new Date(u.first), lastUsedAt: new Date(u.last), uses: u.uses, scopes: new Map(u.scopes) } satisfies UseDelta,
    }));
    let failed = 0;
    if (idSnap.length) {
      const notWritten = await deps.store.writeIdentities(idSnap.map((x) => x.d));
      for (const x of idSnap) {
        if (notWritten.has(x.key)) continue;
        if (x.e.version === x.version) {
          x.e.seen = undefined;
          dirty.delete(x.key);
        }
      }
      failed += notWritten.size;
    }
    if (useSnap.length) {
      const notWritten = await deps.store.writeUses(useSnap.map((x) => x.d));
      for (const x of useSnap) {
        if (notWritten.has(x.key)) continue;
        // Uses counted during the flush stay for the next one.
        if (x.u.version === x.version) uses.delete(x.key);
        else x.u.uses -= x.count;
      }
      failed += notWritten.size;
    }
    if (failed) deps.logger.warn({ failed }, 'inventory: some rows changed under every retry; they are written at the next flush');
    await pullOthers();
    // A start that failed (store unreachable) is tried again: until then history signals stay off.
    if (!warmed && !starting) begin().catch(() => undefined);
    return { identities: idSnap.length, uses: useSnap.length, failed };
  }

  /** Keeps this view in step with what other replicas wrote (only for signals; counts stay per replica). */
  async function pullOthers(): Promise<void> {
    if (!warmed) return;
    const now = deps.clock.now().getTime();
    const since = new Date((lastPull ?? now) - 2 * deps.flushIntervalMs - 60_000);
    lastPull = now;
    const c = await deps.store.changesSince(since, PAGE * 10);
    if (!c.complete) complete = false;
    for (const i of c.identities) known(i.kind, i.subject, i.networks, []);
    for (const u of c.uses) known('workload', u.subject, [], [u.target]);
  }

  function known(kind: string, subject: string, networks: readonly string[], targets: readonly string[]): void {
    if (kind !== 'workload' && kind !== 'human') return;
    const key = identityKey(kind, subject);
    const e = entries.get(key);
    if (e) return absorb(e, networks, targets);
    if (entries.size >= deps.maxIdentities) {
      complete = false;
      return;
    }
    const fresh: Entry = { key, kind, subject, version: 0, signals: newSignalState(true) };
    absorb(fresh, networks, targets);
    entries.set(key, fresh);
  }

  let starting: Promise<void> | undefined;
  function begin(): Promise<void> {
    starting ??= load()
      .catch((e: unknown) => {
        deps.logger.error({ err: { message: (e as Error).message } }, 'inventory view not loaded (retried at the next flush); history signals stay off meanwhile');
        throw e;
      })
      .finally(() => (starting = undefined));
    return starting;
  }

  /** Loads the stored history of every identity (paged); exchanges are served meanwhile. */
  async function load(): Promise<void> {
    let after: { kind: string; subject: string } | undefined;
    let loaded = 0;
    let all = true;
    for (;;) {
      const page = await deps.store.historyPage(after, PAGE);
      const targets = new Map<string, string[]>();
      for (const u of page.uses) (targets.get(u.subject) ?? targets.set(u.subject, []).get(u.subject)!).push(u.target);
      for (const i of page.identities) {
        if (loaded >= deps.maxIdentities) {
          all = false;
          break;
        }
        const e = entries.get(identityKey(i.kind, i.subject));
        if (e) absorb(e, i.networks, targets.get(i.subject) ?? []);
        else known(i.kind, i.subject, i.networks, i.kind === 'workload' ? (targets.get(i.subject) ?? []) : []);
        loaded++;
      }
      if (!all || page.identities.length < PAGE) break;
      const last = page.identities[page.identities.length - 1]!;
      after = { kind: last.kind, subject: last.subject };
    }
    complete = all && evicted === 0;
    warmed = true;
    lastPull = deps.clock.now().getTime();
    // Identities that came while loading and are not stored: new (complete) or load them one by one.
    for (const e of entries.values()) {
      if (e.signals.historyKnown) continue;
      if (complete) e.signals.historyKnown = true;
      else loadHistory(e);
    }
    deps.logger.info({ identities: loaded, complete }, 'inventory view loaded');
  }

  return {
    observe,
    recordUse,
    /** Loads the stored history in the background; rejects (logged) when the store cannot be read, and is retried at each flush. */
    start: begin,
    /** Writes what was seen since the last flush; calls run one after another. */
    flush(): Promise<{ identities: number; uses: number; failed: number }> {
      const run = chain.then(doFlush);
      chain = run.catch(() => undefined);
      return run;
    },
    stats: () => ({ identities: entries.size, pendingIdentities: dirty.size, pendingUses: uses.size, complete, warmed }),
  };
}
export type InventoryView = ReturnType<typeof createInventoryView>;
