import type { Db } from '../storage/prisma-client.js';

/** One task as `GET /v1/tasks/{id}` and `agent-sts tasks show` give it: never a secret, fingerprints and ids only. */
export interface TaskView {
  task_id: string;
  state: string;
  purpose: string | null;
  workload_subject: string;
  human_subject: string | null;
  parent_task_id: string | null;
  /** The top of its delegation tree (maxLivePerTree counts the tree); null for rows from before it was recorded. */
  root_task_id: string | null;
  children: { task_id: string; state: string }[];
  created_at: string;
  deadline: string;
  idle_timeout_seconds: number | null;
  last_activity_at: string | null;
  ended_at: string | null;
  end_reason: string | null;
  credentials: { id: string; target: string; issuer: string; token_type: string; state: string; fingerprint: string; issued_at: string; expires_at: string; revoked_at: string | null }[];
}

/** The task, its credentials (oldest first) and its sub-agents' tasks; undefined when there is no such task. */
export async function taskView(db: Db, id: string): Promise<TaskView | undefined> {
  const t = await db.task.findUnique({ where: { id } });
  if (!t) return undefined;
  const [creds, children] = await Promise.all([
    db.credential.findMany({ where: { taskId: t.id }, orderBy: { issuedAt: 'asc' } }),
    db.task.findMany({ where: { parentTaskId: t.id }, select: { id: true, state: true }, orderBy: { createdAt: 'asc' } }),
  ]);
  return {
    task_id: t.id,
    state: t.state,
    purpose: t.purpose,
    workload_subject: t.workloadSubject,
    human_subject: t.humanSubject,
    parent_task_id: t.parentTaskId,
    root_task_id: t.rootTaskId,
    children: children.map((c) => ({ task_id: c.id, state: c.state })),
    created_at: t.createdAt.toISOString(),
    deadline: t.deadline.toISOString(),
    idle_timeout_seconds: t.idleTimeoutSeconds,
    last_activity_at: t.lastActivityAt?.toISOString() ?? null,
    ended_at: t.endedAt?.toISOString() ?? null,
    end_reason: t.endReason,
    credentials: creds.map((c) => ({
      id: c.id, target: c.target, issuer: c.issuerName, token_type: c.tokenType, state: c.state, fingerprint: c.fingerprint,
      issued_at: c.issuedAt.toISOString(), expires_at: c.expiresAt.toISOString(), revoked_at: c.revokedAt?.toISOString() ?? null,
    })),
  };
}
