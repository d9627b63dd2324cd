import type { Telemetry } from './otel.js';
import { inSpan, NOOP_HANDLE, toAttributes, type SafeAttributes, type SpanHandle } from './spans.js';

/** The credential a revocation is about: ids, names and the fingerprint only (never the sealed handle). */
export interface RevokedCredential {
  id: string;
  taskId: string;
  issuerName: string;
  issuerType: string;
  target: string;
  fingerprint: string;
}

export interface TaskTelemetry {
  /** Span `agent_sts.task.end` around ending one task (its credentials' revocations are children). */
  taskEnd<T>(taskId: string, fn: () => Promise<T>): Promise<T>;
  /**
   * Span `agent_sts.credential.revoke` around one revocation, counted in `agent_sts.revocations` by
   * issuer and fate. `fn` calls `h.fail(e)` when the upstream refused (the revocation stays queued).
   */
  revoke<T extends { fate: string }>(cred: RevokedCredential, action: string, fn: (h: SpanHandle) => Promise<T>): Promise<T>;
}

const PASS_THROUGH: TaskTelemetry = {
  taskEnd: (_taskId, fn) => fn(),
  revoke: (_cred, _action, fn) => fn(NOOP_HANDLE),
};

export function createTaskTelemetry(t: Telemetry | undefined): TaskTelemetry {
  if (!t?.enabled) return PASS_THROUGH;
  const { tracer, instruments } = t;
  if (!t.tracing)
    return {
      taskEnd: (_taskId, fn) => fn(),
      revoke: async (cred, _action, fn) => {
        let fate = 'error';
        try {
          const r = await fn(NOOP_HANDLE);
          fate = r.fate;
          return r;
        } finally {
          instruments.revocations.add(1, toAttributes({ issuer: cred.issuerName, fate }));
        }
      },
    };
  return {
    taskEnd: (taskId, fn) => inSpan(tracer, 'agent_sts.task.end', { taskId }, fn),
    revoke: (cred, action, fn) => {
      const attributes: SafeAttributes = {
        action,
        taskId: cred.taskId,
        credentialId: cred.id,
        fingerprint: cred.fingerprint,
        issuer: cred.issuerName,
        issuerType: cred.issuerType,
        target: cred.target,
      };
      let fate = 'error';
      const count = () => instruments.revocations.add(1, toAttributes({ issuer: cred.issuerName, fate }));
      return inSpan(
        tracer,
        'agent_sts.credential.revoke',
        attributes,
        async (h) => {
          const out = await fn(h);
          fate = out.fate;
          h.set({ fate });
          return out;
        },
        count,
      );
    },
  };
}
