import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { validateConfig } from '../../src/config/load-config.js';
import { compose, type Composed } from '../../src/compose.js';
import { createLogger } from '../../src/log/logger.js';
import type { Telemetry } from '../../src/telemetry/otel.js';

export interface TestBroker {
  url: string;
  composed: Composed;
  /** Every log line the broker wrote (JSON), for the "no secrets in logs" checks. */
  logs: string[];
  /** The environment the broker was given (holds the test key-encryption key). */
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

export const TEST_AUDITOR_TOKEN = `auditor-${randomBytes(12).toString('hex')}`;
export const TEST_ADMIN_TOKEN = `admin-${randomBytes(12).toString('hex')}`;

/**
 * Starts a real broker on loopback port 0 from a config object (same validation as the file),
 * with a fresh key-encryption key, logging at debug level into memory. `telemetry`: traces and
 * metrics into the test's own providers (e.g. in-memory exporters); default off.
 */
export async function startBroker(config: Record<string, unknown>, opts: { env?: NodeJS.ProcessEnv; telemetry?: Telemetry } = {}): Promise<TestBroker> {
  const env = { TEST_KEK: randomBytes(32).toString('base64'), TEST_AUDITOR_TOKEN, TEST_ADMIN_TOKEN, ...opts.env };
  const cfg = validateConfig({
    server: { host: '127.0.0.1', port: 0 },
    keys: { kek: { fromEnv: 'TEST_KEK' } },
    logging: { level: 'debug' },
    sweep: { interval: '1s' },
    auth: {
      auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
      admins: [{ name: 'test-admin', token: { fromEnv: 'TEST_ADMIN_TOKEN' } }],
    },
    ...config,
  });
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const logger = createLogger({ level: 'debug', destination });
  const composed = await compose(cfg, { env, logger, telemetry: opts.telemetry });
  await composed.listen();
  return { url: composed.issuerUrl(), composed, logs, env, close: () => composed.close() };
}

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

/** POSTs a form to the token endpoint; repeated keys via arrays. */
export async function postToken(url: string, fields: Record<string, string | string[]>, init: { contentType?: string; rawBody?: string; headers?: Record<string, string> } = {}) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const x of [v].flat()) body.append(k, x);
  const res = await fetch(`${url}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': init.contentType ?? 'application/x-www-form-urlencoded', ...init.headers },
    body: init.rawBody ?? body.toString(),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    /* not JSON: the test's assertion on json shows it */
  }
  return { status: res.status, headers: res.headers, json, text };
}
