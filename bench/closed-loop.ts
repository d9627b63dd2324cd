/**
 * A lean closed-loop HTTP/1.1 load generator: `connections` keep-alive sockets, each with one
 * request in flight; the next request leaves when the previous answer has been read in full.
 *
 * Why not only autocannon: on a 2-core machine the load generator shares the cores with the
 * server it measures. autocannon parses answers with a JavaScript HTTP parser and arms a timer
 * per request, ~60-75 µs of CPU per request on the machines of these sessions: 0.2-0.26 of a
 * core taken from the server. This one writes prebuilt request bytes and reads only what it
 * needs from the answer (the status code, and where it ends), so it measures the same thing —
 * the time from writing a request to having read the last byte of its answer — with a smaller
 * footprint. `BENCH_LOADGEN=autocannon` switches back; bench/README.md gives both.
 *
 * Answers must carry `Content-Length` or be `Transfer-Encoding: chunked` (read to the final
 * chunk; trailers are not supported). A connection the server closes counts as an error and is
 * reopened. A request still open after `timeoutSec` counts as a timeout and its socket is
 * replaced. Latencies are kept in full (µs resolution) and sorted at the end.
 */
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

export interface ClosedLoopOptions {
  url: string;
  method: string;
  headers: Record<string, string>;
  connections: number;
  durationSec: number;
  timeoutSec?: number;
  /** The next request body (called once per request, on the load generator's hot path). */
  nextBody: () => string | Buffer;
  /** Writes every answer as `<ms since start>\t<latency ms>\t<status>` to this file, after a `# start <epoch ms>` line (BENCH_TRACE). */
  traceFile?: string;
}

/** What a timed window of load was answered with (shared by every load generator's result). */
export interface AnswerCounts {
  /** Answers completed inside the timed window. */
  total: number;
  ok2xx: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  errors: number;
  timeouts: number;
  durationSec: number;
}

export interface ClosedLoopResult extends AnswerCounts {
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Where an answer held in `buf` ends (its length in bytes) and its status once complete; undefined while incomplete. */
function answerLength(buf: Buffer): { end: number; status: number } | undefined {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd < 0) return undefined;
  const head = buf.toString('latin1', 0, headEnd);
  // "HTTP/1.1 200 OK"
  const status = Number(head.slice(9, 12));
  const lower = head.toLowerCase();
  const cl = lower.indexOf('\r\ncontent-length:');
  if (cl >= 0) {
    const lineEnd = lower.indexOf('\r\n', cl + 2);
    const length = Number(lower.slice(cl + 17, lineEnd < 0 ? undefined : lineEnd).trim());
    const end = headEnd + 4 + length;
    return buf.length >= end ? { end, status } : undefined;
  }
  if (lower.includes('\r\ntransfer-encoding: chunked')) {
    // One request in flight per connection: the answer ends with the last chunk.
    const at = buf.indexOf(LAST_CHUNK, headEnd + 4);
    return at >= 0 && buf[at - 1] === 0x0a ? { end: at + LAST_CHUNK.length, status } : undefined;
  }
  // No length: the answer would end when the connection closes; not supported here.
  throw new Error(`closed-loop load generator: an answer without Content-Length or chunked encoding (status ${status})`);
}

