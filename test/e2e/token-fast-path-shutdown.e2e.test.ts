// The token endpoint's fast path (src/server/app.ts) during shutdown: once the broker starts
// closing, a request that arrives on a kept-alive connection gets Fastify's 503 with
// `Connection: close` (the client goes to another replica), not an exchange, and close() finishes
// instead of waiting for that connection.
import { connect } from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { createTestSqliteUrl } from '../support/databases.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE } from '../support/broker.js';

let issuer: FakeIssuer | undefined;
const store = createTestSqliteUrl('agsts-fastpath-close');
afterAll(async () => {
  await issuer?.close();
  await store.drop();
});

it('answers 503 with Connection: close to a request that arrives on a kept-alive connection after closing started', async () => {
  issuer = await startFakeOidcIssuer();
  const broker = await startBroker({
    storage: { url: store.url },
    trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: issuer.issuer, audience: 'agent-sts-test', algorithms: ['RS256'], subjectTemplate: 'test://{sub}' } }],
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [{ name: 'api', audiences: ['api'], issuer: 'tokens', scopes: ['read'] }],
    policy: { rules: [{ id: 'agent', workload: { provider: 'ci', subject: 'test://agent' }, agentToken: {}, grants: [{ target: 'api', scopes: ['read'] }] }] },
  });
  const start = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await issuer.sign({ sub: 'agent', aud: 'agent-sts-test' }), subject_token_type: JWT_TYPE });
  expect(start.status, start.text).toBe(200);
  const body = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: start.json.access_token as string, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'api' }).toString();
  const request = `POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

  const { port } = new URL(broker.url);
  const socket = connect(Number(port), '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8').on('data', (d: string) => (received += d));
  const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));

  // The first request is in flight (its exchange held at its audit commit) when closing starts, so
  // the connection is not idle; the second is pipelined behind it once closing has started. The
  // hold makes the order certain on a loaded machine (a 1 ms pause here raced the server).
  const audit = broker.composed.audit;
  const append = audit.append.bind(audit);
  let entered!: () => void;
  const inFlight = new Promise<void>((resolve) => (entered = resolve));
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  audit.append = async (w) => {
    if (w.event.action === 'token.exchange') {
      entered();
      await held;
    }
    return append(w);
  };
  socket.write(request);
  await inFlight;
  const closed = broker.close();
  await new Promise((r) => setTimeout(r, 300)); // close() reaches app.close(): requests are now refused
  socket.write(request);
  await new Promise((r) => setTimeout(r, 100));
  release();

  const t0 = Date.now();
  await closed;
  await ended;
  expect(Date.now() - t0).toBeLessThan(5_000);
  const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
  expect(statuses).toEqual(['200', '503']);
  expect(received.split('HTTP/1.1 503')[1]).toMatch(/connection: close/i);
});
