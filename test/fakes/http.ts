import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedCall {
  method: string;
  path: string;
}

export type Route = (req: IncomingMessage, base: string) => { status?: number; body: unknown } | unknown;

/** A real HTTP server on loopback port 0 serving fixed routes ("GET /path"); records every call. */
export async function startRoutedServer(routes: Record<string, Route>): Promise<{ base: string; calls: RecordedCall[]; server: Server; close(): Promise<void> }> {
  const calls: RecordedCall[] = [];
  let base = '';
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    calls.push({ method: req.method ?? 'GET', path });
    const route = routes[`${req.method} ${path}`];
    if (!route) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    const out = route(req, base) as { status?: number; body?: unknown } | undefined;
    const isEnvelope = out && typeof out === 'object' && 'body' in out && Object.keys(out).every((k) => k === 'status' || k === 'body');
    res.writeHead(isEnvelope ? (out.status ?? 200) : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(isEnvelope ? out.body : out));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, calls, server, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Fault injection shared by the fakes: answer with a status, answer late, or answer 200 with a body that is not JSON. */
export interface FaultControls {
  /** Every request gets this HTTP status (null: off). */
  failWith: number | null;
  /** Every request is answered this late; a caller that gave up meanwhile gets nothing done. */
  delayMs: number;
  /** Every request gets 200 with an HTML body labelled JSON (a proxy error page). */
  malformed: boolean;
}

export const noFaults = (): FaultControls => ({ failWith: null, delayMs: 0, malformed: false });

/**
 * Applies the faults to one request. Returns 'handled' when the fault answered (or the caller
 * left), the status to fail with when `failWith` is set, or undefined to go on normally.
 */
export async function applyFaults(f: FaultControls, req: IncomingMessage, res: ServerResponse): Promise<'handled' | number | undefined> {
  if (f.delayMs > 0) {
    await new Promise((r) => setTimeout(r, f.delayMs));
    if (res.destroyed || req.socket.destroyed) return 'handled';
  }
  if (f.malformed) {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end('<html><body>502 Bad Gateway</body></html>');
    return 'handled';
  }
  return f.failWith ?? undefined;
}

/** A loopback port nothing listens on (for "the upstream is unreachable"). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** One POST a webhook receiver got: the exact body and its X-Agent-STS-Signature. */
export interface ReceivedHook {
  body: string;
  signature?: string;
}

/** A webhook receiver on loopback (approval and signal webhooks): records every body and signature, answers 204. */
export async function startWebhookReceiver(): Promise<{ base: string; hooks: ReceivedHook[]; close(): Promise<void> }> {
  const hooks: ReceivedHook[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      hooks.push({ body, signature: req.headers['x-agent-sts-signature'] as string | undefined });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, hooks, close: () => new Promise<void>((r) => server.close(() => r())) };
}
