import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';

/**
 * In-memory view of revoked agent-sts tokens and ended tasks, checked on every exchange without
 * a database read. Refreshed from the store by polling so that revocations made by another
 * replica (or the CLI) take effect here within one poll interval.
 */
export function createRevocationList(deps: { db: Db; clock: Clock }) {
  const revokedTokens = new Set<string>();
  const endedTasks = new Set<string>();
  let since = new Date(0);

  async function refresh(): Promise<void> {
    const started = deps.clock.now();
    // Only rows that can still matter: tokens not yet expired, tasks ended since the last poll.
    const [creds, tasks] = await Promise.all([
      deps.db.credential.findMany({
        where: { revokedAt: { gte: since }, expiresAt: { gt: started } },
        select: { id: true },
      }),
      deps.db.task.findMany({ where: { OR: [{ state: 'ending' }, { endedAt: { gte: since } }] }, select: { id: true } }),
    ]);
    creds.forEach((c) => revokedTokens.add(c.id));
    tasks.forEach((t) => endedTasks.add(t.id));
    // Overlap polls by a second so a commit racing the previous poll is not missed.
    since = new Date(started.getTime() - 1000);
  }

  return {
    refresh,
    isRevoked: (tokenId: string, taskId: string) => revokedTokens.has(tokenId) || endedTasks.has(taskId),
    revokeTask: (taskId: string) => void endedTasks.add(taskId),
    revokeToken: (tokenId: string) => void revokedTokens.add(tokenId),
  };
}
export type RevocationList = ReturnType<typeof createRevocationList>;
