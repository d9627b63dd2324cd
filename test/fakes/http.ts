import { createServer, type IncomingMessage, type Server } from 'node:http';
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
