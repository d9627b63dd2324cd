import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';

export type BlockKind = 'workload' | 'human';

/** A kill-switch entry (IdentityBlock row) as the hot path sees it. */
export interface IdentityBlockView {
  subject: string;
  kind: BlockKind;
  reason: string;
  blockedBy: string;
}

/**
 * In-memory view of revoked agent-sts tokens, ended tasks and blocked identities (kill switch),
 * checked on every exchange and introspection without a database read. Refreshed from the store
 * by polling so that revocations and blocks made by another replica (or the CLI) take effect here
 * within one poll interval (1 s in the server).
 */
export function createRevocationList(deps: { db: Db; clock: Clock }) {
  const revokedTokens = new Set<string>();
  const endedTasks = new Set<string>();
  let blocks = new Map<string, IdentityBlockView>();
  /** Bumped on every local block/restore: a poll that started before it must not undo it. */
  let localBlockChanges = 0;
  let since = new Date(0);

  const key = (kind: BlockKind, subject: string) => `${kind}\u0000${subject}`;

  async function refresh(): Promise<void> {
    const started = deps.clock.now();
    const changesAtStart = localBlockChanges;
    // Only rows that can still matter: tokens not yet expired, tasks ended since the last poll.
    // Blocks are few (an emergency measure) and can be lifted, so they are read whole each time.
    const [creds, tasks, blockRows] = await Promise.all([
      deps.db.credential.findMany({
        where: { revokedAt: { gte: since }, expiresAt: { gt: started } },
        select: { id: true },
      }),
      deps.db.task.findMany({ where: { OR: [{ state: 'ending' }, { endedAt: { gte: since } }] }, select: { id: true } }),
      deps.db.identityBlock.findMany({ select: { subject: true, kind: true, reason: true, blockedBy: true } }),
    ]);
    creds.forEach((c) => revokedTokens.add(c.id));
    tasks.forEach((t) => endedTasks.add(t.id));
    if (changesAtStart === localBlockChanges) {
      const next = new Map<string, IdentityBlockView>();
      for (const b of blockRows) {
        const kind: BlockKind = b.kind === 'human' ? 'human' : 'workload';
        next.set(key(kind, b.subject), { subject: b.subject, kind, reason: b.reason, blockedBy: b.blockedBy });
      }
      blocks = next;
    }
    // Overlap polls by a second so a commit racing the previous poll is not missed.
    since = new Date(started.getTime() - 1000);
  }

  return {
    refresh,
    isRevoked: (tokenId: string, taskId: string) => revokedTokens.has(tokenId) || endedTasks.has(taskId),
    revokeTask: (taskId: string) => void endedTasks.add(taskId),
    revokeToken: (tokenId: string) => void revokedTokens.add(tokenId),
    /** The block on this subject, if the kill switch was pulled for it. */
    blockOf: (kind: BlockKind, subject: string): IdentityBlockView | undefined => blocks.get(key(kind, subject)),
    /** In force here at once (after the row is written); other replicas see it at their next poll. */
    block(b: IdentityBlockView): void {
      localBlockChanges++;
      blocks.set(key(b.kind, b.subject), b);
    },
    unblock(kind: BlockKind, subject: string): void {
      localBlockChanges++;
      blocks.delete(key(kind, subject));
    },
  };
}
export type RevocationList = ReturnType<typeof createRevocationList>;
