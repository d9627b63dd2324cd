import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../log/logger.js';
import { Secret } from '../core/secret.js';
import { signatureOf } from '../approvals/approval-webhook.js';
import { createSignalWebhook, type SignalNotice } from './signal-webhook.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: createLogger({ level: 'debug', destination }), lines };
}

const notice = (n: number): SignalNotice => ({
  request_id: `req-${n}`, time: '2026-11-25T12:00:00.000Z', signals: ['first_use_of_target'], workload_subject: 'test://bot', provider: 'ci',
  human_subject: null, target: 'api', outcome: 'allow', client_network: '10.0.0.0/24',
});

const tick = () => new Promise((r) => setTimeout(r, 20));

describe('signal webhook', () => {
  it('POSTs each notice as signed JSON, in order', async () => {
    const got: { body: string; signature: string | null }[] = [];
    const fetch = (async (_url: string, init: RequestInit) => {
      got.push({ body: init.body as string, signature: new Headers(init.headers).get('x-agent-sts-signature') });
      return new Response(null, { status: 204 });
    }) as typeof globalThis.fetch;
    const { logger } = capture();
    const hook = createSignalWebhook({ url: 'http://hook.invalid/s', fetch, logger, queueSize: 10, secret: () => new Secret('s3cret') });
    hook.send(notice(1));
    hook.send(notice(2));
    await hook.drain();
    expect(got.map((g) => (JSON.parse(g.body) as SignalNotice).request_id)).toEqual(['req-1', 'req-2']);
    expect(got[0]!.signature).toBe(signatureOf('s3cret', got[0]!.body));
    expect(hook.stats()).toEqual({ queued: 0, sent: 2, failed: 0 });
  });

  it('never waits for the webhook: send() returns at once while a POST hangs, a full queue drops and says so', async () => {
    let release: () => void = () => {};
    const fetch = (() => new Promise<Response>((r) => (release = () => r(new Response(null, { status: 200 }))))) as typeof globalThis.fetch;
    const { logger, lines } = capture();
    const hook = createSignalWebhook({ url: 'http://hook.invalid/s', fetch, logger, queueSize: 2 });
    const started = performance.now();
    for (let i = 0; i < 6; i++) hook.send(notice(i));
    expect(performance.now() - started).toBeLessThan(50);
    // One in flight, two queued, three dropped.
    expect(hook.stats().queued).toBe(2);
    for (let i = 0; i < 3; i++) {
      release();
      await tick();
    }
    await hook.drain();
    expect(hook.stats()).toMatchObject({ queued: 0, sent: 3 });
    expect(lines.find((l) => l.msg === 'signal webhook queue was full: notices dropped (their audit records carry the flags)')).toMatchObject({ dropped: 3 });
  });

  it('logs a failed or timed-out POST and goes on with the next', async () => {
    let calls = 0;
    const fetch = (async (_url: string, init: RequestInit) => {
      calls++;
      if (calls === 1) return new Response('no', { status: 500 });
      if (calls === 2) return new Promise<Response>((_r, reject) => init.signal!.addEventListener('abort', () => reject(init.signal!.reason as Error)));
      return new Response(null, { status: 204 });
    }) as typeof globalThis.fetch;
    const { logger, lines } = capture();
    const hook = createSignalWebhook({ url: 'http://hook.invalid/s', fetch, logger, queueSize: 10, timeoutMs: 50 });
    for (let i = 1; i <= 3; i++) hook.send(notice(i));
    await hook.drain();
    expect(hook.stats()).toEqual({ queued: 0, sent: 1, failed: 2 });
    const failures = lines.filter((l) => l.msg === 'signal webhook failed');
    expect(failures.map((l) => [l.requestId, l.reason])).toEqual([['req-1', 'webhook answered HTTP 500'], ['req-2', 'webhook timed out']]);
  });
});
