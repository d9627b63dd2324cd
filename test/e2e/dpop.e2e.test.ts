// DPoP (RFC 9449) sender-constrained agent tokens through HTTP against a real broker: a start-up
// exchange with a proof yields a token bound to the proof's key (cnf.jkt, token_type DPoP); the
// bound token is accepted at the token endpoint and on the task routes only with a fresh proof by
// that key, for that token (ath), method and URL, used once; every bad proof is 400
// invalid_dpop_proof (401 with WWW-Authenticate on the task routes), never a 5xx; introspection
// shows cnf; tokens.requireDpop refuses unbound agent tokens. Targets with `dpop: optional|required`
// get access tokens bound to the proof's key, which a resource server can hold to it.
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, EmbeddedJWK, exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK } from 'jose';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE, TEST_AUDITOR_TOKEN } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const RS_SECRET = `rs-${randomUUID()}`;

interface Holder {
  publicJwk: JWK;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  jkt: string;
}
async function holder(alg: 'ES256' | 'RS256' = 'ES256'): Promise<Holder> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return { publicJwk, privateKey, jkt: await calculateJwkThumbprint(publicJwk, 'sha256') };
}
const ath = (token: string) => createHash('sha256').update(token).digest('base64url');

/** A proof by `h` for `htm` `htu` (and `token`); `edit` changes claims or header for the bad cases. */
async function proof(h: Holder, htm: string, htu: string, token?: string, edit: { claims?: Record<string, unknown>; header?: Record<string, unknown>; alg?: string } = {}): Promise<string> {
  return new SignJWT({ jti: randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000), ...(token ? { ath: ath(token) } : {}), ...edit.claims })
    .setProtectedHeader({ alg: edit.alg ?? 'ES256', typ: 'dpop+jwt', jwk: h.publicJwk, ...edit.header })
    .sign(h.privateKey);
}

