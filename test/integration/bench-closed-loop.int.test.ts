/**
 * The bench's closed-loop load generator counts what the server really answered: status codes,
 * answers with Content-Length and chunked ones, connections the server drops, and it refuses
 * answers it cannot delimit.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { runClosedLoop } from '../../bench/closed-loop.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  server = createServer(handler);
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/oauth2/token`;
}

describe('bench closed-loop load generator', () => {
  it('counts 2xx and non-2xx answers, Content-Length and chunked, and sends each body whole', async () => {
    const seen: string[] = [];
    const url = await serve((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        seen.push(`${req.method} ${req.url} ${req.headers['content-type']} ${body}`);
        if (body.endsWith('odd')) {
          // chunked: two writes without a length
          res.writeHead(400, { 'content-type': 'application/json' });
          res.write('{"error":');
          res.end('"invalid_request"}');
        } else {
          const out = JSON.stringify({ access_token: 'x'.repeat(2_000) }); // spans TCP reads
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
          res.end(out);
        }
      });
    });
    let i = 0;
    const r = await runClosedLoop({
      url,
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      connections: 4,
      durationSec: 1,
      nextBody: () => (i++ % 2 ? 'n=odd' : 'n=even'),
    });
    expect(r.total).toBeGreaterThan(50);
    expect(r.errors).toBe(0);
    expect(r.timeouts).toBe(0);
    expect(r.ok2xx + r.non2xx).toBe(r.total);
    expect(r.statusCodes['200']).toBe(r.ok2xx);
    expect(r.statusCodes['400']).toBe(r.non2xx);
    // Bodies alternate, so the two kinds of answer are within one request of each other per connection.
    expect(Math.abs(r.ok2xx - r.non2xx)).toBeLessThanOrEqual(4);
    expect(r.latencyMs.p50).toBeGreaterThan(0);
    expect(r.latencyMs.p50).toBeLessThanOrEqual(r.latencyMs.p99);
    expect(r.latencyMs.p99).toBeLessThanOrEqual(r.latencyMs.max);
    expect(seen[0]).toMatch(/^POST \/oauth2\/token application\/x-www-form-urlencoded n=(odd|even)$/);
    expect(seen.every((s) => /n=(odd|even)$/.test(s))).toBe(true);
  });

  it('writes every answer of the window to the trace file (BENCH_TRACE), after its start time', async () => {
    const url = await serve((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(req.url === '/oauth2/token' ? 200 : 404, { 'content-length': 2 }).end('ok'));
    });
    const dir = mkdtempSync(join(tmpdir(), 'closed-loop-'));
    try {
      const traceFile = join(dir, 'trace.tsv');
      const before = Date.now();
      const r = await runClosedLoop({ url, method: 'POST', headers: {}, connections: 3, durationSec: 1, nextBody: () => 'a=1', traceFile });
      const [head, ...lines] = readFileSync(traceFile, 'utf8').trim().split('\n');
      const start = Number(/^# start (\d+\.\d+) /.exec(head!)?.[1]);
      expect(Math.abs(start - before)).toBeLessThan(1000);
      expect(lines).toHaveLength(r.total);
      const rows = lines.map((l) => l.split('\t').map(Number));
      expect(rows.every(([at, ms, status]) => at! > 0 && at! <= 1000 && ms! > 0 && ms! <= at! && status === 200)).toBe(true);
      expect(Math.max(...rows.map(([, ms]) => ms!))).toBeCloseTo(r.latencyMs.max, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('counts a connection the server drops as an error and opens another', async () => {
    let n = 0;
    const url = await serve((req, res) => {
      req.resume();
      req.on('end', () => {
        if (++n % 5 === 0) return req.socket.destroy();
        res.writeHead(200, { 'content-length': 2 });
        res.end('ok');
      });
    });
    const r = await runClosedLoop({ url, method: 'POST', headers: {}, connections: 2, durationSec: 1, nextBody: () => 'a=1' });
    expect(r.total).toBeGreaterThan(10);
    expect(r.errors).toBeGreaterThan(0);
    expect(r.ok2xx).toBe(r.total);
  });

  it('counts a request left unanswered past the timeout as a timeout, not an error, and opens another connection', async () => {
    let n = 0;
    const url = await serve((req, res) => {
      req.resume();
      req.on('end', () => {
        if (++n === 3) return; // never answered
        res.writeHead(200, { 'content-length': 2 });
        res.end('ok');
      });
    });
    const r = await runClosedLoop({ url, method: 'POST', headers: {}, connections: 2, durationSec: 1.5, timeoutSec: 0.5, nextBody: () => 'a=1' });
    expect(r.timeouts).toBe(1);
    expect(r.errors).toBe(0);
    expect(r.ok2xx).toBe(r.total);
    expect(r.total).toBeGreaterThan(10);
  });

  it('refuses an answer it cannot delimit (no Content-Length, not chunked)', async () => {
    const url = await serve((req, _res) => {
      req.resume();
      req.on('end', () => {
        // HTTP/1.0-style: the body ends when the connection closes
        req.socket.end('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello');
      });
    });
    await expect(
      runClosedLoop({ url, method: 'POST', headers: {}, connections: 1, durationSec: 1, nextBody: () => 'a=1' }),
    ).rejects.toThrow(/without Content-Length or chunked/);
  });
});
