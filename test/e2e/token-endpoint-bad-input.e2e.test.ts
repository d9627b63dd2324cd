import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, generateKeyPair, base64url } from 'jose';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

/**
 * The token endpoint's bad-input table: every case gets its RFC 6749 §5.2 / RFC 8693 §2.2.2
 * error and status, never a 5xx, and nothing is written except the deny audit record.
 */
let e2e: E2eBroker;
let issuer: FakeIssuer;
let untrusted: FakeIssuer;
let broker: TestBroker;
let good: string;
let agentToken: string;

const AUD = 'agent-sts-test';
const now = () => Math.floor(Date.now() / 1000);

function setup(store: 'sqlite' | 'postgresql') {
beforeAll(async () => {
  untrusted = await startFakeOidcIssuer();
  e2e = await startE2eBroker({
    name: store === 'sqlite' ? 'agsts-badinput' : 'agsts_badinput',
    storage: store,
    ci: { audience: AUD, algorithms: ['RS256'] },
    config: {
      tokens: { maxTokenBytes: 8192 },
      server: { host: '127.0.0.1', port: 0, bodyLimitBytes: 32768 },
      credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
      targets: [
        { name: 'api', resources: ['https://api.test/'], audiences: ['api'], issuer: 'tokens', scopes: ['read', 'write'] },
        { name: 'other', audiences: ['other'], issuer: 'tokens' },
      ],
      policy: { rules: [{ id: 'agent', workload: { provider: 'ci', subject: 'test://agent' }, agentToken: {}, grants: [{ target: 'api', scopes: ['read'] }] }] },
    },
  });
  ({ broker, workloads: issuer } = e2e);
  good = await issuer.sign({ sub: 'agent', aud: AUD });
  const r = await postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: good, subject_token_type: JWT_TYPE });
  expect(r.status, r.text).toBe(200);
  agentToken = r.json.access_token as string;
});
afterAll(async () => {
  await e2e?.close();
  await untrusted?.close();
});
}

type Fields = Record<string, string | string[]>;
/** Every token presented during the suite: none may show up in a log line or an audit record. */
const presented = new Set<string>();
interface Case {
  name: string;
  fields?: () => Promise<Fields> | Fields;
  raw?: { body: string; contentType?: string };
  status: number;
  error: string;
}

const base = (): Fields => ({ grant_type: TOKEN_EXCHANGE, subject_token: good, subject_token_type: JWT_TYPE });
const withToken = async (token: string | Promise<string>, extra: Fields = {}): Promise<Fields> => ({ ...base(), subject_token: await token, ...extra });
const agent = (extra: Fields): Fields => ({ grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, ...extra });
const unsigned = (header: object, payload: object) => `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(payload))}.`;

