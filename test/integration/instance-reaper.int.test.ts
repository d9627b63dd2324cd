// The instance reaper's reconciliation against a complete list of running instances (a pod list
// taken when a watch starts), on both stores: only open tasks of the provider's instances, opened
// before the list, whose instance is not in it, are ended; one endTask per task, with the reason.
import { describe, expect, it } from 'vitest';
import { createInstanceReaper } from '../../src/tasks/instance-reaper.js';
import { createLogger } from '../../src/log/logger.js';
import { systemClock } from '../../src/lib/clock.js';
import { createTestPostgresDatabase, createTestSqliteUrl, useMigratedDatabase } from '../support/databases.js';

const stores = [
  { name: 'sqlite', create: async () => createTestSqliteUrl('agsts-reaper') },
  { name: 'postgresql', create: () => createTestPostgresDatabase('agsts_reaper') },
];

describe.each(stores)('instance reaper reconciliation on $name', ({ create }) => {
  const db = useMigratedDatabase(create);

  it('ends the open tasks, opened before the list, of instances missing from it, and nothing else', async () => {
    const { db: prisma } = db();
    const asOf = new Date('2031-01-01T12:00:00Z');
    const before = new Date(asOf.getTime() - 60_000);
    const after = new Date(asOf.getTime() + 1_000);
    const task = (id: string, instance: string | null, createdAt: Date, state = 'open') =>
      prisma.task.create({ data: { id, state, providerName: 'prod', workloadSubject: 'w', deadline: new Date(asOf.getTime() + 3_600_000), createdAt, instance } });
    await task('gone-1', 'k8s-pod:prod:gone', before);
    await task('gone-2', 'k8s-pod:prod:gone', before);
    await task('gone-ended', 'k8s-pod:prod:gone', before, 'ended');
    await task('running', 'k8s-pod:prod:running', before);
    await task('new-pod', 'k8s-pod:prod:new', after); // its pod started after the list began
    await task('other-cluster', 'k8s-pod:staging:gone', before); // another provider's instance
    await task('like-prefix', 'k8s-pod:prod_x:gone', before); // `_` is no wildcard
    await task('no-instance', null, before);

    const ended: [string, string][] = [];
    const reaper = createInstanceReaper({
      db: prisma,
      tasks: {
        endTask: async (id, reason) => {
          ended.push([id, reason]);
          await prisma.task.update({ where: { id }, data: { state: 'ended' } });
          return { taskId: id, state: 'ended', credentials: [], children: [] };
        },
      },
      clock: systemClock,
      logger: createLogger({ level: 'silent' }),
      isLeader: () => true,
      fallbackDelayMs: 60_000,
    });
    reaper.onInstancesListed('k8s-pod:prod:', new Set(['k8s-pod:prod:running']), asOf, (i) => `gone: ${i}`);
    await reaper.close();
    expect(ended.sort()).toEqual([
      ['gone-1', 'gone: k8s-pod:prod:gone'],
      ['gone-2', 'gone: k8s-pod:prod:gone'],
    ]);
    const open = await prisma.task.findMany({ where: { state: 'open' }, select: { id: true }, orderBy: { id: 'asc' } });
    expect(open.map((t) => t.id)).toEqual(['like-prefix', 'new-pod', 'no-instance', 'other-cluster', 'running']);
  });

  it('a list scoped to a subject prefix (one namespace) compares only the tasks of those subjects', async () => {
    const { db: prisma } = db();
    const asOf = new Date('2031-01-01T12:00:00Z');
    const before = new Date(asOf.getTime() - 60_000);
    const task = (id: string, subject: string, instance: string) =>
      prisma.task.create({ data: { id, state: 'open', providerName: 'prod', workloadSubject: subject, deadline: new Date(asOf.getTime() + 3_600_000), createdAt: before, instance } });
    await task('ns-gone', 'k8s://prod/ns/agents/sa/planner', 'k8s-pod:prod:p1');
    await task('ns-running', 'k8s://prod/ns/agents/sa/planner', 'k8s-pod:prod:p2');
    await task('unwatched-ns', 'k8s://prod/ns/other/sa/planner', 'k8s-pod:prod:p3'); // not in this list, not gone
    await task('like-ns', 'k8s://prod/ns/agents-2/sa/x', 'k8s-pod:prod:p4'); // another namespace with the same start
    const ended: string[] = [];
    const reaper = createInstanceReaper({
      db: prisma,
      tasks: { endTask: async (id) => (ended.push(id), { taskId: id, state: 'ended', credentials: [], children: [] }) },
      clock: systemClock,
      logger: createLogger({ level: 'silent' }),
      isLeader: () => true,
      fallbackDelayMs: 60_000,
    });
    reaper.onInstancesListed('k8s-pod:prod:', new Set(['k8s-pod:prod:p2']), asOf, (i) => `gone: ${i}`, { subjectPrefix: 'k8s://prod/ns/agents/sa/' });
    await reaper.close();
    expect(ended).toEqual(['ns-gone']);
  });
});
