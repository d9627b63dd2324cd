import type { Logger } from '../log/logger.js';
import { postWebhook, type WebhookTarget } from '../approvals/approval-webhook.js';
import type { Signal } from './signal-metrics.js';

/** The webhook body: which signals one exchange raised, and where its audit record is. Never a token. */
export interface SignalNotice {
  /** The request id of the exchange: its audit record carries the same `requestId` and these `flags`. */
  request_id: string;
  time: string;
  signals: Signal[];
  workload_subject: string;
  provider: string;
  human_subject: string | null;
  target: string | null;
  outcome: string;
  /** The client network (/24 or /64), not the address. */
  client_network: string | null;
}

export interface SignalWebhookDeps extends WebhookTarget {
  logger: Logger;
  /** Notices waiting at most; when full, new notices are dropped (and counted in the log). */
  queueSize: number;
}

/**
 * Sends signal notices to a webhook without ever delaying an exchange: `send()` only queues
 * (bounded), one sender POSTs them in order (JSON, signed like the approval webhook when a secret
 * is set). A failed or timed-out POST is logged at warn and not retried; a full queue drops the
 * newest notices and says how many in the log. The audit record and the metric exist either way.
 */
export function createSignalWebhook(deps: SignalWebhookDeps) {
  const queue: SignalNotice[] = [];
  let sending: Promise<void> | undefined;
  let dropped = 0;
  let sent = 0;
  let failed = 0;

  async function post(notice: SignalNotice): Promise<void> {
    const failure = await postWebhook(deps, notice);
    if (failure) {
      failed++;
      deps.logger.warn({ requestId: notice.request_id, signals: notice.signals, reason: failure }, 'signal webhook failed');
    } else sent++;
  }

  async function drainQueue(): Promise<void> {
    for (;;) {
      if (dropped) {
        deps.logger.warn({ dropped }, 'signal webhook queue was full: notices dropped (their audit records carry the flags)');
        dropped = 0;
      }
      const next = queue.shift();
      // Cleared in the same tick as the emptiness check: a notice queued later starts a new sender.
      if (!next) return void (sending = undefined);
      await post(next);
    }
  }

  return {
    /** Queues a notice; never waits, never throws. */
    send(notice: SignalNotice): void {
      if (queue.length >= deps.queueSize) {
        dropped++;
        return;
      }
      queue.push(notice);
      sending ??= drainQueue();
    },
    /** Waits until the queue is empty or `timeoutMs` passed (shutdown). */
    async drain(timeoutMs = 5000): Promise<void> {
      if (!sending) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([sending, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    },
    stats: () => ({ queued: queue.length, sent, failed }),
  };
}
export type SignalWebhook = ReturnType<typeof createSignalWebhook>;
