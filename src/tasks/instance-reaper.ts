import { randomLowerId } from '../lib/crypto.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../log/logger.js';
import type { Db } from '../storage/prisma-client.js';
import type { TaskService } from './task-service.js';
import type { InstanceListScope } from '../trust-providers/trust-provider.js';

export interface InstanceReaperDeps {
  db: { task: Pick<Db['task'], 'findMany'> };
  tasks: Pick<TaskService, 'endTask'>;
  clock: Clock;
  logger: Logger;
  /** Whether this replica holds the sweep lease. */
  isLeader: () => boolean;
  /** How long another replica waits before it ends what the leader should have ended. */
  fallbackDelayMs: number;
}

/** At most this many tasks of one instance are ended per report (a pod runs a handful). */
const MAX_TASKS = 1000;

/**
 * Ends the open tasks of a running instance reported gone (a deleted pod): each through
 * TaskService.endTask, so every credential is revoked at its target and the end is audited.
 *
 * Every replica's providers see the same report. The sweep leader acts at once; the others only
 * after `fallbackDelayMs`, and then only on tasks still open — which covers a report that reached
 * no leader (leadership changing hands, the leader's watch reconnecting) without having every
 * replica race on the same task end, which would audit it twice.
 */
export function createInstanceReaper(deps: InstanceReaperDeps) {
  const inFlight = new Set<Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  async function endOpenTasks(instance: string, reason: string): Promise<void> {
    const open = await deps.db.task.findMany({ where: { instance, state: 'open' }, select: { id: true }, orderBy: { createdAt: 'asc' }, take: MAX_TASKS });
    const ctx = { requestId: `instance-gone-${randomLowerId(12)}`, now: deps.clock.now() };
    let ended = 0;
    for (const t of open) {
      try {
        // A sub-agent's task may already have ended with its parent: endTask is then a no-op.
        const r = await deps.tasks.endTask(t.id, reason, ctx);
        if (r) ended++;
      } catch (e) {
        deps.logger.error({ instance, taskId: t.id, err: { message: (e as Error).message } }, 'could not end a task of a gone instance; its deadline still ends it');
      }
    }
    if (open.length) deps.logger.info({ instance, reason, tasks: open.length, ended, requestId: ctx.requestId }, 'ended the tasks of a gone workload instance');
  }

  function track(p: Promise<void>) {
    const q = p.catch((e: unknown) => deps.logger.error({ err: { message: (e as Error).message } }, 'could not end the tasks of a gone instance'));
    inFlight.add(q);
    void q.finally(() => inFlight.delete(q));
  }

  /**
   * Open tasks opened before `asOf` whose instance has `prefix` (and, with a scope, whose workload
   * subject has its prefix) but is not in `present`: their instance is gone.
   */
  async function endMissing(prefix: string, present: ReadonlySet<string>, asOf: Date, reason: (instance: string) => string, scope: InstanceListScope = {}): Promise<void> {
    const open = await deps.db.task.findMany({
      where: {
        instance: { startsWith: prefix }, state: 'open', createdAt: { lt: asOf },
        ...(scope.subjectPrefix !== undefined ? { workloadSubject: { startsWith: scope.subjectPrefix } } : {}),
      },
      select: { instance: true },
      distinct: ['instance'],
      take: MAX_TASKS,
    });
    const gone = [...new Set(open.map((t) => t.instance).filter((i): i is string => !!i && !present.has(i)))];
    if (gone.length) deps.logger.info({ prefix, ...scope, instances: gone.length }, 'workload instances gone while no replica watched: ending their tasks');
    for (const instance of gone) await endOpenTasks(instance, reason(instance));
  }

  /** The leader at once; another replica after the fallback delay (then only on tasks still open). */
  function schedule(work: () => Promise<void>): void {
    if (closed) return;
    if (deps.isLeader()) return track(work());
    const t = setTimeout(() => {
      timers.delete(t);
      if (!closed) track(work());
    }, deps.fallbackDelayMs);
    t.unref();
    timers.add(t);
  }

  return {
    /** ProviderDeps.onInstanceGone. Never throws. */
    onInstanceGone(instance: string, reason: string): void {
      schedule(() => endOpenTasks(instance, reason));
    },
    /** ProviderDeps.onInstancesListed. Never throws. */
    onInstancesListed(prefix: string, present: ReadonlySet<string>, asOf: Date, reason: (instance: string) => string, scope?: InstanceListScope): void {
      schedule(() => endMissing(prefix, present, asOf, reason, scope));
    },
    /** Drops pending fallbacks and waits for task ends under way. */
    async close(): Promise<void> {
      closed = true;
      timers.forEach(clearTimeout);
      timers.clear();
      await Promise.all([...inFlight]);
    },
  };
}
export type InstanceReaper = ReturnType<typeof createInstanceReaper>;
