import { afterEach, describe, expect, it, vi } from 'vitest';
import { createInstanceReaper } from './instance-reaper.js';
import { createLogger } from '../log/logger.js';
import { systemClock } from '../lib/clock.js';

/** Tasks by id with their instance and state; endTask moves them to `ended`. */
function fakeStore(tasks: { id: string; instance: string; state: string }[]) {
  const ended: { id: string; reason: string; requestId: string }[] = [];
  const db = {
    task: {
      findMany: vi.fn(async (args: { where: { instance: string; state: string } }) =>
        tasks.filter((t) => t.instance === args.where.instance && t.state === args.where.state).map((t) => ({ id: t.id })),
      ),
    },
  };
  const endTask = vi.fn(async (id: string, reason: string, ctx: { requestId: string }) => {
    const t = tasks.find((x) => x.id === id)!;
    if (id === 'boom') throw new Error('database down');
    t.state = 'ended';
    ended.push({ id, reason, requestId: ctx.requestId });
    return { taskId: id, state: 'ended' as const, credentials: [], children: [] };
  });
  return { db, endTask, ended };
}

const logger = createLogger({ level: 'silent' });
afterEach(() => vi.useRealTimers());

describe('instance reaper', () => {
  it('on the sweep leader: ends every open task of the instance at once, with the reason, and no other', async () => {
    const s = fakeStore([
      { id: 't1', instance: 'k8s-pod:prod:a', state: 'open' },
      { id: 't2', instance: 'k8s-pod:prod:a', state: 'open' },
      { id: 't3', instance: 'k8s-pod:prod:a', state: 'ended' },
      { id: 't4', instance: 'k8s-pod:prod:b', state: 'open' },
    ]);
    const reaper = createInstanceReaper({ db: s.db as never, tasks: { endTask: s.endTask }, clock: systemClock, logger, isLeader: () => true, fallbackDelayMs: 60_000 });
    reaper.onInstanceGone('k8s-pod:prod:a', 'pod a deleted');
    await reaper.close();
    expect(s.ended.map((e) => [e.id, e.reason])).toEqual([['t1', 'pod a deleted'], ['t2', 'pod a deleted']]);
    expect(s.ended[0]!.requestId).toMatch(/^instance-gone-/);
  });

  it('elsewhere: waits the fallback delay, then ends only what is still open', async () => {
    vi.useFakeTimers();
    const tasks = [
      { id: 't1', instance: 'i', state: 'open' },
      { id: 't2', instance: 'i', state: 'open' },
    ];
    const s = fakeStore(tasks);
    const reaper = createInstanceReaper({ db: s.db as never, tasks: { endTask: s.endTask }, clock: systemClock, logger, isLeader: () => false, fallbackDelayMs: 10_000 });
    reaper.onInstanceGone('i', 'pod i deleted');
    await vi.advanceTimersByTimeAsync(9_000);
    expect(s.db.task.findMany).not.toHaveBeenCalled();
    tasks[0]!.state = 'ended'; // the leader ended this one meanwhile
    await vi.advanceTimersByTimeAsync(2_000);
    await reaper.close();
    expect(s.ended.map((e) => e.id)).toEqual(['t2']);
  });

  it('a task that cannot be ended does not stop the others; close() drops pending fallbacks', async () => {
    vi.useFakeTimers();
    const s = fakeStore([
      { id: 'boom', instance: 'i', state: 'open' },
      { id: 't2', instance: 'i', state: 'open' },
      { id: 't3', instance: 'j', state: 'open' },
    ]);
    let leader = true;
    const reaper = createInstanceReaper({ db: s.db as never, tasks: { endTask: s.endTask }, clock: systemClock, logger, isLeader: () => leader, fallbackDelayMs: 1_000 });
    reaper.onInstanceGone('i', 'pod i deleted');
    leader = false;
    reaper.onInstanceGone('j', 'pod j deleted');
    await reaper.close();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(s.ended.map((e) => e.id)).toEqual(['t2']);
    reaper.onInstanceGone('i', 'after close');
    expect(s.db.task.findMany).toHaveBeenCalledTimes(1);
  });
});