export function runClosedLoop(opts: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const u = new URL(opts.url);
  const port = Number(u.port || 80);
  const host = u.hostname;
  const headLines =
    `${opts.method} ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\n` +
    Object.entries(opts.headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
  const timeoutMs = (opts.timeoutSec ?? 10) * 1000;

  let latencies = new Float64Array(1 << 16);
  let doneAt = opts.traceFile ? new Float64Array(1 << 16) : undefined;
  const statuses: number[] | undefined = opts.traceFile ? [] : undefined;
  let n = 0;
  const statusCodes: Record<string, number> = {};
  let ok2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let stopped = false;
  const started = performance.now();
  const deadline = started + opts.durationSec * 1000;

  const grow = (a: Float64Array) => {
    const bigger = new Float64Array(a.length * 2);
    bigger.set(a);
    return bigger;
  };
  const record = (ms: number, status: number, at: number) => {
    if (n === latencies.length) {
      latencies = grow(latencies);
      if (doneAt) doneAt = grow(doneAt);
    }
    if (doneAt) {
      doneAt[n] = at - started;
      statuses!.push(status);
    }
    latencies[n++] = ms;
    statusCodes[status] = (statusCodes[status] ?? 0) + 1;
    if (status >= 200 && status < 300) ok2xx++;
  };

  let lastBody: string | Buffer | undefined;
  let lastRequest: Buffer | undefined;
  const request = (): Buffer => {
    const body = opts.nextBody();
    if (body === lastBody && lastRequest) return lastRequest; // a fixed body: built once
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    lastBody = body;
    lastRequest = Buffer.concat([Buffer.from(`${headLines}content-length: ${b.length}\r\n\r\n`, 'latin1'), b]);
    return lastRequest;
  };

  return new Promise((resolve, reject) => {
    /** Each open connection and when its request in flight was sent (0: none in flight). */
    const sockets = new Map<Socket, number>();
    let failed: Error | undefined;

    const finish = () => {
      if (stopped) return;
      stopped = true;
      for (const s of sockets.keys()) s.destroy();
      clearInterval(watchdog);
      clearTimeout(stopTimer);
      if (failed) return reject(failed);
      if (opts.traceFile && doneAt) {
        const lines: string[] = [`# start ${(performance.timeOrigin + started).toFixed(3)} (ms since the epoch); ms since start, latency ms, status`];
        for (let i = 0; i < n; i++) lines.push(`${doneAt[i]!.toFixed(3)}\t${latencies[i]!.toFixed(3)}\t${statuses![i]}`);
        try {
          writeFileSync(opts.traceFile, `${lines.join('\n')}\n`);
        } catch (e) {
          return reject(new Error(`closed-loop load generator: cannot write the trace: ${(e as Error).message}`));
        }
      }
      const sorted = latencies.slice(0, n).sort();
      let sum = 0;
      for (let i = 0; i < n; i++) sum += sorted[i]!;
      resolve({
        total: n,
        ok2xx,
        non2xx: n - ok2xx,
        statusCodes,
        errors,
        timeouts,
        durationSec: opts.durationSec,
        latencyMs: {
          p50: percentile(sorted, 50),
          p90: percentile(sorted, 90),
          p99: percentile(sorted, 99),
          max: n ? sorted[n - 1]! : NaN,
          mean: n ? sum / n : NaN,
        },
      });
    };

    /** Closes a connection and opens another in its place: counted as an error, or as a timeout. */
    const replace = (socket: Socket, timedOut: boolean) => {
      if (!sockets.delete(socket)) return;
      socket.destroy();
      if (stopped) return;
      if (timedOut) timeouts++;
      else errors++;
      setImmediate(open);
    };

    // One connection's loop.
    const open = () => {
      if (stopped) return;
      const socket = connect({ host, port, noDelay: true });
      sockets.set(socket, 0);
      let pending: Buffer | undefined;
      const send = () => {
        if (stopped) return;
        if (performance.now() >= deadline) return finish();
        pending = undefined;
        sockets.set(socket, performance.now());
        socket.write(request());
      };
      socket.on('connect', send);
      socket.on('data', (chunk: Buffer) => {
        if (stopped) return;
        const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
        let done: ReturnType<typeof answerLength>;
        try {
          done = answerLength(buf);
        } catch (e) {
          failed = e as Error;
          return finish();
        }
        if (!done) {
          pending = buf;
          return;
        }
        const now = performance.now();
        if (now <= deadline) record(now - sockets.get(socket)!, done.status, now);
        sockets.set(socket, 0);
        if (buf.length > done.end) {
          failed = new Error('closed-loop load generator: bytes after an answer with one request in flight');
          return finish();
        }
        send();
      });
      socket.on('error', () => replace(socket, false));
      socket.on('close', () => replace(socket, false));
    };

    const watchdog = setInterval(() => {
      const now = performance.now();
      for (const [s, sentAt] of sockets) if (sentAt && now - sentAt > timeoutMs) replace(s, true);
    }, 250);
    const stopTimer = setTimeout(finish, opts.durationSec * 1000 + timeoutMs);
    for (let i = 0; i < opts.connections; i++) open();
  });
}
