import { performance } from 'node:perf_hooks';
import type { Worker } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import { startModuleWorker } from '../lib/worker-thread.js';
import { atEndOfTurn } from '../lib/end-of-turn.js';
import type { Logger } from '../log/logger.js';
import type { SignRequest, SignResult } from './signing-worker.js';

/**
 * An ES256 signature is ~25-35 µs of CPU, a third of the event loop's work per exchange
 * (bench/README.md). When the event loop is the bottleneck (a slower CPU, or one shared with
 * other work), the signatures of an event-loop turn go to a helper thread as one message and come
 * back as one; the event loop answers other requests meanwhile. Otherwise signing in place at the
 * end of the turn (key-store.ts), while the writer thread commits the turn's records, is faster:
 * no hand-off, one thread fewer wanting a core (fifteenth session: +4-16 % throughput, p99 1-2 ms
 * lower at an event loop ~0.92 busy). So in `auto` mode signatures move to the thread only while
 * the event loop is saturated, busy more than ON_ABOVE of the time (in ON_AFTER samples in a row:
 * one busy window, such as start-up or a burst, is not load), and come back once it is busy less
 * than OFF_BELOW (hysteresis: with the thread signing, the same load keeps the event loop ~30 %
 * less busy).
 *
 * Nothing is ever lost to the thread: if it fails or exits, the signatures it owed (and all later
 * ones) are made in place, and the failure is logged once.
 */
export type SigningThreadMode = 'auto' | 'on' | 'off';

const ON_ABOVE = 0.98;
const ON_AFTER = 2;
const OFF_BELOW = 0.6;
const SAMPLE_MS = 250;

export interface SigningThreadOptions {
  mode: SigningThreadMode;
  logger: Logger;
  /** The in-place signature (same result as the thread's): the fallback. */
  signInPlace: (key: KeyObject, input: string) => string;
  /** Event-loop utilization since the last call, 0..1 (tests inject one). Default: perf_hooks. */
  utilization?: () => number;
  /** Starts the thread (tests give one that fails). Default: signing-worker.ts. */
  startWorker?: () => Worker;
}

export interface SigningThread {
  /** The signature of `input` from the thread, or undefined: sign it in place. */
  offer(kid: string, key: KeyObject, input: string): Promise<string> | undefined;
  /** Whether signatures go to the thread now. */
  active(): boolean;
  /** Re-reads the event loop's load (auto mode; runs by itself every 250 ms). */
  sample(): void;
  close(): Promise<void>;
}

interface Job {
  key: KeyObject;
  input: string;
  resolve: (sig: string) => void;
  reject: (e: unknown) => void;
}

function defaultUtilization(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    return u;
  };
}

export function createSigningThread(opts: SigningThreadOptions): SigningThread {
  const utilization = opts.utilization ?? defaultUtilization();
  let offloading = opts.mode === 'on';
  let broken = opts.mode === 'off';
  let worker: Worker | undefined;
  const sentKeys = new Set<string>();
  const pending = new Map<number, Job>();
  let nextId = 0;
  let queue: [number, string, string][] = [];
  let newKeys: [string, KeyObject][] = [];
  let scheduled = false;

  const sampler = opts.mode === 'auto' ? setInterval(() => sample(), SAMPLE_MS).unref() : undefined;

  let busySamples = 0;
  function sample(): void {
    if (opts.mode !== 'auto' || broken) return;
    const u = utilization();
    busySamples = u > ON_ABOVE ? busySamples + 1 : 0;
    const next = offloading ? u > OFF_BELOW : busySamples >= ON_AFTER;
    if (next !== offloading) opts.logger.info({ eventLoopUtilization: Math.round(u * 100) / 100, signingThread: next }, next ? 'event loop busy: signing on the signing thread' : 'event loop has room: signing in place');
    offloading = next;
  }

  function settleInPlace(job: Job): void {
    try {
      job.resolve(opts.signInPlace(job.key, job.input));
    } catch (e) {
      job.reject(e);
    }
  }

  /** No more thread: everything it owed is signed here (never dropped: those requests are still answered), and so is everything after. */
  function stopOffloading(): void {
    broken = true;
    offloading = false;
    worker = undefined;
    const owed = [...pending.values()];
    pending.clear();
    queue = [];
    owed.forEach(settleInPlace);
  }

  function giveUp(reason: string): void {
    if (!broken) opts.logger.error({ reason }, 'signing thread failed: signing on the event loop from now on');
    stopOffloading();
  }

  function start(): Worker {
    const w = opts.startWorker?.() ?? startModuleWorker(import.meta.url, 'signing-worker', {});
    w.on('message', (results: SignResult[]) => {
      for (const r of results) {
        const job = pending.get(r[0]);
        if (!job) continue;
        pending.delete(r[0]);
        if (r[1] !== null) job.resolve(r[1]);
        else settleInPlace(job); // the same error in place, with its own message and stack
      }
      if (!pending.size) w.unref();
    });
    w.on('error', (e) => giveUp(e.message));
    w.on('exit', (code) => {
      if (worker === w) giveUp(`exited with code ${code}`);
    });
    w.unref();
    return w;
  }

  function flush(): void {
    scheduled = false;
    if (!worker || !queue.length) return;
    const msg: SignRequest = { jobs: queue };
    if (newKeys.length) msg.keys = newKeys;
    queue = [];
    newKeys = [];
    worker.ref(); // a thread with signatures owed keeps the process alive; an idle one does not
    worker.postMessage(msg);
  }

  return {
    offer(kid, key, input) {
      if (!offloading || broken) return undefined;
      worker ??= start();
      if (!sentKeys.has(kid)) {
        sentKeys.add(kid);
        newKeys.push([kid, key]);
      }
      const id = nextId++;
      queue.push([id, kid, input]);
      if (!scheduled) {
        scheduled = true;
        atEndOfTurn('handoff', flush); // the turn's signatures in one message
      }
      return new Promise<string>((resolve, reject) => pending.set(id, { key, input, resolve, reject }));
    },
    active: () => offloading && !broken,
    sample,
    async close() {
      if (sampler) clearInterval(sampler);
      const w = worker;
      stopOffloading();
      if (w) await w.terminate();
    },
  };
}