describe('DPoP-bound agent tokens (RFC 9449)', () => {
  let e2e: E2eBroker;
  let strict: E2eBroker;
  let alice: Holder;
  let mallory: Holder;
  let nonced: E2eBroker;
  const config = (requireDpop: boolean, dpopNonce = false) => ({
    tokens: { requireDpop, dpopNonce },
    auth: {
      auditors: [{ name: 'test-auditor', token: { fromEnv: 'TEST_AUDITOR_TOKEN' } }],
      introspectionClients: [{ name: 'mcp-rs', token: { fromEnv: 'RS_SECRET' } }],
    },
    credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
    targets: [
      { name: 'mcp', resources: ['https://mcp.test/'], issuer: 'tokens', scopes: ['tools:run'] },
      { name: 'mcp-bound', resources: ['https://mcp-bound.test/'], issuer: 'tokens', scopes: ['tools:run'], dpop: 'optional' },
      { name: 'mcp-strict', resources: ['https://mcp-strict.test/'], issuer: 'tokens', scopes: ['tools:run'], dpop: 'required' },
    ],
    policy: {
      rules: [{
        id: 'agents', workload: { subjectPattern: 'test://.+' }, agentToken: { maxTtl: '10m' },
        grants: ['mcp', 'mcp-bound', 'mcp-strict'].map((target) => ({ target, scopes: ['tools:run'], maxTtl: '2m' })),
      }],
    },
  });

  beforeAll(async () => {
    [alice, mallory] = await Promise.all([holder(), holder('RS256')]);
    e2e = await startE2eBroker({ name: 'agsts-dpop', config: config(false), env: { RS_SECRET } });
    strict = await startE2eBroker({ name: 'agsts-dpop-strict', config: config(true), env: { RS_SECRET } });
    nonced = await startE2eBroker({ name: 'agsts-dpop-nonce', config: config(false, true), env: { RS_SECRET } });
  });
  afterAll(async () => {
    await e2e?.close();
    await strict?.close();
    await nonced?.close();
  });

  const tokenUrl = (b: E2eBroker) => `${b.broker.url}/oauth2/token`;
  /** The start-up exchange with a DPoP header (or none). */
  const startup = async (b: E2eBroker, dpop?: string) =>
    postToken(b.broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await b.attest('assistant'), subject_token_type: JWT_TYPE }, { headers: dpop ? { dpop } : {} });
  const boundToken = async (b: E2eBroker = e2e, h: Holder = alice) => {
    const r = await startup(b, await proof(h, 'POST', tokenUrl(b)));
    expect(r.status, r.text).toBe(200);
    return r.json.access_token as string;
  };
  const toolCall = (b: E2eBroker, agent: string, dpop?: string, resource = 'https://mcp.test/') =>
    postToken(b.broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource, scope: 'tools:run' }, { headers: dpop ? { dpop } : {} });
  const introspect = async (b: E2eBroker, token: string) =>
    (await (await fetch(`${b.broker.url}/oauth2/introspect`, { method: 'POST', headers: { authorization: `Bearer ${RS_SECRET}`, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token }) })).json()) as Record<string, unknown>;

  it('advertises the proof algorithms in the RFC 8414 metadata', async () => {
    const meta = (await (await fetch(`${e2e.broker.url}/.well-known/oauth-authorization-server`)).json()) as { dpop_signing_alg_values_supported: string[] };
    expect(meta.dpop_signing_alg_values_supported).toEqual(expect.arrayContaining(['ES256', 'RS256', 'EdDSA']));
    expect(meta.dpop_signing_alg_values_supported).not.toContain('HS256');
  });

  it('a start-up exchange with a proof yields a token bound to its key: token_type DPoP, cnf.jkt, shown by introspection, named in the audit record', async () => {
    const r = await startup(e2e, await proof(alice, 'POST', tokenUrl(e2e)));
    expect(r.status, r.text).toBe(200);
    expect(r.json.token_type).toBe('DPoP');
    const token = r.json.access_token as string;
    expect(decodeJwt(token).cnf).toEqual({ jkt: alice.jkt });
    expect(await introspect(e2e, token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: alice.jkt } });
    await e2e.broker.composed.audit.drain();
    const rec = await e2e.broker.composed.db.auditEvent.findFirstOrThrow({ where: { credentialId: decodeJwt(token).jti as string } });
    expect(rec.reason).toContain(`bound to DPoP key ${alice.jkt}`);
    // without a proof: an unbound Bearer token, as before
    const plain = await startup(e2e);
    expect(plain.json.token_type).toBe('Bearer');
    expect(decodeJwt(plain.json.access_token as string).cnf).toBeUndefined();
  });

  it('a bound token works at the token endpoint only with a fresh proof by its key, for it, used once', async () => {
    const agent = await boundToken();
    const url = tokenUrl(e2e);
    const refused = async (dpop: string | undefined, why: RegExp) => {
      const r = await toolCall(e2e, agent, dpop);
      expect(r.status, r.text).toBe(400);
      expect(r.json.error).toBe('invalid_dpop_proof');
      expect(String(r.json.error_description)).toMatch(why);
      expect(r.headers.get('cache-control')).toBe('no-store');
    };
    await refused(undefined, /bound to a key/);
    await refused(await proof(mallory, 'POST', url, agent, { alg: 'RS256' }), /another key/);
    await refused(await proof(alice, 'POST', url), /ath/);
    await refused(await proof(alice, 'POST', url, 'some-other-token'), /ath/);
    await refused(await proof(alice, 'GET', url, agent), /htm/);
    await refused(await proof(alice, 'POST', `${e2e.broker.url}/oauth2/introspect`, agent), /htu/);
    const good = await proof(alice, 'POST', `${url}?ignored=1`, agent); // htu is compared without its query
    const ok = await toolCall(e2e, agent, good);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json.token_type).toBe('Bearer'); // target mcp has dpop: off
    expect(decodeJwt(ok.json.access_token as string).cnf).toBeUndefined();
    await refused(good, /replayed/);
  });

  it('an unbound token with a proof is accepted as it is; a sub-agent token of a bound one is bound to the same key', async () => {
    const plain = (await startup(e2e)).json.access_token as string;
    expect((await toolCall(e2e, plain, await proof(mallory, 'POST', tokenUrl(e2e), plain, { alg: 'RS256' }))).status).toBe(200);
    const parent = await boundToken();
    const child = await postToken(
      e2e.broker.url,
      { grant_type: TOKEN_EXCHANGE, subject_token: parent, subject_token_type: ACCESS_TOKEN_TYPE, requested_token_type: 'urn:agent-sts:token-type:sub-agent-token', scope: 'tools:run' },
      { headers: { dpop: await proof(alice, 'POST', tokenUrl(e2e), parent) } },
    );
    expect(child.status, child.text).toBe(200);
    expect(child.json.token_type).toBe('DPoP');
    expect(decodeJwt(child.json.access_token as string).cnf).toEqual({ jkt: alice.jkt });
  });

  it('a target with dpop: optional gets an access token bound to the proof key, which a resource server can hold to it', async () => {
    const agent = await boundToken();
    const r = await toolCall(e2e, agent, await proof(alice, 'POST', tokenUrl(e2e), agent), 'https://mcp-bound.test/');
    expect(r.status, r.text).toBe(200);
    expect(r.json.token_type).toBe('DPoP');
    const token = r.json.access_token as string;
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ aud: 'https://mcp-bound.test/', cnf: { jkt: alice.jkt } });
    expect(await introspect(e2e, token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: alice.jkt }, aud: 'https://mcp-bound.test/' });
    await e2e.broker.composed.audit.drain();
    const rec = await e2e.broker.composed.db.auditEvent.findFirstOrThrow({ where: { credentialId: claims.jti as string } });
    expect(rec.reason).toContain(`bound to DPoP key ${alice.jkt}`);

    // The resource server's side (RFC 9449 §7): the token verifies against the broker's JWKS, and
    // counts only with a proof for this request, by the key in cnf.jkt, carrying the token's hash.
    const jwks = createRemoteJWKSet(new URL(`${e2e.broker.url}/.well-known/jwks.json`));
    const toolUrl = 'https://mcp-bound.test/tools/call';
    const rsAccepts = async (presented: string, dpop: string) => {
      try {
        const { payload } = await jwtVerify(presented, jwks, { issuer: e2e.broker.url, audience: 'https://mcp-bound.test/', typ: 'at+jwt' });
        const p = await jwtVerify(dpop, EmbeddedJWK, { typ: 'dpop+jwt', maxTokenAge: 60 });
        const key = await calculateJwkThumbprint(p.protectedHeader.jwk!, 'sha256');
        return (payload.cnf as { jkt?: string }).jkt === key && p.payload.htm === 'POST' && p.payload.htu === toolUrl && p.payload.ath === ath(presented);
      } catch {
        return false;
      }
    };
    expect(await rsAccepts(token, await proof(alice, 'POST', toolUrl, token))).toBe(true);
    // stolen: whoever holds the token without alice's key cannot make a proof that passes
    expect(await rsAccepts(token, await proof(mallory, 'POST', toolUrl, token, { alg: 'RS256' }))).toBe(false);
    expect(await rsAccepts(token, await proof(alice, 'POST', toolUrl, agent))).toBe(false); // a proof for another token

    // An unbound agent token with a proof: the access token is bound to the key that made the proof.
    const plain = (await startup(e2e)).json.access_token as string;
    const byMallory = await toolCall(e2e, plain, await proof(mallory, 'POST', tokenUrl(e2e), plain, { alg: 'RS256' }), 'https://mcp-bound.test/');
    expect(byMallory.status, byMallory.text).toBe(200);
    expect(decodeJwt(byMallory.json.access_token as string).cnf).toEqual({ jkt: mallory.jkt });
    // Without a proof: a Bearer token, as for a target with dpop: off.
    const bearer = await toolCall(e2e, plain, undefined, 'https://mcp-bound.test/');
    expect(bearer.status, bearer.text).toBe(200);
    expect(bearer.json.token_type).toBe('Bearer');
    expect(decodeJwt(bearer.json.access_token as string).cnf).toBeUndefined();
    expect(await introspect(e2e, bearer.json.access_token as string)).toMatchObject({ active: true, token_type: 'Bearer' });
  });

  it('a target with dpop: required refuses a request without a proof (400 invalid_dpop_proof, a deny record) and binds with one', async () => {
    const plain = (await startup(e2e)).json.access_token as string;
    const refused = await toolCall(e2e, plain, undefined, 'https://mcp-strict.test/');
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.error).toBe('invalid_dpop_proof');
    expect(String(refused.json.error_description)).toMatch(/only DPoP-bound tokens/);
    await e2e.broker.composed.audit.drain();
    const deny = await e2e.broker.composed.db.auditEvent.findFirstOrThrow({ where: { requestId: refused.headers.get('x-request-id')! } });
    expect(deny).toMatchObject({ outcome: 'deny', target: 'mcp-strict', credentialId: null });
    expect(deny.reason).toMatch(/dpop required/);
    const bound = await toolCall(e2e, plain, await proof(alice, 'POST', tokenUrl(e2e), plain), 'https://mcp-strict.test/');
    expect(bound.status, bound.text).toBe(200);
    expect(bound.json.token_type).toBe('DPoP');
    expect(decodeJwt(bound.json.access_token as string).cnf).toEqual({ jkt: alice.jkt });
  });

  it('bad proofs are 400 invalid_dpop_proof, never a 5xx, and open no task', async () => {
    const url = tokenUrl(e2e);
    const now = Math.floor(Date.now() / 1000);
    const privateJwk = await exportJWK(alice.privateKey);
    const unsigned = (header: object, claims: object) => `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    const hs256 = await new SignJWT({ jti: randomUUID(), htm: 'POST', htu: url, iat: now }).setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: alice.publicJwk }).sign(new TextEncoder().encode('a-shared-secret-of-32-bytes-long!'));
    const cases: [string, string][] = [
      ['not a JWT', 'not-a-jwt'],
      ['alg none', unsigned({ alg: 'none', typ: 'dpop+jwt', jwk: alice.publicJwk }, { jti: randomUUID(), htm: 'POST', htu: url, iat: now })],
      ['HS256', hs256],
      ['typ JWT', await proof(alice, 'POST', url, undefined, { header: { typ: 'JWT' } })],
      ['a private key in its jwk', await proof(alice, 'POST', url, undefined, { header: { jwk: privateJwk } })],
      ['no jwk', await new SignJWT({ jti: randomUUID(), htm: 'POST', htu: url, iat: now }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt' }).sign(alice.privateKey)],
      ['signed by another key than its jwk', await proof(alice, 'POST', url, undefined, { header: { jwk: mallory.publicJwk } })],
      ['5 minutes old', await proof(alice, 'POST', url, undefined, { claims: { iat: now - 300 } })],
      ['5 minutes ahead', await proof(alice, 'POST', url, undefined, { claims: { iat: now + 300 } })],
      ['no jti', await proof(alice, 'POST', url, undefined, { claims: { jti: undefined } })],
      ['no htu', await proof(alice, 'POST', url, undefined, { claims: { htu: undefined } })],
      ['a non-string ath', await proof(alice, 'POST', url, undefined, { claims: { ath: 42 } })],
      ['oversized', 'x'.repeat(9000)],
    ];
    const tasksBefore = await e2e.broker.composed.db.task.count();
    for (const [name, dpop] of cases) {
      const r = await startup(e2e, dpop);
      expect(r.status, `${name}: ${r.text}`).toBe(400);
      expect(r.json.error, name).toBe('invalid_dpop_proof');
    }
    expect(await e2e.broker.composed.db.task.count()).toBe(tasksBefore);
  });

  it('the task routes take a bound token only as `Authorization: DPoP` with a proof for that route; POST /v1/tasks binds', async () => {
    const opened = await fetch(`${e2e.broker.url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', dpop: await proof(alice, 'POST', `${e2e.broker.url}/v1/tasks`) },
      body: JSON.stringify({ subject_token: await e2e.attest('assistant'), subject_token_type: JWT_TYPE, purpose: 'dpop test' }),
    });
    // a proof for another URL: refused in the protocol's terms (problem+json), no task opened
    const tasksBefore = await e2e.broker.composed.db.task.count();
    const badProof = await fetch(`${e2e.broker.url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', dpop: await proof(alice, 'POST', `${e2e.broker.url}/oauth2/token`) },
      body: JSON.stringify({ subject_token: await e2e.attest('assistant'), subject_token_type: JWT_TYPE, purpose: 'dpop test' }),
    });
    expect(badProof.status).toBe(400);
    expect(badProof.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(JSON.stringify(await badProof.json())).toMatch(/htu does not match/);
    expect(await e2e.broker.composed.db.task.count()).toBe(tasksBefore);
    const body = (await opened.json()) as { agent_token: string; task_id: string; token_type: string };
    expect(opened.status).toBe(201);
    expect(body.token_type).toBe('DPoP');
    const agent = body.agent_token;
    const taskUrl = `${e2e.broker.url}/v1/tasks/${body.task_id}`;
    const asBearer = await fetch(taskUrl, { headers: { authorization: `Bearer ${agent}` } });
    expect(asBearer.status).toBe(401);
    expect(asBearer.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_dpop_proof"/);
    const wrongRoute = await fetch(taskUrl, { headers: { authorization: `DPoP ${agent}`, dpop: await proof(alice, 'GET', `${e2e.broker.url}/v1/tasks`, agent) } });
    expect(wrongRoute.status).toBe(401);
    const shown = await fetch(taskUrl, { headers: { authorization: `DPoP ${agent}`, dpop: await proof(alice, 'GET', taskUrl, agent) } });
    expect(shown.status).toBe(200);
    expect(await shown.json()).toMatchObject({ task_id: body.task_id, state: 'open' });
    // an auditor still reads it with its own credential
    expect((await fetch(taskUrl, { headers: { authorization: `Bearer ${TEST_AUDITOR_TOKEN}` } })).status).toBe(200);
    // an unbound token under the DPoP scheme is refused
    const plain = (await startup(e2e)).json.access_token as string;
    const plainTask = decodeJwt(plain).task_id as string;
    expect((await fetch(`${e2e.broker.url}/v1/tasks/${plainTask}`, { headers: { authorization: `DPoP ${plain}` } })).status).toBe(401);
    const ended = await fetch(taskUrl, { method: 'DELETE', headers: { authorization: `DPoP ${agent}`, dpop: await proof(alice, 'DELETE', taskUrl, agent) } });
    expect(ended.status).toBe(200);
    expect(await ended.json()).toMatchObject({ task_id: body.task_id, state: 'ended' });
  });

  it('tokens.requireDpop: an agent token only for a request with a proof', async () => {
    const without = await startup(strict);
    expect(without.status, without.text).toBe(400);
    expect(without.json.error).toBe('invalid_dpop_proof');
    expect(String(without.json.error_description)).toMatch(/only DPoP-bound agent tokens/);
    const agent = await boundToken(strict);
    expect(decodeJwt(agent).cnf).toEqual({ jkt: alice.jkt });
    expect((await toolCall(strict, agent, await proof(alice, 'POST', tokenUrl(strict), agent))).status).toBe(200);
  });

  it('tokens.dpopNonce: a proof without a nonce of ours is answered use_dpop_nonce with one to retry with (RFC 9449 §8, §9)', async () => {
    const url = tokenUrl(nonced);
    const first = await startup(nonced, await proof(alice, 'POST', url));
    expect(first.status, first.text).toBe(400);
    expect(first.json.error).toBe('use_dpop_nonce');
    const nonce = first.headers.get('dpop-nonce');
    expect(nonce).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{22}$/);
    const made = await startup(nonced, await proof(alice, 'POST', url, undefined, { claims: { nonce: 'made-up.AAAAAAAAAAAAAAAAAAAAAA' } }));
    expect(made.status).toBe(400);
    expect(made.json.error).toBe('use_dpop_nonce');
    expect(String(made.json.error_description)).toMatch(/DPoP-Nonce/);

    const ok = await startup(nonced, await proof(alice, 'POST', url, undefined, { claims: { nonce } }));
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json.token_type).toBe('DPoP');
    expect(ok.headers.get('dpop-nonce')).toBeTruthy(); // the nonce to use next
    const agent = ok.json.access_token as string;
    // A bad proof with a good nonce is still invalid_dpop_proof; a good one with the nonce is a tool call.
    expect((await toolCall(nonced, agent, await proof(mallory, 'POST', url, agent, { alg: 'RS256', claims: { nonce } }))).json.error).toBe('invalid_dpop_proof');
    expect((await toolCall(nonced, agent, await proof(alice, 'POST', url, agent, { claims: { nonce } }))).status).toBe(200);

    // The task routes, as a resource server: 401 with the DPoP challenge and the nonce.
    const taskUrl = `${nonced.broker.url}/v1/tasks/${String(ok.json.task_id)}`;
    const challenged = await fetch(taskUrl, { headers: { authorization: `DPoP ${agent}`, dpop: await proof(alice, 'GET', taskUrl, agent) } });
    expect(challenged.status).toBe(401);
    expect(challenged.headers.get('www-authenticate')).toMatch(/^DPoP error="use_dpop_nonce"/);
    const fresh = challenged.headers.get('dpop-nonce');
    expect(fresh).toBeTruthy();
    const shown = await fetch(taskUrl, { headers: { authorization: `DPoP ${agent}`, dpop: await proof(alice, 'GET', taskUrl, agent, { claims: { nonce: fresh } }) } });
    expect(shown.status).toBe(200);
    // Without nonces configured, no broker hands one out.
    expect((await startup(e2e, await proof(alice, 'POST', tokenUrl(e2e)))).headers.get('dpop-nonce')).toBeNull();
  });

  it('no proof, agent token or key appears in any log line', async () => {
    const agent = await boundToken();
    const dpop = await proof(alice, 'POST', tokenUrl(e2e), agent);
    await toolCall(e2e, agent, dpop);
    await toolCall(e2e, agent, dpop); // replayed: refused and logged at debug
    const logs = [...e2e.broker.logs, ...strict.broker.logs].join('\n');
    for (const secret of [agent, dpop, dpop.split('.')[2]!, JSON.stringify(await exportJWK(alice.privateKey))]) expect(logs).not.toContain(secret);
    expect(logs).not.toContain((await exportJWK(alice.privateKey)).d!);
  });
});