const cases: Case[] = [
  // parameters
  { name: 'missing grant_type', fields: () => { const f = base(); delete f.grant_type; return f; }, status: 400, error: 'invalid_request' },
  { name: 'unknown grant_type', fields: () => ({ ...base(), grant_type: 'client_credentials' }), status: 400, error: 'unsupported_grant_type' },
  { name: 'authorization_code grant', fields: () => ({ ...base(), grant_type: 'authorization_code', code: 'x' }), status: 400, error: 'unsupported_grant_type' },
  { name: 'refresh_token grant', fields: () => ({ grant_type: 'refresh_token', refresh_token: 'x' }), status: 400, error: 'unsupported_grant_type' },
  { name: 'duplicate grant_type', fields: () => ({ ...base(), grant_type: [TOKEN_EXCHANGE, TOKEN_EXCHANGE] }), status: 400, error: 'invalid_request' },
  { name: 'missing subject_token', fields: () => { const f = base(); delete f.subject_token; return f; }, status: 400, error: 'invalid_request' },
  { name: 'empty subject_token', fields: () => ({ ...base(), subject_token: '' }), status: 400, error: 'invalid_request' },
  { name: 'missing subject_token_type', fields: () => { const f = base(); delete f.subject_token_type; return f; }, status: 400, error: 'invalid_request' },
  { name: 'duplicate subject_token', fields: () => ({ ...base(), subject_token: [good, good] }), status: 400, error: 'invalid_request' },
  { name: 'duplicate subject_token_type', fields: () => ({ ...base(), subject_token_type: [JWT_TYPE, JWT_TYPE] }), status: 400, error: 'invalid_request' },
  { name: 'unknown subject_token_type', fields: () => ({ ...base(), subject_token_type: 'urn:example:token-type:magic' }), status: 400, error: 'invalid_request' },
  { name: 'hyphenated id-token spelling', fields: () => ({ ...base(), subject_token_type: 'urn:ietf:params:oauth:token-type:id-token' }), status: 400, error: 'invalid_request' },
  { name: 'saml2 subject_token_type', fields: () => ({ ...base(), subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }), status: 400, error: 'invalid_request' },
  { name: 'actor_token without actor_token_type', fields: () => ({ ...base(), actor_token: good }), status: 400, error: 'invalid_request' },
  { name: 'actor_token_type without actor_token', fields: () => ({ ...base(), actor_token_type: JWT_TYPE }), status: 400, error: 'invalid_request' },
  { name: 'duplicate scope', fields: () => agent({ audience: 'api', scope: ['read', 'read'] }), status: 400, error: 'invalid_request' },
  { name: 'malformed scope characters', fields: () => agent({ audience: 'api', scope: 'read "quoted"' }), status: 400, error: 'invalid_scope' },
  { name: 'two resources', fields: () => agent({ resource: ['https://api.test/', 'https://other.test/'] }), status: 400, error: 'invalid_target' },
  { name: 'resource and audience together', fields: () => agent({ resource: 'https://api.test/', audience: 'api' }), status: 400, error: 'invalid_target' },
  { name: 'relative resource', fields: () => agent({ resource: '/api' }), status: 400, error: 'invalid_target' },
  { name: 'resource with fragment', fields: () => agent({ resource: 'https://api.test/#frag' }), status: 400, error: 'invalid_target' },
  { name: 'requested refresh token', fields: () => ({ ...base(), requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }), status: 400, error: 'invalid_request' },
  { name: 'requested_lifetime not a number', fields: () => agent({ audience: 'api', scope: 'read', requested_lifetime: '10m' }), status: 400, error: 'invalid_request' },
  { name: 'parameters in the query string', raw: { body: '' }, status: 400, error: 'invalid_request' },
  // malformed and forged JWTs
  { name: 'not a JWT', fields: () => withToken('definitely-not-a-jwt'), status: 400, error: 'invalid_request' },
  { name: 'two-part token', fields: () => withToken('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0'), status: 400, error: 'invalid_request' },
  { name: 'payload is not JSON', fields: () => withToken(`${base64url.encode('{"alg":"RS256"}')}.${base64url.encode('not json')}.sig`), status: 400, error: 'invalid_request' },
  { name: 'token with spaces', fields: () => withToken('abc def.ghi.jkl'), status: 400, error: 'invalid_request' },
  { name: 'alg none', fields: () => withToken(unsigned({ alg: 'none', typ: 'JWT' }, { iss: issuer.issuer, sub: 'agent', aud: AUD, iat: now(), exp: now() + 300 })), status: 400, error: 'invalid_request' },
  {
    name: 'HS256 signed with the issuer public key',
    fields: () => withToken(new SignJWT({ iss: issuer.issuer, sub: 'agent', aud: AUD }).setProtectedHeader({ alg: 'HS256', kid: issuer.kid }).setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(issuer.publicPem))),
    status: 400, error: 'invalid_request',
  },
  {
    name: 'signed by a key not in the JWKS (same kid)',
    fields: async () => { const { privateKey } = await generateKeyPair('RS256'); return withToken(issuer.sign({ sub: 'agent', aud: AUD }, { key: privateKey })); },
    status: 400, error: 'invalid_request',
  },
  { name: 'tampered payload', fields: async () => { const [h, , s] = good.split('.'); return withToken(`${h}.${base64url.encode(JSON.stringify({ iss: issuer.issuer, sub: 'admin', aud: AUD, exp: now() + 300 }))}.${s}`); }, status: 400, error: 'invalid_request' },
  { name: 'expired token', fields: () => withToken(issuer.sign({ sub: 'agent', aud: AUD, iat: now() - 3600, exp: now() - 600 })), status: 400, error: 'invalid_request' },
  { name: 'not yet valid (nbf)', fields: () => withToken(issuer.sign({ sub: 'agent', aud: AUD, nbf: now() + 3600 })), status: 400, error: 'invalid_request' },
  { name: 'no exp claim', fields: () => withToken(issuer.sign({ sub: 'agent', aud: AUD, exp: undefined })), status: 400, error: 'invalid_request' },
  { name: 'wrong iss (same keys)', fields: () => withToken(issuer.sign({ sub: 'agent', aud: AUD, iss: `${issuer.issuer}/other` })), status: 400, error: 'invalid_request' },
  { name: 'wrong aud', fields: () => withToken(issuer.sign({ sub: 'agent', aud: 'someone-else' })), status: 400, error: 'invalid_request' },
  { name: 'GitHub-style default audience', fields: () => withToken(issuer.sign({ sub: 'agent', aud: 'https://github.com/octo-org' })), status: 400, error: 'invalid_request' },
  { name: 'unknown kid', fields: () => withToken(issuer.sign({ sub: 'agent', aud: AUD }, { kid: 'no-such-kid' })), status: 400, error: 'invalid_request' },
  { name: 'untrusted issuer', fields: () => withToken(untrusted.sign({ sub: 'agent', aud: AUD })), status: 400, error: 'invalid_request' },
  { name: 'no sub claim', fields: () => withToken(issuer.sign({ aud: AUD })), status: 400, error: 'invalid_request' },
  { name: 'oversized subject_token', fields: () => withToken(`${good}${'A'.repeat(9000)}`), status: 400, error: 'invalid_request' },
  { name: 'agent token declared as an unrelated type', fields: () => agent({ subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token', audience: 'api' }), status: 400, error: 'invalid_request' },
  { name: 'forged agent token (signed by someone else)', fields: async () => { const { privateKey } = await generateKeyPair('ES256'); return agent({ subject_token: await new SignJWT({ iss: broker.url, aud: broker.url, sub: 'x', task_id: 't_x', jti: 'j' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' }).setIssuedAt().setExpirationTime('5m').sign(privateKey), audience: 'api' }); }, status: 400, error: 'invalid_request' },
  { name: 'agent token for another agent token', fields: () => agent({}), status: 400, error: 'invalid_request' },
  { name: 'workload token as subject with an actor', fields: () => withToken(good, { actor_token: good, actor_token_type: JWT_TYPE }), status: 400, error: 'invalid_request' },
  // bodies
  { name: 'JSON content type', raw: { body: JSON.stringify({ grant_type: TOKEN_EXCHANGE }), contentType: 'application/json' }, status: 400, error: 'invalid_request' },
  { name: 'text/plain content type', raw: { body: 'grant_type=x', contentType: 'text/plain' }, status: 400, error: 'invalid_request' },
  { name: 'multipart content type', raw: { body: '--b\r\n\r\n--b--', contentType: 'multipart/form-data; boundary=b' }, status: 400, error: 'invalid_request' },
  { name: 'empty body', raw: { body: '' , contentType: 'application/x-www-form-urlencoded' }, status: 400, error: 'invalid_request' },
  { name: 'oversized body', raw: { body: `grant_type=${'x'.repeat(40000)}` }, status: 413, error: 'invalid_request' },
  // policy
  { name: 'unknown target', fields: () => agent({ audience: 'nowhere' }), status: 400, error: 'invalid_target' },
  { name: 'denied target', fields: () => agent({ audience: 'other' }), status: 400, error: 'invalid_target' },
  { name: 'scope wider than allowed', fields: () => agent({ audience: 'api', scope: 'read write' }), status: 400, error: 'invalid_scope' },
  { name: 'scope unknown at the target', fields: () => agent({ audience: 'api', scope: 'admin' }), status: 400, error: 'invalid_scope' },
  { name: 'workload no policy allows', fields: () => withToken(issuer.sign({ sub: 'stranger', aud: AUD })), status: 400, error: 'invalid_request' },
  { name: 'requested_token_type the target cannot issue', fields: () => agent({ audience: 'api', scope: 'read', requested_token_type: 'urn:agent-sts:token-type:postgres-credentials' }), status: 400, error: 'invalid_request' },
];

for (const store of ['sqlite', 'postgresql'] as const)
describe(`token endpoint rejects bad input with RFC errors (store: ${store})`, () => {
  setup(store);
  it(`has at least 40 cases (${cases.length})`, () => expect(cases.length).toBeGreaterThanOrEqual(40));

  for (const c of cases) {
    it(`${c.name} -> ${c.status} ${c.error}`, async () => {
      const db = broker.composed.db;
      await broker.composed.audit.drain();
      const before = { tasks: await db.task.count(), creds: await db.credential.count(), audit: await db.auditEvent.count() };
      let res;
      if (c.name === 'parameters in the query string') {
        const r = await fetch(`${broker.url}/oauth2/token?grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&subject_token=${good}&subject_token_type=${encodeURIComponent(JWT_TYPE)}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
        res = { status: r.status, headers: r.headers, json: (await r.json()) as Record<string, unknown>, text: '' };
      } else if (c.raw) res = await postToken(broker.url, {}, { rawBody: c.raw.body, contentType: c.raw.contentType });
      else {
        const fields = await c.fields!();
        for (const k of ['subject_token', 'actor_token']) for (const v of [fields[k] ?? []].flat()) presented.add(v);
        res = await postToken(broker.url, fields);
      }
      expect(res.status, res.text).toBe(c.status);
      expect(res.json.error, res.text).toBe(c.error);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(JSON.stringify(res.json)).not.toMatch(/at .*\.(ts|js):\d+/); // no stack trace
      await broker.composed.audit.drain();
      // Nothing written but (at most) the deny audit record.
      expect(await db.task.count()).toBe(before.tasks);
      expect(await db.credential.count()).toBe(before.creds);
      const audit = await db.auditEvent.count();
      expect(audit - before.audit).toBeLessThanOrEqual(1);
      if (audit > before.audit) {
        const last = await db.auditEvent.findFirstOrThrow({ orderBy: [{ time: 'desc' }, { seq: 'desc' }] });
        expect(last.outcome).toBe('deny');
      }
    });
  }

  it('answers alike on the fast path (Content-Length) and through the Fastify route (chunked body)', async () => {
    const send = (body: string, chunked: boolean) =>
      new Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }>((resolve, reject) => {
        const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': 'same-path-check' };
        if (chunked) headers['transfer-encoding'] = 'chunked';
        else headers['content-length'] = String(Buffer.byteLength(body));
        const req = httpRequest(`${broker.url}/oauth2/token`, { method: 'POST', headers }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, json: JSON.parse(text) as Record<string, unknown> }));
        });
        req.on('error', reject);
        if (chunked) req.write(body.slice(0, 10)); // a second chunk follows
        req.end(chunked ? body.slice(10) : body);
      });
    const form = (f: Record<string, string>) => new URLSearchParams(f).toString();
    const bodies = [
      form({ grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'api', scope: 'read' }),
      form({ grant_type: TOKEN_EXCHANGE, subject_token: agentToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'api', scope: 'write' }),
      form({ grant_type: 'client_credentials' }),
      'grant_type=%ZZ&subject_token=',
    ];
    for (const body of bodies) {
      const [fast, routed] = [await send(body, false), await send(body, true)];
      expect(fast.status, JSON.stringify(fast.json)).toBe(routed.status);
      for (const h of ['cache-control', 'pragma', 'content-type', 'x-request-id']) expect(fast.headers[h], h).toBe(routed.headers[h]);
      expect(fast.headers['x-request-id']).toBe('same-path-check');
      if (fast.status === 200) expect(Object.keys(fast.json).sort()).toEqual(Object.keys(routed.json).sort());
      else expect(fast.json).toEqual(routed.json);
    }
  });

  it('wrote no presented token (or its signature) into a log line or an audit record', async () => {
    presented.add(good);
    presented.add(agentToken);
    await broker.composed.audit.drain();
    const audit = JSON.stringify(await broker.composed.db.auditEvent.findMany());
    expect(broker.logs.length).toBeGreaterThan(10);
    let checked = 0;
    for (const token of presented) {
      const parts = token.split('.');
      for (const probe of [token, ...(parts.length === 3 && parts[2]!.length > 20 ? [parts[2]!] : [])]) {
        if (probe.length < 24) continue;
        checked++;
        expect(broker.logs.find((l) => l.includes(probe))).toBeUndefined();
        expect(audit.includes(probe)).toBe(false);
      }
    }
    expect(checked).toBeGreaterThan(20);
  });
});
